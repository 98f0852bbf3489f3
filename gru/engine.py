"""The deployment engine: the Pulumi CLI driven through the Automation API, and its settings."""

from __future__ import annotations

import inspect
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from .errors import GruError
from .paths import _project, _short_stack_name, stacks_dir_of
from .results import ChangeSummary

__all__ = [
    "DEV_STACK",
    "PULUMI_INSTALL_URL",
    "SECRET_MASK",
    "STATE_DIR_NAME",
    "Engine",
    "EngineSettings",
    "OnOutput",
    "PulumiEngine",
    "default_backend_url",
    "engine_settings",
    "require_pulumi_cli",
]

OnOutput = Callable[[str], object]
"""Receives the engine's output, one line at a time, as it is produced."""

DEV_STACK = "dev"
STATE_DIR_NAME = ".pulumi-state"
PULUMI_INSTALL_URL = "https://www.pulumi.com/docs/install/"
SECRET_MASK = "[secret]"


def require_pulumi_cli(command: str) -> str:
    """The path of the `pulumi` executable; GruError explaining how to get it when absent."""
    found = shutil.which("pulumi")
    if found:
        return found
    raise GruError(_missing_cli_message(command))


def _missing_cli_message(command: str) -> str:
    hint = ""
    home_cli = Path.home() / ".pulumi" / "bin" / "pulumi"
    if home_cli.is_file():
        hint = f" (one is installed at {home_cli} but that directory is not on PATH: export PATH=\"$HOME/.pulumi/bin:$PATH\")"
    return (
        f"`python -m gru {command}` needs the Pulumi CLI (`pulumi`), which is not on PATH{hint}; gru drives it to "
        f"deploy, preview and read stacks. Install it from {PULUMI_INSTALL_URL} , e.g. "
        "`curl -fsSL https://get.pulumi.com | sh`, then open a new shell. `python -m gru render` and `python -m gru validate` "
        "work without it: they show what a stack would create without any engine or cluster."
    )


@dataclass(frozen=True)
class EngineSettings:
    """The backend a stack's state lives in and the environment the Pulumi CLI gets."""

    backend_url: str
    default_backend: bool
    env_vars: dict[str, str]
    notes: tuple[str, ...] = ()


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _project_backend_url(project_dir: Path) -> str | None:
    backend = _read_yaml_mapping(project_dir / "Pulumi.yaml").get("backend")
    url = backend.get("url") if isinstance(backend, dict) else None
    return url.strip() if isinstance(url, str) and url.strip() else None


def default_backend_url(project_dir: Path | None = None) -> str:
    """The embedded default: a local file backend inside the project (git-ignored)."""
    return "file://" + (_project(project_dir) / STATE_DIR_NAME).as_posix()


def engine_settings(stack: str, project_dir: Path | None = None, environ: Mapping[str, str] | None = None) -> EngineSettings:
    """Backend and passphrase for `stack`, or a GruError. Pure: reads files, writes nothing.

    Backend: $PULUMI_BACKEND_URL, else `backend.url` in Pulumi.yaml, else the embedded default
    `file://<project>/.pulumi-state`. (A `pulumi login` alone is not consulted: set one of the
    two to share state with plain `pulumi` commands.)

    Passphrase: a stack whose secrets are encrypted with a passphrase (any stack on a
    self-managed backend, unless its `secretsprovider` is a KMS) needs PULUMI_CONFIG_PASSPHRASE
    or PULUMI_CONFIG_PASSPHRASE_FILE. Only the `dev` stack on a local file backend falls back,
    explicitly, to an empty passphrase: insecure, for a developer's own machine.
    """
    root = _project(project_dir)
    env = os.environ if environ is None else environ
    short = _short_stack_name(stack)
    env_vars: dict[str, str] = {}
    notes: list[str] = []

    configured = (env.get("PULUMI_BACKEND_URL") or "").strip() or _project_backend_url(root)
    url = configured or default_backend_url(root)
    if not configured:
        env_vars["PULUMI_BACKEND_URL"] = url

    stack_config = _read_yaml_mapping(stacks_dir_of(root) / f"Pulumi.{short}.yaml")
    provider = stack_config.get("secretsprovider")
    service_backend = url.startswith(("https://", "http://"))
    if isinstance(provider, str) and provider and not provider.startswith("passphrase"):
        needs_passphrase = False  # a KMS or the service encrypts this stack's secrets
    else:
        needs_passphrase = not service_backend or bool(provider) or "encryptionsalt" in stack_config
    has_passphrase = "PULUMI_CONFIG_PASSPHRASE" in env or bool(env.get("PULUMI_CONFIG_PASSPHRASE_FILE"))
    if needs_passphrase and not has_passphrase:
        if short == DEV_STACK and url.startswith("file://"):
            env_vars["PULUMI_CONFIG_PASSPHRASE"] = ""
            notes.append(
                f"gru: stack {DEV_STACK!r} uses an empty secrets passphrase (insecure: anyone who can read "
                f"{url} can read its secrets; fine for a developer's own cluster). Set PULUMI_CONFIG_PASSPHRASE "
                "to use a real one."
            )
        else:
            where = "the project's local state backend" if not configured else "its state backend"
            raise GruError(
                f"stack {stack!r} encrypts its secrets (such as the broker password) with a passphrase, kept in "
                f"{where} {url}, and no passphrase is set. Set PULUMI_CONFIG_PASSPHRASE to the stack's passphrase "
                "(or PULUMI_CONFIG_PASSPHRASE_FILE to a file holding it) and keep it safe: it is the only way to "
                f"decrypt this stack's secrets. Only the {DEV_STACK!r} stack on a local backend falls back to an "
                "empty passphrase."
            )
    env_vars.setdefault("PULUMI_SKIP_UPDATE_CHECK", env.get("PULUMI_SKIP_UPDATE_CHECK", "true"))
    return EngineSettings(url, not configured, env_vars, tuple(notes))


