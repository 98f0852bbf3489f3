"""A small stack with metrics on: one Redis with its exporter, one worker pod of two processes.

The exporter, built from its Go module, scrapes Redis as its least-privilege ACL user with no
NOPERM in its log and reports `redis_up 1`.

A task that runs away with memory, on the real node's real cgroup memory limit: in the worker
pod of two pool processes, a task that allocates past the container's limit runs beside a long
task. With the per-process cap (gru_worker.memory_cap) the runaway task fails inside its own
process with MemoryError, once; the task beside it completes; the container is not OOM-killed
and does not restart. Without the cap the kernel's OOM killer
acts (on this cgroup v1 node it kills the largest process; on cgroup v2 nodes the kubelet has
it kill the whole container), and the task goes round again until `max_deliveries`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster.api import wait_for

from ..engine.conftest import Cluster, Project
from .cluster import Images, WorkerLogs, container_statuses, run_job, send, wait_ready, with_images
from .conftest import stack_up

STACK = """\
broker:
  type: redis
  name: redis
  metrics:
    enabled: true
task_server:
  type: celery
  name: hogs
  replicas: 1
  concurrency_per_replica: 2
  broker_resource_name: redis
"""
WORKERS = "app.kubernetes.io/name=celery-worker,app.kubernetes.io/instance=hogs"
EXPORTER = "app.kubernetes.io/name=redis-exporter,app.kubernetes.io/instance=redis"
# Three scrapes, as Prometheus would make them; the last one's figures. The first is retried
# for a while: the policy enforcer learns a new pod's address a moment after it starts.
SCRAPE = """
import time, urllib.request
URL = "http://redis-metrics.gru.svc.cluster.local:9121/metrics"
deadline = time.monotonic() + 30
while True:
    try:
        urllib.request.urlopen(URL, timeout=5).read()
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(1)
for _ in range(3):
    text = urllib.request.urlopen(URL, timeout=10).read().decode()
    time.sleep(2)
print("\\n".join(line for line in text.splitlines() if line.startswith(("redis_up ", "redis_key_size"))))
"""
CLIENT_LABEL = "gru.dev/client-of-redis"


@pytest.fixture(scope="module")
def hogs(cluster: Cluster, engine_bin: Path, images: Images, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    with stack_up(cluster, engine_bin, tmp_path_factory, "hogs", with_images(STACK, images)) as project:
        yield project


def test_a_runaway_task_fails_alone_and_the_container_stays_up(hogs: Project, images: Images) -> None:
    kube = hogs.kube
    [pod] = wait_ready(kube, WORKERS, 1, timeout=90)
    name = pod["metadata"]["name"]
    limit = pod["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert limit == "1152Mi"
    with WorkerLogs(kube, WORKERS) as logs:
        neighbour = send(kube, images, "redis", CLIENT_LABEL, "gru.sleep", [20, "neighbour"])
        wait_for("the neighbour to start", lambda: f"Task gru.sleep[{neighbour}] received" in logs.pod_text(name), 60)
        runaway = send(kube, images, "redis", CLIENT_LABEL, "gru.allocate", [1500, 0, "runaway"])
        wait_for("the neighbour to finish", lambda: f"Task gru.sleep[{neighbour}] succeeded" in logs.pod_text(name), 90)
        text = logs.pod_text(name)
    assert text.count(f"Task gru.allocate[{runaway}] received") == 1, text[-4000:]
    assert f"Task gru.allocate[{runaway}] raised unexpected: MemoryError" in text, text[-4000:]
    assert "WorkerLostError" not in text
    [status] = container_statuses(kube.get("Pod", name, "gru") or {})
    assert status["restartCount"] == 0, status
    assert "terminated" not in status.get("lastState", {}), status


def test_the_exporter_scrapes_redis_with_no_permission_error(hogs: Project, images: Images) -> None:
    kube = hogs.kube
    [exporter] = wait_ready(kube, EXPORTER, 1, timeout=90)
    assert exporter["spec"]["containers"][0]["image"] == images.redis_exporter
    metrics = run_job(kube, images.worker, SCRAPE, [])
    assert "redis_up 1" in metrics.splitlines(), metrics
    log = kube.logs("gru", exporter["metadata"]["name"], "metrics")
    assert "NOPERM" not in log, log[-3000:]
