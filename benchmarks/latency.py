"""What an agent waits on: enqueue-to-start latency of short tasks, and trivial-task throughput.

Two one-process replicas of the rendered task server (its own command, run locally by
localrun/), with Celery's defaults beside it, on each broker: real Redis, and RabbitMQ as a real
three-node cluster (quorum queues, publisher confirms; the agent sends with the workers' settings,
`gru_worker.settings.settings_from_env`). The floor of the same machine, per broker, with no
Celery at all: a bare Redis LPUSH -> BRPOP round trip; a bare AMQP publish -> basic.consume
delivery on a quorum queue of the same cluster, through the same Service proxy.

    venv/bin/python benchmarks/latency.py [--samples 300] [--hold 10] [--brokers redis,rabbitmq]

- idle: the fleet has nothing else to do; each sample is one task, sent when the last started.
- busy: one replica runs a long task while short tasks arrive every 20 ms. A worker that
  prefetches (Celery's default: 4 per process) takes short tasks it cannot start until the
  long one ends; with prefetch 1 and late acks, a busy worker takes nothing more.
- throughput: trivial tasks per second per process, the queue filled first (the workers'
  consumers stopped, SIGSTOP, while the agent sends), from the first task's start to the last's,
  by the workers' clocks.

Latency is the task's start time (time.time() in the pool process) minus its send time, on
one clock. A RabbitMQ task server has no result backend, so on both brokers the task reports
its own start time to the benchmark in a UDP datagram on 127.0.0.1, and neither stack stores
results: the same work on both. Prints p50 and p99 per broker and variant and the ratio to the
floor; the key figure last.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "worker")]

import amqp  # noqa: E402
import redis  # noqa: E402
from celery import Celery  # noqa: E402
from local_brokers import BROKERS, start_broker, with_fresh_starts  # noqa: E402

from gru.render import render_stack  # noqa: E402
from gru_worker.settings import settings_from_env  # noqa: E402
from localrun import LocalStack  # noqa: E402

STACK = """
broker: {{type: {broker}, name: {name}}}
task_server:
  type: celery
  name: bench
  replicas: 2
  concurrency_per_replica: 1
  broker_resource_name: {name}
  max_task_seconds: 60
  app: latency_app
"""
FLOORS = {"redis": "bare LPUSH -> BRPOP", "rabbitmq": "bare publish -> consume (quorum)"}
APP = '''
import os
import socket
import time

from gru_worker.app import app

_report = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


@app.task(name="bench.started")
def started(sent: float, port: int) -> None:
    """Reports its own start time (no result backend on RabbitMQ) to the benchmark's socket."""
    now = time.time()
    _report.sendto(f"started {now - sent!r} {now!r} {os.getpid()}".encode(), ("127.0.0.1", port))


@app.task(name="bench.hold")
def hold(seconds: float, port: int) -> None:
    time.sleep(seconds)
    _report.sendto(b"held", ("127.0.0.1", port))
