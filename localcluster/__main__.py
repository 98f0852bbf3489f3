"""`python -m localcluster up DIR` / `down DIR` (what `tools/cluster` runs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .control_plane import ControlPlane
from .engine import addons_dir, engine_bin, images_dir, node_bin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/cluster", description=__doc__)
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("dir", type=Path, help="where the cluster keeps its state, logs and kubeconfig")
    parser.add_argument("--nodes", type=int, default=3, help="fake nodes, spread over three zones (up)")
    parser.add_argument("--real-node", action="store_true",
                        help="also one real node (kubelet, containerd) that runs the pods' containers, "
                             "with KEDA running on it (up)")
    parser.add_argument("--no-addons", action="store_true",
                        help="without the CRDs of KEDA and the Prometheus Operator, and without KEDA (up)")
    args = parser.parse_args(argv)
    plane = ControlPlane(args.dir, engine_bin(build=False))
    if args.action == "up":
        try:
            plane.up(args.nodes, real_node=(node_bin(build=False), images_dir(build=False)) if args.real_node else None,
                       addons=None if args.no_addons else addons_dir(build=False))
        except BaseException as error:
            # The caller (a CI run, say) removes DIR with `down`: what went wrong must be in
            # this output, not only in the logs.
            reason = "" if isinstance(error, SystemExit) else f": {error!r}"  # SystemExit prints its own
            print(f"cluster: start failed{reason}; logs in {plane.logs}", file=sys.stderr)
            for tail in log_tails(plane.logs):
                print(tail, file=sys.stderr)
            raise
        print(plane.kubeconfig)
        return 0
    problems = plane.down()
    for problem in problems:
        print(f"cluster: down: {problem}", file=sys.stderr)
    return 1 if problems else 0


def log_tails(logs: Path, lines: int = 12) -> list[str]:
    """The last lines of each process's log, newest log first."""
    if not logs.is_dir():
        return []
    tails = []
    for log in sorted(logs.glob("*.log"), key=lambda p: p.stat().st_mtime, reverse=True):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        tails.append(f"--- {log.name} (last {len(text)} lines)\n" + "\n".join(t[:300] for t in text))
    return tails


if __name__ == "__main__":
    sys.exit(main())
