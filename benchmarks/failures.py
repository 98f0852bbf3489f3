"""Tasks lost and tasks run twice when things fail: the same scenarios on the Redis broker and
on the three-node RabbitMQ broker, each rendered and run locally (localrun/: real
redis-server and rabbitmq-server on loopback, real Celery workers with the rendered commands).

    venv/bin/python benchmarks/failures.py [--brokers redis,rabbitmq] [--flow 15]

An agent publishes a short task every 50 ms throughout; an accepted task is one the broker
acknowledged (a reply to the push on Redis, a publisher confirm on RabbitMQ). Mid-flow:

- broker crash: SIGKILL of the broker's process (Redis) or of one node (RabbitMQ, the
  queue's first leader), brought back 5 s later as the kubelet would;
- rolling restart: every broker pod stopped (SIGTERM, after the rendered preStop hook on
  RabbitMQ) and started again, one after another;
- worker crash: SIGKILL of one worker pod's processes mid-task, the pod started again.

Lost: accepted and never run to success. Run twice: succeeded more than once. Both are
counted from the workers' logs. The key figure, last, is the total lost per broker.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "worker")]

from celery import Celery  # noqa: E402
from local_brokers import BROKERS  # noqa: E402

from gru.render import render_stack  # noqa: E402
from gru_worker.settings import settings_from_env  # noqa: E402
from localrun import LocalStack  # noqa: E402
from localrun.rabbitmq import LocalRabbitMQCluster  # noqa: E402
from localrun.tally import Publisher, Tally, tally, wait_all_ran  # noqa: E402

STACK = """
broker: {{type: {broker}, name: {name}}}
task_server:
  type: celery
  name: task_server
  replicas: 2
  concurrency_per_replica: 2
  broker_resource_name: {name}
  max_task_seconds: 3
"""
SERVER = "task-server"


class Broker:
    """One rendered broker, started locally, with the failures a scenario inflicts on it."""

    def __init__(self, kind: str, stack: LocalStack) -> None:
        self.kind, self.stack, self.name = kind, stack, BROKERS[kind]
        self.cluster: LocalRabbitMQCluster | None = None

    def start(self) -> None:
        self.cluster = self.stack.start_any_broker(self.name)

    def crash(self) -> None:
        if self.cluster is not None:
            self.cluster.kill(0)
            time.sleep(5)
            self.cluster.restart(0)
        else:
            process = self.stack._brokers[self.name].process
            assert process is not None
            process.kill_all()
            time.sleep(5)
            self.stack.start_broker(self.name)

    def rolling_restart(self) -> None:
        if self.cluster is not None:
            container = self.stack._object("StatefulSet", self.name)["spec"]["template"]["spec"]["containers"][0]
            pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
            for index in reversed(range(self.cluster.nodes)):
                self.cluster.cli(index, pre_stop[0], *pre_stop[1:], timeout=600)
                self.cluster.stop(index)
                self.cluster.restart(index)
        else:
            self.stack.stop_broker(self.name)
            self.stack.start_broker(self.name)


def worker_crash(stack: LocalStack) -> None:
    (victim,) = [p for p in stack._processes if p.name == f"{SERVER}-local-0"][-1:]
    victim.kill_all()
    stack.start_pod(SERVER, 0)


def scenario(kind: str, inflict: Callable[[Broker, LocalStack], None], flow: float) -> Tally:
    with tempfile.TemporaryDirectory() as tmp:
        stacks = Path(tmp) / "stacks"
        stacks.mkdir()
        (stacks / "bench.yaml").write_text(STACK.format(broker=kind, name=BROKERS[kind]))
        objects = [o.manifest for o in render_stack("bench", stacks, show_secrets=True)]
        with LocalStack(objects, Path(tmp) / "run") as stack:
            broker = Broker(kind, stack)
            broker.start()
            stack.start_replicas(SERVER)
            stack.wait_workers_ready(SERVER, range(2))
            agent = Celery("agent")
            agent.conf.update(settings_from_env({"CELERY_BROKER_URL": stack.broker_url(BROKERS[kind])}))
            publisher = Publisher(agent)
            publisher.start()
            time.sleep(flow / 3)
            inflict(broker, stack)
            time.sleep(flow * 2 / 3)
            publisher.stop.set()
            publisher.join(120)
            # Long enough for Redis to hand a dead worker's task out again (its visibility timeout).
            return tally(publisher.confirmed, wait_all_ran(stack, SERVER, publisher.confirmed, 180))


SCENARIOS: dict[str, Callable[[Broker, LocalStack], None]] = {
    "broker crash": lambda broker, _: broker.crash(),
    "rolling restart": lambda broker, _: broker.rolling_restart(),
    "worker crash": lambda _, stack: worker_crash(stack),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", default="redis,rabbitmq")
    parser.add_argument("--flow", type=float, default=15.0, help="seconds of publishing per scenario")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.brokers.split(",") if k.strip()]
    print(f"# machine: {platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cores")
    totals = {kind: [0, 0, 0] for kind in kinds}
    for name, inflict in SCENARIOS.items():
        for kind in kinds:
            result = scenario(kind, inflict, args.flow)
            totals[kind][0] += result.accepted
            totals[kind][1] += len(result.lost)
            totals[kind][2] += len(result.duplicated)
            print(f"{name:<16} {kind:<9} accepted {result.accepted:5d}  lost {len(result.lost):4d}  "
                  f"run twice {len(result.duplicated):4d}", flush=True)
    summary = ", ".join(f"{kind} {lost} lost and {dup} run twice of {accepted}"
                        for kind, (accepted, lost, dup) in totals.items())
    print(f"KEY: tasks lost over all scenarios: {summary}")


if __name__ == "__main__":
    main()
