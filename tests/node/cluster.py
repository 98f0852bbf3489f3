"""What the real-node tests read and do on the cluster, as a user with kubectl would."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from localcluster.api import ApiError, Kube, Obj, wait_for

NAMESPACE = "gru"
RUN_AS = 10001
_SUCCEEDED = re.compile(r"Task gru\.sleep\[([0-9a-f-]+)\] succeeded")


@dataclass(frozen=True)
class Images:
    """The images tools/images/build made, by role (worker, redis, redis_exporter, pause)."""

    directory: Path
    names: dict[str, str]

    @property
    def worker(self) -> str:
        return self.names["worker"]

    @property
    def redis(self) -> str:
        return self.names["redis"]

    @property
    def redis_exporter(self) -> str:
        return self.names["redis_exporter"]


def with_images(stack_yaml: str, images: Images) -> str:
    """The stack file with only its image names changed to the ones built here."""
    data = yaml.safe_load(stack_yaml)
    for section in ("broker", "task_server"):
        entries = data.get(section) or []
        for entry in entries if isinstance(entries, list) else [entries]:
            if entry.get("type") == "celery":
                entry["image"] = images.worker
            elif entry.get("type") == "redis":
                entry["image"] = images.redis
                if "metrics" in entry:
                    entry["metrics"]["image"] = images.redis_exporter
    return str(yaml.safe_dump(data, sort_keys=False))


def on_a_real_node(kube: Kube, pod: Obj) -> bool:
    """Scheduled on a node that runs containers: not one of kwok's fake ones."""
    node = kube.get("Node", pod["spec"].get("nodeName", "")) or {}
    return bool(node) and "kwok.x-k8s.io/node" not in node["metadata"].get("annotations", {})


def pods(kube: Kube, selector: str, namespace: str = NAMESPACE) -> list[Obj]:
    return [p for p in kube.list("Pod", namespace, selector) if not p["metadata"].get("deletionTimestamp")]


def is_ready(pod: Obj) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return pod.get("status", {}).get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def wait_ready(kube: Kube, selector: str, count: int, timeout: float = 180, namespace: str = NAMESPACE) -> list[Obj]:
    found: list[Obj] = []

    def check() -> bool:
        nonlocal found
        found = [p for p in pods(kube, selector, namespace) if is_ready(p)]
        return len(found) >= count

    wait_for(f"{count} Ready pods {selector}", check, timeout)
    return found


def restricted_pod_spec(image: str, script: str, env: list[Obj]) -> Obj:
    """A pod the namespace's "restricted" Pod Security profile admits."""
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "agent", "image": image, "imagePullPolicy": "IfNotPresent",
            "command": ["python", "-c", script], "env": env,
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                "readOnlyRootFilesystem": True, "runAsNonRoot": True},
            "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        }],
    }


def secret_env(name: str, secret: str, key: str) -> Obj:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def start_job(kube: Kube, image: str, script: str, env: list[Obj], labels: dict[str, str] | None = None,
              namespace: str = NAMESPACE) -> str:
    """Start `script` with the worker image's Python in a Job's pod (label agent=<name>); its name."""
    name = f"agent-{uuid.uuid4().hex[:8]}"
    kube.create({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 600,
                 "template": {"metadata": {"labels": {"agent": name, **(labels or {})}},
                              "spec": restricted_pod_spec(image, script, env)}},
    })
    return name


def run_job(kube: Kube, image: str, script: str, env: list[Obj], labels: dict[str, str] | None = None,
            timeout: float = 180, namespace: str = NAMESPACE) -> str:
    """Run `script` with the worker image's Python in a Job's pod; its log once it has finished."""
    name = start_job(kube, image, script, env, labels, namespace)

    def finished() -> bool:
        job = kube.get("Job", name, namespace) or {}
        status = job.get("status", {})
        return bool(status.get("succeeded") or status.get("failed"))

    wait_for(f"Job {name} to finish", finished, timeout)
    pod = kube.list("Pod", namespace, f"agent={name}")[0]
    log = kube.logs(namespace, pod["metadata"]["name"])
    status = (kube.get("Job", name, namespace) or {}).get("status", {})
    if not status.get("succeeded"):
        raise AssertionError(f"Job {name} failed:\n{log}")
    return log


# An agent as the README sets one up (settings_from_env() with the Secret's `broker-url`), which
# retries a publish that finds no connection: a new pod's first connections can be refused
# until the NetworkPolicy enforcer has seen its address (kube-router takes a second or two).
RETRY_POLICY = '{"max_retries": 30, "interval_start": 0.2, "interval_step": 0.2, "interval_max": 1}'
# The seed stack's objects, as its tests select them.
REDIS = "app.kubernetes.io/name=redis,app.kubernetes.io/instance=redis"
WORKERS = "app.kubernetes.io/name=celery-worker,app.kubernetes.io/instance=task-server"
CLIENT_LABEL = "gru.dev/client-of-redis"
SECRET = "redis-credentials"

# An agent that enqueues a short task every `interval` s for `seconds`, on the password its
# pod started with. Its first publish retries, as the README tells agents to (kube-router
# learns a new pod's address a second or two after it starts); every later one gets Celery's
# default retries only, so a refused login or connection shows as a failure, with its time.
STEADY_AGENT = """
import json, time, uuid
from celery import Celery
from gru_worker.settings import settings_from_env
app = Celery("agent")
app.conf.update(settings_from_env())
first = uuid.uuid4().hex
app.send_task("gru.sleep", args=[0.1, first], task_id=first, retry=True, retry_policy={retry_policy})
sent, failures = [first], []
started = time.monotonic()
deadline = started + {seconds}
while time.monotonic() < deadline:
    task_id = uuid.uuid4().hex
    try:
        app.send_task("gru.sleep", args=[0.1, task_id], task_id=task_id)
        sent.append(task_id)
    except Exception as error:
        failures.append(f"{{time.monotonic() - started:.1f}} s: {{error!r}}")
    time.sleep({interval})
print("SENT " + json.dumps(sent))
print("FAILURES " + json.dumps(failures))
"""