'''
SERVER = "bench"
CELERY_DEFAULTS = {
    "replace_args": {"--prefetch-multiplier=1": "--prefetch-multiplier=4"},
    "extra_env": {"GRU_ACKS_LATE": "false", "GRU_REJECT_ON_WORKER_LOST": "false"},
}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Reports:
    """The UDP socket the tasks report to, bound to 127.0.0.1."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.socket.bind(("127.0.0.1", 0))
        self.port: int = self.socket.getsockname()[1]

    def collect(self, started: int, held: int = 0, timeout: float = 120) -> list[list[str]]:
        """The next `started` start reports (fields: latency, start time, pid), after `held` holds ended."""
        deadline = time.monotonic() + timeout
        reports: list[list[str]] = []
        while len(reports) < started or held:
            self.socket.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                kind, *fields = self.socket.recv(256).decode().split()
            except TimeoutError:
                raise TimeoutError(f"{len(reports)} of {started} start reports within {timeout}s") from None
            if kind == "held":
                held -= 1
            else:
                reports.append(fields)
        return reports

    def close(self) -> None:
        self.socket.close()


def redis_floor_latency(url: str, samples: int) -> list[float]:
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


def redis_floor_throughput(url: str, count: int) -> float:
    client = redis.Redis.from_url(url)
    client.lpush("floor-tp", *[b"x"] * count)
    started = time.perf_counter()
    for _ in range(count):
        client.brpop(["floor-tp"], timeout=10)
    return count / (time.perf_counter() - started)


def amqp_connection(url: str) -> amqp.Connection:
    parts = urlsplit(url)
    connection = amqp.Connection(host=f"{parts.hostname}:{parts.port}", userid=unquote(parts.username or ""),
                                 password=unquote(parts.password or ""),
                                 virtual_host=unquote(parts.path[1:]) or "/", connect_timeout=10)
    connection.connect()
    return connection


def amqp_queue(channel: amqp.Channel, name: str) -> None:
    """A quorum queue, as Celery's task queues are."""
    channel.queue_declare(name, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})


def amqp_consumer(url: str, queue: str, count: int, on_body: Any) -> tuple[amqp.Connection, threading.Thread]:
    """A consumer as a worker with prefetch 1 is: one unacknowledged message, acknowledged after."""
    connection = amqp_connection(url)
    channel = connection.channel()
    amqp_queue(channel, queue)
    channel.basic_qos(0, 1, False)
    received = [0]

    def callback(message: amqp.Message) -> None:
        on_body(message.body)
        channel.basic_ack(message.delivery_tag)
        received[0] += 1

    channel.basic_consume(queue, callback=callback)

    def drain() -> None:
        while received[0] < count:
            connection.drain_events(timeout=10)

    return connection, threading.Thread(target=drain)


def amqp_floor_latency(url: str, samples: int) -> list[float]:
    """basic.publish on one connection, delivery to basic.consume on another: a bare AMQP round trip."""
    waits: list[float] = []
    consumer, thread = amqp_consumer(url, "floor", samples, lambda body: waits.append(time.time() - float(body)))
    producer = amqp_connection(url)
    channel = producer.channel()
    thread.start()
    for _ in range(samples):
        channel.basic_publish(amqp.Message(repr(time.time())), exchange="", routing_key="floor")
        time.sleep(0.005)
    thread.join()
    producer.close()
    consumer.close()
    return waits


def amqp_floor_throughput(url: str, count: int) -> float:
    producer = amqp_connection(url)
    channel = producer.channel()
    amqp_queue(channel, "floor-tp")
    channel.confirm_select()  # every publish confirmed: the queue holds them all before the clock starts
    for _ in range(count):
        channel.basic_publish(amqp.Message(b"x"), exchange="", routing_key="floor-tp")
    producer.close()
    consumer, thread = amqp_consumer(url, "floor-tp", count, lambda body: None)
    started = time.perf_counter()
    thread.start()
    thread.join()
    elapsed = time.perf_counter() - started
    consumer.close()
    return count / elapsed


def agent(url: str, **settings: Any) -> Celery:
    """An agent configured as the workers are (on RabbitMQ: quorum queues, topic exchange,
    publisher confirms), without a result backend."""
    app = Celery("bench-agent")
    app.conf.update({**settings_from_env({"CELERY_BROKER_URL": url}), **settings})
    return app


def measure(broker: str, samples: int, hold_seconds: float, variant: dict[str, dict[str, str]]) -> dict[str, float]:
    return with_fresh_starts(broker, lambda: measure_once(broker, samples, hold_seconds, variant))


def measure_once(broker: str, samples: int, hold_seconds: float, variant: dict[str, dict[str, str]]) -> dict[str, float]:
    name = BROKERS[broker]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "latency_app.py").write_text(APP)
        stacks = Path(tmp) / "stacks"
        stacks.mkdir()
        (stacks / "bench.yaml").write_text(STACK.format(broker=broker, name=name))
        objects = [o.manifest for o in render_stack("bench", stacks, show_secrets=True)]
        reports = Reports()
        try:
            with LocalStack(objects, Path(tmp) / "run") as stack:
                start_broker(stack, broker)
                extra_env = {**variant.get("extra_env", {}), "PYTHONPATH": f"{stack.worker_dir}{os.pathsep}{tmp}"}
                for index in (0, 1):
                    stack.start_pod(SERVER, index, replace_args=variant.get("replace_args"), extra_env=extra_env)
                stack.wait_workers_ready(SERVER, [0, 1])
                url, port = stack.broker_url(name), reports.port
                app = agent(url)

                def one() -> float:
                    app.send_task("bench.started", args=[time.time(), port])
                    return float(reports.collect(1, timeout=30)[0][0])

                one()  # warm
                idle = [one() for _ in range(samples)]
                # Busy: one replica holds a long task; short tasks arrive while it runs.
                app.send_task("bench.hold", args=[hold_seconds, port])
                time.sleep(0.5)
                sent = 0
                for _ in range(min(samples, int(hold_seconds / 0.02) - 50)):
                    app.send_task("bench.started", args=[time.time(), port])
                    sent += 1
                    time.sleep(0.02)
                busy = [float(r[0]) for r in reports.collect(sent, held=1)]

                concurrency = 2  # processes in the fleet
                count = 200 * concurrency
                # The queue filled first: the workers' main processes (their consumers) stopped
                # while the agent sends, continued once every task is in the queue.
                workers = [p for p in stack._processes if p.name in (f"{SERVER}-local-0", f"{SERVER}-local-1")]
                for worker in workers:
                    worker.signal(signal.SIGSTOP)
                try:
                    for _ in range(count):
                        app.send_task("bench.started", args=[0.0, port])
                finally:
                    for worker in workers:
                        worker.signal(signal.SIGCONT)
                starts = [float(r[1]) for r in reports.collect(count)]
                throughput = (count - 1) / (max(starts) - min(starts)) / concurrency
                worker_url = stack.broker_url(name, key="worker-url")
                if broker == "redis":
                    floor, floor_tp = redis_floor_latency(worker_url, samples), redis_floor_throughput(worker_url, count)
                else:
                    floor, floor_tp = amqp_floor_latency(worker_url, samples), amqp_floor_throughput(worker_url, count)
        finally:
            reports.close()
    return {"idle_p50": percentile(idle, 50), "idle_p99": percentile(idle, 99),
            "busy_p50": percentile(busy, 50), "busy_p99": percentile(busy, 99),
            "throughput": throughput, "floor_p50": percentile(floor, 50), "floor_p99": percentile(floor, 99),
            "floor_throughput": floor_tp}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--hold", type=float, default=10.0, help="seconds of the long task in the busy case")
    parser.add_argument("--brokers", default="redis,rabbitmq", help="comma-separated, of: redis, rabbitmq")
    args = parser.parse_args()
    brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    unknown = [b for b in brokers if b not in BROKERS]
    if unknown or not brokers:
        parser.error(f"--brokers: unknown {unknown}, choose from {', '.join(BROKERS)}")
    print(f"# machine: {platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cores; "
          f"2 replicas x 1 process, {args.samples} samples each")
    results: dict[str, dict[str, dict[str, float]]] = {}
    for broker in brokers:
        results[broker] = {"rendered (prefetch 1, late ack)": measure(broker, args.samples, args.hold, {}),
                           "celery defaults (prefetch 4, early ack)":
                               measure(broker, args.samples, args.hold, CELERY_DEFAULTS)}
    for broker, variants in results.items():
        floor = next(iter(variants.values()))
        print(f"{broker + ' floor: ' + FLOORS[broker]:<52} p50 {1000 * floor['floor_p50']:7.2f} ms  "
              f"p99 {1000 * floor['floor_p99']:7.2f} ms  {floor['floor_throughput']:8.0f} msg/s")
        for label, r in variants.items():
            print(f"{broker + ': ' + label:<52} idle p50 {1000 * r['idle_p50']:7.2f} ms  p99 {1000 * r['idle_p99']:7.2f} ms | "
                  f"busy p50 {1000 * r['busy_p50']:8.2f} ms  p99 {1000 * r['busy_p99']:8.2f} ms | "
                  f"{r['throughput']:6.1f} tasks/s per process ({r['throughput'] / r['floor_throughput']:.3%} of the floor)")
    over = []
    for broker, variants in results.items():
        rendered, defaults = variants.values()
        floor_p50 = rendered["floor_p50"]
        over.append(f"{broker} rendered {rendered['idle_p50'] / floor_p50:.1f}x, defaults {defaults['idle_p50'] / floor_p50:.1f}x")
    print(f"idle p50 over the broker's floor: {'; '.join(over)}")
    key = []
    for broker, variants in results.items():
        rendered, defaults = variants.values()
        key.append(f"{broker} rendered {1000 * rendered['busy_p99']:.0f} ms vs Celery defaults "
                   f"{1000 * defaults['busy_p99']:.0f} ms ({defaults['busy_p99'] / rendered['busy_p99']:.1f}x)")
    print(f"KEY: p99 enqueue-to-start on a busy fleet: {'; '.join(key)}")


if __name__ == "__main__":
    main()
