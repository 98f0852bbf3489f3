"""Program evaluation time and peak memory for stacks of 1, 10, 100 and 1000 task servers,
next to two floors, under the same mock engine:

- bare floor: as many one-key ConfigMaps, the cheapest resource the SDK registers;
- manifest floor: the very manifests the program renders, registered as plain resources with
  no components, parents or dependencies. program / manifest floor is what the project's
  structure (components, ordering, outputs) costs; the rest is the SDK's per-resource work on
  objects of that size.

It also times the whole `gru render` path (evaluation, creation order and the YAML writer).
Each measurement runs in a fresh process; memory is the growth of its peak RSS. The program and
both floors settle as `gru render` does (every 20 task servers, or every 100 objects).

    venv/bin/python benchmarks/evaluate.py [--sizes 1,10,100,1000] [--repeat 3]

Prints one row per size, then whether time grows linearly, the render memory each added task
server costs, and program / manifest floor memory; the key figure (program / manifest floor
time at the largest size) comes last.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def stack_yaml(task_servers: int) -> str:
    lines = ["broker:", "  type: redis", "  name: redis", "task_server:"]
    for i in range(task_servers):
        lines.append(f"  - {{type: celery, name: workers_{i}, replicas: 2, broker_resource_name: redis}}")
    return "\n".join(lines) + "\n"


# The floors settle as often as the program does: every 20 task servers, about 100 objects.
FLOOR_SETTLE_EVERY = 100


def timed(action: Callable[[], Any]) -> tuple[dict[str, float], Any]:
    """Seconds and peak-RSS growth of `action()` in this process, and what it returned."""
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_mib": peak / 1024, "growth_mib": (peak - baseline) / 1024}, result


def measure_program(task_servers: int) -> dict[str, float]:
    """In this (fresh) process: evaluate the real program for a stack of `task_servers`."""
    from components.program import run
    from gru.mock_engine import Settle, evaluate

    with tempfile.TemporaryDirectory() as tmp:
        stacks = Path(tmp)
        (stacks / "bench.yaml").write_text(stack_yaml(task_servers))
        # As `gru render` runs it: settling every 20 task servers.
        figures, evaluation = timed(lambda: evaluate(lambda: run(stacks, settle=Settle()), stack="bench"))
    return {**figures, "registrations": len(evaluation.registrations),
            "kubernetes_objects": len(evaluation.kubernetes_objects)}


def measure_floor(count: int) -> dict[str, float]:
    """In this (fresh) process: `count` bare ConfigMaps under the same mock engine."""
    import pulumi_kubernetes as k8s

    from gru.mock_engine import Settle, evaluate

    config_map = k8s.core.v1.ConfigMap  # pulumi_kubernetes imports submodules lazily: not timed

    def program() -> None:
        settle = Settle(FLOOR_SETTLE_EVERY)
        for i in range(count):
            config_map(f"cm-{i}", metadata={"name": f"cm-{i}", "namespace": "gru"}, data={"k": "v"})
            settle()

    return timed(lambda: evaluate(program, stack="bench"))[0]


def measure_manifest_floor(task_servers: int) -> dict[str, float]:
    """In this (fresh) process: the program's own manifests, registered flat and unconnected."""
    import pulumi

    from components import kubernetes_objects
    from gru.mock_engine import Settle, evaluate

    with tempfile.TemporaryDirectory() as tmp:
        manifests = Path(tmp) / "manifests.jsonl"
        # Made in another process and read one line per object, so neither making nor holding
        # them counts towards this process's memory: the floor's figure is the SDK's alone.
        subprocess.run([sys.executable, __file__, "--manifests", str(task_servers), str(manifests)], cwd=ROOT,
                       check=True)

        def program() -> None:
            settle = Settle(FLOOR_SETTLE_EVERY)
            with manifests.open(encoding="utf-8") as lines:
                for index, line in enumerate(lines):
                    manifest = json.loads(line)
                    # Distinct resource names: objects of different kinds share Kubernetes names.
                    manifest["metadata"]["name"] = f"{manifest['metadata']['name']}-{index}"
                    kubernetes_objects.create(manifest, pulumi.ResourceOptions())
                    settle()

        return timed(lambda: evaluate(program, stack="bench"))[0]


