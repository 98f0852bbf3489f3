"""The rendered containers, run as local processes on loopback: real redis-server, real Celery
workers with exactly the rendered commands, arguments and environment (localrun/)."""

from __future__ import annotations

import gc
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from celery.result import AsyncResult
from kombu.exceptions import OperationalError

from gru.render import render_stack, write_manifests
from gru_worker.probe import check as probe_check
from gru_worker.settings import SOCKET_TIMEOUT_SECONDS, settings_from_env
from localrun import LocalStack
from localrun.runner import LocalProcess, have_redis

from .conftest import make_password

pytestmark = pytest.mark.skipif(not have_redis(), reason="needs redis-server and redis-cli (bash .ci/run installs them)")

PASSWORD = make_password()
# Short tasks: grace period 3 + 5 = 8 s, visibility timeout 16 s, so redelivery tests are quick.
STACK = """
broker:
  type: redis
  name: redis
  max_memory_mb: {max_memory_mb}
task_server:
  type: celery
  name: task_server
  replicas: 2
  concurrency_per_replica: 1
  broker_resource_name: redis
  max_task_seconds: 3
  broker_wait_seconds: {wait}
  results: {{enabled: true}}
"""
SERVER = "task-server"

MakeStack = Callable[..., LocalStack]


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[MakeStack]:
    started: list[LocalStack] = []

    def make(max_memory_mb: int = 64, wait: int = 60, text: str | None = None) -> LocalStack:
        stacks = tmp_path / "stacks"
        stacks.mkdir(exist_ok=True)
        (stacks / "e2e.yaml").write_text(text or STACK.format(max_memory_mb=max_memory_mb, wait=wait))
        rendered = tmp_path / "rendered"
        write_manifests(render_stack("e2e", stacks, show_secrets=True, secret_config={"gru:redis-password": PASSWORD}),
                        rendered)
        # What `gru render --show-secrets` wrote, read back from disk, as a user would run it.
        stack = LocalStack.from_directory(rendered, tmp_path / "run")
        started.append(stack)
        return stack

    yield make
    # The test's Celery results are finalised while their broker still runs: AsyncResult's
    # __del__ unsubscribes, and once the broker is gone it retries for 20 s per result, in
    # whatever later test the garbage collector happens to run.
    gc.collect()
    for stack in started:
        stack.close()
        # Every test stops what it started.
        assert all(not p.running() for p in stack._processes)


def as_user(stack: LocalStack, user: str) -> redis.Redis:
    """A connection as one of the broker's ACL users, with its password from the rendered Secret."""
    if user == "worker":
        return redis.Redis.from_url(stack.broker_url(key="worker-url"))
    password = stack.secret_value("redis", {"default": "redis-password"}.get(user, f"{user}-password"))
    return redis.Redis(host="127.0.0.1", port=stack.broker_port(), username=user, password=password)


def client(stack: LocalStack) -> Celery:
    app = Celery("e2e-client", broker=stack.broker_url(), backend=stack.broker_url())
    app.conf.broker_connection_retry_on_startup = True
    return app


def send_sleep(app: Celery, seconds: float, count: int = 1) -> list[tuple[str, AsyncResult]]:
    tokens = [uuid.uuid4().hex for _ in range(count)]
    return [(t, app.send_task("gru.sleep", args=[seconds, t])) for t in tokens]

def one_worker_running_a_task(stack: LocalStack, seconds: float) -> tuple[LocalProcess, Celery, str, AsyncResult]:
    """Redis, one ready worker pod, and a `gru.sleep` task of `seconds` that it has started."""
    stack.start_broker()
    worker = stack.start_pod(SERVER, 0)
    stack.wait_workers_ready(SERVER, [0])
    app = client(stack)
    ((token, running),) = send_sleep(app, seconds)
    wait_state(running, "STARTED", 30)
    return worker, app, token, running


