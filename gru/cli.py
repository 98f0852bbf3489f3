"""`python -m gru`: the command line, a thin layer over `gru.api`.

Exit codes: 0 success, 1 invalid input or failed operation (including a refused or declined
confirmation), 2 usage. Expected failures print one message on stderr, never a traceback.
With `--json` a command prints exactly one JSON document on stdout (`"ok": false` and the
error on failure) and sends the engine's progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from components.program import PlaintextPasswordError
from components.stack_model import SpecError, StackSpec

from . import api

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
Deploy the agent platform's task-processing tier (a Redis or RabbitMQ broker and Celery task servers) to
Kubernetes: one Pulumi stack per cluster, whose components are declared in stacks/<stack>.yaml.

validate and render need nothing but Python. component setup, preview, up, destroy and outputs
drive the Pulumi CLI (https://www.pulumi.com/docs/install/) through its Automation API; without
a configured backend (PULUMI_BACKEND_URL, or backend.url in Pulumi.yaml) state is kept in
.pulumi-state/ in the project. Stacks other than dev need PULUMI_CONFIG_PASSPHRASE (or
PULUMI_CONFIG_PASSPHRASE_FILE) there."""

EPILOG = """\
examples:
  python -m gru validate --stack dev
  python -m gru render --stack dev --out rendered/dev
  python -m gru component setup --cluster-name prod-eu --config-file redis.yaml --preview-only
  python -m gru preview --stack prod-eu --diff
  python -m gru up --stack prod-eu
  python -m gru preview --all-stacks --diff
  python -m gru up --stack prod-eu --stack prod-us --yes
  python -m gru outputs --stack prod-eu --json

exit codes: 0 success, 1 invalid input or failed operation, 2 usage error"""


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _emit_json(document: dict[str, Any]) -> None:
    print(json.dumps(document, indent=2, sort_keys=False, default=str))


def _progress(args: argparse.Namespace) -> api.OnOutput:
    """Where the engine's output goes: stdout, or stderr when stdout carries the JSON."""
    stream = sys.stderr if getattr(args, "json", False) else sys.stdout

    def show(line: str) -> None:
        print(line, file=stream, flush=True)

    return show


def _confirmation(args: argparse.Namespace, stack: str, command: str, action: str) -> api.Confirm | None:
    """None with --yes; a prompt on a terminal; otherwise a refusal (GruError, exit 1)."""
    if args.yes:
        return None
    if not sys.stdin.isatty():
        # A missing Pulumi CLI (or passphrase) is the more fundamental problem: say that first.
        api.check_engine(stack, command, args.project_dir)
        raise api.GruError(
            f"python -m gru {command}: refusing to {action} without confirmation: standard input is not a terminal, so "
            "gru cannot ask. Pass --yes to go ahead without asking (in CI, after reviewing a preview)."
        )

    def ask(summary: api.ChangeSummary) -> bool:
        print(f"Do you want to {action}? Changes: {summary.describe()}. [y/N] ", end="", file=sys.stderr, flush=True)
        answer = sys.stdin.readline().strip().lower()
        return answer in ("y", "yes")

    return ask


def _print_outputs(values: dict[str, Any]) -> None:
    for name, value in values.items():
        shown = value if isinstance(value, str) else json.dumps(value)
        print(f"  {name}: {shown}")


def cmd_validate(args: argparse.Namespace) -> int:
    spec = api.validate(args.stack, args.project_dir, stacks_dir=args.stacks_dir)
    if args.json:
        _emit_json({
            "ok": True,
            "stack": args.stack,
            "file": spec.file,
            "brokers": [broker.model_dump(mode="json") for broker in spec.brokers],
            "task_servers": [server.model_dump(mode="json") for server in spec.task_servers],
        })
        return EXIT_OK
    print(f"{spec.file}: valid ({len(spec.brokers)} broker(s), {len(spec.task_servers)} task server(s))")
    _print_images(spec)
    return EXIT_OK


