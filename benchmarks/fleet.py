"""Fleet efficiency on skewed work: the rendered worker settings next to Celery's defaults.

R replicas x C processes (the rendered Deployment's own command, run locally by localrun/)
process 1,000 tasks, 90% short and 10% long, in a fixed shuffled order. Efficiency is a bound
on the makespan over the achieved one, against two bounds computed from the same tasks:

- the optimum: no schedule of these indivisible tasks on R x C slots is shorter (the longest-
  processing-time schedule, checked against the lower bounds that prove it optimal);
- a zero-overhead FIFO dispatcher: each slot, when free, takes the next task in send order.
  This is what Celery could reach with no overhead, and the key figure is measured against it.

    venv/bin/python benchmarks/fleet.py [--replicas 8] [--concurrency 4] [--tasks 1000] [--repeat 3]
                                        [--brokers redis,rabbitmq]

Rendered: prefetch 1 per process, late acknowledgement. Celery's defaults: prefetch 4 per
process, acknowledgement on receipt. The variants alternate, `--repeat` times each, and the
median makespan counts. Prints both, per broker; the key figure (rendered vs defaults, on each
broker) last.

Brokers: Redis, and RabbitMQ as a real three-node cluster (quorum queues, publisher confirms; the
agent sends with the workers' settings, `gru_worker.settings.settings_from_env`). A RabbitMQ task
server has no result backend, so completion times come from the workers' own logs on both
brokers (the pool process's "Task gru.sleep[<id>] succeeded" line, millisecond timestamps), and
neither stack stores results: the same work and the same clock on both. The makespan starts at
the first send: RabbitMQ's confirmed publishes take part of it, as they do an agent's.

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
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "worker")]

from celery import Celery  # noqa: E402
from local_brokers import BROKERS, start_broker, with_fresh_starts  # noqa: E402

from gru.render import render_stack  # noqa: E402
from gru_worker.settings import settings_from_env  # noqa: E402
from localrun import LocalStack  # noqa: E402

STACK = """
broker: {{type: {broker}, name: {name}}}
task_server:
  type: celery
  name: fleet
  replicas: {replicas}
  concurrency_per_replica: {concurrency}
  broker_resource_name: {name}
  max_task_seconds: 60
"""
SERVER = "fleet"
CELERY_DEFAULTS = {
    "replace_args": {"--prefetch-multiplier=1": "--prefetch-multiplier=4"},
    "extra_env": {"GRU_ACKS_LATE": "false", "GRU_REJECT_ON_WORKER_LOST": "false"},
}
# The pool process's line when a task returned: "[2026-11-24 11:04:01,113: INFO/ForkPoolWorker-2]
# Task gru.sleep[<id>] succeeded in 0.0004s: '<token>'". Workers log local time; they run with
# TZ=UTC here, as in their container.
SUCCEEDED = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/[^\]]*\] "
                       r"Task gru\.sleep\[([0-9a-f-]+)\] succeeded", re.M)
FAILED = re.compile(r"Task gru\.sleep\[([0-9a-f-]+)\] (?:raised|INTERNAL ERROR)")


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


def completions(logs: list[str]) -> tuple[dict[str, float], set[str]]:
    """(task id -> when it succeeded, as epoch seconds; ids of tasks that failed), from worker logs."""
    done: dict[str, float] = {}
    failed: set[str] = set()
    for log in logs:
        for stamp, task_id in SUCCEEDED.findall(log):
            when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC).timestamp()
            done[task_id] = max(when, done.get(task_id, when))
        failed.update(FAILED.findall(log))
    return done, failed


def wait_done(stack: LocalStack, ids: list[str], timeout: float) -> list[float]:
    """Completion times, as the workers recorded them (their logs' "succeeded" lines)."""
    deadline = time.monotonic() + timeout
    workers = [p for p in stack._processes if p.name.startswith(f"{SERVER}-local-") and not p.name.endswith("-init")]
    while True:
        done, failed = completions([p.log() for p in workers])
        if failed & set(ids):
            raise RuntimeError(f"{len(failed & set(ids))} tasks failed, first: {sorted(failed & set(ids))[0]}")
        pending = [i for i in ids if i not in done]
        if not pending:
            return [done[i] for i in ids]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} tasks not done within {timeout}s")
        time.sleep(0.5)