def wait_state(result: AsyncResult, state: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while result.state != state:
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {result.id} still {result.state}, wanted {state}")
        time.sleep(0.05)


def test_tasks_through_the_rendered_broker_url_all_complete(make_stack: MakeStack) -> None:
    stack = make_stack()
    assert "%40" in stack.broker_url() and PASSWORD not in stack.broker_url()
    stack.start_broker()
    stack.start_replicas(SERVER)
    stack.wait_workers_ready(SERVER, [0, 1])
    app = client(stack)
    sent = send_sleep(app, 0.05, count=40)
    assert [r.get(timeout=60) for _, r in sent] == [t for t, _ in sent]
    # Both replicas took work: two Celery nodes named after their pods.
    logs = [p.log() for p in stack._processes if p.name.startswith(f"{SERVER}-local-") and not p.name.endswith("init")]
    assert all("Task gru.sleep" in log for log in logs)
    assert any("celery@task-server-local-0 ready" in log for log in logs)


def test_the_password_reaches_redis_only_from_the_secret(make_stack: MakeStack) -> None:
    stack = make_stack()
    stack.start_broker()
    port = stack.broker_port()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port, password="wrong").ping()
    assert redis.Redis(host="127.0.0.1", port=port, password=PASSWORD).ping()
    ps = Path(f"/proc/{stack._brokers['redis'].process.pid}/cmdline").read_bytes()  # type: ignore[union-attr]
    assert PASSWORD.encode() not in ps


def test_workers_wait_for_the_broker_then_work(make_stack: MakeStack) -> None:
    stack = make_stack()
    init = stack.start_wait_step(SERVER, 0)
    time.sleep(3)
    assert init.running(), init.log()
    assert "waiting for broker" in init.log() and "not ready yet" in init.log()
    stack.start_broker()
    assert init.wait(30) == 0
    assert "is ready" in init.log()
    stack.start_worker(SERVER, 0)
    stack.wait_workers_ready(SERVER, [0])
    assert client(stack).send_task("gru.ping").get(timeout=30) == "pong"


def test_the_wait_is_bounded_and_says_why(make_stack: MakeStack) -> None:
    stack = make_stack(wait=5)
    init = stack.start_wait_step(SERVER, 0)
    assert init.wait(30) == 1
    assert "did not answer within 5s" in init.log()


def test_a_task_of_a_killed_worker_is_delivered_again(make_stack: MakeStack) -> None:
    stack = make_stack()
    doomed, app, token, result = one_worker_running_a_task(stack, 2.0)
    # The pod dies at once: every process of the container, no warm shutdown.
    doomed.kill_all()
    stack.start_pod(SERVER, 1)
    # Redelivered once the visibility timeout (16 s) passes, and completed.
    assert result.get(timeout=90) == token


def test_sigterm_finishes_the_running_task_and_takes_no_new_ones(make_stack: MakeStack) -> None:
    stack = make_stack()
    worker, app, token, running = one_worker_running_a_task(stack, 2.0)
    queued = send_sleep(app, 0.1, count=3)
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    grace = stack.deployment(SERVER)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert worker.wait(grace) == 0
    assert time.monotonic() - started < grace
    assert running.get(timeout=5) == token
    assert all(r.state == "PENDING" for _, r in queued)
    assert worker.log().count("Task gru.sleep") == 2  # received and succeeded, the running task only
    # Another worker picks up what the stopped one left.
    stack.start_pod(SERVER, 1)
    assert [r.get(timeout=60) for _, r in queued] == [t for t, _ in queued]


@pytest.mark.parametrize("how", ["graceful", "crash"])
def test_queued_tasks_survive_a_redis_restart(make_stack: MakeStack, how: str) -> None:
    stack = make_stack()
    stack.start_broker()
    app = client(stack)
    sent = send_sleep(app, 0.01, count=50)
    assert as_user(stack, "default").llen("celery") == 50
    if how == "graceful":
        assert stack.stop_broker() == 0
    else:
        time.sleep(1.5)  # appendfsync everysec: what is a second old is on disk
        stack._brokers["redis"].process.kill_all()  # type: ignore[union-attr]
    stack.start_broker()
    assert as_user(stack, "default").llen("celery") == 50
    stack.start_replicas(SERVER)
    assert [r.get(timeout=60) for _, r in sent] == [t for t, _ in sent]


@pytest.mark.parametrize("how", ["graceful", "crash"])
def test_a_running_task_survives_a_redis_restart_and_runs_once(make_stack: MakeStack, how: str) -> None:
    stack = make_stack()
    worker, app, token, running = one_worker_running_a_task(stack, 2.5)
    if how == "graceful":
        assert stack.stop_broker() == 0
    else:
        stack._brokers["redis"].process.kill_all()  # type: ignore[union-attr]
    time.sleep(1)
    stack.start_broker()
    # The task finishes on the worker it started on and its result is stored.
    assert running.get(timeout=60) == token
    assert worker.running()
    # Past two visibility timeouts (16 s each) and their sweeps: never delivered a second time.
    time.sleep(2 * 16 + 4)
    assert worker.log().count(f"Task gru.sleep[{running.id}] received") == 1
    assert worker.log().count(f"Task gru.sleep[{running.id}] succeeded") == 1
    db = as_user(stack, "worker")
    assert db.llen("celery") == 0 and db.hlen("unacked") == 0


