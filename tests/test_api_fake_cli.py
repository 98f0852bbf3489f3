"""`PulumiEngine` through the real Automation API, against a stand-in `pulumi` executable.

The stand-in speaks just enough of the CLI's protocol (version, stack init/select, preview with
its event log, up, destroy, stack output, stack history) to check what gru hands the real one:
the project as working directory, the embedded backend and the dev passphrase in the
environment, the stack name, `--diff`; and what gru makes of its answers: streamed output,
change summaries, masked secrets, failures as GruError without a traceback. It keeps its
"state" in the directory PULUMI_BACKEND_URL names, so a wrong backend shows as a missing stack.
The real engine is exercised in tests/engine/, against a local control plane.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from gru import api
from gru.cli import main

from .test_cli_api import BROKER_FILE, make_project_layout, snapshot

FAKE_PULUMI = r'''
import json
import os
import sys
from pathlib import Path

argv = sys.argv[1:]
with open(os.environ["FAKE_PULUMI_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps({
        "args": argv,
        "cwd": os.getcwd(),
        "backend": os.environ.get("PULUMI_BACKEND_URL"),
        "passphrase": os.environ.get("PULUMI_CONFIG_PASSPHRASE"),
    }) + "\n")
if argv == ["version"]:
    print("v3.200.0")  # before 3.205 the Automation API reads events from a file
    sys.exit(0)


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(255)


args = [a for a in argv if a != "--non-interactive"]
value = lambda flag: args[args.index(flag) + 1] if flag in args else None
backend = os.environ.get("PULUMI_BACKEND_URL", "")
if not backend.startswith("file://"):
    fail("this fake only knows file:// backends")
state = Path(backend[len("file://"):])
if not state.is_dir():
    fail(f"backend directory {state} does not exist")
stack = value("--stack") or (args[2] if args[:2] == ["stack", "init"] else None)
record = state / f"{stack}.json"
if "PULUMI_CONFIG_PASSPHRASE" not in os.environ and "PULUMI_CONFIG_PASSPHRASE_FILE" not in os.environ:
    fail("passphrase must be set with PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE")
if args[:2] == ["stack", "init"]:
    record.write_text(json.dumps({"outputs": {}, "history": []}))
    sys.exit(0)
if not record.exists():
    fail(f"no stack named '{stack}' found")
data = json.loads(record.read_text())
failing = os.environ.get("FAKE_PULUMI_FAIL")
now = "2024-01-01T00:00:00.000Z"


def history(kind, changes):
    data["history"].insert(0, {"kind": kind, "startTime": now, "endTime": now, "message": "", "environment": {},
                               "config": {}, "result": "succeeded", "version": len(data["history"]) + 1,
                               "resourceChanges": changes})


command = args[0]
if command == "stack" and args[1] == "select":
    sys.exit(0)
if command == "preview" or (command == "destroy" and "--preview-only" in args):
    print(f"Previewing update ({stack}){' with diff' if '--diff' in args else ''}")
    if failing == "preview":
        with open(value("--event-log"), "a", encoding="utf-8") as events:
            events.write(json.dumps({"sequence": 0, "timestamp": 0, "cancelEvent": {}}) + "\n")
        print("    error: configured Kubernetes cluster is unreachable")
        fail("preview failed")
    changes = {"same": 9} if data["outputs"] else {"create": 9}
    if command == "destroy":
        changes = {"delete": 9}
    with open(value("--event-log"), "a", encoding="utf-8") as events:
        events.write(json.dumps({"sequence": 0, "timestamp": 0, "summaryEvent": {
            "maybeCorrupt": False, "durationSeconds": 1, "resourceChanges": changes, "PolicyPacks": {}}}) + "\n")
        events.write(json.dumps({"sequence": 1, "timestamp": 0, "cancelEvent": {}}) + "\n")
    print(f"Resources: {changes}")
elif command == "up":
    print(f"Updating ({stack})")
    changes = {"same": 9} if data["outputs"] else {"create": 9}
    data["outputs"] = {"redis_host": ["redis.gru.svc.cluster.local", False], "redis_url": ["redis://:pw@redis:6379/0", True]}
    history("update", changes)
elif command == "destroy":
    print(f"Destroying ({stack})")
    data["outputs"] = {}
    history("destroy", {"delete": 9})
elif args[:2] == ["stack", "output"]:
    shown = "--show-secrets" in args
    print(json.dumps({k: v if shown or not secret else "[secret]" for k, (v, secret) in data["outputs"].items()}))
elif args[:2] == ["stack", "history"]:
    print(json.dumps(data["history"][:1]))
else:
    fail(f"the fake does not know {args}")
record.write_text(json.dumps(data))
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_project_layout(tmp_path, monkeypatch)


@pytest.fixture
def fake_pulumi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the stand-in first on PATH; returns the log of its invocations (one JSON per line)."""
    bin_dir = tmp_path / "fake-pulumi-bin"
    bin_dir.mkdir()
    executable = bin_dir / "pulumi"
    executable.write_text(f"#!{sys.executable}\n{FAKE_PULUMI}")
    executable.chmod(0o755)
    log = tmp_path / "pulumi-invocations.jsonl"
    log.touch()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_PULUMI_LOG", str(log))
    monkeypatch.delenv("PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK", raising=False)
    return log