ENQUEUE = """
import json, sys, uuid
from celery import Celery
from gru_worker.settings import settings_from_env
app = Celery("agent")
app.conf.update(settings_from_env())
ids = []
for _ in range({count}):
    task_id = uuid.uuid4().hex
    app.send_task("gru.sleep", args=[{seconds}, task_id], task_id=task_id, queue={queue!r}, retry=True,
                  retry_policy={retry_policy})
    ids.append(task_id)
print("SENT " + json.dumps(ids))
"""


def enqueue(kube: Kube, images: Images, broker: str, client_label: str, count: int, seconds: float,
            queue: str = "celery") -> list[str]:
    """An agent pod in the namespace enqueues `count` gru.sleep tasks; their ids."""
    log = run_job(kube, images.worker, ENQUEUE.format(count=count, seconds=seconds, queue=queue, retry_policy=RETRY_POLICY),
                  [secret_env("CELERY_BROKER_URL", f"{broker}-credentials", "broker-url")],
                  labels={client_label: "true"})
    line = next(line for line in log.splitlines() if line.startswith("SENT "))
    ids: list[str] = json.loads(line[5:])
    return ids


SEND = """
import json
from celery import Celery
from gru_worker.settings import settings_from_env
app = Celery("agent")
app.conf.update(settings_from_env())
result = app.send_task({name!r}, args={args!r}, task_id={task_id!r}, retry=True, retry_policy={retry_policy})
print("SENT " + json.dumps([result.id]))
"""


def send(kube: Kube, images: Images, broker: str, client_label: str, name: str, args: list[Any]) -> str:
    """An agent pod sends one task `name(*args)`; its id."""
    task_id = uuid.uuid4().hex
    run_job(kube, images.worker, SEND.format(name=name, args=args, task_id=task_id, retry_policy=RETRY_POLICY),
            [secret_env("CELERY_BROKER_URL", f"{broker}-credentials", "broker-url")], labels={client_label: "true"})
    return task_id


class WorkerLogs:
    """Every worker container's whole log, followed as the kubelet streams it, so the lines a
    pod writes just before it goes (a warm shutdown, a rolling update) are kept.

    A thread finds new pods every half second and follows each container instance (pod and
    restart) from its first line to its end; `text` holds what each has written."""

    def __init__(self, kube: Kube, selector: str, namespace: str = NAMESPACE, container: str = "worker") -> None:
        self.kube, self.selector, self.namespace, self.container = kube, selector, namespace, container
        self.text: dict[str, str] = {}
        self._lock = threading.Lock()
        self._following: set[str] = set()
        self._stop = threading.Event()
        self._finder = threading.Thread(target=self._find, daemon=True)
        self._finder.start()

    def close(self) -> None:
        self._stop.set()

    def __enter__(self) -> WorkerLogs:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _find(self) -> None:
        while not self._stop.is_set():
            try:
                for pod in self.kube.list("Pod", self.namespace, self.selector):
                    name = pod["metadata"]["name"]
                    for status in container_statuses(pod):
                        started = status.get("state", {}).get("running") or status.get("state", {}).get("terminated")
                        key = f"{name}#{status.get('restartCount', 0)}"
                        if status["name"] == self.container and started and key not in self._following:
                            self._following.add(key)
                            threading.Thread(target=self._follow, args=(name, key), daemon=True).start()
            except (ApiError, OSError):
                pass
            self._stop.wait(0.5)

    def _follow(self, pod: str, key: str) -> None:
        for _attempt in range(20):
            text = ""
            try:
                for line in self.kube.follow_logs(self.namespace, pod, self.container):
                    text += line
                    with self._lock:
                        if len(text) >= len(self.text.get(key, "")):
                            self.text[key] = text
                return
            except (ApiError, OSError):
                if self._stop.wait(1) or self.kube.get("Pod", pod, self.namespace) is None:
                    return

    def pod_text(self, pod: str) -> str:
        with self._lock:
            return "".join(t for k, t in sorted(self.text.items()) if k.split("#")[0] == pod)

    def pods_with(self, needle: str) -> list[str]:
        with self._lock:
            return sorted({k.split("#")[0] for k, t in self.text.items() if needle in t})

    def runs(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        with self._lock:
            for text in self.text.values():
                counts.update(_SUCCEEDED.findall(text))
        return counts

    def all_text(self) -> str:
        with self._lock:
            return "\n".join(self.text.values())

    def wait_all_ran(self, ids: list[str], timeout: float) -> Counter[str]:
        deadline = time.monotonic() + timeout
        while True:
            counts = self.runs()
            if all(counts[i] for i in ids) or time.monotonic() > deadline:
                # Late duplicates show up a moment after the last first run: look once more.
                time.sleep(2)
                return self.runs()
            time.sleep(1)


def container_statuses(pod: Obj, init: bool = False) -> list[dict[str, Any]]:
    key = "initContainerStatuses" if init else "containerStatuses"
    statuses: list[dict[str, Any]] = pod.get("status", {}).get(key, [])
    return statuses
