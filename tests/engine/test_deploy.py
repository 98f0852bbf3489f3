"""The dev stack (the seed YAML, verbatim) through the plain Pulumi CLI on a real API server:
up, every object there, pods admitted under `restricted`, the broker first (read from the
engine's event log), no changes on a second preview, destroy in reverse, no password in
state or output."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from gru.render import evaluate_stack
from localcluster.api import ApiError, Kube

from ..conftest import SEED_YAML
from .conftest import Project

STACK = "dev"


def events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def step_times(log: list[dict[str, Any]], kind: str) -> dict[str, int]:
    """urn -> sequence number of its first `resourcePreEvent` (kind="pre") or `resOutputsEvent` (kind="done")."""
    key = {"pre": "resourcePreEvent", "done": "resOutputsEvent"}[kind]
    out: dict[str, int] = {}
    for event in log:
        if key in event:
            meta = event[key]["metadata"]
            if meta.get("op") != "same":
                out.setdefault(meta["urn"], event["sequence"])
    return out


def is_task_server_object(urn: str) -> bool:
    return "gru:index:TaskServer" in urn.split("::")[2]


def is_broker_object(urn: str) -> bool:
    parents = urn.split("::")[2]
    return "gru:index:RedisBroker" in parents


def expected_objects(project: Project) -> list[tuple[str, str | None, str]]:
    evaluation = evaluate_stack(STACK, project.stacks)
    out = []
    for registration in evaluation.kubernetes_objects:
        meta = registration.inputs.get("metadata", {})
        out.append((registration.inputs["kind"], meta.get("namespace"), meta["name"]))
    return out


def test_dev_stack_up_preview_destroy(project: Project, tmp_path: Path) -> None:
    kube: Kube = project.kube
    project.write_stack(STACK, SEED_YAML)
    project.init(STACK)
    up_log, destroy_log = tmp_path / "up.jsonl", tmp_path / "destroy.jsonl"

    project.up(STACK, event_log=up_log)

    # Every object the program declares exists in the API server.
    objects = expected_objects(project)
    assert len(objects) >= 12
    for kind, namespace, name in objects:
        assert kube.get(kind, name, namespace) is not None, (kind, namespace, name)

    # The namespace enforces the restricted Pod Security level, and the pods were admitted under it.
    namespace = kube.get("Namespace", "gru")
    assert namespace is not None
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = kube.list("Pod", "gru")
    assert sum(p["metadata"]["labels"].get("app.kubernetes.io/name") == "redis" for p in pods) == 1
    workers = [p for p in pods if p["metadata"]["name"].startswith("task-server-")]
    assert len(workers) == 4
    assert all(p["status"].get("phase") == "Running" for p in workers)
    # The check can fail: a pod that may run as root is refused there.
    with pytest.raises(ApiError, match="violates PodSecurity"):
        kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root", "namespace": "gru"},
                     "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}})

    # The broker first: the Redis StatefulSet was Ready (its create finished) before any
    # task-server object's create started.
    log = events(up_log)
    started, finished = step_times(log, "pre"), step_times(log, "done")
    (statefulset,) = [urn for urn in finished if urn.endswith("kubernetes:apps/v1:StatefulSet::redis")]
    server_starts = [seq for urn, seq in started.items() if is_task_server_object(urn)]
    assert len(server_starts) >= 4  # the component, ServiceAccount, NetworkPolicy, PDB, Deployment
    assert finished[statefulset] < min(server_starts)

    # A second preview sees nothing to do.
    project.pulumi("preview", "--expect-no-changes", stack=STACK)

    # No password in the state backend or in anything the engine printed.
    secret = kube.get("Secret", "redis-credentials", "gru")
    assert secret is not None
    password = base64.b64decode(secret["data"]["redis-password"]).decode()
    assert len(password) >= 32
    assert password not in project.state_text()
    assert password not in up_log.read_text()
    assert all(password not in output for output in project.logs)

    project.destroy(STACK, event_log=destroy_log)

    # Destroy in reverse: every task-server object gone before any broker object is deleted.
    log = events(destroy_log)
    started, finished = step_times(log, "pre"), step_times(log, "done")
    server_done = [seq for urn, seq in finished.items() if is_task_server_object(urn)]
    broker_starts = [seq for urn, seq in started.items() if is_broker_object(urn)]
    assert server_done and broker_starts
    assert max(server_done) < min(broker_starts)

    # All gone but what the README says is kept: the namespace and the broker's volume claim.
    for kind, ns, name in objects:
        if kind != "Namespace":
            assert kube.get(kind, name, ns) is None, (kind, ns, name)
    assert kube.get("Namespace", "gru") is not None
    claims = [c["metadata"]["name"] for c in kube.list("PersistentVolumeClaim", "gru")]
    assert claims == ["data-redis-0"]
    assert password not in destroy_log.read_text()
