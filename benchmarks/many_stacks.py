"""Wall time of `gru preview` of 10 stacks at once, against the same 10 one after another, on
the local control plane with the real engine (gru.api.preview_stacks, as `gru preview
--stack ... --stack ...` runs it).

    venv/bin/python benchmarks/many_stacks.py [--stacks 10] [--parallel 4]

Each stack is the seed stack in a namespace of its own, never deployed, so each preview plans
its every object. Needs the engine (tools/engine/build; $GRU_ENGINE_BIN to skip the build
check). Starts its own cluster and stops it at the end. The key figure (one after another /
at once) comes last.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.deploy import engine_env, local_cluster, make_project, stack_yaml  # noqa: E402
from gru import api  # noqa: E402
from localcluster.engine import engine_bin  # noqa: E402


def timed_previews(project: Path, stacks: list[str], parallel: int) -> float:
    start = time.monotonic()
    runs = api.preview_stacks(stacks, parallel=parallel, project_dir=project, on_output=None)
    took = time.monotonic() - start
    failed = [run for run in runs if not run.ok]
    if failed:
        raise SystemExit(f"preview failed: {failed[0].stack}: {failed[0].error}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stacks", type=int, default=10)
    parser.add_argument("--parallel", type=int, default=api.DEFAULT_PARALLEL)
    args = parser.parse_args()
    binaries = engine_bin()
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"engine and control plane from {binaries}")
    with tempfile.TemporaryDirectory() as tmp_name, local_cluster(Path(tmp_name), binaries, "--no-addons") as cluster:
        tmp = Path(tmp_name)
        project = make_project(tmp)
        os.environ.update(engine_env(tmp, binaries, cluster))  # gru.api runs the Pulumi CLI with this environment
        stacks = [f"cluster-{index}" for index in range(args.stacks)]
        for stack in stacks:
            (project / "stacks" / f"{stack}.yaml").write_text(stack_yaml("dev", f"ns-{stack}"))
        # One untimed round first: stack creation, plugin start-up caches, the venv's byte code.
        timed_previews(project, stacks, args.parallel)
        sequential = timed_previews(project, stacks, 1)
        concurrent = timed_previews(project, stacks, args.parallel)
        print(f"{'stacks':>6} {'one after another s':>20} {f'{args.parallel} at once s':>14} {'speed-up':>9}")
        print(f"{args.stacks:>6} {sequential:20.1f} {concurrent:14.1f} {sequential / concurrent:9.2f}")
        print(f"key: preview of {args.stacks} stacks, one after another / {args.parallel} at once: "
              f"{sequential / concurrent:.2f}x ({sequential:.1f} s vs {concurrent:.1f} s)")

if __name__ == "__main__":
    main()
