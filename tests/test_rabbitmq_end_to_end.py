"""The rendered RabbitMQ broker and workers as local processes: three real rabbitmq-server nodes
(Debian's, clustered with the rendered config through localrun/), real Celery workers with the
rendered command and environment, and the scenarios a cluster exists for. Each test counts
tasks lost and tasks run twice from the workers' own logs."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from celery import Celery
from kombu import Connection

from components.rabbitmq_broker.definitions import password_hash
from gru.render import render_stack, write_manifests
from gru_worker.settings import settings_from_env
from localrun import LocalStack
from localrun.rabbitmq import LocalRabbitMQCluster
from localrun.tally import Publisher, tally
from localrun.tally import runs as tally_runs
from localrun.tally import wait_all_ran as tally_wait

from .conftest import make_password

PASSWORD = make_password()
# Short tasks: a grace period of 3 + 5 = 8 s keeps shutdowns quick.
STACK = """
broker:
  type: rabbitmq
  name: rabbit
task_server:
  type: celery
  name: task_server
  replicas: 2
  concurrency_per_replica: 2
  broker_resource_name: rabbit
  max_task_seconds: 3
  broker_wait_seconds: 60
"""
SERVER = "task-server"

MakeStack = Callable[..., LocalStack]


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[MakeStack]:
    started: list[LocalStack] = []

    def make(text: str = STACK) -> LocalStack:
        stacks = tmp_path / "stacks"
        stacks.mkdir(exist_ok=True)
        (stacks / "e2e.yaml").write_text(text)
        rendered = tmp_path / "rendered"
        write_manifests(render_stack("e2e", stacks, show_secrets=True, secret_config={"gru:rabbit-password": PASSWORD}),
                        rendered)
        stack = LocalStack.from_directory(rendered, tmp_path / "run")
        started.append(stack)
        return stack

    yield make
    for stack in started:
        stack.close()
        assert all(not p.running() for p in stack._processes)


def agent(stack: LocalStack) -> Celery:
    """An agent: the rendered broker-url and the same Celery settings as the workers."""
    app = Celery("agent")
    app.conf.update(settings_from_env({"CELERY_BROKER_URL": stack.broker_url("rabbit")}))
    return app


def fleet(make_stack: MakeStack, text: str = STACK) -> tuple[LocalStack, LocalRabbitMQCluster, Celery]:
    stack = make_stack(text)
    cluster = stack.start_rabbitmq("rabbit")
    replicas = stack.deployment(SERVER)["spec"]["replicas"]
    stack.start_replicas(SERVER)
    stack.wait_workers_ready(SERVER, range(replicas))
    return stack, cluster, agent(stack)


def runs(stack: LocalStack) -> Counter[str]:
    return tally_runs(stack, SERVER)


def wait_all_ran(stack: LocalStack, ids: list[str], timeout: float) -> Counter[str]:
    return tally_wait(stack, SERVER, ids, timeout)


def report(name: str, sent: list[str], counts: Counter[str], stack: LocalStack | None = None) -> tuple[int, int]:
    result = tally(sent, counts)
    print("\n" + result.line(name))
    for task_id in result.lost[:3] if stack is not None else []:
        # What every process said about a lost task, for the failure report.
        print(f"  lost {task_id}:", *[f"{p.name}: {line}" for p in stack._processes
                                       for line in p.log().splitlines() if task_id in line], sep="\n    ")
    return len(result.lost), len(result.duplicated)


def test_tasks_flow_through_the_rendered_cluster_and_countdowns_wait(make_stack: MakeStack) -> None:
    stack, cluster, app = fleet(make_stack)
    assert cluster.running_nodes(0) == {f"rabbit-{i}@localhost" for i in range(3)}
    ids = [app.send_task("gru.sleep", args=[0.05, "x"]).id for _ in range(40)]
    # ETA tasks take Celery's native delayed delivery (quorum queues cannot hold them in a worker).
    started = time.monotonic()
    delayed = app.send_task("gru.sleep", args=[0.01, "later"], countdown=3).id
    counts = wait_all_ran(stack, [*ids, delayed], 120)
    assert report("flow", [*ids, delayed], counts, stack) == (0, 0)
    assert time.monotonic() - started >= 3
    # The task queue is a quorum queue on every node, with the task server's delivery limit.
    queues = cluster.rabbitmqctl(0, "list_queues", "name", "type", "policy", "--formatter", "json")
    assert '"name":"celery"' in queues.replace(" ", "") and '"type":"quorum"' in queues.replace(" ", "")
    assert "gru-task_server" in queues


def test_a_node_killed_while_tasks_flow_loses_no_task(make_stack: MakeStack) -> None:
    stack, cluster, app = fleet(make_stack)
    publisher = Publisher(app)
    publisher.start()
    time.sleep(5)
    cluster.kill(0)  # SIGKILL: the seed node, and the leader of the queue (declared there first)
    time.sleep(10)
    publisher.stop.set()
    publisher.join(60)
    counts = wait_all_ran(stack, publisher.confirmed, 120)
    lost, duplicated = report("node SIGKILL", publisher.confirmed, counts, stack)
    assert len(publisher.confirmed) > 100
    assert lost == 0
    assert all(p.running() for p in stack._processes if p.name.startswith(f"{SERVER}-local-") and not p.name.endswith("-init"))


def workers(stack: LocalStack) -> list[str]:
    return [p.name for p in stack._processes if p.name.startswith(f"{SERVER}-local-") and not p.name.endswith("-init")]


def all_workers_up(stack: LocalStack) -> bool:
    return all(p.running() for p in stack._processes if p.name in workers(stack))


def test_a_rolling_restart_of_every_node_loses_no_task(make_stack: MakeStack) -> None:
    """Each node in turn as the StatefulSet rolls it: the rendered preStop hook waits until its
    quorum queues keep a majority without it, then the node stops (SIGTERM) and comes back."""
    stack, cluster, app = fleet(make_stack)
    rabbit = stack._object("StatefulSet", "rabbit")["spec"]["template"]["spec"]["containers"][0]
    pre_stop = rabbit["lifecycle"]["preStop"]["exec"]["command"]
    publisher = Publisher(app)
    publisher.start()
    time.sleep(3)
    for index in (2, 1, 0):  # the StatefulSet controller's order
        cluster.cli(index, pre_stop[0], *pre_stop[1:], timeout=120)
        cluster.stop(index)
        cluster.restart(index)
    publisher.stop.set()
    publisher.join(60)
    counts = wait_all_ran(stack, publisher.confirmed, 120)
    lost, duplicated = report("rolling restart", publisher.confirmed, counts, stack)
    assert len(publisher.confirmed) > 100
    assert lost == 0
    assert all_workers_up(stack)


def test_the_task_of_a_killed_worker_is_delivered_again(make_stack: MakeStack) -> None:
    stack, _, app = fleet(make_stack)
    task_id = app.send_task("gru.sleep", args=[2.0, "t"]).id
    deadline = time.monotonic() + 30
    holder = None
    while holder is None and time.monotonic() < deadline:
        holder = next((p for p in stack._processes if p.name in workers(stack)
                       and f"Task gru.sleep[{task_id}] received" in p.log()), None)
        time.sleep(0.05)
    assert holder is not None
    holder.kill_all()  # the pod's processes, SIGKILLed mid-task (an OOM kill, a lost node)
    counts = wait_all_ran(stack, [task_id], 60)
    assert report("worker SIGKILL", [task_id], counts, stack) == (0, 0)
    assert f"Task gru.sleep[{task_id}] succeeded" not in holder.log()


def test_a_disk_alarm_blocks_publishers_and_workers_stay_up(make_stack: MakeStack) -> None:
    stack, cluster, app = fleet(make_stack)
    for index in range(3):  # every node's volume "full": the alarm blocks publishing cluster-wide
        cluster.rabbitmqctl(index, "set_disk_free_limit", "100000GB")
    published: list[str] = []
    thread = threading.Thread(target=lambda: published.append(
        app.send_task("gru.sleep", args=[0.01, "blocked"]).id), daemon=True)
    thread.start()
    thread.join(8)
    assert not published, "a publish went through while the broker's disk alarm was on"
    assert all_workers_up(stack)
    assert all(stack.health_file(SERVER, i, "alive").exists() for i in range(2))
    limit = re.search(r"^disk_free_limit.absolute = (\d+)$", stack._object("ConfigMap", "rabbit-config")["data"]["rabbitmq.conf"], re.M)
    assert limit is not None
    for index in range(3):
        cluster.rabbitmqctl(index, "set_disk_free_limit", limit.group(1))
    thread.join(60)
    assert published
    counts = wait_all_ran(stack, published, 60)
    assert report("disk alarm", published, counts, stack) == (0, 0)


POISON_APP = """
import os
import signal

