"""First formations of the rendered RabbitMQ broker: how often one leaves a queue broken.

    venv/bin/python benchmarks/rabbitmq_formation.py [--rounds 8] [--load 1]

Each round renders a RabbitMQ stack with two task servers, starts its three nodes from empty
volumes in parallel (localrun/, as podManagementPolicy Parallel does) with the rendered
definitions-sync sidecars, waits until each sidecar reports its import (the pod's readiness),
and then looks at what the cluster holds: quorum-queue state machines that crashed in the
nodes' logs, and each task queue's members and whether every member is online. localrun's own
re-formation of a crashed cluster is off here: every formation counts as it came out.

`--load N` runs N busy-looping processes beside the nodes, as the test suite's other work
does on a 2-core machine (the crashes were seen under that load). The key figure, last, is
the formations with a crashed queue member or a queue short of members, out of
the rounds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "worker")]

from gru.render import render_stack  # noqa: E402
from localrun import LocalStack  # noqa: E402
from localrun import rabbitmq as localrun_rabbitmq  # noqa: E402

STACK = """
broker: {type: rabbitmq, name: rabbit}
task_server:
  - {type: celery, name: task_server, replicas: 1, broker_resource_name: rabbit}
  - {type: celery, name: research, replicas: 1, broker_resource_name: rabbit, queues: [research, papers]}
"""
TASK_QUEUES = ("celery", "research", "papers")


def _spin() -> None:
    while True:
        pass


def queue_health(stack: LocalStack) -> dict[str, str]:
    """Every quorum queue that lacks a member or an online member, as node 0 reports them, and
    every task queue that is missing."""
    cluster = stack._brokers["rabbit"].cluster
    assert cluster is not None
    out = cluster.rabbitmqctl(0, "-q", "list_queues", "name", "type", "members", "online", "--formatter", "json")
    rows = {row["name"]: row for row in json.loads(out)}
    problems = {name: "missing" for name in TASK_QUEUES if name not in rows}
    for name, row in rows.items():
        if row["type"] == "quorum" and (len(row["members"]) != cluster.nodes or len(row["online"]) != cluster.nodes):
            problems[name] = f"{len(row['online'])} of {len(row['members'])} members online"
    return problems


def one_formation(workdir: Path) -> tuple[int, dict[str, str], float]:
    stacks = workdir / "stacks"
    stacks.mkdir()
    (stacks / "bench.yaml").write_text(STACK)
    objects = [o.manifest for o in render_stack("bench", stacks, show_secrets=True)]
    with LocalStack(objects, workdir / "run") as stack:
        started = time.monotonic()
        cluster = stack.start_rabbitmq("rabbit")
        took = time.monotonic() - started
        time.sleep(15)  # a sidecar turn (grow), and a late crash shows in the logs
        crashed = sum(cluster.log(i, tail=10**7).count(localrun_rabbitmq.BOOT_CRASH) for i in range(cluster.nodes))
        return crashed, queue_health(stack), took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--load", type=int, default=1, help="busy processes beside the nodes")
    args = parser.parse_args()
    localrun_rabbitmq.FORMATION_ATTEMPTS = 1  # count every formation as it came out
    print(f"# machine: {platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cores, "
          f"{args.load} busy process(es) beside the nodes")
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.load)]
    for spinner in spinners:
        spinner.start()
    broken = crashed_formations = 0
    try:
        for round_ in range(args.rounds):
            with tempfile.TemporaryDirectory() as tmp:
                crashed, problems, took = one_formation(Path(tmp))
            broken += bool(problems or crashed)
            crashed_formations += bool(crashed)
            print(f"round {round_ + 1}: ready in {took:.1f} s, {crashed} state machine crash(es), "
                  f"queues: {problems or 'all members online'}", flush=True)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.join()
    print(f"formations with a crashed queue member: {crashed_formations} of {args.rounds}")
    print(f"formations with a crashed or incomplete queue: {broken} of {args.rounds}")


if __name__ == "__main__":
    main()