class Engine(Protocol):
    """What gru needs from a deployment engine. `PulumiEngine` is the real one; tests use fakes.

    `check` raises GruError when the engine cannot run for `stack` (missing CLI, no passphrase)
    and is called before anything is written. Outputs are name -> (value, is_secret).
    """

    def check(self, stack: str, command: str) -> None: ...

    def preview(self, stack: str, *, diff: bool, on_output: OnOutput | None) -> ChangeSummary: ...

    def up(self, stack: str, *, on_output: OnOutput | None) -> tuple[ChangeSummary, dict[str, tuple[Any, bool]]]: ...

    def preview_destroy(self, stack: str, *, on_output: OnOutput | None) -> ChangeSummary: ...

    def destroy(self, stack: str, *, on_output: OnOutput | None) -> ChangeSummary: ...

    def outputs(self, stack: str) -> dict[str, tuple[Any, bool]]: ...


def _streams(method: Callable[..., Any], on_output: OnOutput | None) -> dict[str, Any]:
    """Stream stdout, and stderr where this SDK release can (`on_error` is newer than some we support)."""
    streams: dict[str, Any] = {"on_output": on_output}
    if "on_error" in inspect.signature(method).parameters:
        streams["on_error"] = on_output
    return streams


class PulumiEngine:
    """The Pulumi CLI, driven through the Automation API with the project as a local program."""

    def __init__(self, project_dir: Path | None = None) -> None:
        self.project_dir = _project(project_dir)
        self._noted: set[str] = set()

    def check(self, stack: str, command: str) -> None:
        require_pulumi_cli(command)
        engine_settings(stack, self.project_dir)

    def preview(self, stack: str, *, diff: bool, on_output: OnOutput | None) -> ChangeSummary:
        workspace_stack = self._stack(stack, "preview", create=True, on_output=on_output)
        result = self._run("preview", stack, lambda: workspace_stack.preview(diff=diff, **_streams(workspace_stack.preview, on_output)))
        return ChangeSummary.of(result.change_summary)

    def up(self, stack: str, *, on_output: OnOutput | None) -> tuple[ChangeSummary, dict[str, tuple[Any, bool]]]:
        workspace_stack = self._stack(stack, "up", create=True, on_output=on_output)
        result = self._run("up", stack, lambda: workspace_stack.up(show_secrets=False, **_streams(workspace_stack.up, on_output)))
        outputs = {name: (value.value, value.secret) for name, value in result.outputs.items()}
        return ChangeSummary.of(result.summary.resource_changes), outputs

    def preview_destroy(self, stack: str, *, on_output: OnOutput | None) -> ChangeSummary:
        workspace_stack = self._stack(stack, "destroy", create=False, on_output=on_output)
        result = self._run("destroy (preview)", stack,
                           lambda: workspace_stack.preview_destroy(**_streams(workspace_stack.preview_destroy, on_output)))
        return ChangeSummary.of(result.change_summary)

    def destroy(self, stack: str, *, on_output: OnOutput | None) -> ChangeSummary:
        workspace_stack = self._stack(stack, "destroy", create=False, on_output=on_output)
        result = self._run("destroy", stack,
                           lambda: workspace_stack.destroy(show_secrets=False, **_streams(workspace_stack.destroy, on_output)))
        return ChangeSummary.of(result.summary.resource_changes)

    def outputs(self, stack: str) -> dict[str, tuple[Any, bool]]:
        workspace_stack = self._stack(stack, "outputs", create=False, on_output=None)
        values = self._run("stack output", stack, workspace_stack.outputs)
        return {name: (value.value, value.secret) for name, value in values.items()}

    def _stack(self, stack: str, command: str, *, create: bool, on_output: OnOutput | None) -> Any:
        from pulumi import automation as auto  # imported late: `gru render` never needs it

        require_pulumi_cli(command)
        settings = engine_settings(stack, self.project_dir)
        if settings.default_backend:
            (self.project_dir / STATE_DIR_NAME).mkdir(exist_ok=True)
        for note in settings.notes:
            if on_output is not None and note not in self._noted:
                self._noted.add(note)
                on_output(note)
        options = auto.LocalWorkspaceOptions(env_vars=settings.env_vars)
        select = auto.create_or_select_stack if create else auto.select_stack
        try:
            return select(stack_name=stack, work_dir=str(self.project_dir), opts=options)
        except FileNotFoundError:
            raise GruError(_missing_cli_message(command)) from None
        except auto.InvalidVersionError as error:
            raise GruError(f"the Pulumi CLI on PATH cannot be used with this project's Pulumi SDK: {error}") from None
        except auto.StackNotFoundError:
            raise GruError(
                f"stack {stack!r} does not exist in the state backend {settings.backend_url}: it was never deployed "
                f"there (or that is not the backend it was deployed to). Deploy it with `python -m gru up --stack {stack}`, "
                "or set PULUMI_BACKEND_URL to the backend that holds it."
            ) from None
        except auto.CommandError as error:
            raise GruError(_command_failure(f"selecting stack {stack!r}", error)) from None

    def _run(self, operation: str, stack: str, action: Callable[[], Any]) -> Any:
        from pulumi import automation as auto

        try:
            return action()
        except auto.ConcurrentUpdateError:
            raise GruError(
                f"pulumi {operation} of stack {stack!r} did not start: another update of this stack is running "
                "(the stack is locked). Wait for it to finish; if it crashed, run `pulumi cancel` for a Pulumi Cloud "
                "stack, or delete the stale lock file under .pulumi/locks/ in a self-managed backend."
            ) from None
        except auto.CommandError as error:
            raise GruError(_command_failure(f"pulumi {operation} of stack {stack!r}", error)) from None
        except RuntimeError as error:  # the Automation API's "summary event never found"
            raise GruError(f"pulumi {operation} of stack {stack!r} ended without reporting a result ({error}); "
                           "see the Pulumi output above") from None


