"""The Python API of gru: everything `python -m gru` does, as typed functions.

    from pathlib import Path
    from gru import api

    spec = api.validate("dev")                              # StackSpec, or GruError
    api.render("dev", Path("rendered/dev"))                 # manifests, no engine needed
    result = api.setup("prod-eu", Path("redis.yaml"), yes=True)
    print(api.preview("prod-eu").changes)                   # {"same": 9}

Every expected failure (an invalid stack or component file, a missing Pulumi CLI, no secrets
passphrase, a failed deployment) raises `GruError`, whose `message` is a paragraph meant for
people and whose `exit_code` is what the command line exits with. Anything else is a bug.

The functions that deploy (`setup`, `preview`, `up`, `destroy`, `outputs`) drive the Pulumi
CLI through the Automation API (`pulumi.automation`, a local program whose work_dir is the
project directory), streaming its output line by line to `on_output`. Without a configured
backend they keep state in `<project>/.pulumi-state`; see `engine_settings` for the rules.
Every function takes `project_dir` (default: this project) so tests can point it at a copy,
and the deploying ones take `engine`, an `Engine` to run instead of the Pulumi CLI.

Its building blocks live beside it and are re-exported here: `errors` (GruError), `results`,
`merge` (stack-file merging) and `engine` (the Pulumi CLI, `engine_settings`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components.program import PlaintextPasswordError
from components.stack_model import SpecError, StackSpec, load_stack_spec, stack_file

from .engine import (
    DEV_STACK,
    PULUMI_INSTALL_URL,
    SECRET_MASK,
    STATE_DIR_NAME,
    Engine,
    EngineSettings,
    OnOutput,
    PulumiEngine,
    _masked,
    default_backend_url,
    engine_settings,
    require_pulumi_cli,
)
from .errors import EXIT_FAILED, GruError, ProblemReport
from .many import DEFAULT_PARALLEL, StackRun, all_stacks, run_stacks, table
from .merge import SECTIONS, MergePlan, _validate_merge, merge_components, plan_merge
from .paths import _project, _short_stack_name, stacks_dir_of
from .render import RenderedObject, render_stack, write_manifests
from .results import ChangeSummary, ComponentRef, RenderResult, SetupResult, UpResult

__all__ = [
    "check_engine",
    "DEV_STACK",
    "EXIT_FAILED",
    "PULUMI_INSTALL_URL",
    "SECRET_MASK",
    "SECTIONS",
    "STATE_DIR_NAME",
    "ChangeSummary",
    "ComponentRef",
    "Confirm",
    "DEFAULT_PARALLEL",
    "Engine",
    "EngineSettings",
    "GruError",
    "MergePlan",
    "OnOutput",
    "ProblemReport",
    "PulumiEngine",
    "RenderResult",
    "SetupResult",
    "StackRun",
    "UpResult",
    "all_stacks",
    "default_backend_url",
    "destroy",
    "engine_settings",
    "merge_components",
    "outputs",
    "plan_merge",
    "preview",
    "preview_stacks",
    "render",
    "render_manifests",
    "require_pulumi_cli",
    "setup",
    "stacks_dir_of",
    "table",
    "up",
    "up_stacks",
    "validate",
]

Confirm = Callable[[ChangeSummary], bool]
"""Shown a preview's changes; returns True to apply them."""


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------
# Engine-free commands: validate and render
# --------------------------------------------------------------------------------------------


def validate(stack: str, project_dir: Path | None = None, *, stacks_dir: Path | None = None) -> StackSpec:
    """Check `stacks/<stack>.yaml`; every problem in it is reported at once in the GruError."""
    name = _short_stack_name(stack)
    path = stack_file(stacks_dir or stacks_dir_of(project_dir), name)
    try:
        return load_stack_spec(path, _display(path))
    except SpecError as error:
        raise GruError.from_spec_error(error) from None


def render_manifests(
    stack: str, out_dir: Path, show_secrets: bool = False, project_dir: Path | None = None, *, stacks_dir: Path | None = None
) -> RenderResult:
    """Write the Kubernetes manifests `stack` would create into `out_dir`, one file per object.

    Runs the real program under the SDK's mock engine: no Pulumi CLI, state or cluster. Secret
    values are redacted unless `show_secrets` (their files are then mode 0600). Nothing is
    written when the stack is invalid.
    """
    name = _short_stack_name(stack)
    directory = stacks_dir or stacks_dir_of(project_dir)
    try:
        objects = render_stack(name, directory, show_secrets=show_secrets)
    except SpecError as error:
        raise GruError.from_spec_error(error) from None
    except PlaintextPasswordError as error:
        raise GruError(str(error)) from None
    try:
        files = write_manifests(objects, out_dir)
    except OSError as error:
        raise GruError(f"cannot write the manifests into {_display(out_dir)}: {error.strerror or error}") from None
    return RenderResult(stack, out_dir, tuple(objects), tuple(files), secrets_redacted=not show_secrets)


