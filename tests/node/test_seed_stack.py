"""The seed stack on the real node, deployed once by `pulumi up` (verbatim but for its image
names), then used as a platform engineer would on day one:

- Redis Running and Ready by its own probes, every worker's init container finished, the
  workers Ready; an agent pod enqueues 50 tasks through the Service's DNS name with the
  Secret's `broker-url`, and every one runs exactly once;
- NetworkPolicy enforced: only a pod with the client label gets a round trip to Redis, and
  DNS answers both;
- a worker evicted as `kubectl drain` does while it runs a task: the PDB admits it, the task
  finishes in the warm shutdown, and the pod takes no new one;
- the Redis pod deleted while tasks run and wait: it stops in seconds, comes back on the same
  volume, and every task runs exactly once;
- a password rotation by `pulumi up` while an agent enqueues: the workers roll for real, no
  WRONGPASS anywhere, no failed or lost task, Redis not restarted;
- `pulumi destroy` while a worker runs a task: it waits for the task, then leaves only the
  namespace and the broker's volume claim (README, "Deleting a stack").
"""

from __future__ import annotations

import json
import re
import threading
import time

from localcluster.api import Kube, wait_for

from ..engine.conftest import Project
from .cluster import (
    CLIENT_LABEL,
    NAMESPACE,
    REDIS,
    RETRY_POLICY,
    SECRET,
    STEADY_AGENT,
    WORKERS,
    Images,
    WorkerLogs,
    container_statuses,
    enqueue,
    on_a_real_node,
    run_job,
    secret_env,
    wait_ready,
)


def _received(text: str) -> list[str]:
    return re.findall(r"Task gru\.sleep\[([0-9a-f-]+)\] received", text)


def test_seed_stack_runs_every_task_once(deployed_seed: Project, images: Images) -> None:
    kube = deployed_seed.kube
    [redis] = wait_ready(kube, REDIS, 1, timeout=60)
    assert on_a_real_node(kube, redis)
    statuses = container_statuses(redis)
    assert all(s["ready"] and s["state"].get("running") for s in statuses), statuses
    assert all(s["restartCount"] == 0 for s in statuses), statuses

    workers = wait_ready(kube, WORKERS, 4, timeout=60)
    for pod in workers:
        assert on_a_real_node(kube, pod)
        [init] = container_statuses(pod, init=True)
        assert init["state"].get("terminated", {}).get("exitCode") == 0, init
        assert [s["restartCount"] for s in container_statuses(pod)] == [0]

    with WorkerLogs(kube, WORKERS) as logs:
        ids = enqueue(kube, images, "redis", CLIENT_LABEL, count=50, seconds=0.2)
        assert len(set(ids)) == 50
        counts = logs.wait_all_ran(ids, timeout=120)
    assert {i: counts[i] for i in ids if counts[i] != 1} == {}
    assert sum(1 for text in logs.text.values() if "succeeded" in text) >= 2, "one worker took every task"


# A Redis round trip, not a TCP connect: this machine's outbound proxy would answer a connect.
# Tried for 20 s: the policy enforcer needs a moment to learn a new pod's address.
ROUND_TRIP = """
import json, os, socket, time
from urllib.parse import urlsplit
import redis
url = os.environ["BROKER_URL"]
out = {}
try:
    out["address"] = socket.gethostbyname(urlsplit(url).hostname)
except OSError as error:
    out["address"] = None
    out["dns_error"] = str(error)
start = time.monotonic()
while True:
    try:
        out["ping"] = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2).ping()
        out["after"] = round(time.monotonic() - start, 1)
        break
    except Exception as error:
        out["ping"] = False
        out["error"] = type(error).__name__
        if time.monotonic() - start > 20:
            break
        time.sleep(0.5)
print("RESULT " + json.dumps(out))
"""


