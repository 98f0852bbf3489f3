"""Reading a stack's own Pulumi config (`stacks/Pulumi.<stack>.yaml`) without the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# Encrypted values cannot be read without the engine; the program only needs to know they
# are set and secret, so they are passed on as this marker.
ENCRYPTED_PLACEHOLDER = "<encrypted in stack config>"


def read_stack_config(stacks_dir: Path, stack: str) -> tuple[dict[str, str], list[str]]:
    """(config, secret_keys) from stacks/Pulumi.<stack>.yaml; empty when the file is absent."""
    path = stacks_dir / f"Pulumi.{stack}.yaml"
    if not path.exists():
        return {}, []
    document: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    values: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in (document.get("config") or {}).items():
        if isinstance(value, dict) and "secure" in value:
            values[key] = ENCRYPTED_PLACEHOLDER
            secret_keys.append(key)
        elif isinstance(value, str):
            values[key] = value
        elif isinstance(value, bool):
            values[key] = str(value).lower()
        elif isinstance(value, (dict, list)):
            values[key] = yaml.safe_dump(value)
        else:
            values[key] = str(value)
    return values, secret_keys