TWO_FLEETS = """
broker:
  type: redis
  name: redis
  max_memory_mb: 64
task_server:
  - {type: celery, name: quick, broker_resource_name: redis, max_task_seconds: 2, queues: [quick],
     results: {enabled: true}}
  - {type: celery, name: slow, broker_resource_name: redis, max_task_seconds: 20, queues: [slow],
     results: {enabled: true}}
"""


def test_fleets_with_different_task_limits_on_one_broker_never_redeliver_each_others_tasks(
        make_stack: MakeStack) -> None:
    # Alone, `quick` would use a 14 s visibility timeout and its workers would requeue the
    # slow fleet's 18 s task while it runs (kombu keeps one unacked index per database).
    stack = make_stack(text=TWO_FLEETS)
    stack.start_broker()
    quick, slow = stack.start_pod("quick", 0), stack.start_pod("slow", 0)
    stack.wait_workers_ready("quick", [0])
    stack.wait_workers_ready("slow", [0])
    app = client(stack)
    token = uuid.uuid4().hex
    running = app.send_task("gru.sleep", args=[18, token], queue="slow")
    assert running.get(timeout=90) == token
    time.sleep(5)  # a requeued copy would be received by the slow worker as soon as it is free
    db = as_user(stack, "worker")
    assert db.llen("slow") == 0 and db.hlen("unacked") == 0
    for worker in (quick, slow):
        assert worker.log().count(f"Task gru.sleep[{running.id}] received") == (1 if worker is slow else 0)
    env = {e["name"]: e.get("value") for e in
           stack.deployment("quick")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["GRU_VISIBILITY_TIMEOUT"] == "80"  # the slow fleet's 2 x (20 + 20), one per broker


def test_a_publish_to_a_broker_that_stops_answering_fails_instead_of_hanging(make_stack: MakeStack) -> None:
    stack = make_stack()
    stack.start_broker()
    # A client with the worker app's settings: tasks that enqueue tasks, results being stored.
    app = Celery("e2e-producer")
    app.conf.update(settings_from_env({"CELERY_BROKER_URL": stack.broker_url()}))
    assert app.send_task("gru.ping").id  # connected
    broker = stack._brokers["redis"].process
    assert broker is not None
    broker.signal(signal.SIGSTOP)  # TCP stays open; nothing answers (a frozen node)
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError):
            app.send_task("gru.ping", retry=False)
        assert time.monotonic() - started < 3 * SOCKET_TIMEOUT_SECONDS
    finally:
        broker.signal(signal.SIGCONT)
    assert app.send_task("gru.ping", retry=False).id


