"""`python -m gru`: the command line. Exit codes: 0 success, 1 invalid input or failed
operation, 2 usage. Expected failures print a message, never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from components.program import STACKS_DIR, PlaintextPasswordError
from components.spec import SpecError, load_stack_spec, stack_file

from .render import render_stack, write_manifests

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def cmd_validate(args: argparse.Namespace) -> int:
    path = stack_file(args.stacks_dir, args.stack)
    spec = load_stack_spec(path, _display(path))
    print(f"{spec.file}: valid ({len(spec.brokers)} broker(s), {len(spec.task_servers)} task server(s))")
    return EXIT_OK


def cmd_render(args: argparse.Namespace) -> int:
    objects = render_stack(args.stack, args.stacks_dir, show_secrets=args.show_secrets)
    written = write_manifests(objects, args.out)
    for path in written:
        print(_display(path))
    note = "" if args.show_secrets else " (Secret values redacted; --show-secrets to include them)"
    print(f"rendered {len(written)} objects for stack {args.stack!r} into {_display(args.out)}{note}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gru",
        description="Deploy the agent platform's task-processing tier (Redis broker + Celery "
        "task servers) to Kubernetes, one Pulumi stack per cluster, from stacks/<stack>.yaml.",
    )
    parser.add_argument("--stacks-dir", type=Path, default=STACKS_DIR, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    validate = commands.add_parser("validate", help="check stacks/<stack>.yaml and report every problem")
    validate.add_argument("--stack", required=True, help="stack (cluster) name, e.g. dev")
    validate.set_defaults(func=cmd_validate)

    render = commands.add_parser(
        "render", help="write the Kubernetes manifests a stack would create (no engine or cluster needed)"
    )
    render.add_argument("--stack", required=True, help="stack (cluster) name, e.g. dev")
    render.add_argument("--out", type=Path, required=True, help="directory for the manifests")
    render.add_argument("--show-secrets", action="store_true", help="write Secret values instead of redacting them")
    render.set_defaults(func=cmd_render)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    try:
        return int(args.func(args))
    except (SpecError, PlaintextPasswordError) as error:
        print(error, file=sys.stderr)
        return EXIT_FAILED
    except OSError as error:
        print(f"gru: {error.strerror}: {error.filename}", file=sys.stderr)
        return EXIT_FAILED