def _print_images(spec: StackSpec) -> None:
    """The images the cluster will pull (IfNotPresent), so a missing one is noticed before a rollout waits on it."""
    for broker in spec.brokers:
        print(f"  broker {broker.name}: image {broker.image}")
    for server in spec.task_servers:
        print(f"  task server {server.name}: image {server.image} (built from worker/ or your own; see the README)")


def cmd_render(args: argparse.Namespace) -> int:
    result = api.render_manifests(args.stack, args.out, show_secrets=args.show_secrets, project_dir=args.project_dir,
                                  stacks_dir=args.stacks_dir)
    if args.show_secrets:
        plaintext = [f for f, o in zip(result.files, result.objects, strict=True) if o.kind == "Secret"]
        print(f"gru: warning: --show-secrets wrote plaintext passwords to {', '.join(_display(f) for f in plaintext)} "
              "(mode 0600); delete them when done and never commit them", file=sys.stderr)
    if args.json:
        _emit_json({"ok": True, **result.to_json()})
        return EXIT_OK
    for path in result.files:
        print(_display(path))
    note = "" if args.show_secrets else " (Secret values redacted; --show-secrets to include them)"
    print(f"rendered {len(result.files)} objects for stack {args.stack!r} into {_display(args.out)}{note}")
    return EXIT_OK


def cmd_setup(args: argparse.Namespace) -> int:
    # The file is checked first, always: a broken component file is the problem to report,
    # even where the engine is missing or no one can confirm.
    api.validate_setup(args.cluster_name, args.config_file, args.project_dir)
    confirm = None if args.preview_only else _confirmation(args, args.cluster_name, "component setup",
                                                                   f"deploy cluster {args.cluster_name!r}")
    result = api.setup(
        args.cluster_name,
        args.config_file,
        preview_only=args.preview_only,
        yes=args.yes,
        confirm=confirm,
        project_dir=args.project_dir,
        on_output=_progress(args),
    )
    if args.json:
        _emit_json({"ok": True, **result.to_json()})
        return EXIT_OK
    if result.deployed:
        print(f"cluster {result.cluster!r} deployed from {_display(result.stack_file)}: {result.summary.describe(done=True)}")
        _print_outputs(result.outputs)
    else:
        print(f"cluster {result.cluster!r}: {_display(result.stack_file)} updated, not deployed; preview: "
              f"{result.summary.describe()}. Deploy with: python -m gru up --stack {result.cluster}")
    return EXIT_OK


def _many(args: argparse.Namespace) -> list[str] | None:
    """The stacks of a many-stack run (several --stack values, or --all-stacks); None for one."""
    if args.all_stacks:  # argparse allows --stack or --all-stacks, exactly one
        return api.all_stacks(args.project_dir)
    return args.stack if len(args.stack) > 1 else None


def _report_many(args: argparse.Namespace, runs: list[api.StackRun]) -> int:
    """The table (or the JSON document) of a many-stack run; exit 1 if any stack failed."""
    ok = all(run.ok for run in runs)
    if args.json:
        _emit_json({"ok": ok, "stacks": [run.to_json() for run in runs]})
    else:
        print(api.table(runs))
    for run in runs:
        if not run.ok:
            print(f"stack {run.stack!r}: {run.error}", file=sys.stderr)
    return EXIT_OK if ok else EXIT_FAILED


def cmd_preview(args: argparse.Namespace) -> int:
    many = _many(args)
    if many is not None:
        return _report_many(args, api.preview_stacks(many, diff=args.diff, parallel=args.parallel,
                                                     project_dir=args.project_dir, on_output=_progress(args)))
    args.stack = args.stack[0]
    summary = api.preview(args.stack, diff=args.diff, project_dir=args.project_dir, on_output=_progress(args))
    if not args.json:
        _print_images(api.validate(args.stack, args.project_dir))
    if args.json:
        _emit_json({"ok": True, "stack": args.stack, **summary.to_json()})
    else:
        print(f"preview of stack {args.stack!r}: {summary.describe()}")
    return EXIT_OK


