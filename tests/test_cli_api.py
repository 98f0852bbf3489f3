"""The `gru` command line and Python API, without the Pulumi engine.

Everything runs on a temporary copy of the project layout (Pulumi.yaml and stacks/), never on
the real stacks/. The engine is either absent (PATH set to an empty directory) or a fake that
records what it was asked to do; tests that need the real Pulumi CLI are in tests/engine/.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.stack_model import SpecError, parse_stack_spec
from gru import api
from gru.cli import main

from .conftest import ROOT

BROKER_FILE = """\
broker:
  type: redis
  name: redis
  max_memory_mb: 256
"""

TASK_SERVER_FILE = """\
task_server:
  type: celery
  name: task_server
  replicas: 2
  concurrency_per_replica: 2
  broker_resource_name: redis
"""

TWO_BROKERS_AND_A_SERVER = """\
# Cluster prod-eu: hand-written header.
# Second header line.
broker:
  - type: redis
    name: redis
    max_memory_mb: 1024
  - type: redis
    name: cache
task_server:
  type: celery
  name: task_server
  broker_resource_name: redis
"""


# --------------------------------------------------------------------------------------------
# Fixtures and fakes
# --------------------------------------------------------------------------------------------


def make_project_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project's layout; HOME and the Pulumi variables isolated from the machine's."""
    root = tmp_path / "project"
    (root / "stacks").mkdir(parents=True)
    shutil.copy(ROOT / "Pulumi.yaml", root / "Pulumi.yaml")
    for name in ("dev.yaml", "Pulumi.dev.yaml"):
        shutil.copy(ROOT / "stacks" / name, root / "stacks" / name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for variable in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE"):
        monkeypatch.delenv(variable, raising=False)
    return root


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_project_layout(tmp_path, monkeypatch)


@pytest.fixture
def no_pulumi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH is an empty directory: no `pulumi` to be found."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return empty


@pytest.fixture
def dummy_pulumi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `pulumi` on PATH that fails if it is ever run: for checks that must stop before it."""
    directory = tmp_path / "fake-bin"
    directory.mkdir()
    executable = directory / "pulumi"
    executable.write_text("#!/bin/sh\necho 'this fake pulumi must not run' >&2\nexit 99\n")
    executable.chmod(0o755)
    monkeypatch.setenv("PATH", str(directory))
    return executable


@pytest.fixture
def no_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


class FakeEngine:
    """Records calls and what the stack file held when the engine ran."""

    def __init__(self, project: Path, *, check_error: api.GruError | None = None,
                 planned: dict[str, int] | None = None, applied: dict[str, int] | None = None,
                 values: dict[str, tuple[Any, bool]] | None = None) -> None:
        self.project = project
        self.check_error = check_error
        self.planned = api.ChangeSummary(planned if planned is not None else {"create": 9})
        self.applied = api.ChangeSummary(applied if applied is not None else {"create": 9})
        self.values = values if values is not None else {"redis_host": ("redis.gru.svc.cluster.local", False),
                                                         "redis_url": ("redis://:pw@redis:6379/0", True)}
        self.calls: list[tuple[str, str]] = []
        self.stack_text_seen: dict[str, str] = {}

    def _saw(self, operation: str, stack: str, on_output: api.OnOutput | None = None) -> None:
        self.calls.append((operation, stack))
        path = self.project / "stacks" / f"{stack}.yaml"
        self.stack_text_seen[operation] = path.read_text() if path.exists() else ""
        if on_output is not None:
            on_output(f"fake {operation} of {stack}")

    def check(self, stack: str, command: str) -> None:
        self.calls.append(("check", stack))
        if self.check_error is not None:
            raise self.check_error

    def preview(self, stack: str, *, diff: bool, on_output: api.OnOutput | None) -> api.ChangeSummary:
        self._saw("preview", stack, on_output)
        return self.planned

    def up(self, stack: str, *, on_output: api.OnOutput | None) -> tuple[api.ChangeSummary, dict[str, tuple[Any, bool]]]:
        self._saw("up", stack, on_output)
        return self.applied, dict(self.values)

    def preview_destroy(self, stack: str, *, on_output: api.OnOutput | None) -> api.ChangeSummary:
        self._saw("preview_destroy", stack, on_output)
        return api.ChangeSummary({"delete": 9})

    def destroy(self, stack: str, *, on_output: api.OnOutput | None) -> api.ChangeSummary:
        self._saw("destroy", stack, on_output)
        return api.ChangeSummary({"delete": 9})

    def outputs(self, stack: str) -> dict[str, tuple[Any, bool]]:
        self._saw("outputs", stack)
        return dict(self.values)


@pytest.fixture
def fake_engine(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEngine]:
    """A FakeEngine that the API (and so the CLI) uses instead of the Pulumi CLI."""
    engine = FakeEngine(project)
    monkeypatch.setattr(api, "PulumiEngine", lambda project_dir=None: engine)
    yield engine


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def names(text: str, section: str) -> list[str]:
    value = yaml.safe_load(text).get(section)
    items = value if isinstance(value, list) else [value] if value else []
    return [item["name"] for item in items]


# --------------------------------------------------------------------------------------------
# merge_components: pure, no engine, no disk
# --------------------------------------------------------------------------------------------


def test_merge_into_a_new_stack_has_just_the_new_components() -> None:
    merged = api.merge_components(None, BROKER_FILE)
    assert yaml.safe_load(merged) == yaml.safe_load(BROKER_FILE)


def test_merge_keeps_other_components_and_replaces_the_same_name_in_place() -> None:
    new = "broker:\n  type: redis\n  name: redis\n  max_memory_mb: 64\n"
    plan = api.plan_merge(TWO_BROKERS_AND_A_SERVER, new)
    data = yaml.safe_load(plan.text)
    assert [b["name"] for b in data["broker"]] == ["redis", "cache"]   # replaced in place, not appended
    assert data["broker"][0] == {"type": "redis", "name": "redis", "max_memory_mb": 64}  # replaced whole, not merged
    assert data["task_server"]["name"] == "task_server"
    assert plan.replaced == (api.ComponentRef("broker", "redis"),)
    assert plan.added == ()
    assert set(plan.kept) == {api.ComponentRef("broker", "cache"), api.ComponentRef("task_server", "task_server")}


def test_merge_appends_new_names_and_matches_by_section_and_name() -> None:
    new = "broker:\n  type: redis\n  name: task_server\n"  # same name as the task server, other section
    plan = api.plan_merge(TWO_BROKERS_AND_A_SERVER, new)
    assert names(plan.text, "broker") == ["redis", "cache", "task_server"]
    assert names(plan.text, "task_server") == ["task_server"]
    assert plan.added == (api.ComponentRef("broker", "task_server"),)


def test_merge_keeps_the_stack_files_header_comment() -> None:
    merged = api.merge_components(TWO_BROKERS_AND_A_SERVER, TASK_SERVER_FILE)
    assert merged.startswith("# Cluster prod-eu: hand-written header.\n# Second header line.\n")


def test_a_broker_file_then_a_task_server_file_gives_both() -> None:
    with pytest.raises(SpecError):  # the task server file alone names a broker it does not have
        parse_stack_spec(TASK_SERVER_FILE.encode(), "task-server.yaml")
    merged = api.merge_components(api.merge_components(None, BROKER_FILE), TASK_SERVER_FILE)
    spec = parse_stack_spec(merged.encode(), "merged")
    assert [b.name for b in spec.brokers] == ["redis"]
    assert [(t.name, t.broker_resource_name, t.replicas) for t in spec.task_servers] == [("task_server", "redis", 2)]


def test_merging_the_same_file_twice_changes_nothing() -> None:
    once = api.merge_components(None, TWO_BROKERS_AND_A_SERVER)
    assert api.merge_components(once, TWO_BROKERS_AND_A_SERVER) == once


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("broker:\n  type: redis\n   name: redis\n", "YAML syntax error"),
        ("brokers:\n  type: redis\n  name: redis\n", "unknown section 'brokers'"),
        ("broker:\n  type: redis\n", "needs a text `name`"),
        ("broker:\n  - {type: redis, name: a}\n  - {type: redis, name: a}\n", "declared twice"),
        ("- broker\n", "top level is not a mapping"),
        ("broker: []\n", "empty list"),
        ("# nothing but a comment\n", "file is empty"),
    ],
)
def test_component_file_shape_problems_name_the_file(text: str, expected: str) -> None:
    with pytest.raises(api.GruError) as caught:
        api.merge_components(None, text, new_name="redis.yaml")
    assert caught.value.message.startswith("redis.yaml: ")
    assert expected in caught.value.message
    assert caught.value.problems and caught.value.problems[0].file == "redis.yaml"


def test_a_syntax_error_is_reported_with_its_line() -> None:
    with pytest.raises(api.GruError) as caught:
        api.merge_components(None, "broker:\n  type: redis\n  name: [unclosed\n", new_name="redis.yaml")
    assert caught.value.problems[0].line is not None


def test_an_invalid_existing_stack_file_is_named_as_such() -> None:
    with pytest.raises(api.GruError) as caught:
        api.merge_components("broker: 3\n", BROKER_FILE, existing_name="stacks/prod.yaml", new_name="redis.yaml")
    assert caught.value.message.startswith("stacks/prod.yaml: ")


# --------------------------------------------------------------------------------------------
# setup: validation before anything is written, then the engine
# --------------------------------------------------------------------------------------------


def test_setup_broker_then_task_server_ends_with_both(project: Path, tmp_path: Path) -> None:
    engine = FakeEngine(project)
    first = api.setup("prod-eu", write(tmp_path / "broker.yaml", BROKER_FILE), yes=True, project_dir=project,
                      engine=engine, on_output=None)
    second = api.setup("prod-eu", write(tmp_path / "ts.yaml", TASK_SERVER_FILE), yes=True, project_dir=project,
                       engine=engine, on_output=None)

    stack_text = (project / "stacks" / "prod-eu.yaml").read_text()
    spec = parse_stack_spec(stack_text.encode(), "prod-eu.yaml")
    assert [b.name for b in spec.brokers] == ["redis"] and [t.name for t in spec.task_servers] == ["task_server"]
    assert first.added == (api.ComponentRef("broker", "redis"),)
    assert second.added == (api.ComponentRef("task_server", "task_server"),)
    assert second.kept == (api.ComponentRef("broker", "redis"),)
    assert first.deployed and second.deployed
    # The engine ran after the file was written, on the merged stack.
    assert engine.calls == [("check", "prod-eu"), ("up", "prod-eu")] * 2
    assert engine.stack_text_seen["up"] == stack_text
    # Pulumi's stack config is created once, telling the user to set the kube context.
    assert first.stack_config_created and not second.stack_config_created
    config_text = (project / "stacks" / "Pulumi.prod-eu.yaml").read_text()
    assert "kubernetes:context" in config_text
    assert yaml.safe_load(config_text) == {"config": {}}
    # Secret outputs are masked.
    assert second.outputs == {"redis_host": "redis.gru.svc.cluster.local", "redis_url": api.SECRET_MASK}


def test_setup_replaces_a_component_with_the_same_name(project: Path, tmp_path: Path) -> None:
    engine = FakeEngine(project)
    bigger = TASK_SERVER_FILE.replace("replicas: 2", "replicas: 8")
    result = api.setup("dev", write(tmp_path / "ts.yaml", bigger), yes=True, project_dir=project, engine=engine, on_output=None)
    assert result.replaced == (api.ComponentRef("task_server", "task_server"),)
    spec = parse_stack_spec((project / "stacks" / "dev.yaml").read_bytes(), "dev.yaml")
    assert [t.replicas for t in spec.task_servers] == [8]
    assert [b.name for b in spec.brokers] == ["redis"]
    assert not result.stack_config_created


def test_setup_rejects_an_invalid_merged_stack_and_writes_nothing(project: Path, tmp_path: Path) -> None:
    stacks = project / "stacks"
    before = snapshot(stacks)
    engine = FakeEngine(project)
    bad = TASK_SERVER_FILE.replace("broker_resource_name: redis", "broker_resource_name: rabbit")
    config = write(tmp_path / "ts.yaml", bad)
    with pytest.raises(api.GruError) as caught:
        api.setup("dev", config, yes=True, project_dir=project, engine=engine)
    assert "no broker named 'rabbit'" in caught.value.message
    assert "nothing was written" in caught.value.message
    # The problem is reported in the component file, at its line.
    problem = caught.value.problems[0]
    assert problem.file.endswith("ts.yaml") and problem.line == 6
    assert snapshot(stacks) == before
    assert engine.calls == []


def test_setup_of_a_new_cluster_with_only_a_task_server_creates_nothing(project: Path, tmp_path: Path) -> None:
    stacks = project / "stacks"
    before = snapshot(stacks)
    with pytest.raises(api.GruError) as caught:
        api.setup("prod-eu", write(tmp_path / "ts.yaml", TASK_SERVER_FILE), yes=True, project_dir=project,
                  engine=FakeEngine(project))
    assert "no broker named 'redis'" in caught.value.message
    assert snapshot(stacks) == before
    assert not (stacks / "prod-eu.yaml").exists() and not (stacks / "Pulumi.prod-eu.yaml").exists()


def test_setup_without_the_pulumi_cli_writes_nothing(project: Path, tmp_path: Path, no_pulumi: Path) -> None:
    stacks = project / "stacks"
    before = snapshot(stacks)
    for preview_only in (False, True):
        with pytest.raises(api.GruError) as caught:
            api.setup("prod-eu", write(tmp_path / "broker.yaml", BROKER_FILE), yes=True, preview_only=preview_only,
                      project_dir=project)
        assert "Pulumi CLI" in caught.value.message
        assert snapshot(stacks) == before
    assert not (project / ".pulumi-state").exists()


def test_setup_without_a_passphrase_writes_nothing(project: Path, tmp_path: Path, dummy_pulumi: Path) -> None:
    stacks = project / "stacks"
    before = snapshot(stacks)
    with pytest.raises(api.GruError) as caught:
        api.setup("prod-eu", write(tmp_path / "broker.yaml", BROKER_FILE), yes=True, project_dir=project)
    assert "PULUMI_CONFIG_PASSPHRASE" in caught.value.message
    assert snapshot(stacks) == before


def test_setup_needs_yes_or_a_confirmation_before_anything(project: Path, tmp_path: Path) -> None:
    engine = FakeEngine(project)
    before = snapshot(project / "stacks")
    with pytest.raises(api.GruError, match="not confirmed"):
        api.setup("prod-eu", write(tmp_path / "broker.yaml", BROKER_FILE), project_dir=project, engine=engine)
    assert engine.calls == [] and snapshot(project / "stacks") == before


def test_setup_preview_only_writes_the_stack_and_previews(project: Path, tmp_path: Path) -> None:
    engine = FakeEngine(project)
    lines: list[str] = []
    result = api.setup("prod-eu", write(tmp_path / "broker.yaml", BROKER_FILE), preview_only=True,
                       project_dir=project, engine=engine, on_output=lines.append)
    assert engine.calls == [("check", "prod-eu"), ("preview", "prod-eu")]
    assert not result.deployed and result.summary.changes == {"create": 9} and result.outputs == {}
    assert names(engine.stack_text_seen["preview"], "broker") == ["redis"]
    assert "fake preview of prod-eu" in lines
    assert any("added broker 'redis'" in line for line in lines)
    # No temporary file is left next to the stack file.
    assert sorted(p.name for p in (project / "stacks").iterdir()) == [
        "Pulumi.dev.yaml", "Pulumi.prod-eu.yaml", "dev.yaml", "prod-eu.yaml"]


def test_setup_declined_keeps_the_file_and_does_not_deploy(project: Path, tmp_path: Path) -> None:
    engine = FakeEngine(project)
    shown: list[api.ChangeSummary] = []

    def decline(summary: api.ChangeSummary) -> bool:
        shown.append(summary)
        return False

    with pytest.raises(api.GruError, match="cancelled"):
        api.setup("prod-eu", write(tmp_path / "broker.yaml", BROKER_FILE), confirm=decline, project_dir=project,
                  engine=engine, on_output=None)
    assert shown == [api.ChangeSummary({"create": 9})]
    assert ("up", "prod-eu") not in engine.calls
    assert (project / "stacks" / "prod-eu.yaml").exists()


def test_setup_confirmed_previews_then_deploys(project: Path, tmp_path: Path) -> None:
    engine = FakeEngine(project)
    result = api.setup("prod-eu", write(tmp_path / "broker.yaml", BROKER_FILE), confirm=lambda summary: True,
                       project_dir=project, engine=engine, on_output=None)
    assert engine.calls == [("check", "prod-eu"), ("preview", "prod-eu"), ("up", "prod-eu")]
    assert result.deployed


def test_setup_engine_failure_after_writing_says_how_to_continue(project: Path, tmp_path: Path) -> None:
    class FailingUp(FakeEngine):
        def up(self, stack: str, *, on_output: api.OnOutput | None) -> tuple[api.ChangeSummary, dict[str, tuple[Any, bool]]]:
            raise api.GruError("pulumi up of stack 'prod-eu' failed (exit code 255): error: cluster unreachable")

    with pytest.raises(api.GruError) as caught:
        api.setup("prod-eu", write(tmp_path / "broker.yaml", BROKER_FILE), yes=True, project_dir=project,
                  engine=FailingUp(project), on_output=None)
    assert "cluster unreachable" in caught.value.message
    assert "python -m gru up --stack prod-eu" in caught.value.message


@pytest.mark.parametrize("cluster", ["../etc", "a b", "Pulumi.dev", "org/prod", ""])
def test_setup_refuses_cluster_names_that_are_not_plain_stack_names(project: Path, tmp_path: Path, cluster: str) -> None:
    before = snapshot(project / "stacks")
    with pytest.raises(api.GruError):
        api.setup(cluster, write(tmp_path / "broker.yaml", BROKER_FILE), yes=True, project_dir=project,
                  engine=FakeEngine(project))
    assert snapshot(project / "stacks") == before


def test_setup_reports_a_missing_component_file(project: Path, tmp_path: Path) -> None:
    with pytest.raises(api.GruError, match="component file .*nope.yaml not found"):
        api.setup("dev", tmp_path / "nope.yaml", yes=True, project_dir=project, engine=FakeEngine(project))


# --------------------------------------------------------------------------------------------
# Embedded defaults: backend and passphrase
# --------------------------------------------------------------------------------------------


def test_default_backend_is_a_local_directory_in_the_project(project: Path) -> None:
    settings = api.engine_settings("dev", project, environ={})
    assert settings.backend_url == f"file://{project.resolve().as_posix()}/.pulumi-state"
    assert settings.default_backend
    assert settings.env_vars["PULUMI_BACKEND_URL"] == settings.backend_url
    assert not (project / ".pulumi-state").exists()  # computing settings writes nothing


def test_dev_gets_an_explicit_empty_passphrase_with_a_warning(project: Path) -> None:
    settings = api.engine_settings("dev", project, environ={})
    assert settings.env_vars["PULUMI_CONFIG_PASSPHRASE"] == ""
    assert any("insecure" in note for note in settings.notes)


@pytest.mark.parametrize("stack", ["prod-eu", "staging", "acme/prod"])
def test_other_stacks_need_a_passphrase(project: Path, stack: str) -> None:
    with pytest.raises(api.GruError) as caught:
        api.engine_settings(stack, project, environ={})
    assert "PULUMI_CONFIG_PASSPHRASE" in caught.value.message
    assert "PULUMI_CONFIG_PASSPHRASE_FILE" in caught.value.message


@pytest.mark.parametrize("environ", [{"PULUMI_CONFIG_PASSPHRASE": "s3cret"}, {"PULUMI_CONFIG_PASSPHRASE_FILE": "/run/pp"}])
def test_a_configured_passphrase_is_left_to_pulumi(project: Path, environ: dict[str, str]) -> None:
    for stack in ("dev", "prod-eu"):
        settings = api.engine_settings(stack, project, environ=environ)
        assert "PULUMI_CONFIG_PASSPHRASE" not in settings.env_vars
        assert settings.notes == ()


def test_a_configured_backend_is_used_as_is(project: Path) -> None:
    settings = api.engine_settings("prod-eu", project, environ={"PULUMI_BACKEND_URL": "https://api.pulumi.com"})
    assert settings.backend_url == "https://api.pulumi.com" and not settings.default_backend
    assert "PULUMI_BACKEND_URL" not in settings.env_vars  # inherited from the environment
    assert "PULUMI_CONFIG_PASSPHRASE" not in settings.env_vars  # the service encrypts secrets


def test_the_backend_in_pulumi_yaml_is_used(project: Path) -> None:
    with (project / "Pulumi.yaml").open("a") as handle:
        handle.write("backend:\n  url: s3://state-bucket/gru\n")
    assert api.engine_settings("prod-eu", project, environ={"PULUMI_CONFIG_PASSPHRASE": "x"}).backend_url == "s3://state-bucket/gru"
    # A shared self-managed backend: even dev needs a real passphrase there.
    with pytest.raises(api.GruError, match="PULUMI_CONFIG_PASSPHRASE"):
        api.engine_settings("dev", project, environ={})


def test_a_kms_secrets_provider_needs_no_passphrase(project: Path) -> None:
    (project / "stacks" / "Pulumi.prod-eu.yaml").write_text("secretsprovider: awskms://alias/gru\nconfig: {}\n")
    settings = api.engine_settings("prod-eu", project, environ={})
    assert "PULUMI_CONFIG_PASSPHRASE" not in settings.env_vars


# --------------------------------------------------------------------------------------------
# preview / up / destroy / outputs through the API, with a fake engine
# --------------------------------------------------------------------------------------------


def test_up_with_yes_applies_at_once(project: Path) -> None:
    engine = FakeEngine(project)
    result = api.up("dev", yes=True, project_dir=project, engine=engine, on_output=None)
    assert engine.calls == [("check", "dev"), ("up", "dev")]
    assert result.summary.changes == {"create": 9}
    assert result.outputs["redis_url"] == api.SECRET_MASK
    assert result.to_json()["has_changes"] is True


def test_up_asks_after_a_preview_and_stops_when_declined(project: Path) -> None:
    engine = FakeEngine(project)
    with pytest.raises(api.GruError, match="cancelled: nothing was changed"):
        api.up("dev", confirm=lambda summary: False, project_dir=project, engine=engine, on_output=None)
    assert engine.calls == [("check", "dev"), ("preview", "dev")]


def test_up_without_yes_or_confirm_refuses_before_the_engine(project: Path) -> None:
    engine = FakeEngine(project)
    with pytest.raises(api.GruError, match="not confirmed"):
        api.up("dev", project_dir=project, engine=engine)
    assert engine.calls == []


def test_up_of_an_invalid_stack_stops_before_the_engine(project: Path) -> None:
    (project / "stacks" / "dev.yaml").write_text(BROKER_FILE.replace("256", "'lots'"))
    engine = FakeEngine(project)
    with pytest.raises(api.GruError, match="max_memory_mb"):
        api.up("dev", yes=True, project_dir=project, engine=engine)
    assert engine.calls == []


def test_destroy_previews_the_deletion_before_asking(project: Path) -> None:
    engine = FakeEngine(project)
    asked: list[api.ChangeSummary] = []

    def agree(summary: api.ChangeSummary) -> bool:
        asked.append(summary)
        return True

    summary = api.destroy("dev", confirm=agree, project_dir=project, engine=engine, on_output=None)
    assert asked == [api.ChangeSummary({"delete": 9})]
    assert engine.calls == [("check", "dev"), ("preview_destroy", "dev"), ("destroy", "dev")]
    assert summary.describe(done=True) == "9 deleted"


def test_outputs_mask_secrets_unless_asked(project: Path) -> None:
    engine = FakeEngine(project)
    assert api.outputs("dev", project_dir=project, engine=engine)["redis_url"] == api.SECRET_MASK
    assert api.outputs("dev", show_secrets=True, project_dir=project, engine=engine)["redis_url"] == "redis://:pw@redis:6379/0"


def test_change_summary_reads_the_automation_api_op_map() -> None:
    from pulumi.automation import OpType

    summary = api.ChangeSummary.of({OpType.CREATE: 3, OpType.SAME: 2, OpType.UPDATE: 0})
    assert summary.changes == {"create": 3, "same": 2}
    assert summary.has_changes and summary.describe() == "3 to create, 2 unchanged"
    assert not api.ChangeSummary.of({OpType.SAME: 5}).has_changes
    assert api.ChangeSummary.of(None).describe() == "no changes"


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------

ENGINE_COMMANDS = [
    ["preview", "--stack", "dev"],
    ["preview", "--stack", "dev", "--diff", "--json"],
    ["up", "--stack", "dev", "--yes"],
    ["destroy", "--stack", "dev", "--yes"],
    ["outputs", "--stack", "dev"],
    ["outputs", "--stack", "dev", "--json"],
    ["component", "setup", "--cluster-name", "prod-eu", "--config-file", "{broker}", "--yes"],
    ["component", "setup", "--cluster-name", "prod-eu", "--config-file", "{broker}", "--preview-only"],
]


def run_cli(project: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["--project-dir", str(project), *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("argv", ENGINE_COMMANDS, ids=lambda argv: " ".join(a for a in argv if not a.startswith("{")))
def test_every_engine_command_explains_a_missing_pulumi_cli(
    project: Path, tmp_path: Path, no_pulumi: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    broker = write(tmp_path / "broker.yaml", BROKER_FILE)
    before = snapshot(project / "stacks")
    code, out, err = run_cli(project, [a.replace("{broker}", str(broker)) for a in argv], capsys)
    assert code == 1
    assert "Pulumi CLI" in err
    assert "https://www.pulumi.com/docs/install/" in err
    assert "curl -fsSL https://get.pulumi.com | sh" in err
    assert "gru render" in err
    assert "Traceback" not in err
    assert snapshot(project / "stacks") == before
    if "--json" in argv:
        document = json.loads(out)
        assert document["ok"] is False and "Pulumi CLI" in document["error"]
    else:
        assert out == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["up", "--stack", "dev"],
        ["destroy", "--stack", "dev"],
        ["component", "setup", "--cluster-name", "prod-eu", "--config-file", "{broker}"],
    ],
)
def test_changes_without_yes_are_refused_when_stdin_is_not_a_terminal(
    project: Path, tmp_path: Path, no_tty: None, fake_engine: FakeEngine, capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    broker = write(tmp_path / "broker.yaml", BROKER_FILE)
    before = snapshot(project / "stacks")
    code, out, err = run_cli(project, [a.replace("{broker}", str(broker)) for a in argv], capsys)
    assert code == 1
    assert "--yes" in err and "not a terminal" in err
    # Only the read-only readiness check ran (CLI, passphrase): nothing previewed or applied.
    assert [call for call in fake_engine.calls if call[0] != "check"] == []
    assert snapshot(project / "stacks") == before


def test_cli_up_on_a_terminal_asks_and_applies_on_yes(
    project: Path, fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal("y\n"))
    code, out, err = run_cli(project, ["up", "--stack", "dev"], capsys)
    assert code == 0
    assert "Do you want to update stack 'dev'? Changes: 9 to create." in err
    assert fake_engine.calls == [("check", "dev"), ("preview", "dev"), ("up", "dev")]
    assert "stack 'dev' is up to date: 9 created" in out


def test_cli_setup_then_up_json(project: Path, tmp_path: Path, fake_engine: FakeEngine, capsys: pytest.CaptureFixture[str]) -> None:
    broker = write(tmp_path / "broker.yaml", BROKER_FILE)
    code, out, err = run_cli(project, ["component", "setup", "--cluster-name", "prod-eu", "--config-file", str(broker),
                                       "--yes", "--json"], capsys)
    assert code == 0, err
    document = json.loads(out)  # exactly one JSON document on stdout
    assert document["ok"] is True and document["deployed"] is True
    assert document["added"] == [{"section": "broker", "name": "redis"}]
    assert document["changes"] == {"create": 9}
    assert document["outputs"]["redis_url"] == "[secret]"
    assert "fake up of prod-eu" in err  # the engine's progress goes to stderr with --json
    assert (project / "stacks" / "prod-eu.yaml").exists()

    code, out, err = run_cli(project, ["up", "--stack", "prod-eu", "--yes", "--json"], capsys)
    assert code == 0
    assert json.loads(out) == {
        "ok": True, "stack": "prod-eu", "changes": {"create": 9}, "has_changes": True,
        "outputs": {"redis_host": "redis.gru.svc.cluster.local", "redis_url": "[secret]"},
    }


def test_cli_outputs_and_preview_text(project: Path, fake_engine: FakeEngine, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(project, ["outputs", "--stack", "dev", "--show-secrets"], capsys)
    assert code == 0 and "redis_url: redis://:pw@redis:6379/0" in out
    code, out, _ = run_cli(project, ["preview", "--stack", "dev", "--diff"], capsys)
    assert code == 0 and "preview of stack 'dev': 9 to create" in out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["deploy"],
        ["preview"],
        ["up", "--stack"],
        ["validate", "--stack", "dev", "--bogus"],
        ["component"],
        ["component", "setup", "--cluster-name", "x"],
        ["component", "setup", "--config-file", "x.yaml"],
        ["outputs", "--stack", "dev", "--json", "extra"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert "usage: gru" in capsys.readouterr().err


def test_validate_json(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(project, ["validate", "--stack", "dev", "--json"], capsys)
    assert code == 0
    document = json.loads(out)
    assert document["ok"] is True and document["stack"] == "dev"
    assert document["file"].endswith("dev.yaml")
    assert [b["name"] for b in document["brokers"]] == ["redis"]
    assert [(t["name"], t["broker_resource_name"]) for t in document["task_servers"]] == [("task_server", "redis")]


def test_validate_json_reports_problems(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "stacks" / "bad.yaml").write_text(TWO_BROKERS_AND_A_SERVER.replace("max_memory_mb: 1024", "max_memory_mb: lots"))
    code, out, err = run_cli(project, ["validate", "--stack", "bad", "--json"], capsys)
    assert code == 1
    document = json.loads(out)
    assert document["ok"] is False
    assert [(p["path"], p["line"]) for p in document["problems"]] == [("broker[0].max_memory_mb", 6)]
    assert "broker[0].max_memory_mb" in err and "Traceback" not in err


def test_validate_text_output_names_the_file_and_the_images(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(project, ["validate", "--stack", "dev"], capsys)
    assert code == 0
    first, *images = out.strip().splitlines()
    assert first.endswith("dev.yaml: valid (1 broker(s), 1 task server(s))")
    assert [line.split(":")[0].strip() for line in images] == ["broker redis", "task server task_server"]


def test_render_json(project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "rendered"
    code, out, _ = run_cli(project, ["render", "--stack", "dev", "--out", str(out_dir), "--json"], capsys)
    assert code == 0
    document = json.loads(out)
    assert document["ok"] is True and document["stack"] == "dev" and document["secrets_redacted"] is True
    files = sorted(p.name for p in out_dir.glob("*.yaml"))
    assert sorted(Path(o["file"]).name for o in document["objects"]) == files and files
    kinds = [o["kind"] for o in document["objects"]]
    assert "StatefulSet" in kinds and "Deployment" in kinds
    assert kinds.index("StatefulSet") < kinds.index("Deployment")  # broker first
    for obj in document["objects"]:
        manifest = yaml.safe_load(Path(obj["file"]).read_text())
        assert (manifest["kind"], manifest["metadata"]["name"]) == (obj["kind"], obj["name"])


def test_render_of_an_invalid_stack_writes_nothing(project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "stacks" / "bad.yaml").write_text("broker:\n  type: kafka\n  name: k\n")
    code, out, err = run_cli(project, ["render", "--stack", "bad", "--out", str(tmp_path / "out"), "--json"], capsys)
    assert code == 1
    assert json.loads(out)["ok"] is False
    assert "unsupported broker type 'kafka'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stack", ["../dev", "a/b/c/d", "Pulumi.dev"])
def test_invalid_stack_names_are_refused(project: Path, capsys: pytest.CaptureFixture[str], stack: str) -> None:
    code, _, err = run_cli(project, ["validate", "--stack", stack], capsys)
    assert code == 1 and "invalid stack name" in err


def test_help_explains_every_command() -> None:
    result = subprocess.run([sys.executable, "-m", "gru", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("validate", "render", "component", "preview", "up", "destroy", "outputs", "Pulumi"):
        assert command in result.stdout
    setup_help = subprocess.run([sys.executable, "-m", "gru", "component", "setup", "--help"], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
    assert setup_help.returncode == 0
    for option in ("--cluster-name", "--config-file", "--preview-only", "--yes"):
        assert option in setup_help.stdout


def test_missing_cli_from_a_real_process_has_no_traceback(project: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty), "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "gru", "--project-dir", str(project), "up", "--stack", "dev", "--yes"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Pulumi CLI" in result.stderr and "Traceback" not in result.stderr


def test_missing_cli_is_reported_before_asking_for_confirmation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["up", "--stack", "dev"]) == 1
    err = capsys.readouterr().err
    assert "needs the Pulumi CLI" in err and "refusing" not in err


def test_a_closed_pipe_gives_no_traceback() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "gru", "validate", "--stack", "dev", "--json"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()  # the reader goes away before gru writes
    _, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err


@pytest.mark.parametrize("flags", [[], ["--yes"], ["--preview-only"]])
def test_component_setup_checks_the_file_before_the_engine(project: Path, tmp_path: Path, no_pulumi: Path,
                                                           capsys: pytest.CaptureFixture[str], flags: list[str]) -> None:
    broken = write(tmp_path / "broken.yaml", "broker:\n  type: redis\n  name: redis\n  Replicas: 2\n")
    before = snapshot(project / "stacks")
    code, _, err = run_cli(project, ["component", "setup", "--cluster-name", "prod-eu",
                                     "--config-file", str(broken), *flags], capsys)
    assert code == 1
    assert "unknown field 'Replicas'" in err and "Pulumi CLI" not in err, err
    assert snapshot(project / "stacks") == before


def test_the_gru_command_is_installed_with_every_subcommand(tmp_path: Path) -> None:
    gru = Path(sys.executable).with_name("gru")
    assert gru.exists(), "install the project (pip install -e .) to get the `gru` command"
    result = subprocess.run([str(gru), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("validate", "render", "component", "preview", "up", "destroy", "outputs"):
        assert command in result.stdout
    # From anywhere inside the checkout, on the checkout's stacks.
    checked = subprocess.run([str(gru), "validate", "--stack", "dev"], cwd=ROOT / "stacks",
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "dev.yaml: valid" in checked.stdout, checked