POISON_APP = """
import os
import signal

from gru_worker.app import app


@app.task(name="test.crash")
def crash() -> None:
    # What the OOM killer does to a task that eats memory: the pool process dies at once.
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_poison_task_goes_to_the_dead_letter_list_and_the_worker_stays_up(make_stack: MakeStack, tmp_path: Path) -> None:
    (tmp_path / "poison_app.py").write_text(POISON_APP)
    text = STACK.format(max_memory_mb=64, wait=60) + "  app: poison_app\n  max_deliveries: 3\n"
    stack = make_stack(text=text)
    stack.start_broker()
    worker = stack.start_pod(SERVER, 0, extra_env={"PYTHONPATH": f"{stack.worker_dir}{os.pathsep}{tmp_path}"})
    stack.wait_workers_ready(SERVER, [0])
    app = client(stack)
    poison = app.send_task("test.crash")
    db = as_user(stack, "worker")
    deadline = time.monotonic() + 90
    while db.llen("gru:dead-letter") == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    (raw,) = db.lrange("gru:dead-letter", 0, -1)
    entry = json.loads(raw)
    assert entry["id"] == poison.id and entry["name"] == "test.crash" and entry["deliveries"] == 3
    assert int(db.get("gru:dead-letter:count") or 0) == 1
    # Run three times, then received a fourth time and not run; nothing left to redeliver.
    assert worker.log().count(f"Task test.crash[{poison.id}] received") == 4
    assert worker.running()
    assert app.send_task("gru.ping").get(timeout=30) == "pong"
    deadline = time.monotonic() + 10  # the ping's late ack follows its result
    while db.hlen("unacked") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert db.llen("celery") == 0 and db.hlen("unacked") == 0, db.hgetall("unacked")
    assert poison.state == "REVOKED"


def test_a_full_broker_refuses_writes_and_keeps_what_it_has(make_stack: MakeStack) -> None:
    stack = make_stack(max_memory_mb=16)
    stack.start_broker()
    app = client(stack)
    db = as_user(stack, "worker")
    payload = "x" * 256 * 1024
    accepted = 0
    with pytest.raises(OperationalError) as refused:
        for _ in range(1000):  # 250 MiB at most: far past the 16 MiB limit
            app.send_task("gru.sleep", args=[0, payload], retry=False)
            accepted += 1
    assert "command not allowed when used memory > 'maxmemory'" in str(refused.value)
    assert accepted > 10
    assert db.llen("celery") == accepted
    server = as_user(stack, "exporter")
    assert server.info("stats")["evicted_keys"] == 0
    assert server.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"


def fill(app: Celery, queue: str = "celery", pad_bytes: int = 256 * 1024) -> list[str]:
    """Enqueue tasks padded to `pad_bytes` until the broker refuses one; the ids of those it accepted."""
    pad = "x" * pad_bytes
    accepted: list[str] = []
    with pytest.raises(OperationalError) as refused:
        for _ in range(1000):  # 250 MiB at most: far past any test broker's limit
            # The padding rides in a header: the task and its result stay small.
            accepted.append(app.send_task("gru.sleep", args=[0, "filler"], queue=queue,
                                          headers={"pad": pad}, retry=False).id)
    assert "command not allowed when used memory > 'maxmemory'" in str(refused.value)
    return accepted


FULL_BROKER_STACK = """
broker:
  type: redis
  name: redis
  max_memory_mb: 16
task_server:
  type: celery
  name: task_server
  replicas: 2
  concurrency_per_replica: 1
  broker_resource_name: redis
  max_task_seconds: 3
  queues: [celery, spare]
"""
BINDING_SEP = "\x06\x16"  # kombu's separator inside a binding table member


def fill_to_the_brim(app: Celery, stack: LocalStack) -> tuple[list[str], list[redis.Redis]]:
    """Fill the broker as publishers do, down to tasks with no padding, then connect idle agents
    until Redis is past `maxmemory`: it refuses even a MULTI of one LLEN, as kombu's `_size`
    sends it. Filling alone leaves a refused publish's input buffer of headroom, which the
    first connections of a starting worker happen to use up: the agents make it certain."""
    accepted: list[str] = []
    for pad_bytes in (256 * 1024, 16 * 1024, 1024, 0):
        accepted += fill(app, pad_bytes=pad_bytes)
    probe = as_user(stack, "worker")
    agents: list[redis.Redis] = []
    for _ in range(50):
        try:
            probe.pipeline().llen("celery").execute()
        except redis.exceptions.OutOfMemoryError:
            return accepted, agents
        agent = as_user(stack, "default")
        agent.ping()  # the connection stays open, as an agent's does
        agents.append(agent)
    raise AssertionError("the broker never went past maxmemory")


def wait_ready_while_running(stack: LocalStack, worker: LocalProcess, index: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not stack.health_file(SERVER, index, "ready").exists():
        assert worker.running(), f"worker {index} exited on the full broker:\n{worker.log()[-6000:]}"
        assert time.monotonic() < deadline, f"worker {index} not ready:\n{worker.log()[-6000:]}"
        time.sleep(0.1)


def wait_drained(db: redis.Redis, workers: list[LocalProcess], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while db.llen("celery") or db.hlen("unacked"):
        assert all(w.running() for w in workers), "a worker exited while draining"
        assert time.monotonic() < deadline, "the backlog did not drain"
        time.sleep(0.2)


def worker_logs(workers: list[LocalProcess]) -> str:
    """Every worker's log once (a restarted pod appends to its earlier log)."""
    return "".join(path.read_text(errors="replace") for path in sorted({w.log_path for w in workers}))


def assert_each_ran_once(accepted: list[str], workers: list[LocalProcess]) -> None:
    logs = worker_logs(workers)
    for task_id in accepted:
        assert logs.count(f"Task gru.sleep[{task_id}] succeeded") == 1, [
            line for line in logs.splitlines() if task_id in line or "Error" in line or "WARNING" in line]


