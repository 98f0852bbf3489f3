"""The expected failures of gru: `GruError`, and the `ProblemReport`s of an invalid file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from components.stack_model import Problem, SpecError
from components.stack_model.problems import format_path

__all__ = ["EXIT_FAILED", "GruError", "ProblemReport"]

EXIT_FAILED = 1


@dataclass(frozen=True)
class ProblemReport:
    """One problem in a file the user wrote: which file, where, what, and how to fix it."""

    file: str
    path: str
    message: str
    fix: str
    line: int | None = None

    @classmethod
    def of(cls, file: str, problem: Problem) -> ProblemReport:
        return cls(file, format_path(problem.path), problem.message, problem.fix, problem.line)

    def render(self) -> str:
        where = f"{self.file} line {self.line}" if self.line is not None else self.file
        return f"{where}, {self.path}: {self.message}. Fix: {self.fix}"

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "path": self.path, "message": self.message, "fix": self.fix}


class GruError(Exception):
    """An expected failure, explained: an invalid stack or component file, a missing Pulumi
    CLI or passphrase, a refused confirmation, or a failed Pulumi operation.

    `message` is one paragraph for people (the command line prints it without a traceback),
    `exit_code` what `python -m gru` exits with, and `problems` the individual problems when
    the failure is an invalid file.
    """

    def __init__(self, message: str, *, exit_code: int = EXIT_FAILED, problems: Sequence[ProblemReport] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.problems = tuple(problems)

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict[str, Any]:
        return {"ok": False, "error": self.message, "problems": [p.to_json() for p in self.problems]}

    @classmethod
    def from_spec_error(cls, error: SpecError) -> GruError:
        return cls(str(error), problems=[ProblemReport.of(error.file, p) for p in error.problems])