def _command_failure(what: str, error: Exception) -> str:
    """One paragraph from a CommandError: the CLI's error lines (its output was streamed)."""
    text = str(error)
    lines: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        for prefix in ("stdout:", "stderr:"):
            if stripped.startswith(prefix):
                stripped = stripped[len(prefix):].strip()
        if "error:" in stripped and stripped not in lines:
            lines.append(stripped)
    code = re.search(r"code: (-?\d+)", text)
    detail = " ".join(lines[-5:]) if lines else "see the Pulumi output above"
    exit_note = f" (exit code {code.group(1)})" if code else ""
    hints = [hint for marker, hint in _KNOWN_REFUSALS if marker in text]
    return f"{what} failed{exit_note}: {detail}" + "".join(f"\n{hint}" for hint in hints)


# Refusals of the API server that a stack edit causes, and what they mean for this project.
_KNOWN_REFUSALS = (
    ("updates to statefulset spec for fields other than",
     "Kubernetes forbids this edit of the broker's StatefulSet in place (its volume claim template: "
     "storage.storage_class or storage.enabled). Nothing was changed. Undo the edit; to move the broker to other "
     "storage, drain its queues and deploy a broker under a new name (see the README's table of what each "
     "edit does)."),
)


def _masked(outputs: Mapping[str, tuple[Any, bool]], show_secrets: bool) -> dict[str, Any]:
    return {name: value if show_secrets or not secret else SECRET_MASK for name, (value, secret) in sorted(outputs.items())}
