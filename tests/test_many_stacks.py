"""`gru preview` and `gru up` over several stacks at once, without the Pulumi engine.

The fake engine here records how many stacks ran at the same moment and emits several lines
per stack, so the bound, the prefixes and the table are checked on real threads. The same on
the Pulumi CLI is in tests/engine/test_api.py.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gru import api

from .test_cli_api import FakeEngine, project, run_cli  # noqa: F401 - the project fixture

BAD_STACK = """\
broker:
  type: redis
  name: redis
task_server:
  type: celery
  name: task_server
  replicas: -1
  broker_resource_name: redis
"""


class CountingEngine(FakeEngine):
    """A FakeEngine whose preview and up take a while, print several lines, and count how many
    stacks are inside them at once."""

    def __init__(self, root: Path, seconds: float = 0.3, lines: int = 20,
                 fail: frozenset[str] = frozenset()) -> None:
        super().__init__(root)
        self.seconds, self.lines, self.fail = seconds, lines, fail
        self.lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0

    def _busy(self, operation: str, stack: str, on_output: api.OnOutput | None) -> None:
        with self.lock:
            self.calls.append((operation, stack))
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            for index in range(self.lines):
                if on_output is not None:
                    on_output(f"{operation} line {index} of {stack}")
                time.sleep(self.seconds / self.lines)
            if stack in self.fail:
                raise api.GruError(f"pulumi {operation} of stack {stack!r} failed (exit code 255): error: the API server refused")
        finally:
            with self.lock:
                self.inside -= 1

    def preview(self, stack: str, *, diff: bool, on_output: api.OnOutput | None) -> api.ChangeSummary:
        self._busy("preview", stack, on_output)
        return api.ChangeSummary({"create": 2, "same": 7} if stack != "dev" else {"same": 9})

    def up(self, stack: str, *, on_output: api.OnOutput | None) -> tuple[api.ChangeSummary, dict[str, tuple[Any, bool]]]:
        self._busy("up", stack, on_output)
        return api.ChangeSummary({"update": 1, "same": 8}), dict(self.values)


def add_stacks(root: Path, *names: str, text: str | None = None) -> None:
    for name in names:
        target = root / "stacks" / f"{name}.yaml"
        if text is None:
            shutil.copy(root / "stacks" / "dev.yaml", target)
        else:
            target.write_text(text)


@pytest.fixture
def counting(project: Path, monkeypatch: pytest.MonkeyPatch) -> CountingEngine:  # noqa: F811
    engine = CountingEngine(project)
    monkeypatch.setattr(api, "PulumiEngine", lambda project_dir=None: engine)
    return engine


def test_all_stacks_preview_at_most_parallel_at_once_with_every_line_prefixed(
        project: Path, counting: CountingEngine, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    add_stacks(project, "eu-1", "eu-2", "us-1", "us-2")
    started = time.monotonic()
    code, out, err = run_cli(project, ["preview", "--all-stacks", "--parallel", "2"], capsys)
    took = time.monotonic() - started
    assert code == 0, err
    assert counting.most_inside == 2
    # Five stacks two at a time: three rounds, not five.
    assert took < 5 * counting.seconds
    prefixes = {f"[{name}]" for name in ("dev", "eu-1", "eu-2", "us-1", "us-2")}
    progress = [line for line in out.splitlines() if line.startswith("[")]
    assert len(progress) >= 5 * counting.lines
    for line in progress:
        prefix, _, text = line.partition(" ")
        assert prefix in prefixes, line
        # Each line whole and its own stack's: never two stacks' output spliced together.
        assert text.lstrip().endswith(f"of {prefix[1:-1]}"), line
    table = out.splitlines()[-7:]
    assert table[0].split() == ["STACK", "CREATE", "UPDATE", "REPLACE", "DELETE", "TIME", "RESULT"]
    assert [row.split()[0] for row in table[1:6]] == ["dev", "eu-1", "eu-2", "us-1", "us-2"]
    assert table[1].split()[1:5] == ["0", "0", "0", "0"] and table[2].split()[1:5] == ["2", "0", "0", "0"]
    assert all(row.split()[-1] == "ok" for row in table[1:6])
    assert table[6] == "5 stacks, all ok"


def test_a_failing_stack_does_not_stop_the_others_and_the_exit_code_says_so(
        project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    add_stacks(project, "eu-1", "us-1")
    add_stacks(project, "broken", text=BAD_STACK)
    engine = CountingEngine(project, fail=frozenset({"eu-1"}))
    monkeypatch.setattr(api, "PulumiEngine", lambda project_dir=None: engine)
    code, out, err = run_cli(project, ["preview", "--all-stacks", "--json"], capsys)
    assert code == 1
    document = json.loads(out)
    assert document["ok"] is False
    runs = {run["stack"]: run for run in document["stacks"]}
    assert list(runs) == ["broken", "dev", "eu-1", "us-1"]
    assert runs["dev"]["ok"] and runs["us-1"]["ok"] and runs["us-1"]["changes"] == {"create": 2, "same": 7}
    # The invalid file never reached the engine; its error names the file and the field.
    assert not runs["broken"]["ok"] and "broken.yaml" in runs["broken"]["error"] and "replicas" in runs["broken"]["error"]
    assert ("preview", "broken") not in engine.calls
    assert not runs["eu-1"]["ok"] and "the API server refused" in runs["eu-1"]["error"]
    assert "stack 'eu-1':" in err and "stack 'broken':" in err and "Traceback" not in err


def test_an_unexpected_error_in_one_stack_is_reported_and_the_others_finish(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    add_stacks(project, "eu-1", "us-1")

    class Buggy(CountingEngine):
        def preview(self, stack: str, *, diff: bool, on_output: api.OnOutput | None) -> api.ChangeSummary:
            if stack == "eu-1":
                raise KeyError("status")
            return super().preview(stack, diff=diff, on_output=on_output)

    lines: list[str] = []
    runs = api.preview_stacks(["us-1", "eu-1", "dev"], project_dir=project, on_output=lines.append,
                              engine=Buggy(project, seconds=0.05))
    assert [run.stack for run in runs] == ["us-1", "eu-1", "dev"]
    assert [run.ok for run in runs] == [True, False, True]
    assert runs[1].error == "unexpected error: KeyError('status')"
    assert any(line.startswith("[dev]  ") for line in lines)  # padded to the longest name


def test_up_of_several_stacks_needs_yes_and_then_updates_each(
        project: Path, counting: CountingEngine, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    add_stacks(project, "eu-1")
    code, out, err = run_cli(project, ["up", "--stack", "dev", "--stack", "eu-1"], capsys)
    assert code == 1 and "--yes" in err and out == ""
    assert counting.calls == []
    code, out, err = run_cli(project, ["up", "--stack", "dev", "--stack", "eu-1", "--yes", "--json"], capsys)
    assert code == 0, err
    document = json.loads(out)
    assert [run["stack"] for run in document["stacks"]] == ["dev", "eu-1"]
    for run in document["stacks"]:
        assert run["changes"] == {"same": 8, "update": 1}
        assert run["outputs"]["redis_url"] == api.SECRET_MASK  # secrets stay masked
    assert sorted(stack for operation, stack in counting.calls if operation == "up") == ["dev", "eu-1"]


@pytest.mark.parametrize("argv, code, message", [
    (["preview", "--stack", "dev", "--all-stacks"], 2, "not allowed with argument"),
    (["up", "--yes"], 2, "one of the arguments --stack --all-stacks is required"),
    (["preview", "--stack", "dev", "--stack", "../etc", "--parallel", "2"], 1, "invalid stack name '../etc'"),
    (["preview", "--stack", "dev", "--stack", "eu-1", "--parallel", "0"], 1, "--parallel must be at least 1"),
])
def test_bad_stack_choices_are_refused_before_any_engine_runs(
        project: Path, counting: CountingEngine, capsys: pytest.CaptureFixture[str],  # noqa: F811
        argv: list[str], code: int, message: str) -> None:
    if code == 2:
        with pytest.raises(SystemExit) as usage:
            run_cli(project, argv, capsys)
        assert usage.value.code == 2 and message in capsys.readouterr().err
    else:
        exit_code, _out, err = run_cli(project, argv, capsys)
        assert exit_code == 1 and message in err and "Traceback" not in err
    assert counting.calls == []


def test_one_stack_keeps_the_single_stack_output(
        project: Path, counting: CountingEngine, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    code, out, err = run_cli(project, ["preview", "--stack", "dev"], capsys)
    assert code == 0, err
    assert "preview of stack 'dev': 9 unchanged" in out
    assert not any(line.startswith("[dev]") for line in out.splitlines())
    assert "STACK" not in out
