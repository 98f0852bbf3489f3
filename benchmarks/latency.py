"""What an agent waits on: enqueue-to-start latency of short tasks, and trivial-task throughput.

Two one-process replicas of the rendered task server (its own command, run locally by
localrun/) against real Redis, with Celery's defaults beside it, and the floor of the same
machine: a bare Redis LPUSH -> BRPOP round trip with no Celery at all.

    venv/bin/python benchmarks/latency.py [--samples 300] [--hold 10]

- idle: the fleet has nothing else to do; each sample is one task, sent when the last started.
- busy: one replica runs a long task while short tasks arrive every 20 ms. A worker that
  prefetches (Celery's default: 4 per process) takes short tasks it cannot start until the
  long one ends; with prefetch 1 and late acks, a busy worker takes nothing more.
- throughput: trivial tasks per second per process, the queue filled first.

Latency is the task's start time (time.time() in the pool process) minus its send time, on
one clock. Prints p50 and p99 per variant and the ratio to the floor; the key figure last.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "worker")]

import redis  # noqa: E402
from celery import Celery  # noqa: E402

from gru.render import render_stack  # noqa: E402
from localrun import LocalStack  # noqa: E402

STACK = """
broker: {type: redis, name: redis}
task_server:
  type: celery
  name: bench
  replicas: 2
  concurrency_per_replica: 1
  broker_resource_name: redis
  max_task_seconds: 60
  app: latency_app
  results: {enabled: true}
"""
APP = '''
import time

from gru_worker.app import app


@app.task(name="bench.started")
def started(sent: float) -> float:
    return time.time() - sent


@app.task(name="bench.hold")
def hold(seconds: float) -> None:
    time.sleep(seconds)
'''
SERVER = "bench"
CELERY_DEFAULTS = {
    "replace_args": {"--prefetch-multiplier=1": "--prefetch-multiplier=4"},
    "extra_env": {"GRU_ACKS_LATE": "false", "GRU_REJECT_ON_WORKER_LOST": "false"},
}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def floor_latency(url: str, samples: int) -> list[float]:
    """LPUSH from one connection, BRPOP on another, as bare as a broker round trip gets."""
    producer, consumer = redis.Redis.from_url(url), redis.Redis.from_url(url)
    waits: list[float] = []

    def consume() -> None:
        for _ in range(samples):
            _, raw = consumer.brpop(["floor"], timeout=10) or (None, b"0")
            waits.append(time.time() - float(raw))

    thread = threading.Thread(target=consume)
    thread.start()
    for _ in range(samples):
        producer.lpush("floor", repr(time.time()))
        time.sleep(0.005)
    thread.join()
    return waits


def floor_throughput(url: str, count: int) -> float:
    client = redis.Redis.from_url(url)
    client.lpush("floor-tp", *[b"x"] * count)
    started = time.perf_counter()
    for _ in range(count):
        client.brpop(["floor-tp"], timeout=10)
    return count / (time.perf_counter() - started)


def measure(samples: int, hold_seconds: float, variant: dict[str, dict[str, str]]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "latency_app.py").write_text(APP)
        stacks = Path(tmp) / "stacks"
        stacks.mkdir()
        (stacks / "bench.yaml").write_text(STACK)
        objects = [o.manifest for o in render_stack("bench", stacks, show_secrets=True)]
        with LocalStack(objects, Path(tmp) / "run") as stack:
            stack.start_broker()
            extra_env = {**variant.get("extra_env", {}), "PYTHONPATH": f"{stack.worker_dir}{os.pathsep}{tmp}"}
            for index in (0, 1):
                stack.start_pod(SERVER, index, replace_args=variant.get("replace_args"), extra_env=extra_env)
            stack.wait_workers_ready(SERVER, [0, 1])
            app = Celery("bench-agent", broker=stack.broker_url(), backend=stack.broker_url())
            app.send_task("bench.started", args=[time.time()]).get(timeout=30)  # warm

            idle = [app.send_task("bench.started", args=[time.time()]).get(timeout=30) for _ in range(samples)]
            # Busy: one replica holds a long task; short tasks arrive while it runs.
            held = app.send_task("bench.hold", args=[hold_seconds])
            time.sleep(0.5)
            pending = []
            for _ in range(min(samples, int(hold_seconds / 0.02) - 50)):
                pending.append(app.send_task("bench.started", args=[time.time()]))
                time.sleep(0.02)
            busy = [r.get(timeout=120) for r in pending]
            held.get(timeout=120)

            concurrency = 2  # processes in the fleet
            count = 200 * concurrency
            sent = [app.send_task("bench.started", args=[0.0]) for _ in range(count)]
            started = time.perf_counter()
            for r in sent:
                r.get(timeout=120)
            throughput = count / (time.perf_counter() - started) / concurrency
            floor = floor_latency(stack.broker_url(key="worker-url"), samples)
            floor_tp = floor_throughput(stack.broker_url(key="worker-url"), count)
    return {"idle_p50": percentile(idle, 50), "idle_p99": percentile(idle, 99),
            "busy_p50": percentile(busy, 50), "busy_p99": percentile(busy, 99),
            "throughput": throughput, "floor_p50": percentile(floor, 50), "floor_p99": percentile(floor, 99),
            "floor_throughput": floor_tp}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--hold", type=float, default=10.0, help="seconds of the long task in the busy case")
    args = parser.parse_args()
    print(f"# machine: {platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cores; "
          f"2 replicas x 1 process, {args.samples} samples each")
    results = {"rendered (prefetch 1, late ack)": measure(args.samples, args.hold, {}),
               "celery defaults (prefetch 4, early ack)": measure(args.samples, args.hold, CELERY_DEFAULTS)}
    floor = next(iter(results.values()))
    print(f"{'floor: bare LPUSH -> BRPOP':<42} p50 {1000 * floor['floor_p50']:7.2f} ms  p99 {1000 * floor['floor_p99']:7.2f} ms  "
          f"{floor['floor_throughput']:8.0f} msg/s")
    for label, r in results.items():
        print(f"{label:<42} idle p50 {1000 * r['idle_p50']:7.2f} ms  p99 {1000 * r['idle_p99']:7.2f} ms | "
              f"busy p50 {1000 * r['busy_p50']:8.2f} ms  p99 {1000 * r['busy_p99']:8.2f} ms | "
              f"{r['throughput']:6.1f} tasks/s per process ({r['throughput'] / r['floor_throughput']:.3%} of the floor)")
    rendered, defaults = results.values()
    print(f"idle p50 over the floor: rendered {rendered['idle_p50'] / floor['floor_p50']:.1f}x, "
          f"defaults {defaults['idle_p50'] / floor['floor_p50']:.1f}x")
    print(f"KEY: p99 enqueue-to-start on a busy fleet: rendered {1000 * rendered['busy_p99']:.0f} ms vs Celery defaults "
          f"{1000 * defaults['busy_p99']:.0f} ms ({defaults['busy_p99'] / rendered['busy_p99']:.1f}x)")


if __name__ == "__main__":
    main()
