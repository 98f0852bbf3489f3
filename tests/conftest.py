"""Shared fixtures: the real program evaluated under the mock engine, from YAML written to a
temporary stacks directory."""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "worker"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from components.program import run  # noqa: E402
from gru.mock_engine import Evaluation, evaluate  # noqa: E402

SEED_YAML = (ROOT / "stacks" / "dev.yaml").read_text()

EvaluateYaml = Callable[..., Evaluation]
# The characters a broker URL must encode; every generated test password ends with them.
URL_SPECIALS = "@:/%#?"


def make_password() -> str:
    """A fresh password for one test run: no credential lives in the test files."""
    return secrets.token_urlsafe(12) + URL_SPECIALS


@pytest.fixture
def stacks_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "stacks"
    directory.mkdir()
    return directory


@pytest.fixture
def evaluate_yaml(stacks_dir: Path) -> EvaluateYaml:
    """Write `text` as stacks/<stack>.yaml and evaluate the real program for that stack."""

    def _evaluate(text: str | bytes, stack: str = "test", config: dict[str, str] | None = None,
                  secret_keys: list[str] | None = None, into: Evaluation | None = None,
                  stable_secrets: bool = False) -> Evaluation:
        data = text.encode() if isinstance(text, str) else text
        (stacks_dir / f"{stack}.yaml").write_bytes(data)
        return evaluate(lambda: run(stacks_dir), stack=stack, config=config, secret_keys=secret_keys, into=into,
                        stable_secrets=stable_secrets)

    return _evaluate


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
