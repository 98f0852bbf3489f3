"""Several stacks at once: one operation run on many stacks concurrently, with a bound.

A platform team keeps one stack per cluster and often changes all of them together. Each
stack runs in a thread of its own (the engine work is the Pulumi CLI's, in its own process),
its output lines prefixed with its name; a stack that fails is reported and never stops the
others. The runs come back in the order the stacks were given, for one table at the end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .engine import OnOutput
from .errors import GruError
from .paths import _short_stack_name, stacks_dir_of
from .results import ChangeSummary

__all__ = ["DEFAULT_PARALLEL", "StackRun", "all_stacks", "run_stacks", "table"]

# Each stack's preview or up is a Pulumi CLI, its language host and the program: a few hundred
# MB and most of a core while it plans. Four at once keep a 2-core CI runner busy, not thrashing.
DEFAULT_PARALLEL = 4
# The change kinds a table shows, in this order ("same" is not a change).
TABLE_CHANGES = ("create", "update", "replace", "delete")


@dataclass(frozen=True)
class StackRun:
    """One stack's part of a many-stack operation: its changes, or the error that ended it."""

    stack: str
    summary: ChangeSummary | None
    error: str | None
    seconds: float
    # What the operation returned beyond its changes (up: the masked outputs).
    extra: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"stack": self.stack, "ok": self.ok, "seconds": round(self.seconds, 1)}
        if self.summary is not None:
            document.update(self.summary.to_json())
        if self.error is not None:
            document["error"] = self.error
        if self.extra:
            document.update(self.extra)
        return document


def all_stacks(project_dir: Path | None = None) -> list[str]:
    """Every stack the project declares: the names of its stacks/<stack>.yaml files."""
    directory = stacks_dir_of(project_dir)
    names = sorted(p.stem for p in directory.glob("*.yaml") if not p.name.startswith("Pulumi."))
    if not names:
        raise GruError(f"--all-stacks: {directory} holds no stack file (<stack>.yaml); nothing to do")
    return names


def _unique(stacks: Sequence[str]) -> list[str]:
    if not stacks:
        raise GruError("no stack given: name one or more with --stack, or use --all-stacks")
    for stack in stacks:
        _short_stack_name(stack)  # every name checked before any stack starts
    return list(dict.fromkeys(stacks))


Operation = Callable[[str, OnOutput | None], tuple[ChangeSummary, dict[str, Any] | None]]
"""One stack's operation: its name and where its output goes -> its changes and extras."""


def run_stacks(stacks: Sequence[str], operation: Operation, *, parallel: int = DEFAULT_PARALLEL,
               on_output: OnOutput | None = print) -> list[StackRun]:
    """`operation` on every stack, at most `parallel` at once; one StackRun per stack, in order.

    Each output line reaches `on_output` as "[<stack>] <line>", one whole line at a time."""
    if parallel < 1:
        raise GruError(f"--parallel must be at least 1, not {parallel}")
    names = _unique(stacks)
    width = max(len(name) for name in names)
    lock = threading.Lock()

    def prefixed(stack: str) -> OnOutput | None:
        if on_output is None:
            return None
        sink = on_output

        def show(line: str) -> None:
            with lock:
                for part in str(line).rstrip("\n").split("\n"):
                    sink(f"[{stack}]{' ' * (width - len(stack))} {part}")

        return show

    def one(stack: str) -> StackRun:
        started = time.monotonic()
        try:
            summary, extra = operation(stack, prefixed(stack))
        except GruError as error:
            return StackRun(stack, None, error.message, time.monotonic() - started)
        except Exception as error:  # noqa: BLE001 - a bug in one stack's run must not end the others'
            return StackRun(stack, None, f"unexpected error: {error!r}", time.monotonic() - started)
        return StackRun(stack, summary, None, time.monotonic() - started, extra)

    with ThreadPoolExecutor(max_workers=min(parallel, len(names)), thread_name_prefix="gru-stack") as pool:
        return list(pool.map(one, names))


def table(runs: Sequence[StackRun]) -> str:
    """One line per stack: its name, its changes by kind, its time and its result."""
    rows = [["STACK", *(kind.upper() for kind in TABLE_CHANGES), "TIME", "RESULT"]]
    for run in runs:
        changes = run.summary.changes if run.summary is not None else {}
        counts = [str(changes.get(kind, 0)) if run.summary is not None else "-" for kind in TABLE_CHANGES]
        result = "ok" if run.ok else "failed: " + (run.error or "").splitlines()[0][:160]
        rows.append([run.stack, *counts, f"{run.seconds:.0f}s", result])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join([*(cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])), row[-1]]) for row in rows]
    failed = sum(1 for run in runs if not run.ok)
    lines.append(f"{len(runs)} stacks, {failed} failed" if failed else f"{len(runs)} stacks, all ok")
    return "\n".join(lines)