def render(
    stack: str, out_dir: Path, show_secrets: bool = False, project_dir: Path | None = None, *, stacks_dir: Path | None = None
) -> list[RenderedObject]:
    """`render_manifests`, returning just the rendered objects in creation order."""
    return list(render_manifests(stack, out_dir, show_secrets, project_dir, stacks_dir=stacks_dir).objects)


# --------------------------------------------------------------------------------------------
# Engine commands
# --------------------------------------------------------------------------------------------


def _engine(engine: Engine | None, project_dir: Path | None) -> Engine:
    return engine if engine is not None else PulumiEngine(project_dir)


def check_engine(stack: str, command: str, project_dir: Path | None = None, engine: Engine | None = None) -> None:
    """GruError unless `stack` can be driven here (the Pulumi CLI, a backend, a passphrase)."""
    _engine(engine, project_dir).check(stack, command)


def _require_confirmation(yes: bool, confirm: Confirm | None, what: str) -> None:
    if not yes and confirm is None:
        raise GruError(f"{what} changes the cluster and was not confirmed: pass yes=True, or confirm=<callback> "
                       "to be shown a preview first (on the command line: --yes)")


def preview(
    stack: str,
    diff: bool = False,
    *,
    project_dir: Path | None = None,
    on_output: OnOutput | None = print,
    engine: Engine | None = None,
) -> ChangeSummary:
    """What `up` would change in `stack` (`pulumi preview`, with a rich diff when `diff`)."""
    validate(stack, project_dir)
    runner = _engine(engine, project_dir)
    runner.check(stack, "preview")
    return runner.preview(stack, diff=diff, on_output=on_output)


def up(
    stack: str,
    *,
    yes: bool = False,
    confirm: Confirm | None = None,
    show_secrets: bool = False,
    project_dir: Path | None = None,
    on_output: OnOutput | None = print,
    engine: Engine | None = None,
) -> UpResult:
    """Deploy `stack` (`pulumi up`).

    With `yes`, applies at once. Otherwise previews first and applies only if `confirm(summary)`
    returns True (a preview without changes is applied without asking: it changes nothing).
    Secret outputs come back as "[secret]" unless `show_secrets`.
    """
    _short_stack_name(stack)
    _require_confirmation(yes, confirm, f"up of stack {stack!r}")
    validate(stack, project_dir)
    runner = _engine(engine, project_dir)
    runner.check(stack, "up")
    if not yes and confirm is not None:
        planned = runner.preview(stack, diff=False, on_output=on_output)
        if planned.has_changes and not confirm(planned):
            raise GruError(f"up of stack {stack!r} cancelled: nothing was changed")
    summary, values = runner.up(stack, on_output=on_output)
    return UpResult(stack, summary, _masked(values, show_secrets))


def preview_stacks(
    stacks: list[str],
    diff: bool = False,
    *,
    parallel: int = DEFAULT_PARALLEL,
    project_dir: Path | None = None,
    on_output: OnOutput | None = print,
    engine: Engine | None = None,
) -> list[StackRun]:
    """`preview` of every stack in `stacks` (see `all_stacks`), at most `parallel` at once.

    Each stack's output lines reach `on_output` prefixed "[<stack>] "; a stack that fails
    (invalid file, engine error) is a StackRun with its error and does not stop the others."""
    runner = _engine(engine, project_dir)

    def one(stack: str, output: OnOutput | None) -> tuple[ChangeSummary, dict[str, Any] | None]:
        return preview(stack, diff, project_dir=project_dir, on_output=output, engine=runner), None

    return run_stacks(stacks, one, parallel=parallel, on_output=on_output)


def up_stacks(
    stacks: list[str],
    *,
    yes: bool = False,
    show_secrets: bool = False,
    parallel: int = DEFAULT_PARALLEL,
    project_dir: Path | None = None,
    on_output: OnOutput | None = print,
    engine: Engine | None = None,
) -> list[StackRun]:
    """`up` of every stack in `stacks`, at most `parallel` at once, each StackRun carrying the
    stack's outputs. Needs `yes`: review the changes with `preview_stacks` first."""
    if not yes:
        raise GruError(f"up of {len(stacks)} stacks at once changes their clusters and asks no question per stack: "
                       "pass yes=True (on the command line: --yes) after reviewing `python -m gru preview` of "
                       "the same stacks")
    runner = _engine(engine, project_dir)

    def one(stack: str, output: OnOutput | None) -> tuple[ChangeSummary, dict[str, Any] | None]:
        result = up(stack, yes=True, show_secrets=show_secrets, project_dir=project_dir, on_output=output, engine=runner)
        return result.summary, {"outputs": result.outputs}

    return run_stacks(stacks, one, parallel=parallel, on_output=on_output)


