"""What gru's operations return: change summaries, and the results of `up`, `setup` and `render`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .render import RenderedObject

__all__ = ["ChangeSummary", "ComponentRef", "RenderResult", "SetupResult", "UpResult"]


@dataclass(frozen=True)
class ChangeSummary:
    """How many resources an operation changes, by Pulumi operation: {"create": 9, "same": 2}."""

    changes: dict[str, int] = field(default_factory=dict)

    _WORDS: ClassVar[dict[str, tuple[str, str]]] = {
        "create": ("to create", "created"),
        "update": ("to update", "updated"),
        "delete": ("to delete", "deleted"),
        "replace": ("to replace", "replaced"),
        "same": ("unchanged", "unchanged"),
    }

    @classmethod
    def of(cls, op_map: Mapping[Any, int] | None) -> ChangeSummary:
        """From the Automation API's OpMap, whose keys are OpType enums or plain strings."""
        changes: dict[str, int] = {}
        for op, count in (op_map or {}).items():
            name = str(getattr(op, "value", op))
            if count:
                changes[name] = changes.get(name, 0) + int(count)
        return cls(dict(sorted(changes.items())))

    @property
    def has_changes(self) -> bool:
        return any(count for op, count in self.changes.items() if op != "same")

    def describe(self, done: bool = False) -> str:
        """'9 to create, 2 unchanged' (or '9 created, ...' once done); 'no changes' when empty."""
        if not self.changes:
            return "no changes"
        parts = []
        for op, count in self.changes.items():
            words = self._WORDS.get(op)
            parts.append(f"{count} {words[1 if done else 0]}" if words else f"{count} {op}")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"changes": dict(self.changes), "has_changes": self.has_changes}


@dataclass(frozen=True)
class UpResult:
    """What `up` changed, and the stack's outputs afterwards (secrets masked unless asked)."""

    stack: str
    summary: ChangeSummary
    outputs: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"stack": self.stack, **self.summary.to_json(), "outputs": dict(self.outputs)}


@dataclass(frozen=True)
class ComponentRef:
    """A component of a stack file, identified as `setup` upserts it: by section and name."""

    section: str
    name: str

    def __str__(self) -> str:
        return f"{self.section} {self.name!r}"

    def to_json(self) -> dict[str, str]:
        return {"section": self.section, "name": self.name}


@dataclass(frozen=True)
class SetupResult:
    """What `setup` did: the stack file's merge, whether it created the stack's Pulumi config,
    and the engine's preview (preview_only) or update (deployed)."""

    cluster: str
    stack_file: Path
    stack_config_file: Path
    stack_config_created: bool
    added: tuple[ComponentRef, ...]
    replaced: tuple[ComponentRef, ...]
    kept: tuple[ComponentRef, ...]
    deployed: bool
    summary: ChangeSummary
    outputs: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "stack_file": str(self.stack_file),
            "stack_config_file": str(self.stack_config_file),
            "stack_config_created": self.stack_config_created,
            "added": [c.to_json() for c in self.added],
            "replaced": [c.to_json() for c in self.replaced],
            "kept": [c.to_json() for c in self.kept],
            "deployed": self.deployed,
            **self.summary.to_json(),
            "outputs": dict(self.outputs),
        }


@dataclass(frozen=True)
class RenderResult:
    """The rendered objects, in creation order, and the file each was written to."""

    stack: str
    out_dir: Path
    objects: tuple[RenderedObject, ...]
    files: tuple[Path, ...]
    secrets_redacted: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "out_dir": str(self.out_dir),
            "secrets_redacted": self.secrets_redacted,
            "objects": [
                {"file": str(path), "kind": obj.kind, "namespace": obj.namespace, "name": obj.name}
                for obj, path in zip(self.objects, self.files, strict=True)
            ],
        }
