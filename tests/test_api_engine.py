"""The API against the real Pulumi engine: preview, up, an idempotent second up, destroy.

Needs the Pulumi CLI on PATH (skipped otherwise). Runs a temporary copy of the project with
its embedded default backend (a local file backend inside the copy, so nothing outside the
temporary directory is touched) on a stack whose Kubernetes provider renders manifests to a
directory (`kubernetes:renderYamlToDirectory`) instead of talking to a cluster. Plugins are
fetched into the usual Pulumi home on first run.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gru import api
from gru.render import evaluate_stack

from .conftest import ROOT

pytestmark = pytest.mark.skipif(
    shutil.which("pulumi") is None,
    reason="needs the Pulumi CLI on PATH (https://www.pulumi.com/docs/install/); "
    "the engine-free tests of the same API are in test_cli_api.py",
)

STACK = "ci"
PASSPHRASE = "engine-test-passphrase"
EXPORTS = ("redis_host", "redis_port", "redis_secret_name", "task_server_deployment_name", "task_server_replicas",
           "task_server_concurrency")


def make_project(tmp_path: Path, stack: str) -> tuple[Path, Path]:
    """A copy of the program whose `stack` renders its manifests to a directory, which is returned too."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("__main__.py", "requirements.txt"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "components", root / "components", ignore=shutil.ignore_patterns("__pycache__"))
    project: dict[str, Any] = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    if sys.prefix != sys.base_prefix:
        # This interpreter's virtualenv already has the requirements: spare Pulumi the install.
        project["runtime"]["options"]["virtualenv"] = sys.prefix
    (root / "Pulumi.yaml").write_text(yaml.safe_dump(project, sort_keys=False))
    (root / "stacks").mkdir()
    manifests = tmp_path / "manifests"
    (root / "stacks" / f"Pulumi.{stack}.yaml").write_text(
        yaml.safe_dump({"config": {"kubernetes:renderYamlToDirectory": str(manifests)}})
    )
    return root, manifests


@pytest.fixture
def engine_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded default backend, and a passphrase (the stack is not `dev`)."""
    monkeypatch.delenv("PULUMI_BACKEND_URL", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", PASSPHRASE)


def rendered_kinds(directory: Path) -> set[str]:
    kinds: set[str] = set()
    for path in directory.rglob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and "kind" in document:
                kinds.add(str(document["kind"]))
    return kinds


@pytest.mark.usefixtures("engine_env")
def test_preview_up_idempotent_up_and_destroy(tmp_path: Path) -> None:
    root, manifests = make_project(tmp_path, STACK)
    shutil.copy(ROOT / "stacks" / "dev.yaml", root / "stacks" / f"{STACK}.yaml")
    expected = evaluate_stack(STACK, root / "stacks")  # the same program under the mock engine
    lines: list[str] = []

    planned = api.preview(STACK, project_dir=root, on_output=lines.append)
    assert set(planned.changes) == {"create"}, planned
    # Every component and Kubernetes object, plus the stack itself (default providers may count too).
    assert planned.changes["create"] >= len(expected.registrations) + 1
    assert lines, "the engine's output was not streamed"
    assert (root / ".pulumi-state").is_dir()  # the embedded default backend

    first = api.up(STACK, yes=True, project_dir=root, on_output=lines.append)
    assert first.summary.changes == planned.changes
    assert {"StatefulSet", "Deployment", "Secret", "Service"} <= rendered_kinds(manifests)
    for name in EXPORTS:
        assert first.outputs[name] == expected.outputs[name], name
    assert api.outputs(STACK, project_dir=root) == first.outputs

    second = api.up(STACK, yes=True, project_dir=root, on_output=None)
    assert set(second.summary.changes) == {"same"} and not second.summary.has_changes, second.summary
    assert second.summary.changes["same"] == planned.changes["create"]
    assert not api.preview(STACK, project_dir=root, on_output=None).has_changes

    removed = api.destroy(STACK, yes=True, project_dir=root, on_output=None)
    assert removed.changes == {"delete": planned.changes["create"]}
    assert api.outputs(STACK, project_dir=root) == {}


@pytest.mark.usefixtures("engine_env")
def test_setup_a_broker_then_a_task_server(tmp_path: Path) -> None:
    root, manifests = make_project(tmp_path, STACK)
    broker = tmp_path / "broker.yaml"
    broker.write_text("broker:\n  type: redis\n  name: redis\n")
    server = tmp_path / "task-server.yaml"
    server.write_text("task_server:\n  type: celery\n  name: task_server\n  broker_resource_name: redis\n")

    previewed = api.setup(STACK, broker, preview_only=True, project_dir=root, on_output=None)
    assert not previewed.deployed and previewed.summary.changes.get("create", 0) > 0
    assert not previewed.stack_config_created  # ours, with the render directory, was kept

    deployed = api.setup(STACK, server, yes=True, project_dir=root, on_output=None)
    assert deployed.deployed and deployed.kept == (api.ComponentRef("broker", "redis"),)
    assert "task_server_deployment_name" in deployed.outputs and "redis_host" in deployed.outputs
    assert {"StatefulSet", "Deployment"} <= rendered_kinds(manifests)

    removed = api.destroy(STACK, yes=True, project_dir=root, on_output=None)
    assert removed.changes.get("delete", 0) > 0