from gru_worker.app import app


@app.task(name="test.crash")
def crash() -> None:
    # What the OOM killer does to a task that eats memory: the pool process dies at once.
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_poison_task_goes_to_the_dead_letter_queue_and_the_worker_stays_up(
        make_stack: MakeStack, tmp_path: Path) -> None:
    (tmp_path / "poison_app.py").write_text(POISON_APP)
    text = STACK.replace("replicas: 2", "replicas: 1") + "  app: poison_app\n  max_deliveries: 3\n"
    stack = make_stack(text)
    stack.start_rabbitmq("rabbit")
    worker = stack.start_pod(SERVER, 0, extra_env={"PYTHONPATH": f"{stack.worker_dir}{os.pathsep}{tmp_path}"})
    stack.wait_workers_ready(SERVER, [0])
    app = agent(stack)
    poison = app.send_task("test.crash").id
    dead: list[dict[str, object]] = []
    deadline = time.monotonic() + 90
    with Connection(stack.broker_url("rabbit", key="worker-url")) as connection:
        while not dead and time.monotonic() < deadline:
            with connection.channel() as channel:
                message = channel.basic_get("gru.dead-letter", no_ack=True)
            if message is not None:
                dead.append(dict(message.headers or {}))
            time.sleep(0.5)
    assert dead and dead[0]["id"] == poison
    # Delivered exactly max_deliveries times, then dead-lettered instead of delivered again.
    assert worker.log().count(f"Task test.crash[{poison}] received") == 3
    assert worker.running()
    ok = app.send_task("gru.sleep", args=[0.01, "after"]).id
    assert report("poison, then a normal task", [ok], wait_all_ran(stack, [ok], 30), stack) == (0, 0)


