"""Upgrading the program: the previous release's program deploys a stack, this commit's program
updates it on the same state, and the engine's plan holds no surprise.

The previous release is the commit named in tests/upgrade/previous-release, taken from the
repository's own history into a scratch directory (`git archive`: CI clones the whole history).
Each shipped stack of that release deploys with its program; then this commit's program
previews (`pulumi preview --json --diff`) and updates the same state. Asserted: no broker
object (StatefulSet, Secret, Services, the password resources, ...) is replaced or deleted,
nothing is replaced at all, every object the upgrade updates is one CHANGELOG.md's
"Upgrading" part of this release names, and a second preview is empty.
"""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest

from ..conftest import ROOT
from .conftest import Cluster, changed_steps, copy_program, new_project
from .test_shipped_stacks import platform_classes, priority_classes

PREVIOUS = (ROOT / "tests" / "upgrade" / "previous-release").read_text().split()[0]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def checkout(commit: str, into: Path) -> Path:
    """The repository at `commit`, as files (no .git), under `into`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit],
                             check=True, capture_output=True, timeout=120).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def upgrading_notes(version: str) -> str:
    """The "Upgrading" part of `version`'s entry in CHANGELOG.md."""
    text = (ROOT / "CHANGELOG.md").read_text()
    entry = re.search(rf"^## {re.escape(version)}\b.*?(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert entry, f"CHANGELOG.md has no entry for {version}"
    part = re.search(r"^### Upgrading\b.*?(?=^### |\Z)", entry.group(0), re.MULTILINE | re.DOTALL)
    assert part, f"CHANGELOG.md's {version} entry has no Upgrading part"
    return part.group(0)


def named_updates(notes: str) -> set[str]:
    """Every `type::name` the notes list as updated, e.g. `kubernetes:core/v1:Secret::redis-credentials`."""
    return set(re.findall(r"`([a-z-]+:[\w/.-]+:\w+::[\w.-]+)`", notes))


def test_the_previous_release_is_an_ancestor_with_a_changelog_entry() -> None:
    subprocess.run(["git", "-C", str(ROOT), "merge-base", "--is-ancestor", PREVIOUS, "HEAD"], check=True, timeout=30)
    assert named_updates(upgrading_notes(VERSION))


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return checkout(PREVIOUS, tmp_path_factory.mktemp("previous-release"))


# The shipped stacks as that release shipped them, and one with every optional field it accepts.
EVERY_FIELD = ROOT / "tests" / "upgrade" / "every-field.yaml"


@pytest.mark.parametrize("stack", ["dev", "example", "rabbitmq", "every-field"])
def test_upgrading_from_the_previous_release_replaces_nothing(
        cluster: Cluster, engine_bin: Path, previous_release: Path, tmp_path: Path,
        tmp_path_factory: pytest.TempPathFactory, stack: str) -> None:
    source = EVERY_FIELD if stack == "every-field" else previous_release / "stacks" / f"{stack}.yaml"
    text = source.read_text()
    with new_project(cluster, engine_bin, tmp_path, tmp_path_factory.getbasetemp() / "pulumi-home",
                     source=previous_release) as project, platform_classes(cluster.kube, priority_classes(text)):
        project.write_stack(stack, text)
        project.init(stack)
        project.up(stack)

        copy_program(ROOT, project.root)
        steps = project.preview_steps(stack)
        changed = changed_steps(steps)
        # Nothing replaced, nothing deleted: the broker's data, passwords and addresses stay.
        assert not {name: op for name, op in changed.items() if op not in ("update", "create")}, changed
        updated = {name for name, op in changed.items() if op == "update"}
        unlisted = updated - named_updates(upgrading_notes(VERSION))
        assert not unlisted, f"updates CHANGELOG.md's {VERSION} Upgrading part does not name: {sorted(unlisted)}"
        print(f"\n[{stack}] upgrade from {PREVIOUS[:8]}: " + (", ".join(sorted(updated)) or "no change"))
        project.up(stack)
        project.pulumi("preview", "--expect-no-changes", stack=stack)
        project.destroy(stack)