def _round_trip(kube: Kube, images: Images, labels: dict[str, str]) -> dict[str, object]:
    log = run_job(kube, images.worker, ROUND_TRIP, [secret_env("BROKER_URL", SECRET, "broker-url")], labels=labels)
    result: dict[str, object] = json.loads(next(line for line in log.splitlines() if line.startswith("RESULT "))[7:])
    return result


def test_network_policy_admits_only_labelled_clients(deployed_seed: Project, images: Images) -> None:
    kube = deployed_seed.kube
    service_ip = (kube.get("Service", "redis", NAMESPACE) or {})["spec"]["clusterIP"]
    allowed = _round_trip(kube, images, {CLIENT_LABEL: "true"})
    refused = _round_trip(kube, images, {})
    assert (allowed["address"], allowed["ping"]) == (service_ip, True), allowed
    assert refused["address"] == service_ip, refused
    assert refused["ping"] is False and refused["error"] in ("TimeoutError", "ConnectionError"), refused


def _holder(logs: WorkerLogs, task: str) -> str | None:
    pods = logs.pods_with(f"Task gru.sleep[{task}] received")
    return pods[0] if pods else None


def _run_long_task(kube: Kube, images: Images, logs: WorkerLogs, seconds: float) -> tuple[str, str]:
    """Four Ready workers, one of them running a `seconds` task: the task's id and that pod."""
    wait_ready(kube, WORKERS, 4, timeout=60)
    [task] = enqueue(kube, images, "redis", CLIENT_LABEL, count=1, seconds=seconds)
    wait_for("a worker to start the long task", lambda: _holder(logs, task) is not None, 60)
    pod = _holder(logs, task)
    assert pod is not None
    return task, pod


def test_evicted_worker_finishes_its_task_and_takes_no_new_one(deployed_seed: Project, images: Images) -> None:
    kube = deployed_seed.kube
    with WorkerLogs(kube, WORKERS) as logs:
        long_task, pod = _run_long_task(kube, images, logs, 20)
        kube.evict(NAMESPACE, pod)  # the PDB admits it: a refusal (429) raises here
        evicted_at = time.monotonic()
        short = enqueue(kube, images, "redis", CLIENT_LABEL, count=8, seconds=0.2)
        wait_for(f"{pod} to go", lambda: kube.get("Pod", pod, NAMESPACE) is None, 90)
        stopped_after = time.monotonic() - evicted_at
        counts = logs.wait_all_ran([long_task, *short], timeout=90)
        text = logs.pod_text(pod)
    assert f"Task gru.sleep[{long_task}] succeeded" in text, text[-3000:]
    assert not set(short) & set(_received(text)), "the evicted worker took new tasks"
    assert {i: counts[i] for i in [long_task, *short] if counts[i] != 1} == {}
    # It went once its task was done (about 20 s after the start), not at the end of its grace period.
    assert stopped_after < 45, stopped_after
    wait_ready(kube, WORKERS, 4, timeout=90)


def test_redis_pod_deleted_mid_task_comes_back_on_its_volume(deployed_seed: Project, images: Images) -> None:
    kube = deployed_seed.kube
    wait_ready(kube, WORKERS, 4, timeout=60)
    [redis] = wait_ready(kube, REDIS, 1, timeout=60)
    claim = kube.get("PersistentVolumeClaim", "data-redis-0", NAMESPACE) or {}
    with WorkerLogs(kube, WORKERS) as logs:
        running = enqueue(kube, images, "redis", CLIENT_LABEL, count=4, seconds=15)
        wait_for("every worker to run a long task", lambda: all(_holder(logs, t) for t in running), 60)
        queued = enqueue(kube, images, "redis", CLIENT_LABEL, count=10, seconds=0.2)

        started = time.monotonic()
        kube.delete("Pod", redis["metadata"]["name"], NAMESPACE)
        wait_for("the Redis pod to stop", lambda: all(
            p["metadata"]["uid"] != redis["metadata"]["uid"] for p in kube.list("Pod", NAMESPACE, REDIS)), 90, interval=0.2)
        stop_seconds = time.monotonic() - started
        [back] = wait_ready(kube, REDIS, 1, timeout=120)
        counts = logs.wait_all_ran([*running, *queued], timeout=180)
    assert back["metadata"]["uid"] != redis["metadata"]["uid"]
    after = kube.get("PersistentVolumeClaim", "data-redis-0", NAMESPACE) or {}
    assert (after["metadata"]["uid"], after["spec"]["volumeName"]) == (claim["metadata"]["uid"], claim["spec"]["volumeName"])
    assert {i: counts[i] for i in [*running, *queued] if counts[i] != 1} == {}
    # Redis stops on SIGTERM; its pod must not sit out the 60 s grace period.
    assert stop_seconds < 15, f"the Redis pod took {stop_seconds:.1f} s to stop"
    assert on_a_real_node(kube, back)


