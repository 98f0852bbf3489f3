"""`python -m localcluster up DIR` / `down DIR` (what `tools/cluster` runs)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from .control_plane import ControlPlane

ROOT = Path(__file__).resolve().parent.parent


def engine_bin() -> Path:
    """$GRU_ENGINE_BIN, else the cache directory tools/engine/build fills."""
    if os.environ.get("GRU_ENGINE_BIN"):
        return Path(os.environ["GRU_ENGINE_BIN"])
    out = subprocess.run([str(ROOT / "tools" / "engine" / "build"), "--print-dir"], check=True,
                         capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/cluster", description=__doc__)
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("dir", type=Path, help="where the cluster keeps its state, logs and kubeconfig")
    parser.add_argument("--nodes", type=int, default=3, help="fake nodes, spread over three zones (up)")
    args = parser.parse_args(argv)
    plane = ControlPlane(args.dir, engine_bin())
    if args.action == "up":
        try:
            plane.up(args.nodes)
        except BaseException:
            print(f"cluster: start failed; logs in {plane.logs}", file=sys.stderr)
            raise
        print(plane.kubeconfig)
    else:
        plane.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