def wait_binding(db: redis.Redis, exchange: str, queue: str, timeout: float = 30) -> None:
    """Until the binding of `queue` that the full broker refused is stored."""
    deadline = time.monotonic() + timeout
    while not any(m.decode().endswith(BINDING_SEP + queue) for m in db.smembers(f"_kombu.binding.{exchange}")):
        assert time.monotonic() < deadline, f"binding of {queue} to {exchange} never stored"
        time.sleep(0.5)


def test_a_full_broker_keeps_running_and_starting_workers_up_and_drains(make_stack: MakeStack) -> None:
    # Results on: the worst case, every finished task also writes to the full broker.
    stack = make_stack(max_memory_mb=16)
    running_worker, app, token, running = one_worker_running_a_task(stack, 6.0)
    db = as_user(stack, "worker")
    accepted, agents = fill_to_the_brim(app, stack)
    assert len(accepted) > 10
    # A worker starting against the full broker: its init container, queue declarations and
    # unacked sweep all meet a broker that refuses writes.
    starting_worker = stack.start_pod(SERVER, 1)
    deadline = time.monotonic() + 120
    while (db.llen("celery") or db.hlen("unacked")) and time.monotonic() < deadline:
        assert running_worker.running() and starting_worker.running()
        time.sleep(0.5)
    assert db.llen("celery") == 0 and db.hlen("unacked") == 0, "the backlog did not drain"
    assert running_worker.running() and starting_worker.running()
    logs = running_worker.log() + starting_worker.log()
    # Every accepted task ran exactly once.
    for task_id in accepted:
        assert logs.count(f"Task gru.sleep[{task_id}] succeeded") == 1, [
            line for line in logs.splitlines() if task_id in line or "Error" in line or "WARNING" in line]
    assert logs.count(f"Task gru.sleep[{running.id}] succeeded") == 1
    assert as_user(stack, "exporter").info("stats")["evicted_keys"] == 0
    # Drained, the broker takes new work again.
    assert app.send_task("gru.ping").get(timeout=30) == "pong"


def test_workers_starting_restarting_and_rolling_out_on_a_broker_past_maxmemory_come_up_and_drain(
        make_stack: MakeStack) -> None:
    # Results off (the default) and queued tasks only: nothing but the backlog fills the broker.
    stack = make_stack(text=FULL_BROKER_STACK)
    stack.start_broker()
    app = Celery("e2e-agent", broker=stack.broker_url())
    db = as_user(stack, "worker")
    workers: list[LocalProcess] = []
    all_accepted: list[str] = []

    # A worker starting: its hostname's control (pidbox) queue and the `spare` queue, which no
    # publisher has declared yet, have no binding stored, and the broker refuses to store one.
    accepted, agents = fill_to_the_brim(app, stack)
    assert len(accepted) > 10
    first = stack.start_pod(SERVER, 0)
    workers.append(first)
    wait_ready_while_running(stack, first, 0)
    wait_drained(db, workers)
    assert_each_ran_once(accepted, workers)
    all_accepted += accepted
    # The refused bindings are stored once there is room again.
    wait_binding(db, "celery.pidbox", f"celery@{SERVER}-local-0.celery.pidbox")
    wait_binding(db, "spare", "spare")

    # The same worker restarting (its bindings stored this time) on a broker full again.
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0
    accepted, more_agents = fill_to_the_brim(app, stack)
    agents += more_agents
    restarted = stack.start_pod(SERVER, 0)
    workers.append(restarted)
    wait_ready_while_running(stack, restarted, 0)
    wait_drained(db, [restarted])
    assert_each_ran_once(accepted, workers)
    all_accepted += accepted

    # A rollout: a new pod comes up next to the old one, busy with a long task, while the
    # broker is full; then the old pod stops, finishing its task.
    ((_, long_task),) = send_sleep(app, 6.0)
    deadline = time.monotonic() + 30
    while f"Task gru.sleep[{long_task.id}] received" not in restarted.log():
        assert time.monotonic() < deadline, "the long task never reached the old pod"
        time.sleep(0.1)
    accepted, more_agents = fill_to_the_brim(app, stack)
    agents += more_agents
    rolled = stack.start_pod(SERVER, 1)
    workers.append(rolled)
    wait_ready_while_running(stack, rolled, 1)
    restarted.signal(signal.SIGTERM)  # maxUnavailable 0: the old pod goes once the new one is ready
    assert restarted.wait(30) == 0
    wait_drained(db, [rolled])
    assert_each_ran_once(accepted + [long_task.id], workers)
    all_accepted += accepted
    assert worker_logs(workers).count("Task gru.sleep[") == 2 * (len(all_accepted) + 1)  # received, succeeded

    for agent in agents:
        agent.close()
    assert as_user(stack, "exporter").info("stats")["evicted_keys"] == 0
    # Drained, the broker takes new work again.
    sent = app.send_task("gru.sleep", args=[0, "after"])
    deadline = time.monotonic() + 30
    while f"Task gru.sleep[{sent.id}] succeeded" not in rolled.log():
        assert time.monotonic() < deadline, "a task sent after the drain never ran"
        time.sleep(0.2)