def cmd_up(args: argparse.Namespace) -> int:
    many = _many(args)
    if many is not None:
        if not args.yes:
            raise api.GruError(f"python -m gru up: refusing to update {len(many)} stacks without --yes: gru asks no "
                               "question per stack. Review `python -m gru preview` of the same stacks, then pass --yes.")
        return _report_many(args, api.up_stacks(many, yes=True, show_secrets=args.show_secrets, parallel=args.parallel,
                                                project_dir=args.project_dir, on_output=_progress(args)))
    args.stack = args.stack[0]
    confirm = _confirmation(args, args.stack, "up", f"update stack {args.stack!r}")
    result = api.up(args.stack, yes=args.yes, confirm=confirm, show_secrets=args.show_secrets,
                    project_dir=args.project_dir, on_output=_progress(args))
    if args.json:
        _emit_json({"ok": True, **result.to_json()})
    else:
        print(f"stack {args.stack!r} is up to date: {result.summary.describe(done=True)}")
        _print_outputs(result.outputs)
    return EXIT_OK


def cmd_destroy(args: argparse.Namespace) -> int:
    confirm = _confirmation(args, args.stack, "destroy", f"delete every resource of stack {args.stack!r}")
    summary = api.destroy(args.stack, yes=args.yes, confirm=confirm, project_dir=args.project_dir, on_output=_progress(args))
    if args.json:
        _emit_json({"ok": True, "stack": args.stack, **summary.to_json()})
    else:
        print(f"destroyed the resources of stack {args.stack!r}: {summary.describe(done=True)}")
    return EXIT_OK


def cmd_outputs(args: argparse.Namespace) -> int:
    values = api.outputs(args.stack, show_secrets=args.show_secrets, project_dir=args.project_dir)
    if args.json:
        _emit_json({"ok": True, "stack": args.stack, "outputs": values})
    elif not values:
        print(f"stack {args.stack!r} has no outputs (it has not been deployed)")
    else:
        print(f"outputs of stack {args.stack!r}:")
        _print_outputs(values)
    return EXIT_OK


def _stack_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", required=True, help="stack (cluster) name, e.g. dev; its components are in stacks/<stack>.yaml")


def _stacks_argument(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--stack", action="append", metavar="STACK",
                       help="stack (cluster) name, e.g. dev; give it more than once to run several stacks at once")
    which.add_argument("--all-stacks", action="store_true", help="every stack of the project (each stacks/<stack>.yaml)")
    parser.add_argument("--parallel", type=int, default=api.DEFAULT_PARALLEL, metavar="N",
                        help=f"with several stacks: at most N at once (default {api.DEFAULT_PARALLEL}); each stack's "
                        "lines are prefixed with its name and a table ends the run")


def _json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout (progress goes to stderr)")


