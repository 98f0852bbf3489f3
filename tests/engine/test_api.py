"""gru's Python API and command line on the real engine: the Automation API behind `gru.api`
and `gru component setup`, against the local cluster, with gru's embedded default backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gru import api
from gru.render import evaluate_stack

from ..conftest import SEED_YAML
from .conftest import Project, use_engine_env

STACK = "ci"
EXPORTS = ("redis_host", "redis_port", "redis_secret_name", "task_server_deployment_name", "task_server_replicas",
           "task_server_concurrency")


@pytest.fixture
def api_env(project: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    """This process's environment as the engine needs it, with gru choosing the backend."""
    use_engine_env(project, monkeypatch, gru_backend=True)
    return project


def test_preview_up_idempotent_up_and_destroy(api_env: Project) -> None:
    project = api_env
    root = project.root
    project.write_stack(STACK, SEED_YAML)
    expected = evaluate_stack(STACK, project.stacks)  # the same program under the mock engine
    lines: list[str] = []

    planned = api.preview(STACK, project_dir=root, on_output=lines.append)
    assert set(planned.changes) == {"create"}, planned
    # Every component, Kubernetes object and patch, the password, and the stack itself.
    assert planned.changes["create"] == len(expected.registrations) + 1
    assert lines, "the engine's output was not streamed"
    assert (root / ".pulumi-state").is_dir()  # the embedded default backend

    first = api.up(STACK, yes=True, project_dir=root, on_output=lines.append)
    assert first.summary.changes == planned.changes
    for name in EXPORTS:
        assert first.outputs[name] == expected.outputs[name], name
    assert project.kube.get("Deployment", "task-server", "gru") is not None
    assert api.outputs(STACK, project_dir=root) == first.outputs

    second = api.up(STACK, yes=True, project_dir=root, on_output=None)
    assert set(second.summary.changes) == {"same"} and not second.summary.has_changes, second.summary
    assert second.summary.changes["same"] == planned.changes["create"]
    assert not api.preview(STACK, project_dir=root, on_output=None).has_changes

    removed = api.destroy(STACK, yes=True, project_dir=root, on_output=None)
    assert removed.changes == {"delete": planned.changes["create"]}
    assert api.outputs(STACK, project_dir=root) == {}
    assert project.kube.get("Deployment", "task-server", "gru") is None


def gru_cli(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**project.env}
    env.pop("PULUMI_BACKEND_URL")
    return subprocess.run([sys.executable, "-m", "gru", *args], cwd=project.root, env=env, text=True,
                          capture_output=True, timeout=900)


def test_component_setup_end_to_end(project: Project, tmp_path: Path) -> None:
    broker = tmp_path / "broker.yaml"
    broker.write_text("broker:\n  type: redis\n  name: redis\n  namespace: setup\n")
    server = tmp_path / "task-server.yaml"
    server.write_text("task_server:\n  type: celery\n  name: task_server\n  broker_resource_name: redis\n")

    first = gru_cli(project, "component", "setup", "--cluster-name", "edge", "--config-file", str(broker), "--yes")
    assert first.returncode == 0, first.stderr
    assert project.kube.get("StatefulSet", "redis", "setup") is not None
    second = gru_cli(project, "component", "setup", "--cluster-name", "edge", "--config-file", str(server), "--yes")
    assert second.returncode == 0, second.stderr
    assert project.kube.get("Deployment", "task-server", "setup") is not None
    stack_file = (project.stacks / "edge.yaml").read_text()
    assert "name: redis" in stack_file and "name: task_server" in stack_file

    # A broken component file: a clear error, the stack file untouched, nothing deployed.
    bad = tmp_path / "bad.yaml"
    bad.write_text("task_server:\n  type: celery\n  name: task_server\n  replicas: many\n  broker_resource_name: redis\n")
    failed = gru_cli(project, "component", "setup", "--cluster-name", "edge", "--config-file", str(bad), "--yes")
    assert failed.returncode != 0
    assert "replicas" in failed.stderr and "Traceback" not in failed.stderr
    assert (project.stacks / "edge.yaml").read_text() == stack_file
    deployment = project.kube.get("Deployment", "task-server", "setup")
    assert deployment is not None and deployment["spec"]["replicas"] == 1

    # Several stacks previewed at once: the deployed one, a new one, and an invalid one, which
    # fails alone; each stack's lines carry its name and one table ends the run.
    project.write_stack("fresh", "broker:\n  type: redis\n  name: redis\n  namespace: fresh\n")
    project.write_stack("broken", "broker:\n  type: redis\n  name: redis\n  max_memory_mb: lots\n")
    many = gru_cli(project, "preview", "--stack", "edge", "--stack", "fresh", "--stack", "broken")
    assert many.returncode == 1, many.stderr
    assert any(line.startswith("[fresh]  ") for line in many.stdout.splitlines()), many.stdout
    rows = {line.split()[0]: line.split() for line in many.stdout.splitlines()[-4:-1]}
    assert rows["edge"][1:5] == ["0", "0", "0", "0"] and rows["edge"][-1] == "ok", many.stdout
    assert int(rows["fresh"][1]) > 0 and rows["fresh"][-1] == "ok", many.stdout
    assert rows["broken"][1:5] == ["-"] * 4 and "max_memory_mb" in many.stderr
    assert many.stdout.splitlines()[-1] == "3 stacks, 1 failed"
    assert project.kube.get("Namespace", "fresh") is None  # a preview creates nothing

    removed = gru_cli(project, "destroy", "--stack", "edge", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert project.kube.get("StatefulSet", "redis", "setup") is None