def test_a_worker_stopped_on_a_full_broker_puts_back_the_task_it_took_unrecorded(make_stack: MakeStack) -> None:
    # A worker that takes a task the full broker refuses to record holds its only copy: stopped
    # before running it, it must put it back, not drop it.
    stack = make_stack(text=FULL_BROKER_STACK)
    stack.start_broker()
    app = Celery("e2e-agent", broker=stack.broker_url())
    db = as_user(stack, "worker")
    old = stack.start_pod(SERVER, 0)
    wait_ready_while_running(stack, old, 0)
    ((_, long_task),) = send_sleep(app, 4.0)
    deadline = time.monotonic() + 60
    while f"Task gru.sleep[{long_task.id}] received" not in old.log():
        assert time.monotonic() < deadline, "the long task never reached the worker"
        time.sleep(0.1)
    accepted, agents = fill_to_the_brim(app, stack)
    # The long task ends, the worker takes the next task, which the broker refuses to record
    # (the agents keep it past maxmemory), and it is told to stop meanwhile.
    while f"Task gru.sleep[{long_task.id}] succeeded" not in old.log():
        assert time.monotonic() < deadline, "the long task never finished"
        time.sleep(0.05)
    # Stopped only once it holds the next task (in its 5 s of recording retries): a stop that
    # lands before it takes one leaves nothing to put back, and proves nothing.
    while db.llen("celery") != len(accepted) - 1:
        assert time.monotonic() < deadline, "the worker never took the next task"
        time.sleep(0.02)
    old.signal(signal.SIGTERM)
    while "runs without a redelivery record" not in old.log():
        assert old.running() and time.monotonic() < deadline, old.log()[-4000:]
        time.sleep(0.05)
    # Another consumer takes a task meanwhile, as any other worker would: the room for the
    # put-back. (Putting back needs more room than taking freed: the command's input buffer.)
    raw = db.rpop("celery")
    assert raw is not None
    taken = json.loads(raw)["headers"]["id"]
    assert old.wait(30) == 0
    assert "Restoring 1 unacknowledged message(s)" in old.log()
    assert db.llen("celery") == len(accepted) - 1, "the task the stopped worker held is gone"
    new = stack.start_pod(SERVER, 1)
    wait_ready_while_running(stack, new, 1)
    wait_drained(db, [new])
    accepted.remove(taken)
    assert_each_ran_once(accepted + [long_task.id], [old, new])
    assert f"Task gru.sleep[{taken}]" not in worker_logs([old, new])
    for agent in agents:
        agent.close()


def test_results_are_off_unless_asked_for(make_stack: MakeStack) -> None:
    text = STACK.format(max_memory_mb=64, wait=60).replace("  results: {enabled: true}\n", "")
    stack = make_stack(text=text)
    stack.start_broker()
    worker = stack.start_pod(SERVER, 0)
    stack.wait_workers_ready(SERVER, [0])
    sent = client(stack).send_task("gru.sleep", args=[0, "t"])
    deadline = time.monotonic() + 30
    while f"Task gru.sleep[{sent.id}] succeeded" not in worker.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"Task gru.sleep[{sent.id}] succeeded" in worker.log()
    db = as_user(stack, "worker")
    assert not db.exists(f"celery-task-meta-{sent.id}")
    assert sent.state == "PENDING"  # nothing stored, ever


