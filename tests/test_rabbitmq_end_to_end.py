"""The rendered RabbitMQ broker and workers as local processes: three real rabbitmq-server nodes
(Debian's, clustered with the rendered config through localrun/), real Celery workers with the
rendered command and environment, and the scenarios a cluster exists for. Each test counts
tasks lost and tasks run twice from the workers' own logs."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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
from localrun.tally import Publisher, completions, longest_gap, tally
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


PUBLISH_RETRIES = 6


def test_a_disk_alarm_blocks_publishers_and_workers_stay_up(make_stack: MakeStack) -> None:
    stack, cluster, app = fleet(make_stack)
    for index in range(3):  # every node's volume "full": the alarm blocks publishing cluster-wide
        cluster.rabbitmqctl(index, "set_disk_free_limit", "100000GB")
    published: list[str] = []
    # Six retries (each publish waits 5 s for its confirm): enough to outlast the alarm and
    # its clearing on a loaded machine, where the three CLI calls below take seconds each.
    thread = threading.Thread(target=lambda: published.append(
        app.send_task("gru.sleep", args=[0.01, "blocked"], retry=True, retry_policy={"max_retries": PUBLISH_RETRIES}).id),
        daemon=True)
    thread.start()
    thread.join(8)
    assert not published, "a publish went through while the broker's disk alarm was on"
    assert all_workers_up(stack)
    assert all(stack.health_file(SERVER, i, "alive").exists() for i in range(2))
    limit = re.search(r"^disk_free_limit.absolute = (\d+)$", stack._object("ConfigMap", "rabbit-config")["data"]["rabbitmq.conf"], re.M)
    assert limit is not None
    with ThreadPoolExecutor(3) as pool:  # cleared on every node at once
        list(pool.map(lambda index: cluster.rabbitmqctl(index, "set_disk_free_limit", limit.group(1)), range(3)))
    thread.join(60)
    assert published
    counts = wait_all_ran(stack, published, 60)
    # Not lost. It may run twice: a publish is bounded (5 s for its confirm), so the blocked
    # one timed out and Celery published it again, and the first copy, already sent, is
    # routed too once the alarm clears (at-least-once, as after any lost confirm).
    lost, duplicated = report("disk alarm", published, counts, stack)
    assert lost == 0 and counts[published[0]] <= 1 + PUBLISH_RETRIES


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


REFUSED_LOGIN = re.compile(r"login refused|invalid credentials", re.I)


def test_a_password_rotation_moves_every_client_with_no_failed_login_and_no_lost_task(make_stack: MakeStack) -> None:
    """`password_rotation`: each role's staged user, which every node already knows, becomes the
    one in use; workers roll onto it and agents restart onto it while the rotated-out users
    still log in; those leave only after the drop time. No node restarts."""
    from components.rabbitmq_broker import definitions as defs
    from components.rabbitmq_broker.component import amqp_url

    stack = make_stack()
    host = "rabbit.gru.svc.cluster.local"
    rendered = json.loads(stack.secret_value("rabbit", "definitions.json"))
    old, new, later = ({role.name: make_password() for role in defs.USERS} for _ in range(3))

    def secret(current: dict[str, str], staged: dict[str, str], rotated: bool, drop_after: int) -> dict[str, str]:
        """The Secret as `pulumi up` renders it for these passwords (component.py's shape)."""
        by_role = {role.name: defs.logins(role, current[role.name], staged[role.name], rotated=rotated)
                   for role in defs.USERS}
        users = [u for group in by_role.values() for u in group]
        agent_user, worker_user, keda_user = (by_role[role.name][0] for role in (defs.AGENT, defs.WORKER, defs.KEDA))
        return {"definitions.json": json.dumps({**rendered, **defs.users_and_permissions(users)}),
                "users": defs.user_list(users), "drop-after-seconds": str(drop_after),
                "rabbitmq-password": agent_user.password,
                "broker-url": amqp_url(agent_user.name, agent_user.password, host),
                "worker-url": amqp_url(worker_user.name, worker_user.password, host),
                "keda-url": f"http://{keda_user.name}:{quote(keda_user.password, safe='')}@{host}:15672/"}

    drop_after = 45  # the longest rollout of the fleet, as the program computes it for a real one
    stack.update_secret("rabbit", secret(old, new, rotated=False, drop_after=drop_after))
    cluster = stack.start_rabbitmq("rabbit")
    pids = [cluster.pid(i) for i in range(3)]
    old_pods = stack.start_replicas(SERVER)
    stack.wait_workers_ready(SERVER, [0, 1])
    old_agent_url = stack.broker_url("rabbit")
    assert old_agent_url.startswith("amqp://agent:")
    before = Publisher(agent(stack))
    before.start()
    time.sleep(3)

    # `pulumi up` with a new password_rotation: the Secret changes in place, each pod's sidecar
    # imports it; the workers' Deployment rolls (its credentials hash changed).
    stack.update_secret("rabbit", secret(new, later, rotated=True, drop_after=drop_after))
    sidecars = stack._brokers["rabbit"].sidecars
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all("user agent was rotated out" in s.log() for s in sidecars):
        time.sleep(0.5)
    rotated_at = time.monotonic()
    assert all("user agent was rotated out" in s.log() for s in sidecars), sidecars[0].log()[-2000:]
    after = Publisher(agent(stack))  # an agent restarted onto the new broker-url
    assert stack.broker_url("rabbit").startswith("amqp://agent-") and stack.broker_url("rabbit") != old_agent_url
    after.start()
    assert stack.roll(SERVER, old_pods, [2, 3]) == [0] * len(old_pods)
    before.stop.set()
    before.join(60)
    rolled = time.monotonic() - rotated_at
    assert rolled < drop_after, f"the roll took {rolled:.0f} s, past the drop time: the test proves nothing"
    # Past the drop time, the rotated-out users are gone from the cluster.
    deadline = rotated_at + drop_after + 60
    users: set[str] = set()
    while time.monotonic() < deadline:
        users = {u["user"] for u in json.loads(cluster.rabbitmqctl(0, "list_users", "--formatter", "json"))}
        if not {"agent", "worker", "keda"} & users:
            break
        time.sleep(2)
    assert time.monotonic() - rotated_at >= drop_after - 1  # not before it
    after.stop.set()
    after.join(60)
    expected = {u.name for role in defs.USERS for u in defs.logins(role, new[role.name], later[role.name], rotated=True)}
    assert users == expected, users

    confirmed = before.confirmed + after.confirmed
    counts = wait_all_ran(stack, confirmed, 120)
    lost, _ = report("password rotation", confirmed, counts, stack)
    refused = [line for i in range(3) for line in cluster.log(i, tail=200_000).splitlines() if REFUSED_LOGIN.search(line)]
    print(f"\n[password rotation] rolled in {rolled:.1f} s; publishes before={len(before.confirmed)} "
          f"after={len(after.confirmed)} failed={before.failed + after.failed}; refused logins={len(refused)}")
    assert lost == 0 and before.failed == after.failed == 0
    assert len(before.confirmed) > 10 and len(after.confirmed) > 10
    assert refused == []
    assert [cluster.pid(i) for i in range(3)] == pids  # no node restarted
    # And a client still on a rotated-out password is now refused.
    with pytest.raises(Exception, match="ACCESS_REFUSED"), Connection(old_agent_url, connect_timeout=5) as connection:
        connection.connect()


def test_a_shrunk_cluster_forgets_its_departed_node_and_loses_no_task(make_stack: MakeStack) -> None:
    """Shrinking `replicas`: the StatefulSet stops the highest ordinals (each after its preStop
    wait), and `pulumi up` has updated the Secret's `cluster-size`; the remaining nodes' sidecars
    remove the departed node from every quorum queue and from the cluster. Three local nodes
    shrink to two (the stack file allows odd sizes only: 5 -> 3 is the same steps, on five)."""
    stack, cluster, app = fleet(make_stack)
    publisher = Publisher(app)
    publisher.start()
    time.sleep(3)
    cluster.rabbitmqctl(2, "eval", "ok.")  # the departing node answers up to its stop
    cluster.stop(2)
    for sidecar in stack._brokers["rabbit"].sidecars:
        if sidecar.name == "rabbit-2-definitions-sync":
            sidecar.signal(signal.SIGTERM)  # its pod is gone with it
            assert sidecar.wait(30) == 0
    stack.update_secret("rabbit", {"cluster-size": "2"})
    remaining = [s for s in stack._brokers["rabbit"].sidecars if s.name != "rabbit-2-definitions-sync"]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not any("removed departed node rabbit-2@localhost" in s.log() for s in remaining):
        time.sleep(1)
    time.sleep(3)
    publisher.stop.set()
    publisher.join(60)
    status = json.loads(cluster.rabbitmqctl(0, "cluster_status", "--formatter", "json"))
    queues = json.loads(cluster.rabbitmqctl(0, "list_queues", "name", "members", "--formatter", "json"))
    counts = wait_all_ran(stack, publisher.confirmed, 120)
    lost, _ = report("shrink 3 -> 2", publisher.confirmed, counts, stack)
    print(f"\n[shrink] members={status['disk_nodes']}; celery queue members="
          f"{[q['members'] for q in queues if q['name'] == 'celery']}")
    assert sorted(status["disk_nodes"]) == ["rabbit-0@localhost", "rabbit-1@localhost"], remaining[0].log()[-1500:]
    assert all("rabbit-2@localhost" not in q["members"] for q in queues), queues
    assert lost == 0 and publisher.failed == 0 and len(publisher.confirmed) > 20
    assert all_workers_up(stack)


def test_countdown_tasks_sent_before_and_while_the_first_workers_start_all_run(make_stack: MakeStack) -> None:
    # A second queue besides Celery's default: Celery would make it a classic queue on a direct
    # exchange, where a countdown task waits in a worker instead of in the broker.
    stack = make_stack(STACK + "  queues: [celery, agents.long]\n")
    cluster = stack.start_rabbitmq("rabbit")
    publisher = Publisher(agent(stack), seconds=0.01, every=0.05, options=[
        {"countdown": 2}, {"countdown": 3, "queue": "agents.long"}, {"queue": "agents.long"}])
    publisher.start()
    time.sleep(4)  # no worker has ever started: the broker's own topology takes them
    stack.start_replicas(SERVER)
    stack.wait_workers_ready(SERVER, range(2))
    time.sleep(6)  # and through the workers' start
    publisher.stop.set()
    publisher.join(60)
    counts = wait_all_ran(stack, publisher.confirmed, 120)
    assert publisher.failed == 0
    assert report("countdowns through the first start", publisher.confirmed, counts, stack)[0] == 0
    # Both task queues are quorum queues with a member on every node, with the task server's
    # delivery limit: a sidecar is ready only once it has imported and grown them, and
    # start_rabbitmq waited for every sidecar's readiness.
    names = ("celery", "agents.long", "celery_delayed_0", "celery_delayed_27")
    listed = json.loads(cluster.rabbitmqctl(0, "list_queues", "name", "type", "members", "policy", "--formatter", "json"))
    queues = {q["name"]: q for q in listed}
    for name in names:
        assert queues[name]["type"] == "quorum", queues[name]
        assert len(queues[name]["members"]) == 3, queues[name]
    assert queues["agents.long"]["policy"] == "gru-task_server"


def test_a_classic_queue_an_older_release_made_keeps_the_broker_up_and_migrates(make_stack: MakeStack) -> None:
    # Up to 0.2.0 Celery declared a task server's other queues itself, as classic queues on
    # direct exchanges. The definitions now declare them as quorum queues on topic exchanges:
    # importing them over the old ones must neither fail (a sidecar that cannot import keeps
    # its pod unready) nor stop a node from booting; the
    # CHANGELOG's migration (drain, delete the queue and its exchange, re-import) then gives
    # the quorum queue, and tasks run on it.
    stack = make_stack(STACK + "  queues: [celery, agents.long]\n")
    cluster = stack.start_rabbitmq("rabbit")
    with Connection(stack.broker_url("rabbit")) as connection:
        channel = connection.channel()
        channel.exchange_delete("agents.long")
        channel.queue_delete("agents.long")
        channel.exchange_declare("agents.long", "direct", durable=True)
        channel.queue_declare("agents.long", durable=True)
        channel.queue_bind("agents.long", "agents.long", "agents.long")
    definitions = str(stack.definitions_file("rabbit"))
    cluster.rabbitmqctl(1, "import_definitions", definitions)
    cluster.stop(2)
    cluster.restart(2)
    assert cluster.running_nodes(2) == {f"rabbit-{i}@localhost" for i in range(3)}
    # The migration, as the CHANGELOG gives it.
    cluster.rabbitmqctl(0, "delete_queue", "agents.long")
    with Connection(stack.broker_url("rabbit")) as connection:
        connection.channel().exchange_delete("agents.long")
    cluster.rabbitmqctl(0, "import_definitions", definitions)
    listed = json.loads(cluster.rabbitmqctl(0, "list_queues", "name", "type", "--formatter", "json"))
    assert {q["name"]: q["type"] for q in listed}["agents.long"] == "quorum"
    task = agent(stack).send_task("gru.sleep", args=[0.01, "migrated"], queue="agents.long", countdown=1).id
    stack.start_replicas(SERVER)
    assert report("a classic queue migrated", [task], wait_all_ran(stack, [task], 60), stack) == (0, 0)


FREEZE_SECONDS = 45
# While one node is frozen (README, "A frozen node"): how long one publish may take, the
# agent's retries included, and how long a worker may go without finishing a task while
# tasks wait (a worker of a healthy node: not at all; one of the frozen node: until it has
# noticed and moved).
PUBLISH_BOUND_SECONDS = 40
STALL_BOUND_SECONDS = 45


def test_a_frozen_node_bounds_publishes_and_stalls_no_worker_for_long(make_stack: MakeStack) -> None:
    # Three agents, each with its own connection through the Service, publishing faster than
    # the fleet consumes (so tasks always wait): some agents' and workers' connections land on
    # the node that freezes.
    stack, cluster, _ = fleet(make_stack)
    publishers = [Publisher(agent(stack), every=0.1) for _ in range(3)]
    for publisher in publishers:
        publisher.start()
    time.sleep(5)
    frozen_from = time.time()
    cluster.freeze(0)
    try:
        time.sleep(FREEZE_SECONDS)
    finally:
        cluster.thaw(0)
    frozen_until = time.time()
    time.sleep(10)
    for publisher in publishers:
        publisher.stop.set()
    for publisher in publishers:
        publisher.join(120)
    confirmed = [task_id for p in publishers for task_id in p.confirmed]
    counts = wait_all_ran(stack, confirmed, 240)
    lost, _duplicated = report("node SIGSTOP", confirmed, counts, stack)
    # Every publish that began while the node was frozen; each worker's longest stretch without
    # a finished task from the freeze until the queue ran dry.
    during = [took for p in publishers for start, took in p.publishes if frozen_from <= start < frozen_until]
    done = completions(stack, SERVER)
    drained = max(t for times in done.values() for t in times)
    stalls = {name: round(longest_gap(times, frozen_from, drained), 1) for name, times in done.items()}
    failed = sum(p.failed for p in publishers)
    print(f"\n[node SIGSTOP {FREEZE_SECONDS} s] publishes during the freeze={len(during)} failed={failed} "
          f"longest publish={max(during):.1f} s; longest stall per worker={stalls}")
    assert lost == 0
    assert max(during) <= PUBLISH_BOUND_SECONDS
    assert max(stalls.values()) <= STALL_BOUND_SECONDS
    assert all_workers_up(stack)
