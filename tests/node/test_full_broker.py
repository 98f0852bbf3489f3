"""Workers start and roll out on a Redis past `maxmemory`, in real pods, and drain the backlog.

An agent pod fills the broker as publishers do (tasks, then idle connections, until Redis
refuses even a MULTI of one LLEN, which kombu's queue declaration sends) and stays connected.
Then `pulumi up` starts the fleet from zero, and later rolls it out, each time on a broker
full again: every worker comes up Ready with no restart (a worker that died on its first
queue declaration would crash-loop, and `pulumi up` would fail waiting for it), and every
accepted task runs once. tests/test_end_to_end.py shows the same with host processes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster.api import Kube, wait_for

from ..engine.conftest import Cluster, Project
from .cluster import NAMESPACE, Images, WorkerLogs, container_statuses, pods, secret_env, start_job, with_images
from .conftest import stack_up

STACK = """\
broker:
  type: redis
  name: redis
  max_memory_mb: 16
task_server:
  type: celery
  name: drain
  replicas: {replicas}
  concurrency_per_replica: 1
  broker_resource_name: redis
  max_task_seconds: 3
  queues: {queues}
"""
WORKERS = "app.kubernetes.io/name=celery-worker,app.kubernetes.io/instance=drain"
CLIENT_LABEL = "gru.dev/client-of-redis"
FILL = """
QUEUE = {queue!r}
import json, os, time
import redis
from celery import Celery
from gru_worker.settings import settings_from_env
app = Celery("agent")
app.conf.update(settings_from_env())
# kube-router learns a new pod's address a second or two after it starts: wait for the broker.
with app.connection_for_write() as connection:
    connection.ensure_connection(max_retries=30, interval_start=0.2, interval_step=0.2, interval_max=1)
accepted = []
for pad_bytes in (256 * 1024, 16 * 1024, 1024, 0):
    pad = "x" * pad_bytes
    for _ in range(1000):
        try:
            accepted.append(app.send_task("gru.sleep", args=[0, "filler"], queue=QUEUE, headers={"pad": pad},
                                          retry=False).id)
        except Exception as error:
            if "maxmemory" not in str(error):
                raise
            break
url = os.environ["CELERY_BROKER_URL"]
probe, agents = redis.Redis.from_url(url), []
for _ in range(50):
    try:
        probe.pipeline().llen(QUEUE).execute()
    except redis.exceptions.OutOfMemoryError:
        break
    agent = redis.Redis.from_url(url)
    agent.ping()  # stays open, as an agent's connection does
    agents.append(agent)
else:
    raise SystemExit("the broker never went past maxmemory")
print("FILLED " + json.dumps(accepted), flush=True)
time.sleep(900)
"""


def stack(replicas: int, queues: list[str]) -> str:
    return STACK.format(replicas=replicas, queues=json.dumps(queues))


@pytest.fixture(scope="module")
def drain(cluster: Cluster, engine_bin: Path, images: Images, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    with stack_up(cluster, engine_bin, tmp_path_factory, "drain", with_images(stack(0, ["celery"]), images)) as project:
        yield project


def fill_broker(kube: Kube, images: Images, queue: str) -> tuple[str, list[str]]:
    """An agent pod fills `queue` until the broker is past maxmemory and stays connected: its
    Job and the ids of the tasks the broker accepted."""
    job = start_job(kube, images.worker, FILL.replace("{queue!r}", repr(queue)),
                    [secret_env("CELERY_BROKER_URL", "redis-credentials", "broker-url")], labels={CLIENT_LABEL: "true"})
    accepted: list[str] = []

    def filled() -> bool:
        for pod in kube.list("Pod", NAMESPACE, f"agent={job}"):
            status = pod.get("status", {})
            if status.get("phase") in ("Failed", "Succeeded"):
                raise AssertionError(kube.logs(NAMESPACE, pod["metadata"]["name"]))
            if status.get("phase") == "Running":
                line = next((x for x in kube.logs(NAMESPACE, pod["metadata"]["name"]).splitlines()
                             if x.startswith("FILLED ")), None)
                if line:
                    accepted.extend(json.loads(line[7:]))
                    return True
        return False

    wait_for("the agent to fill the broker", filled, 180, interval=1)
    return job, accepted


def delete_job(kube: Kube, job: str) -> None:
    """The Job and its pod (a Job's deletion orphans its pods unless told otherwise)."""
    kube.request("DELETE", kube.path("Job", NAMESPACE, job) + "?propagationPolicy=Background")


def assert_up_with_no_restart(kube: Kube, count: int) -> None:
    running = [p for p in pods(kube, WORKERS) if p.get("status", {}).get("phase") == "Running"]
    assert len(running) == count, [p["metadata"]["name"] for p in running]
    for pod in running:
        restarts = {s["name"]: s.get("restartCount", 0) for s in container_statuses(pod)}
        assert restarts == {"worker": 0}, (pod["metadata"]["name"], restarts)


def test_workers_start_and_roll_out_on_a_full_broker_and_drain_it(drain: Project, images: Images) -> None:
    kube = drain.kube
    with WorkerLogs(kube, WORKERS) as logs:
        # Start: the fleet goes from zero to two pods on a full broker.
        job, accepted = fill_broker(kube, images, "celery")
        assert len(accepted) > 10
        drain.write_stack("drain", with_images(stack(2, ["celery"]), images))
        drain.up("drain")
        assert_up_with_no_restart(kube, 2)
        runs = logs.wait_all_ran(accepted, timeout=300)
        assert {i: runs[i] for i in accepted} == dict.fromkeys(accepted, 1)
        delete_job(kube, job)

        # Rollout: the broker full again, of tasks on a queue the running pods do not consume;
        # the new pods, which do, declare it on the full broker and drain it.
        job, more = fill_broker(kube, images, "spare")
        started = time.monotonic()
        drain.write_stack("drain", with_images(stack(2, ["celery", "spare"]), images))
        drain.up("drain")
        print(f"rollout on the full broker: pulumi up took {time.monotonic() - started:.0f} s")
        wait_for("the old pods to go", lambda: len(pods(kube, WORKERS)) == 2, 120)
        assert_up_with_no_restart(kube, 2)
        runs = logs.wait_all_ran(more, timeout=300)
        assert {i: runs[i] for i in accepted + more} == dict.fromkeys(accepted + more, 1)
        delete_job(kube, job)
