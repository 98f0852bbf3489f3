"""`gru render`: the dev stack's manifests, checked against the Kubernetes schemas."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from components.stack_model.task_server import DEFAULT_WORKER_IMAGE
from gru.cli import main
from gru.render import REDACTED, RenderedObject, render_stack, write_manifests

from .conftest import ROOT, SEED_YAML

# The oldest and newest Kubernetes minor versions this project supports.
SUPPORTED_KUBERNETES = ["1.30.0", "1.37.0"]


@pytest.fixture(scope="module")
def dev_manifests(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("render")
    return write_manifests(render_stack("dev", ROOT / "stacks"), out)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_dev_stack_renders_one_file_per_object_broker_first(dev_manifests: list[Path]) -> None:
    names = [p.name for p in dev_manifests]
    assert names == [
        "001-namespace-cluster-gru.yaml",
        "002-networkpolicy-gru-redis.yaml",
        "003-poddisruptionbudget-gru-redis.yaml",
        "004-serviceaccount-gru-redis.yaml",
        "005-secret-gru-redis-credentials.yaml",
        "006-configmap-gru-redis-config.yaml",
        "007-service-gru-redis.yaml",
        "008-service-gru-redis-headless.yaml",
        "009-statefulset-gru-redis.yaml",
        "010-networkpolicy-gru-task-server.yaml",
        "011-poddisruptionbudget-gru-task-server.yaml",
        "012-serviceaccount-gru-task-server.yaml",
        "013-deployment-gru-task-server.yaml",
    ]


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES)
def test_dev_manifests_validate_strictly(dev_manifests: list[Path], version: str) -> None:
    for path in dev_manifests:
        kubernetes_validate.validate(load(path), version, strict=True)


def test_schema_check_can_fail(dev_manifests: list[Path]) -> None:
    deployment = load(dev_manifests[-1])
    deployment["spec"]["template"]["spec"]["containers"][0]["concurrency"] = 4
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, SUPPORTED_KUBERNETES[-1], strict=True)


def test_secret_values_are_redacted_unless_asked(dev_manifests: list[Path], tmp_path: Path) -> None:
    (secret,) = [load(p) for p in dev_manifests if "-secret-" in p.name]
    assert set(secret["stringData"].values()) == {REDACTED}
    (shown,) = [o.manifest for o in render_stack("dev", ROOT / "stacks", show_secrets=True) if o.kind == "Secret"]
    password = shown["stringData"]["redis-password"]
    assert len(password) >= 32 and password in shown["stringData"]["broker-url"]
    for path in dev_manifests:
        assert password not in path.read_text()


def test_render_replaces_a_previous_render(tmp_path: Path) -> None:
    (tmp_path / "999-stale-object.yaml").write_text("kind: Stale\n")
    (tmp_path / "notes.txt").write_text("keep me")
    write_manifests(render_stack("dev", ROOT / "stacks"), tmp_path)
    assert not (tmp_path / "999-stale-object.yaml").exists()
    assert (tmp_path / "notes.txt").exists()


def test_cli_render_and_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--stack", "dev", "--out", str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out").glob("*.yaml"))) == 13
    assert "rendered 13 objects" in capsys.readouterr().out
    assert main(["validate", "--stack", "dev"]) == 0
    out = capsys.readouterr().out
    # Which images the cluster will pull, so a missing one is noticed before a rollout waits on it.
    assert f"task server task_server: image {DEFAULT_WORKER_IMAGE}" in out and "broker redis: image redis:" in out


def test_cli_reports_a_bad_stack_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    (stacks / "bad.yaml").write_text(SEED_YAML.replace("replicas: 4", "replicas: many"))
    code = main(["--stacks-dir", str(stacks), "render", "--stack", "bad", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert "task_server.replicas: must be a whole number" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_cli_usage_error_exits_2() -> None:
    with pytest.raises(SystemExit) as caught:
        main(["render"])
    assert caught.value.code == 2


def test_redacted_renders_are_identical_run_to_run(tmp_path: Path) -> None:
    first = write_manifests(render_stack("dev", ROOT / "stacks"), tmp_path / "a")
    second = write_manifests(render_stack("dev", ROOT / "stacks"), tmp_path / "b")
    assert [p.read_text() for p in first] == [p.read_text() for p in second]


def test_shown_secrets_are_fresh_each_render() -> None:
    def password() -> str:
        (secret,) = [o for o in render_stack("dev", ROOT / "stacks", show_secrets=True) if o.kind == "Secret"]
        return str(secret.manifest["stringData"]["redis-password"])

    assert password() != password()


def _render_in_a_fresh_process(out: Path) -> bytes:
    subprocess.run([sys.executable, "-m", "gru", "render", "--stack", "example", "--out", str(out)],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    return b"".join(p.name.encode() + b"\n" + p.read_bytes() for p in sorted(out.iterdir()))


def test_renders_of_several_task_servers_are_byte_identical_across_processes(tmp_path: Path) -> None:
    # Components register concurrently, so arrival order varies between processes; the file
    # order must follow the stack file instead. 20 fresh processes, one result.
    first = _render_in_a_fresh_process(tmp_path / "0")
    assert first.count(b"kind: Deployment") >= 2
    for i in range(1, 20):
        assert _render_in_a_fresh_process(tmp_path / str(i)) == first, f"render {i} differs"


def test_file_numbers_sort_in_creation_order_past_999(tmp_path: Path) -> None:
    objects = [RenderedObject({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}", "namespace": "n"}})
               for i in range(1001)]
    written = write_manifests(objects, tmp_path)
    assert [p.name for p in sorted(written)] == [p.name for p in written]
    assert written[0].name.startswith("0001-") and written[-1].name.startswith("1001-")


def test_show_secrets_warns_naming_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--stack", "dev", "--out", str(tmp_path), "--show-secrets"]) == 0
    err = capsys.readouterr().err
    assert "plaintext passwords" in err and "redis-credentials.yaml" in err
    assert main(["render", "--stack", "dev", "--out", str(tmp_path)]) == 0
    assert "plaintext" not in capsys.readouterr().err
