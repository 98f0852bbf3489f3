"""Every stack file in stacks/ deploys on the local cluster exactly as shipped.

The local cluster stands in for a platform cluster: it has the CRDs of KEDA and of the
Prometheus Operator (tools/addons/build), and the test creates the PriorityClasses a stack
names, as the platform team would have (README, "What a cluster needs"). Nothing in the stack
file is changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from components.stack_model import parse_stack_spec
from gru.render import evaluate_stack
from localcluster.api import Kube

from ..conftest import ROOT
from .conftest import Project

SHIPPED = sorted(p.stem for p in (ROOT / "stacks").glob("*.yaml") if not p.name.startswith("Pulumi."))


def priority_classes(text: str) -> set[str]:
    """Every PriorityClass a stack file names, in either section, as the program reads it."""
    spec = parse_stack_spec(text.encode(), "stack file")
    return {c.priority_class_name for c in (*spec.brokers, *spec.task_servers) if c.priority_class_name}


@contextmanager
def platform_classes(kube: Kube, names: set[str]) -> Iterator[None]:
    for name in names:
        kube.apply({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
                    "value": 1_000_000, "description": "the platform's, as a real cluster has it"})
    try:
        yield
    finally:
        for name in names:
            kube.delete("PriorityClass", name)


def test_the_shipped_stacks_are_found() -> None:
    assert {"dev", "example", "rabbitmq"} <= set(SHIPPED)
    assert priority_classes((ROOT / "stacks" / "example.yaml").read_text()) == {"platform-critical"}


@pytest.mark.parametrize("stack", SHIPPED)
def test_every_shipped_stack_deploys_as_shipped(project: Project, stack: str) -> None:
    source = ROOT / "stacks" / f"{stack}.yaml"
    text = source.read_text()
    project.write_stack(stack, text)
    config = ROOT / "stacks" / f"Pulumi.{stack}.yaml"
    if config.is_file():
        (project.stacks / config.name).write_text(config.read_text())
    kube = project.kube
    with platform_classes(kube, priority_classes(text)):
        project.init(stack)
        project.up(stack)
        evaluation = evaluate_stack(stack, Path(project.stacks))
        for registration in evaluation.kubernetes_objects:
            meta = registration.inputs.get("metadata", {})
            kind = registration.inputs["kind"]
            assert kube.get(kind, meta["name"], meta.get("namespace")) is not None, (kind, meta)
        project.pulumi("preview", "--expect-no-changes", stack=stack)
        project.destroy(stack)