def _yes_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--yes", "-y", action="store_true",
                        help=f"{what} without asking; without it gru previews and asks on a terminal, and refuses otherwise")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gru", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stacks-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--project-dir", type=Path, default=None, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    validate = commands.add_parser("validate", help="check stacks/<stack>.yaml and report every problem",
                                   description="Check a stack file and report every problem in it, with its line and fix.")
    _stack_argument(validate)
    _json_argument(validate)
    validate.set_defaults(func=cmd_validate)

    render = commands.add_parser(
        "render", help="write the Kubernetes manifests a stack would create (no engine or cluster needed)",
        description="Run the program under Pulumi's mock engine and write one YAML file per Kubernetes object, "
        "numbered in creation order. Secret values are redacted unless --show-secrets.",
    )
    _stack_argument(render)
    render.add_argument("--out", type=Path, required=True, help="directory for the manifests")
    render.add_argument("--show-secrets", action="store_true", help="write Secret values instead of redacting them")
    _json_argument(render)
    render.set_defaults(func=cmd_render)

    component = commands.add_parser("component", help="add components to a cluster: component setup ...",
                                    description="Manage a cluster's components.")
    component_commands = component.add_subparsers(dest="component_command", metavar="ACTION", required=True)
    setup = component_commands.add_parser(
        "setup", help="upsert a file's components into stacks/<cluster>.yaml, then preview or deploy the cluster",
        description="Read a component file (the stack file's format: `broker` and/or `task_server`), upsert its "
        "components by section and name into stacks/<cluster>.yaml keeping the others, validate the merged stack "
        "(nothing is written if it is invalid), create stacks/Pulumi.<cluster>.yaml when new, then preview "
        "(--preview-only) or deploy the cluster through the Pulumi CLI.",
    )
    setup.add_argument("--cluster-name", required=True, help="the cluster, i.e. the stack: writes stacks/<cluster>.yaml")
    setup.add_argument("--config-file", type=Path, required=True, help="YAML file with the components to add or replace")
    setup.add_argument("--preview-only", action="store_true", help="update the stack file and preview, do not deploy")
    _yes_argument(setup, "deploy")
    _json_argument(setup)
    setup.set_defaults(func=cmd_setup)

    preview = commands.add_parser("preview", help="show what `up` would change in a stack (pulumi preview)",
                                  description="Preview a stack's update through the Pulumi CLI.")
    _stacks_argument(preview)
    preview.add_argument("--diff", action="store_true", help="show a rich diff of every changed property")
    _json_argument(preview)
    preview.set_defaults(func=cmd_preview)

    up = commands.add_parser("up", help="deploy a stack to its cluster (pulumi up)",
                             description="Deploy a stack through the Pulumi CLI; asks first unless --yes.")
    _stacks_argument(up)
    _yes_argument(up, "apply")
    up.add_argument("--show-secrets", action="store_true", help="print secret outputs instead of [secret]")
    _json_argument(up)
    up.set_defaults(func=cmd_up)

    destroy = commands.add_parser("destroy", help="delete every resource of a stack (pulumi destroy)",
                                  description="Delete a stack's resources through the Pulumi CLI; asks first unless --yes. "
                                  "The broker's volume is retained by Kubernetes.")
    _stack_argument(destroy)
    _yes_argument(destroy, "delete")
    _json_argument(destroy)
    destroy.set_defaults(func=cmd_destroy)

    outputs = commands.add_parser("outputs", help="print a deployed stack's outputs (pulumi stack output)",
                                  description="Print a deployed stack's outputs; secret ones as [secret] unless --show-secrets.")
    _stack_argument(outputs)
    outputs.add_argument("--show-secrets", action="store_true", help="print secret outputs instead of [secret]")
    _json_argument(outputs)
    outputs.set_defaults(func=cmd_outputs)
    return parser


def _fail(message: str, as_json: bool, document: dict[str, Any] | None = None, exit_code: int = EXIT_FAILED) -> int:
    print(message, file=sys.stderr)
    if as_json:
        _emit_json(document or {"ok": False, "error": message, "problems": []})
    return exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    as_json = bool(getattr(args, "json", False))
    try:
        return int(args.func(args))
    except api.GruError as error:
        return _fail(error.message, as_json, error.to_json(), error.exit_code)
    except SpecError as error:
        return _fail(str(error), as_json, api.GruError.from_spec_error(error).to_json())
    except PlaintextPasswordError as error:
        return _fail(str(error), as_json)
    except BrokenPipeError:
        raise  # the reader went away (`| head`); __main__ exits quietly
    except OSError as error:
        where = f": {error.filename}" if error.filename else ""
        return _fail(f"gru: {error.strerror or error}{where}", as_json)
    except KeyboardInterrupt:
        return _fail("gru: interrupted; an update in progress may have been cut short (see `python -m gru preview`)", as_json)


def entry() -> None:
    """The `gru` console command (pyproject's [project.scripts]); same as `python -m gru`."""
    try:
        sys.exit(main())
    except BrokenPipeError:
        # The reader of our output closed the pipe (`gru ... | head`): no traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
