"""Stack names, and where a project keeps the files they name (stacks/<stack>.yaml)."""

from __future__ import annotations

import re
from pathlib import Path

from components.program import PROJECT_ROOT

from .errors import GruError

__all__ = ["stacks_dir_of"]

# Pulumi's own rule for stack names, which here also name files: stacks/<name>.yaml.
_STACK_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_NAME_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]+$")


def _project(project_dir: Path | None) -> Path:
    """The project checkout: the one given, else the one the working directory is in (a
    directory with Pulumi.yaml and stacks/), else the one this code was installed from."""
    if project_dir is not None:
        return project_dir.resolve()
    for directory in (Path.cwd(), *Path.cwd().parents):
        if (directory / "Pulumi.yaml").is_file() and (directory / "stacks").is_dir():
            return directory.resolve()
    return PROJECT_ROOT.resolve()


def stacks_dir_of(project_dir: Path | None = None) -> Path:
    """The directory holding `<stack>.yaml` and `Pulumi.<stack>.yaml` (Pulumi.yaml's stackConfigDir)."""
    return _project(project_dir) / "stacks"


def _short_stack_name(stack: str) -> str:
    """The stack's own name, also the stem of its files: `prod` for `prod`, `acme/prod` or
    `acme/gru/prod` (Pulumi Cloud's qualified forms)."""
    segments = stack.split("/")
    if (
        not 1 <= len(segments) <= 3
        or not all(_NAME_SEGMENT.match(s) for s in segments)
        or not _STACK_NAME.match(segments[-1])
        or segments[-1].startswith("Pulumi.")
        or any(s in (".", "..") for s in segments)
    ):
        raise GruError(
            f"invalid stack name {stack!r}: a stack name uses letters, digits, '-', '_' and '.' only "
            "(at most 100 characters, not starting with 'Pulumi.'), optionally qualified as "
            "<org>/<stack> or <org>/<project>/<stack>; it also names the stack's files, stacks/<stack>.yaml "
            "and stacks/Pulumi.<stack>.yaml"
        )
    return segments[-1]