def test_the_wait_for_rabbitmq_is_bounded_and_says_why(make_stack: MakeStack) -> None:
    stack = make_stack(STACK.replace("broker_wait_seconds: 60", "broker_wait_seconds: 5"))
    init = stack.start_wait_step(SERVER, 0)  # no node started: nothing answers on the broker's port
    assert init.wait(30) == 1
    log = init.log()
    assert "to accept an authenticated AMQP connection (up to 5s)" in log
    assert "did not answer within 5s (last reply: " in log and "giving up" in log
    assert PASSWORD not in log and stack.secret_value("rabbit", "worker-url").split("@")[0] not in log


def test_a_new_agent_password_reaches_the_running_cluster_with_no_restart(make_stack: MakeStack) -> None:
    """`pulumi config set --secret rabbit-password ...` changes the Secret's definitions; each
    pod's definitions-sync sidecar imports them into the running nodes."""
    stack, cluster, _ = fleet(make_stack)
    pids = [cluster.pid(i) for i in range(3)]
    new_password = make_password()
    definitions = json.loads(stack.secret_value("rabbit", "definitions.json"))
    for user in definitions["users"]:
        if user["name"] == "agent":
            user["password_hash"] = password_hash("agent", new_password)
    old_url = stack.broker_url("rabbit")
    new_url = old_url.replace(quote(PASSWORD, safe=""), quote(new_password, safe=""))
    assert new_url != old_url
    stack.update_secret("rabbit", {"definitions.json": json.dumps(definitions)})
    deadline = time.monotonic() + 60
    accepted = False
    while not accepted and time.monotonic() < deadline:
        try:
            with Connection(new_url, connect_timeout=5) as connection:
                connection.connect()
                accepted = True
        except Exception:  # noqa: BLE001 - refused until the sidecar imported the file
            time.sleep(1)
    assert accepted, "\n".join(s.log()[-2000:] for s in stack._brokers["rabbit"].sidecars)
    with pytest.raises(Exception, match="ACCESS_REFUSED"), Connection(old_url, connect_timeout=5) as connection:
        connection.connect()
    # Every pod's sidecar imported the file at its start and again after the change.
    deadline = time.monotonic() + 30
    sidecars = stack._brokers["rabbit"].sidecars
    while time.monotonic() < deadline and not all(s.log().count("imported definitions") >= 2 for s in sidecars):
        time.sleep(1)
    assert len(sidecars) == 3 and all(s.log().count("imported definitions") >= 2 for s in sidecars)
    # No node restarted, and the workers (their own user) never noticed.
    assert [cluster.pid(i) for i in range(3)] == pids
    app = Celery("agent")
    app.conf.update(settings_from_env({"CELERY_BROKER_URL": new_url}))
    task = app.send_task("gru.sleep", args=[0.01, "new"]).id
    assert report("after the password change", [task], wait_all_ran(stack, [task], 30), stack) == (0, 0)
