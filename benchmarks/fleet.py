"""Fleet efficiency on skewed work: the rendered worker settings next to Celery's defaults.

R replicas x C processes (the rendered Deployment's own command, run locally by localrun/)
process 1,000 tasks, 90% short and 10% long, in a fixed shuffled order. Efficiency is a bound
on the makespan over the achieved one, against two bounds computed from the same tasks:

- the optimum: no schedule of these indivisible tasks on R x C slots is shorter (the longest-
  processing-time schedule, checked against the lower bounds that prove it optimal);
- a zero-overhead FIFO dispatcher: each slot, when free, takes the next task in send order.
  This is what Celery could reach with no overhead, and the key figure is measured against it.

    venv/bin/python benchmarks/fleet.py [--replicas 8] [--concurrency 4] [--tasks 1000] [--repeat 3]

Rendered: prefetch 1 per process, late acknowledgement. Celery's defaults: prefetch 4 per
process, acknowledgement on receipt. The variants alternate, `--repeat` times each, and the
median makespan counts. Prints both; the key figure (rendered vs defaults) last.

With every task enqueued at once, hoarding costs at the tail, where a worker still holds up to
4 x concurrency prefetched tasks while others idle; the cost grows with the fleet's total
prefetch (4 x R x C) against the backlog. Late acknowledgement costs a broker round trip per
task. At 8 x 4 the first outweighs the second; at 2 x 2 with sub-second tasks they are even.
"""

from __future__ import annotations

import argparse
import heapq
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "worker")]

from celery import Celery  # noqa: E402

from gru.render import render_stack  # noqa: E402
from localrun import LocalStack  # noqa: E402

STACK = """
broker: {{type: redis, name: redis}}
task_server:
  type: celery
  name: fleet
  replicas: {replicas}
  concurrency_per_replica: {concurrency}
  broker_resource_name: redis
  max_task_seconds: 60
  results: {{enabled: true}}
"""
SERVER = "fleet"
CELERY_DEFAULTS = {
    "replace_args": {"--prefetch-multiplier=1": "--prefetch-multiplier=4"},
    "extra_env": {"GRU_ACKS_LATE": "false", "GRU_REJECT_ON_WORKER_LOST": "false"},
}


def durations(count: int, short: float, long: float, seed: int = 7) -> list[float]:
    work = [long if i % 10 == 0 else short for i in range(count)]
    random.Random(seed).shuffle(work)
    return work


def fifo_makespan(work: list[float], slots: int) -> float:
    """Each slot, when it frees, takes the next task in order, with no overhead at all."""
    free = [0.0] * slots
    for seconds in work:
        heapq.heappush(free, heapq.heappop(free) + seconds)
    return max(free)


def optimum_makespan(work: list[float], slots: int) -> tuple[float, bool]:
    """(the longest-processing-time schedule's makespan, whether a lower bound proves it optimal).

    Lower bounds: the average load, the longest task, and the longest tasks' rounds: n tasks of
    at least t seconds need ceil(n / slots) rounds of t on some slot."""
    lpt = fifo_makespan(sorted(work, reverse=True), slots)
    lower = max(sum(work) / slots, max(work))
    for t in set(work):
        lower = max(lower, math.ceil(sum(1 for d in work if d >= t) / slots) * t)
    return lpt, math.isclose(lpt, lower, rel_tol=1e-9)


def wait_done(reader: Celery, ids: list[str], timeout: float) -> list[datetime]:
    """Completion times, as the workers recorded them (`date_done` of each result)."""
    deadline = time.monotonic() + timeout
    pending = set(ids)
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} tasks not done within {timeout}s")
        pending = {i for i in pending if not reader.AsyncResult(i).ready()}
        time.sleep(0.5)
    results = [reader.AsyncResult(i) for i in ids]
    failed = [r for r in results if r.state != "SUCCESS"]
    if failed:
        raise RuntimeError(f"{len(failed)} tasks failed, first: {failed[0].state} {failed[0].result!r}")
    return [r.date_done for r in results]


def run_fleet(replicas: int, concurrency: int, work: list[float], variant: dict[str, dict[str, str]]) -> float:
    """Makespan in seconds from the first send to the last task done, by the workers' clocks."""
    with tempfile.TemporaryDirectory() as tmp:
        stacks = Path(tmp) / "stacks"
        stacks.mkdir()
        (stacks / "bench.yaml").write_text(STACK.format(replicas=replicas, concurrency=concurrency))
        objects = [o.manifest for o in render_stack("bench", stacks, show_secrets=True)]
        with LocalStack(objects, Path(tmp) / "run") as stack:
            stack.start_broker()
            stack.start_replicas(SERVER, **variant)
            stack.wait_workers_ready(SERVER, range(replicas))
            # The producer has no result backend: with one, every send also subscribes to the
            # task's result channel, and the makespan would measure the producer, not the fleet.
            producer = Celery("fleet-producer", broker=stack.broker_url())
            reader = Celery("fleet-reader", broker=stack.broker_url(), backend=stack.broker_url())
            started = datetime.now(UTC)
            ids = [producer.send_task("gru.sleep", args=[d, uuid.uuid4().hex]).id for d in work]
            done = wait_done(reader, ids, timeout=1200)
            return (max(done) - started).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--short", type=float, default=0.02, help="seconds of a short task (90%%)")
    parser.add_argument("--long", type=float, default=2.0, help="seconds of a long task (10%%)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant; the median counts")
    args = parser.parse_args()

    work = durations(args.tasks, args.short, args.long)
    slots = args.replicas * args.concurrency
    optimum, proven = optimum_makespan(work, slots)
    fifo = fifo_makespan(work, slots)
    print(f"# machine: {platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cores")
    print(f"# {args.tasks} tasks ({sum(d == args.long for d in work)} x {args.long}s, "
          f"{sum(d == args.short for d in work)} x {args.short}s), {args.replicas} replicas x {args.concurrency} processes")
    print(f"# bounds: optimum {optimum:.2f}s ({'proven' if proven else 'LPT, an upper estimate'}), "
          f"zero-overhead FIFO {fifo:.2f}s (average load alone: {sum(work) / slots:.2f}s)")
    variants = {"rendered (prefetch 1, late ack)": {}, "celery defaults (prefetch 4, early ack)": CELERY_DEFAULTS}
    makespans: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(args.repeat):
        for label, variant in variants.items():
            makespans[label].append(run_fleet(args.replicas, args.concurrency, work, variant))
    figures = {}
    for label, runs in makespans.items():
        makespan = statistics.median(runs)
        figures[label] = fifo / makespan
        spread = ", ".join(f"{r:.2f}" for r in runs)
        print(f"{label:<42} makespan {makespan:6.2f}s (runs: {spread})  "
              f"vs optimum {optimum / makespan:6.1%}  vs FIFO {fifo / makespan:6.1%}")
    rendered, defaults = figures.values()
    verdict = "rendered settings win" if rendered > defaults else "RENDERED SETTINGS LOSE"
    print(f"KEY: efficiency against a zero-overhead FIFO dispatcher: rendered {rendered:.1%} vs Celery defaults "
          f"{defaults:.1%} -> {verdict}")


if __name__ == "__main__":
    main()
