"""The real Pulumi engine against a real Kubernetes API server.

Session fixtures build the engine (tools/engine/build: instant once cached) and start the local
control plane (tools/cluster up), once for the whole run; each test gets a fresh copy of the
project, with its own state backend, whose stacks deploy to that cluster. Nothing is skipped:
without the engine these tests build it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.api import Kube, wait_for
from localcluster.engine import addons_dir
from localcluster.engine import engine_bin as find_engine_bin

from ..conftest import ROOT

PASSPHRASE = "engine-tests-passphrase"


@pytest.fixture(scope="session")
def engine_bin() -> Path:
    return find_engine_bin()


@dataclass
class Cluster:
    kubeconfig: Path
    kube: Kube


@pytest.fixture(scope="session")
def cluster(engine_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("cluster") / "plane"
    # The add-ons (built first when missing) give the cluster KEDA's and the monitoring CRDs.
    env = {**os.environ, "GRU_ENGINE_BIN": str(engine_bin), "GRU_PYTHON": sys.executable,
           "GRU_ADDONS_DIR": str(addons_dir())}
    tool = str(ROOT / "tools" / "cluster")
    try:
        subprocess.run([tool, "up", str(directory)], check=True, env=env, timeout=300,
                       stdout=subprocess.PIPE, text=True)
        kubeconfig = directory / "kubeconfig"
        yield Cluster(kubeconfig, Kube(kubeconfig))
    finally:
        subprocess.run([tool, "down", str(directory)], check=False, env=env, timeout=120)


@dataclass
class Project:
    """A temporary copy of the program with its own state backend, deploying to the cluster."""

    root: Path
    env: dict[str, str]
    kube: Kube
    logs: list[str] = field(default_factory=list)

    @property
    def stacks(self) -> Path:
        return self.root / "stacks"

    def write_stack(self, stack: str, text: str) -> None:
        (self.stacks / f"{stack}.yaml").write_text(text)

    def pulumi(self, *args: str, stack: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """Run the plain `pulumi` CLI in the project; its output is kept in `logs` for secret checks."""
        argv = ["pulumi", *args, "--stack", stack, "--non-interactive", "--color=never"]
        result = subprocess.run(argv, cwd=self.root, env=self.env, text=True, capture_output=True, timeout=timeout)
        self.logs.append(result.stdout + result.stderr)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def init(self, stack: str) -> None:
        argv = ["pulumi", "stack", "init", stack, "--non-interactive"]
        result = subprocess.run(argv, cwd=self.root, env=self.env, text=True, capture_output=True, timeout=120)
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise AssertionError(result.stderr)

    def up(self, stack: str, *extra: str, event_log: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        args = ["up", "--yes", "--skip-preview", *extra]
        if event_log is not None:
            args += ["--event-log", str(event_log)]
        return self.pulumi(*args, stack=stack, check=check)

    def destroy(self, stack: str, event_log: Path | None = None) -> subprocess.CompletedProcess[str]:
        args = ["destroy", "--yes", "--skip-preview"]
        if event_log is not None:
            args += ["--event-log", str(event_log)]
        return self.pulumi(*args, stack=stack)

    def preview_steps(self, stack: str) -> list[dict[str, Any]]:
        """The engine's planned steps (`pulumi preview --json`), each with `op` and `urn`."""
        out = self.pulumi("preview", "--json", "--diff", stack=stack).stdout
        steps: list[dict[str, Any]] = json.loads(out).get("steps", [])
        return steps

    def state_text(self) -> str:
        """Every file of the state backend, as text."""
        state = Path(self.env["PULUMI_BACKEND_URL"].removeprefix("file://"))
        return "\n".join(p.read_text(errors="replace") for p in state.rglob("*") if p.is_file())


def changed_steps(steps: list[dict[str, Any]]) -> dict[str, str]:
    """`type::name` -> op for every step that is not `same`."""
    out: dict[str, str] = {}
    for step in steps:
        if step.get("op") != "same":
            urn: str = step["urn"]
            out[urn.split("::", 2)[2].rsplit("$", 1)[-1]] = step["op"]
    return out


def copy_program(source: Path, root: Path) -> None:
    """The program's files from `source` (a checkout) into the project at `root`, replacing
    any there: what an upgrade of the program changes."""
    for name in ("__main__.py", "requirements.txt"):
        shutil.copy(source / name, root / name)
    for package in ("components", "gru"):
        shutil.rmtree(root / package, ignore_errors=True)
        shutil.copytree(source / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))


@contextmanager
def new_project(cluster: Cluster, engine_bin: Path, tmp_path: Path, home: Path, source: Path = ROOT) -> Iterator[Project]:
    """A copy of the program (this checkout's, or `source`'s) under `tmp_path`, with its own
    state backend; on exit, the namespaces it made are removed, and everything in them."""
    root = tmp_path / "project"
    root.mkdir()
    copy_program(source, root)
    project: dict[str, Any] = yaml.safe_load((source / "Pulumi.yaml").read_text())
    # This interpreter's virtualenv already has the requirements: spare Pulumi the install.
    project["runtime"]["options"]["virtualenv"] = sys.prefix
    (root / "Pulumi.yaml").write_text(yaml.safe_dump(project, sort_keys=False))
    (root / "stacks").mkdir()
    state = tmp_path / "state"
    state.mkdir()
    home.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "PATH": f"{engine_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "PULUMI_HOME": str(home),
        "PULUMI_BACKEND_URL": f"file://{state}",
        "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DEBUG_COMMANDS": "true",  # enables --event-log
        "KUBECONFIG": str(cluster.kubeconfig),
    }
    env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
    before = {n["metadata"]["name"] for n in cluster.kube.list("Namespace")}
    yield Project(root, env, cluster.kube)
    # Namespaces are kept on destroy (with the broker's volume): remove the ones this test made,
    # and everything in them, so the next test starts from a clean cluster.
    made = {n["metadata"]["name"] for n in cluster.kube.list("Namespace")} - before
    for name in made:
        cluster.kube.delete("Namespace", name)
    wait_for(f"namespaces {sorted(made)} to go", lambda: not made & {n["metadata"]["name"] for n in cluster.kube.list("Namespace")}, 180)


@pytest.fixture
def project(cluster: Cluster, engine_bin: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    with new_project(cluster, engine_bin, tmp_path, tmp_path_factory.getbasetemp() / "pulumi-home") as made:
        yield made


ENGINE_ENV = ("PATH", "PULUMI_HOME", "PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "KUBECONFIG",
              "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION", "PULUMI_SKIP_UPDATE_CHECK")


def use_engine_env(project: Project, monkeypatch: pytest.MonkeyPatch, gru_backend: bool = False) -> None:
    """This process's environment as the engine needs it, for gru.api, which runs the CLI from here.
    With `gru_backend`, gru picks the state backend (its embedded default), not the project's."""
    for key in ENGINE_ENV:
        monkeypatch.setenv(key, project.env[key])
    if gru_backend:
        monkeypatch.delenv("PULUMI_BACKEND_URL")
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