def test_readiness_follows_the_broker_connection(make_stack: MakeStack) -> None:
    stack = make_stack()
    stack.start_broker()
    stack.start_pod(SERVER, 0)
    stack.wait_workers_ready(SERVER, [0])
    ready = stack.health_file(SERVER, 0, "ready")
    assert stack.stop_broker() == 0
    deadline = time.monotonic() + 30
    while ready.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not ready.exists(), "worker still reports ready without a broker"
    # Not ready, but alive: a restart could not bring the broker back.
    alive = stack.health_file(SERVER, 0, "alive")
    time.sleep(2)
    assert probe_check("alive", 1, alive.parent)[0], "liveness fails while the worker waits for its broker"
    assert not probe_check("ready", 60, alive.parent)[0]
    stack.start_broker()
    stack.wait_workers_ready(SERVER, [0], timeout=60)
    assert not (alive.parent / "reconnecting").exists()
    assert client(stack).send_task("gru.ping").get(timeout=30) == "pong"


# --- ACL users and password rotation -------------------------------------------------------

def test_each_client_kind_may_do_only_its_job(make_stack: MakeStack) -> None:
    stack = make_stack()
    stack.start_broker()
    denied = redis.exceptions.NoPermissionError
    destructive = [("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "SET", "maxmemory", "1"), ("SHUTDOWN", "NOSAVE"),
                   ("KEYS", "*"), ("ACL", "SETUSER", "x", "on"), ("CLIENT", "KILL", "TYPE", "normal")]
    for user in ("default", "worker", "exporter", "keda"):
        db = as_user(stack, user)
        for command in destructive:
            with pytest.raises(denied):
                db.execute_command(*command)
    agent, keda, exporter = as_user(stack, "default"), as_user(stack, "keda"), as_user(stack, "exporter")
    for command in [("EVAL", "return 1", "0"), ("HSET", "unacked", "t", "x"), ("SET", "k", "v")]:
        with pytest.raises(denied):
            agent.execute_command(*command)
    # What KEDA's redis scaler sends at every poll: EVAL of a script that asks the key's TYPE,
    # then its LLEN. It counts; the same script cannot read or change anything else.
    agent.lpush("celery", "t1", "t2")
    count_like_keda = ("local t = redis.call('type', KEYS[1]).ok "
                       "if t == 'list' or t == 'none' then return redis.call('llen', KEYS[1]) end "
                       "return redis.error_reply('ERR unsupported key type: ' .. t)")
    assert keda.eval(count_like_keda, 1, "celery") == 2
    assert keda.eval(count_like_keda, 1, "no-such-queue") == 0
    for script in ("return redis.call('del', KEYS[1])", "return redis.call('lpush', KEYS[1], 'x')",
                   "return redis.call('lrange', KEYS[1], 0, -1)", "return redis.call('flushall')"):
        with pytest.raises(redis.exceptions.ResponseError, match="can.t run this command"):
            keda.eval(script, 1, "celery")
    for command in [("LRANGE", "celery", "0", "-1"), ("EVALSHA", "0" * 40, "0"), ("SCRIPT", "FLUSH"),
                    ("FUNCTION", "LIST"), ("DEL", "celery")]:
        with pytest.raises(denied):
            keda.execute_command(*command)
    assert agent.llen("celery") == 2
    assert exporter.info("memory")["maxmemory"] > 0
    with pytest.raises(denied):
        exporter.lpush("celery", "x")
    # A URL without a user name logs in as the agents' user, with the agents' password only.
    assert redis.Redis(host="127.0.0.1", port=stack.broker_port(), password=PASSWORD).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=stack.broker_port(), password="not-the-password").ping()