def write_program_manifests(task_servers: int, out: Path) -> None:
    """The manifests the program registers for `task_servers`, one JSON object per line."""
    from components.program import run
    from gru.mock_engine import Settle, evaluate
    from gru.render import _manifest

    with tempfile.TemporaryDirectory() as tmp:
        stacks = Path(tmp)
        (stacks / "bench.yaml").write_text(stack_yaml(task_servers))
        evaluation = evaluate(lambda: run(stacks, settle=Settle()), stack="bench")
    with out.open("w", encoding="utf-8") as lines:
        for registration in evaluation.kubernetes_objects:
            lines.write(json.dumps(_manifest(registration.inputs)) + "\n")


def measure_render(task_servers: int) -> dict[str, float]:
    """In this (fresh) process: `gru render` end to end, files written."""
    from gru.render import render_stack, write_manifests

    with tempfile.TemporaryDirectory() as tmp:
        stacks = Path(tmp) / "stacks"
        stacks.mkdir()
        (stacks / "bench.yaml").write_text(stack_yaml(task_servers))
        return timed(lambda: write_manifests(render_stack("bench", stacks), Path(tmp) / "out"))[0]


MEASURES = {"program": measure_program, "floor": measure_floor, "manifest-floor": measure_manifest_floor,
            "render": measure_render}


def in_fresh_process(kind: str, size: int) -> dict[str, float]:
    result = subprocess.run([sys.executable, __file__, "--child", kind, str(size)], capture_output=True, text=True,
                            cwd=ROOT, check=True)
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10,100,1000")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; the fastest counts")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--manifests", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.manifests:
        sys.path[:0] = [str(ROOT), str(ROOT / "worker")]
        write_program_manifests(int(args.manifests[0]), Path(args.manifests[1]))
        return
    if args.child:
        kind, size = args.child[0], int(args.child[1])
        sys.path[:0] = [str(ROOT), str(ROOT / "worker")]
        print(json.dumps(MEASURES[kind](size)))
        return

    print(f"# machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}, "
          f"{__import__('os').cpu_count()} cores")
    print(f"{'task servers':>12} {'k8s objects':>11} {'program s':>10} {'floor s':>8} {'ratio':>6} "
          f"{'manifest floor s':>16} {'ratio':>6} {'render s':>9} {'ms/server':>9} {'program MiB':>11} "
          f"{'floor MiB':>9} {'manifest floor MiB':>18} {'render MiB':>10} {'MiB/server':>10}")
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        program = min((in_fresh_process("program", size) for _ in range(args.repeat)), key=lambda r: r["seconds"])
        count = int(program["kubernetes_objects"])
        floor = min((in_fresh_process("floor", count) for _ in range(args.repeat)), key=lambda r: r["seconds"])
        flat = min((in_fresh_process("manifest-floor", size) for _ in range(args.repeat)), key=lambda r: r["seconds"])
        render = min((in_fresh_process("render", size) for _ in range(args.repeat)), key=lambda r: r["seconds"])
        ratio = program["seconds"] / floor["seconds"]
        structure = program["seconds"] / flat["seconds"]
        rows.append((size, program, flat, render))
        print(f"{size:>12} {count:>11} {program['seconds']:>10.3f} {floor['seconds']:>8.3f} {ratio:>6.2f} "
              f"{flat['seconds']:>16.3f} {structure:>6.2f} {render['seconds']:>9.3f} "
              f"{1000 * program['seconds'] / size:>9.2f} {program['growth_mib']:>11.1f} {floor['growth_mib']:>9.1f} "
              f"{flat['growth_mib']:>18.1f} {render['growth_mib']:>10.1f} {render['growth_mib'] / size:>10.3f}")

    if len(rows) >= 2:
        (s0, p0, _, r0), (s1, p1, _, r1) = rows[-2], rows[-1]
        growth = (p1["seconds"] / p0["seconds"]) / (s1 / s0)
        verdict = "linear" if growth < 1.5 else "SUPERLINEAR"
        print(f"growth from {s0} to {s1} task servers: time x{p1['seconds'] / p0['seconds']:.1f} for size x{s1 / s0:.0f} "
              f"-> {verdict} (per-size factor {growth:.2f}, 1.0 is linear)")
        marginal = (r1["growth_mib"] - r0["growth_mib"]) / (s1 - s0)
        print(f"render memory per added task server from {s0} to {s1}: {marginal:.3f} MiB")
    size, program, flat, _ = rows[-1]
    print(f"program / manifest floor memory at {size} task servers = "
          f"{program['growth_mib'] / max(flat['growth_mib'], 0.1):.2f}x")
    print(f"KEY: program / manifest floor (the cost of the project's structure) at {size} task servers = "
          f"{program['seconds'] / flat['seconds']:.2f}x")


if __name__ == "__main__":
    main()
