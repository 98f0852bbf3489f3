"""KEDA itself scales a fleet on a Redis broker: from zero when tasks queue, past one when the
queue is deep, and back to zero.

KEDA's operator and metrics server run as pods on the real node, installed from KEDA's own
release manifests and built from its Go module (tools/addons/build, localcluster/keda.py).
The operator counts the queue with its redis scaler (EVAL of a TYPE-then-LLEN script) as the
broker's `keda` ACL user; 0 -> 1 is the operator's own activation, 1 -> N is the HPA reading
KEDA's external metric through the API server's aggregation layer, N -> 0 is the HPA's
scale-down and then KEDA's cooldown.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster.api import Kube, wait_for

from ..engine.conftest import Cluster, Project
from .cluster import NAMESPACE, Images, WorkerLogs, enqueue, with_images
from .conftest import stack_up

STACK = """\
broker:
  type: redis
  name: redis
task_server:
  type: celery
  name: scaled
  replicas: 0
  concurrency_per_replica: 1
  broker_resource_name: redis
  max_task_seconds: 10
  autoscaling:
    enabled: true
    max_replicas: 3
    queue_length_per_replica: 1
    polling_interval_seconds: 5
    cooldown_seconds: 30
    scale_down_period_seconds: 15
"""
DEPLOYMENT = "scaled"
WORKERS = "app.kubernetes.io/name=celery-worker,app.kubernetes.io/instance=scaled"
CLIENT_LABEL = "gru.dev/client-of-redis"
TASKS, TASK_SECONDS = 12, 8


@pytest.fixture(scope="module")
def scaled(cluster: Cluster, engine_bin: Path, images: Images, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    with stack_up(cluster, engine_bin, tmp_path_factory, "scaled", with_images(STACK, images)) as project:
        yield project


class ReplicaWatch:
    """The Deployment's desired replicas, read every second while a test runs."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.seen: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            deployment = self.kube.get("Deployment", DEPLOYMENT, NAMESPACE) or {}
            self.seen.append((time.monotonic() - start, int(deployment.get("spec", {}).get("replicas", 0))))
            self._stop.wait(1)

    def now(self) -> int:
        return self.seen[-1][1] if self.seen else 0

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def operator_refusals(kube: Kube) -> list[str]:
    """The lines of KEDA's operator log where Redis refused the scaler a command."""
    operator = kube.list("Pod", "keda", "app=keda-operator")[0]["metadata"]["name"]
    return [line for line in kube.logs("keda", operator).splitlines() if "NOPERM" in line]


def condition(obj: dict[str, object] | None, kind: str) -> str:
    status = (obj or {}).get("status", {})
    conditions = status.get("conditions", []) if isinstance(status, dict) else []
    return next((c.get("status", "") for c in conditions if c.get("type") == kind), "")


def test_keda_scales_a_redis_fleet_from_zero_past_one_and_back_to_zero(scaled: Project, images: Images) -> None:
    kube = scaled.kube
    scaled_object = kube.get("ScaledObject", DEPLOYMENT, NAMESPACE)
    assert condition(scaled_object, "Ready") == "True", scaled_object
    wait_for("the idle fleet to sit at zero", lambda: condition(kube.get("ScaledObject", DEPLOYMENT, NAMESPACE),
                                                                 "Active") == "False", 60)
    assert (kube.get("Deployment", DEPLOYMENT, NAMESPACE) or {})["spec"]["replicas"] == 0

    refusals_before = operator_refusals(kube)
    watch = ReplicaWatch(kube)
    try:
        with WorkerLogs(kube, WORKERS) as logs:
            ids = enqueue(kube, images, "redis", CLIENT_LABEL, TASKS, TASK_SECONDS)
            wait_for("KEDA to start the first worker", lambda: watch.now() >= 1, 60)
            wait_for("the HPA to add workers for the deep queue", lambda: watch.now() >= 2, 120)
            hpa = kube.get("HorizontalPodAutoscaler", f"keda-hpa-{DEPLOYMENT}", NAMESPACE) or {}
            metrics = hpa.get("status", {}).get("currentMetrics") or []
            # The HPA scaled on KEDA's external metric, served through the aggregation layer.
            assert any(m.get("type") == "External" for m in metrics), hpa.get("status")
            runs = logs.wait_all_ran(ids, timeout=300)
            assert {i: runs[i] for i in ids} == dict.fromkeys(ids, 1)
            wait_for("the fleet to scale back to zero", lambda: watch.now() == 0, 240)
            wait_for("its pods to go", lambda: not kube.list("Pod", NAMESPACE, WORKERS), 120)
    finally:
        watch.close()
    peak = max(replicas for _, replicas in watch.seen)
    changes = [(round(t), r) for (t, r), (_, before) in zip(watch.seen[1:], watch.seen, strict=False) if r != before]
    print(f"replicas over time (s since the watch began, replicas): {changes}")
    assert 2 <= peak <= 3, watch.seen
    # The scaler never saw a refusal from Redis.
    assert operator_refusals(kube) == refusals_before