def test_password_rotation_rolls_the_workers_with_no_failed_login(deployed_seed: Project, images: Images) -> None:
    kube = deployed_seed.kube
    before = {p["metadata"]["name"] for p in wait_ready(kube, WORKERS, 4, timeout=60)}
    [redis] = wait_ready(kube, REDIS, 1, timeout=60)
    stack = (deployed_seed.stacks / "dev.yaml").read_text()
    result: dict[str, str] = {}
    with WorkerLogs(kube, WORKERS) as logs:
        agent = threading.Thread(target=lambda: result.update(log=run_job(
            kube, images.worker, STEADY_AGENT.format(seconds=60, interval=0.1, retry_policy=RETRY_POLICY),
            [secret_env("CELERY_BROKER_URL", SECRET, "broker-url")], labels={CLIENT_LABEL: "true"}, timeout=240)))
        agent.start()
        time.sleep(10)
        deployed_seed.write_stack("dev", stack.replace("  name: redis\n", "  name: redis\n  password_rotation: first\n", 1))
        deployed_seed.up("dev")
        agent.join(240)
        log = result["log"]
        sent = json.loads(next(line for line in log.splitlines() if line.startswith("SENT "))[5:])
        failures = json.loads(next(line for line in log.splitlines() if line.startswith("FAILURES "))[9:])
        counts = logs.wait_all_ran(sent, timeout=120)
        worker_text = logs.all_text()
    after = {p["metadata"]["name"] for p in wait_ready(kube, WORKERS, 4, timeout=60)}
    assert not before & after, "the workers did not roll onto the new password"
    assert failures == []
    assert len(sent) > 100
    assert {i: counts[i] for i in sent if counts[i] != 1} == {}
    assert "WRONGPASS" not in worker_text and "WRONGPASS" not in log
    [still] = wait_ready(kube, REDIS, 1, timeout=30)
    assert still["metadata"]["uid"] == redis["metadata"]["uid"], "Redis restarted"
    assert "WRONGPASS" not in kube.logs(NAMESPACE, still["metadata"]["name"], "acl-sync")


def test_destroy_waits_for_the_running_task_and_keeps_the_volume(deployed_seed: Project, images: Images) -> None:
    kube = deployed_seed.kube
    with WorkerLogs(kube, WORKERS) as logs:
        task, _pod = _run_long_task(kube, images, logs, 20)
        started = time.monotonic()
        deployed_seed.destroy("dev")
        took = time.monotonic() - started
        counts = logs.runs()
    assert counts[task] == 1, "pulumi destroy did not let the running task finish"
    assert took > 10, took
    # The agent Jobs' pods are this test's own, not the stack's.
    left = {kind: [o["metadata"]["name"] for o in kube.list(kind, NAMESPACE) if "agent" not in o["metadata"].get("labels", {})]
            for kind in ("Pod", "Deployment", "StatefulSet", "Service", "Secret", "PodDisruptionBudget", "NetworkPolicy")}
    assert left == {kind: [] for kind in left}, left
    assert [c["metadata"]["name"] for c in kube.list("PersistentVolumeClaim", NAMESPACE)] == ["data-redis-0"]
    assert kube.get("Namespace", NAMESPACE) is not None