def test_a_password_rotation_moves_every_client_with_no_failed_login_and_no_lost_task(make_stack: MakeStack) -> None:
    from components.redis_broker.component import broker_url
    from components.redis_broker.redis_acl import USERS, acl_file, password_hash

    stack = make_stack()
    host = "redis.gru.svc.cluster.local"
    # Known passwords, in the shape the stack's state holds them: current, and next staged.
    old = {u.name: f"{u.name}-old-{uuid.uuid4().hex}" for u in USERS}
    new = {u.name: (f"{u.name}-new-{uuid.uuid4().hex}" if u.rotates else old[u.name]) for u in USERS}
    later = {u.name: f"{u.name}-later-{uuid.uuid4().hex}" for u in USERS}

    # The test's own user, to read ACL LOG: who was refused, should anyone be.
    inspector = f"inspector-{uuid.uuid4().hex}"

    def secret(current: dict[str, str], staged: dict[str, str], drop_after: int) -> dict[str, str]:
        users = acl_file({u.name: [current[u.name], staged[u.name]] if u.rotates else [current[u.name]] for u in USERS})
        return {"users.acl": users + f"user inspector on #{password_hash(inspector)} -@all +acl|log\n",
                "worker-url": broker_url(current["worker"], host, "worker"),
                "broker-url": broker_url(current["default"], host), "redis-password": current["default"],
                "exporter-password": current["exporter"], "admin-password": current["admin"],
                "drop-after-seconds": str(drop_after)}

    stack.update_secret("redis", secret(old, new, 0))
    redis_process = stack.start_broker()
    old_pods = stack.start_replicas(SERVER)
    stack.wait_workers_ready(SERVER, [0, 1])

    # An agent enqueues all along and waits for every result.
    agent_url = [stack.broker_url()]
    failures: list[str] = []
    results: list[tuple[str, AsyncResult]] = []
    stop = False

    def agent() -> None:
        while not stop:
            app = Celery("agent", broker=agent_url[0], backend=agent_url[0])
            try:
                results.extend(send_sleep(app, 0.2))
            except Exception as error:  # noqa: BLE001 - every failure is counted and reported
                failures.append(repr(error))
            time.sleep(0.05)


    thread = threading.Thread(target=agent, daemon=True)
    thread.start()
    time.sleep(2)
    # `pulumi up` with a new password_rotation: the Secret changes in place; the kubelet
    # refreshes the broker pod's files; Redis keeps running.
    drop_after = 30  # the longest rollout here, as the program computes it for a real fleet
    stack.update_secret("redis", secret(new, later, drop_after))
    deadline = time.monotonic() + 30
    while stack.sidecar("redis", "acl-sync").log().count("applied users file") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    rotated_at = time.monotonic()
    agent_url[0] = stack.broker_url()  # agents restart onto the new password, within the drop time
    # The workers roll: new pods (reading the new Secret) come up, then the old ones stop.
    assert stack.roll(SERVER, old_pods, [2, 3]) == [0] * len(old_pods)
    assert time.monotonic() - rotated_at < drop_after, "the roll outlasted the drop time: the test proves nothing"
    # Past the drop time, the old passwords are gone.
    time.sleep(max(0.0, rotated_at + drop_after + 8 - time.monotonic()))
    stop = True
    thread.join(30)
    exporter = redis.Redis(host="127.0.0.1", port=stack.broker_port(), username="exporter", password=new["exporter"])
    stats = exporter.info("stats")
    errors = exporter.info("errorstats")
    assert failures == []
    # ACL LOG names who was refused (user, client address and name, when): the failure says who.
    log = redis.Redis(host="127.0.0.1", port=stack.broker_port(), username="inspector", password=inspector)
    refused = log.acl_log()
    assert "errorstat_WRONGPASS" not in errors and stats.get("acl_access_denied_auth", 0) == 0, (errors, refused)
    assert len(results) > 20
    reader = client(stack)  # a restarted agent, on the new password
    assert [reader.AsyncResult(r.id).get(timeout=60) for _, r in results] == [t for t, _ in results]
    assert redis_process.running()  # no restart
    for user in ("worker", "default"):
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=stack.broker_port(), username=user, password=old[user]).ping()
        assert redis.Redis(host="127.0.0.1", port=stack.broker_port(), username=user, password=later[user]).ping()
    # The counter read above does count refused logins: those just made (redis-py retries each).
    assert exporter.info("errorstats")["errorstat_WRONGPASS"]["count"] >= 2


def test_a_worker_rides_out_a_broker_that_stops_answering(make_stack: MakeStack) -> None:
    # A frozen node: TCP stays open and nothing answers. The worker must neither hang for good
    # nor be killed by its own liveness probe, and the task it was running must not be lost.
    stack = make_stack()
    worker, app, token, running = one_worker_running_a_task(stack, 4.0)
    broker = stack._brokers["redis"].process
    assert broker is not None
    alive = stack.health_file(SERVER, 0, "alive")
    broker.signal(signal.SIGSTOP)
    try:
        for _ in range(25):
            time.sleep(1)
            assert worker.running()
            # What the kubelet's liveness probe would see, every second of the freeze.
            assert probe_check("alive", 60, alive.parent)[0], "liveness would restart the worker"
    finally:
        broker.signal(signal.SIGCONT)
    stack.wait_workers_ready(SERVER, [0], timeout=120)
    # Its result could not be stored nor its message acknowledged while Redis was frozen: the
    # task is delivered again once the visibility timeout passes, and its result arrives.
    assert client(stack).AsyncResult(running.id).get(timeout=120) == token  # a fresh agent: the old one saw the freeze
    assert client(stack).send_task("gru.ping").get(timeout=30) == "pong"
    assert worker.running()