def invocations(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def commands(log: Path) -> list[str]:
    return [" ".join(a for a in i["args"] if a not in ("--non-interactive",) and not a.startswith(("/", "tcp:")))
            for i in invocations(log) if i["args"] != ["version"]]


def test_dev_preview_up_outputs_destroy(project: Path, fake_pulumi: Path) -> None:
    lines: list[str] = []
    planned = api.preview("dev", diff=True, project_dir=project, on_output=lines.append)
    assert planned.changes == {"create": 9}
    assert "Previewing update (dev) with diff" in lines  # streamed, and --diff passed on
    assert any("empty secrets passphrase" in line for line in lines)

    result = api.up("dev", yes=True, project_dir=project, on_output=lines.append)
    assert result.summary.changes == {"create": 9}
    assert result.outputs == {"redis_host": "redis.gru.svc.cluster.local", "redis_url": "[secret]"}
    assert api.up("dev", yes=True, project_dir=project, on_output=None).summary.changes == {"same": 9}
    assert api.outputs("dev", show_secrets=True, project_dir=project)["redis_url"] == "redis://:pw@redis:6379/0"
    asked: list[api.ChangeSummary] = []

    def decline(summary: api.ChangeSummary) -> bool:
        asked.append(summary)
        return False

    with pytest.raises(api.GruError, match="nothing was deleted"):
        api.destroy("dev", confirm=decline, project_dir=project, on_output=None)
    assert asked == [api.ChangeSummary({"delete": 9})]  # a preview of the deletion, which did not happen
    assert api.outputs("dev", project_dir=project) != {}
    assert api.destroy("dev", yes=True, project_dir=project, on_output=None).changes == {"delete": 9}
    assert api.outputs("dev", project_dir=project) == {}

    calls = [c for c in invocations(fake_pulumi) if c["args"] != ["version"]]
    backend = f"file://{project.resolve().as_posix()}/.pulumi-state"
    assert {c["cwd"] for c in calls} == {str(project.resolve())}  # the project is the work_dir
    assert {c["backend"] for c in calls} == {backend}  # the embedded default backend
    assert {c["passphrase"] for c in calls} == {""}  # dev's explicit empty passphrase
    assert (project / ".pulumi-state" / "dev.json").exists()
    ran = commands(fake_pulumi)
    assert ran[:2] == ["stack select --stack dev", "stack init dev"]  # created on first use
    assert any(c.startswith("preview --diff") and c.endswith("--stack dev") for c in ran)
    assert any(c.startswith("up --yes --skip-preview") for c in ran)


def test_a_non_dev_stack_gets_the_users_passphrase(project: Path, fake_pulumi: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "stacks" / "prod-eu.yaml").write_text((project / "stacks" / "dev.yaml").read_text())
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "correct horse")
    api.up("prod-eu", yes=True, project_dir=project, on_output=None)
    assert {c["passphrase"] for c in invocations(fake_pulumi)} == {"correct horse"}


def test_outputs_of_a_stack_never_deployed(project: Path, fake_pulumi: Path) -> None:
    with pytest.raises(api.GruError) as caught:
        api.outputs("dev", project_dir=project)
    assert "does not exist in the state backend" in caught.value.message
    assert "python -m gru up --stack dev" in caught.value.message


def test_a_failed_preview_is_a_gru_error_with_the_cli_error(project: Path, fake_pulumi: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_PULUMI_FAIL", "preview")
    with pytest.raises(api.GruError) as caught:
        api.preview("dev", project_dir=project, on_output=None)
    assert caught.value.message.startswith("pulumi preview of stack 'dev' failed (exit code 255)")
    assert "cluster is unreachable" in caught.value.message


def test_setup_through_the_cli_with_the_stand_in(project: Path, tmp_path: Path, fake_pulumi: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text(BROKER_FILE)
    code = main(["--project-dir", str(project), "component", "setup", "--cluster-name", "dev", "--config-file", str(config),
                 "--preview-only", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    document = json.loads(captured.out)
    assert document["replaced"] == [{"section": "broker", "name": "redis"}]
    assert document["changes"] == {"create": 9} and document["deployed"] is False
    assert "Previewing update (dev)" in captured.err


def test_a_failed_up_from_the_cli_has_no_traceback(project: Path, fake_pulumi: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FAKE_PULUMI_FAIL", "preview")
    before = snapshot(project / "stacks")
    code = main(["--project-dir", str(project), "preview", "--stack", "dev"])
    err = capsys.readouterr().err
    assert code == 1
    assert "pulumi preview of stack 'dev' failed" in err and "Traceback" not in err
    assert snapshot(project / "stacks") == before