def run_fleet(broker: str, replicas: int, concurrency: int, work: list[float],
              variant: dict[str, dict[str, str]]) -> tuple[float, float]:
    return with_fresh_starts(broker, lambda: run_once(broker, replicas, concurrency, work, variant))


def run_once(broker: str, replicas: int, concurrency: int, work: list[float],
             variant: dict[str, dict[str, str]]) -> tuple[float, float]:
    """(makespan from the first send to the last task done, by the workers' clocks; seconds the
    agent took to send them all)."""
    name = BROKERS[broker]
    with tempfile.TemporaryDirectory() as tmp:
        stacks = Path(tmp) / "stacks"
        stacks.mkdir()
        (stacks / "bench.yaml").write_text(STACK.format(broker=broker, name=name, replicas=replicas,
                                                        concurrency=concurrency))
        objects = [o.manifest for o in render_stack("bench", stacks, show_secrets=True)]
        with LocalStack(objects, Path(tmp) / "run") as stack:
            start_broker(stack, broker)
            worker: dict[str, Any] = {**variant, "extra_env": {**variant.get("extra_env", {}), "TZ": "UTC"}}
            stack.start_replicas(SERVER, **worker)
            stack.wait_workers_ready(SERVER, range(replicas))
            # An agent as the workers are configured (on RabbitMQ: quorum queues, topic exchange,
            # publisher confirms), and no result backend: with one, every send also subscribes to
            # the task's result channel, and the makespan would measure the producer, not the fleet.
            producer = Celery("fleet-producer")
            producer.conf.update(settings_from_env({"CELERY_BROKER_URL": stack.broker_url(name)}))
            started = time.time()
            ids = [producer.send_task("gru.sleep", args=[d, uuid.uuid4().hex]).id for d in work]
            sent = time.time() - started
            done = wait_done(stack, ids, timeout=1200)
            return max(done) - started, sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--short", type=float, default=0.02, help="seconds of a short task (90%%)")
    parser.add_argument("--long", type=float, default=2.0, help="seconds of a long task (10%%)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant; the median counts")
    parser.add_argument("--brokers", default="redis,rabbitmq", help="comma-separated, of: redis, rabbitmq")
    args = parser.parse_args()
    brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    unknown = [b for b in brokers if b not in BROKERS]
    if unknown or not brokers:
        parser.error(f"--brokers: unknown {unknown}, choose from {', '.join(BROKERS)}")

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
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {(b, v): [] for b in brokers for v in variants}
    for _ in range(args.repeat):
        for broker in brokers:
            for label, variant in variants.items():
                runs[broker, label].append(run_fleet(broker, args.replicas, args.concurrency, work, variant))
    figures: dict[str, list[float]] = {b: [] for b in brokers}
    for (broker, label), measured in runs.items():
        makespan = statistics.median(m for m, _ in measured)
        figures[broker].append(fifo / makespan)
        spread = ", ".join(f"{m:.2f}" for m, _ in measured)
        print(f"{broker + ': ' + label:<52} makespan {makespan:6.2f}s (runs: {spread}; sending took "
              f"{statistics.median(s for _, s in measured):.2f}s)  "
              f"vs optimum {optimum / makespan:6.1%}  vs FIFO {fifo / makespan:6.1%}")
    wins = [b for b in brokers if figures[b][0] > figures[b][1]]
    verdict = ("rendered settings win" + (" on both" if len(brokers) > 1 else "") if len(wins) == len(brokers)
               else f"RENDERED SETTINGS LOSE on {', '.join(b for b in brokers if b not in wins)}")
    both = ", ".join(f"{b} {figures[b][0]:.1%} vs {figures[b][1]:.1%}" for b in brokers)
    print(f"KEY: efficiency against a zero-overhead FIFO dispatcher, rendered vs Celery defaults: {both} -> {verdict}")


if __name__ == "__main__":
    main()