def destroy(
    stack: str,
    *,
    yes: bool = False,
    confirm: Confirm | None = None,
    project_dir: Path | None = None,
    on_output: OnOutput | None = print,
    engine: Engine | None = None,
) -> ChangeSummary:
    """Delete every resource of `stack` (`pulumi destroy`); the stack and its history remain.

    The broker's volume is retained by Kubernetes (its claim has a retain policy) and so are
    the queued tasks on it. Confirmation works as for `up`, on a preview of the deletion.
    """
    _short_stack_name(stack)
    _require_confirmation(yes, confirm, f"destroy of stack {stack!r}")
    runner = _engine(engine, project_dir)
    runner.check(stack, "destroy")
    if not yes and confirm is not None:
        planned = runner.preview_destroy(stack, on_output=on_output)
        if planned.has_changes and not confirm(planned):
            raise GruError(f"destroy of stack {stack!r} cancelled: nothing was deleted")
    return runner.destroy(stack, on_output=on_output)


def outputs(
    stack: str,
    *,
    show_secrets: bool = False,
    project_dir: Path | None = None,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """The stack's outputs (`pulumi stack output`); secret ones are "[secret]" unless asked."""
    _short_stack_name(stack)
    runner = _engine(engine, project_dir)
    runner.check(stack, "outputs")
    return _masked(runner.outputs(stack), show_secrets)


# --------------------------------------------------------------------------------------------
# setup: a component file into a cluster's stack, then deployed
# --------------------------------------------------------------------------------------------


def _stack_config_text(cluster: str) -> str:
    return (
        f"# Pulumi's own config for stack {cluster!r}; its components are in stacks/{cluster}.yaml.\n"
        "# Before deploying, name the kube context of the cluster to deploy to (otherwise your\n"
        "# kubeconfig's current context is used):\n"
        f"#   pulumi config set --stack {cluster} kubernetes:context <kube-context>\n"
        "# Optionally, a broker's password (otherwise one is generated and kept in the stack's state):\n"
        f"#   pulumi config set --stack {cluster} --secret <broker name>-password   (prompts for the value)\n"
        "config: {}\n"
    )


def _stack_file_header(cluster: str) -> str:
    return (
        f"# Components of cluster {cluster!r} (Pulumi stack {cluster!r}); see the README's stack file reference.\n"
        "# Written by `python -m gru component setup`, which upserts components by section and name.\n"
    )


def _read_text(path: Path, role: str) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise GruError(f"{role} {_display(path)} not found") from None
    except IsADirectoryError:
        raise GruError(f"{role} {_display(path)} is a directory, not a YAML file") from None
    except UnicodeDecodeError:
        raise GruError(f"{role} {_display(path)} is not UTF-8 text; save it as UTF-8") from None
    except OSError as error:
        raise GruError(f"cannot read {role} {_display(path)}: {error.strerror or error}") from None


def _write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file in the same directory, then rename: readers (and a
    crash) see the old file or the new one, never half of one."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _plain_cluster_name(cluster_name: str) -> str:
    """`component setup` writes stacks/<cluster>.yaml: a plain stack name, no org or project."""
    cluster = _short_stack_name(cluster_name)
    if cluster != cluster_name:
        raise GruError(f"cluster name {cluster_name!r} must be a plain stack name (no '/'), like 'prod-eu'")
    return cluster


def _plan_setup(cluster: str, config_file: Path | str, project_dir: Path | None) -> tuple[Path, Path, MergePlan]:
    """Steps 1 and 2 of `setup` without the engine: (stacks dir, stack file, validated merge)."""
    directory = stacks_dir_of(project_dir)
    if not directory.is_dir():
        raise GruError(f"the stacks directory {_display(directory)} does not exist: is {_project(project_dir)} the gru project?")
    path = stack_file(directory, cluster)
    config_path = Path(config_file)
    config_display, stack_display = _display(config_path), _display(path)
    new_text = _read_text(config_path, "component file")
    existing_text = _read_text(path, "stack file") if path.exists() else None
    plan = plan_merge(existing_text, new_text, existing_name=stack_display, new_name=config_display,
                      header_if_new=_stack_file_header(cluster))
    _validate_merge(plan, stack_display, f"{config_display} merged into {stack_display}")
    return directory, path, plan


def validate_setup(cluster_name: str, config_file: Path | str, project_dir: Path | None = None) -> None:
    """What `setup` checks before it needs the engine: the component file and the merged stack.
    Raises GruError (or SpecError) exactly as `setup` would; writes nothing."""
    _plan_setup(_plain_cluster_name(cluster_name), config_file, project_dir)


def setup(
    cluster_name: str,
    config_file: Path | str,
    *,
    preview_only: bool = False,
    yes: bool = False,
    confirm: Confirm | None = None,
    project_dir: Path | None = None,
    on_output: OnOutput | None = print,
    engine: Engine | None = None,
) -> SetupResult:
    """Add (or replace) the components of `config_file` in cluster `cluster_name`, and deploy.

    `config_file` has the stack file's format (`broker` and/or `task_server`, each a mapping or
    a list of mappings). Its components are upserted by (section, name) into
    `stacks/<cluster>.yaml`, keeping the ones already there, so a broker file and then a task
    server file naming that broker end up both in the stack. In order:

    1. the component file is read and shape-checked, and merged with the stack file;
    2. the merged stack is validated as a whole (problems are reported in the file and at the
       line they come from), and the engine is checked (Pulumi CLI, passphrase);
       any failure so far raises GruError with nothing written;
    3. the stack file is written atomically, and `stacks/Pulumi.<cluster>.yaml` is created
       when absent (with a note to set `kubernetes:context`);
    4. `preview_only`: a preview; `yes`: `up`; otherwise a preview, `confirm(summary)`, `up`.
       The stack file stays written if the engine then fails or the change is declined:
       `python -m gru up --stack <cluster>` deploys it later, `git checkout` reverts it.
    """
    cluster = _plain_cluster_name(cluster_name)
    if not preview_only:
        _require_confirmation(yes, confirm, f"setup of cluster {cluster!r}")
    directory, path, plan = _plan_setup(cluster, config_file, project_dir)
    stack_display = _display(path)
    runner = _engine(engine, project_dir)
    runner.check(cluster, "component setup")

    # Nothing has been written so far; from here on the stack file holds the merged stack.
    try:
        _write_atomically(path, plan.text)
    except OSError as error:
        raise GruError(f"cannot write {stack_display}: {error.strerror or error}; it was not changed") from None
    config_path_out = directory / f"Pulumi.{cluster}.yaml"
    created = False
    try:
        with config_path_out.open("x", encoding="utf-8") as handle:
            handle.write(_stack_config_text(cluster))
        created = True
    except FileExistsError:
        pass
    except OSError as error:
        raise GruError(f"cannot create {_display(config_path_out)}: {error.strerror or error}") from None

    if on_output is not None:
        changes = [f"added {r}" for r in plan.added] + [f"replaced {r}" for r in plan.replaced] + [f"kept {r}" for r in plan.kept]
        on_output(f"{stack_display}: " + "; ".join(changes))
        if plan.dropped_comments:
            on_output(f"gru: note: comments inside {stack_display} below its header were not kept")
        if created:
            on_output(f"created {_display(config_path_out)}: set the cluster's kube context with "
                      f"`pulumi config set --stack {cluster} kubernetes:context <kube-context>`")

    def result(deployed: bool, summary: ChangeSummary, values: dict[str, Any]) -> SetupResult:
        return SetupResult(cluster, path, config_path_out, created, plan.added, plan.replaced, plan.kept, deployed, summary, values)

    def after_write(error: GruError) -> GruError:
        return GruError(f"{error.message}\n{stack_display} keeps the new components; fix the problem and run "
                        f"`python -m gru up --stack {cluster}` (or revert the file).", exit_code=error.exit_code, problems=error.problems)

    try:
        if preview_only:
            return result(False, runner.preview(cluster, diff=False, on_output=on_output), {})
        planned = runner.preview(cluster, diff=False, on_output=on_output) if not yes and confirm is not None else None
    except GruError as error:
        raise after_write(error) from None
    if planned is not None and confirm is not None and planned.has_changes and not confirm(planned):
        raise GruError(f"setup of cluster {cluster!r} cancelled before deploying: {stack_display} keeps the new "
                       f"components; deploy them with `python -m gru up --stack {cluster}`, or revert the file")
    try:
        summary, values = runner.up(cluster, on_output=on_output)
    except GruError as error:
        raise after_write(error) from None
    return result(True, summary, _masked(values, show_secrets=False))
