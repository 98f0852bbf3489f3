"""Problems found in a stack file, and the one exception that carries them all."""

from __future__ import annotations

from dataclasses import dataclass, field

Path = tuple[str | int, ...]
# (path within one component entry, message, fix), for checks that span several fields.
CrossFieldProblem = tuple[tuple[str, ...], str, str]


def format_path(path: Path) -> str:
    """('task_server', 0, 'replicas') -> 'task_server[0].replicas'."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "(top level)"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a stack file: where, what, and how to fix it."""

    path: Path
    message: str
    fix: str
    line: int | None = None

    def render(self) -> str:
        where = format_path(self.path)
        if self.line is not None:
            where = f"line {self.line}, {where}"
        return f"{where}: {self.message}. Fix: {self.fix}"


@dataclass
class SpecError(Exception):
    """A stack file that cannot be deployed. Carries every problem found, not just the first."""

    file: str
    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        count = len(self.problems)
        header = f"{self.file}: {count} problem{'s' if count != 1 else ''} found"
        return "\n".join([header] + [f"  - {p.render()}" for p in self.problems])
