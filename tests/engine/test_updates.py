"""What each routine edit of a stack file does on `pulumi up`, decided by the real engine and
provider against a live API server (the README's "What an edit does" table states the same).

One stack is deployed; each edit is previewed (`pulumi preview --json --diff`, which diffs
against the live objects) and the planned step of every resource is compared with the
expected one. The edits that matter most are then applied for real."""

from __future__ import annotations

import base64
import hashlib
import time

import pytest

from gru import api
from gru.errors import GruError
from localcluster.control_plane import BUSY_ANNOTATION

from .conftest import Project, changed_steps, unique, use_engine_env

BASE = """\
broker:
  type: redis
  name: redis
  namespace: {ns}
  max_memory_mb: 256
  metrics: {{enabled: true}}
task_server:
  type: celery
  name: task_server
  namespace: {ns}
  replicas: 2
  concurrency_per_replica: 1
  broker_resource_name: redis
"""

DEPLOYMENT = "kubernetes:apps/v1:Deployment::task-server"
STATEFULSET = "kubernetes:apps/v1:StatefulSet::redis"
SECRET = "kubernetes:core/v1:Secret::redis-credentials"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap::redis-config"
PASSWORD = "pulumi-python:dynamic/gru:GeneratedPassword"
EXPORTER = "kubernetes:apps/v1:Deployment::redis-metrics"

# Each edit of BASE and the steps the engine must plan: resource -> op. Nothing else may change.
EDITS = {
    "replicas": (("replicas: 2", "replicas: 5"), {DEPLOYMENT: "update"}),
    "concurrency": (("concurrency_per_replica: 1", "concurrency_per_replica: 3"), {DEPLOYMENT: "update"}),
    # The exporter watches the new queue; Redis itself is not touched.
    "queues": (("broker_resource_name: redis", "broker_resource_name: redis\n  queues: [celery, reports]"),
               {DEPLOYMENT: "update", EXPORTER: "update"}),
    "worker image": (("broker_resource_name: redis", "broker_resource_name: redis\n  image: gru-worker:0.2.0"),
                     {DEPLOYMENT: "update"}),
    # The Secret's drop-after-seconds follows the longest rollout (a file update, no restart).
    "max_task_seconds": (("broker_resource_name: redis", "broker_resource_name: redis\n  max_task_seconds: 1200"),
                         {DEPLOYMENT: "update", SECRET: "update"}),
    "max_memory_mb": (("max_memory_mb: 256", "max_memory_mb: 512"), {CONFIG_MAP: "update", STATEFULSET: "update"}),
    "redis image": (("max_memory_mb: 256", "max_memory_mb: 256\n  image: redis:7.4.2-alpine"),
                    {STATEFULSET: "update"}),
}


def edit(ns: str, old: str, new: str) -> str:
    text = BASE.format(ns=ns)
    assert old in text
    return text.replace(old, new, 1)


@pytest.fixture
def deployed(project: Project) -> tuple[Project, str, str]:
    stack, ns = "updates", unique("upd")
    project.write_stack(stack, BASE.format(ns=ns))
    project.init(stack)
    project.up(stack)
    return project, stack, ns


def test_routine_edits_update_in_place(deployed: tuple[Project, str, str]) -> None:
    project, stack, ns = deployed
    assert changed_steps(project.preview_steps(stack)) == {}
    for what, ((old, new), expected) in EDITS.items():
        project.write_stack(stack, edit(ns, old, new))
        assert changed_steps(project.preview_steps(stack)) == expected, what
    project.write_stack(stack, BASE.format(ns=ns))


def test_storage_size_grows_the_volume_without_replacing_redis(deployed: tuple[Project, str, str]) -> None:
    project, stack, ns = deployed
    kube = project.kube
    before = kube.get("StatefulSet", "redis", ns)
    assert before is not None
    project.write_stack(stack, edit(ns, "max_memory_mb: 256", "max_memory_mb: 256\n  storage:\n    size: 20Gi"))
    planned = changed_steps(project.preview_steps(stack))
    assert "replace" not in planned.values() and "create-replacement" not in planned.values(), planned
    project.up(stack)
    after = kube.get("StatefulSet", "redis", ns)
    assert after is not None and after["metadata"]["uid"] == before["metadata"]["uid"]
    claim = kube.get("PersistentVolumeClaim", "data-redis-0", ns)
    assert claim is not None and claim["spec"]["resources"]["requests"]["storage"] == "20Gi"


def _secret(project: Project, ns: str) -> dict[str, str]:
    secret = project.kube.get("Secret", "redis-credentials", ns)
    assert secret is not None
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def _accepted_hashes(users_file: str, user: str) -> list[str]:
    (line,) = [line for line in users_file.splitlines() if line.startswith(f"user {user} ")]
    return [token[1:] for token in line.split() if token.startswith("#")]


def test_agent_password_change_updates_the_secret_and_restarts_nothing(deployed: tuple[Project, str, str]) -> None:
    project, stack, ns = deployed
    kube = project.kube
    generated = _secret(project, ns)["redis-password"]
    secret_uid = kube.get("Secret", "redis-credentials", ns)["metadata"]["uid"]  # type: ignore[index]
    # A second up keeps the generated password.
    project.up(stack)
    assert _secret(project, ns)["redis-password"] == generated

    rotated = "rotated-" + generated[::-1]
    project.pulumi("config", "set", "--secret", "redis-password", rotated, stack=stack)
    planned = changed_steps(project.preview_steps(stack))
    # Redis's ACL sync applies the new users file; workers log in as their own user.
    assert planned == {SECRET: "update"}, planned
    project.up(stack)
    assert _secret(project, ns)["redis-password"] == rotated
    assert kube.get("Secret", "redis-credentials", ns)["metadata"]["uid"] == secret_uid  # type: ignore[index]
    assert rotated not in project.state_text() and all(rotated not in log for log in project.logs)
    project.pulumi("config", "rm", "redis-password", stack=stack)


def test_password_rotation_moves_clients_to_the_staged_password(deployed: tuple[Project, str, str]) -> None:
    project, stack, ns = deployed
    kube = project.kube
    before = _secret(project, ns)
    redis_generation = kube.get("StatefulSet", "redis", ns)["metadata"]["generation"]  # type: ignore[index]
    staged = {user: _accepted_hashes(before["users.acl"], user)[1] for user in ("default", "worker", "exporter", "keda")}

    project.write_stack(stack, edit(ns, "max_memory_mb: 256", "max_memory_mb: 256\n  password_rotation: '2026-11'"))
    planned = changed_steps(project.preview_steps(stack))
    passwords = {f"{PASSWORD}::redis-{user}-password": "update" for user in ("worker", "exporter", "keda")}
    # Passwords update in place (never replaced), the Secret changes, and the workers and the
    # exporter roll onto their new passwords; Redis itself is not restarted.
    assert planned == {**passwords, f"{PASSWORD}::redis-password": "update", SECRET: "update",
                       DEPLOYMENT: "update", EXPORTER: "update"}, planned
    project.up(stack)
    after = _secret(project, ns)
    # Every client moved to the password Redis already accepted before the rotation.
    worker_password = after["worker-url"].split("//worker:", 1)[1].split("@", 1)[0]
    assert hashlib.sha256(worker_password.encode()).hexdigest() == staged["worker"]
    for user, key in (("default", "redis-password"), ("exporter", "exporter-password"), ("keda", "keda-password")):
        assert hashlib.sha256(after[key].encode()).hexdigest() == staged[user], user
        assert _accepted_hashes(after["users.acl"], user)[0] == staged[user]
    assert kube.get("StatefulSet", "redis", ns)["metadata"]["generation"] == redis_generation  # type: ignore[index]
    state = project.state_text()
    assert all(after[key] not in state for key in ("redis-password", "exporter-password", "keda-password"))
    assert worker_password not in state


def test_removing_a_task_server_waits_for_its_pods_grace_period(deployed: tuple[Project, str, str]) -> None:
    project, stack, ns = deployed
    kube = project.kube
    # A short task limit keeps the test short: grace = 20 s + 20 s headroom.
    project.write_stack(stack, edit(ns, "broker_resource_name: redis", "broker_resource_name: redis\n  max_task_seconds: 20"))
    project.up(stack)
    grace = kube.get("Deployment", "task-server", ns)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]  # type: ignore[index]
    assert grace == 40
    # One worker is busy with a task: kwok keeps it Terminating for its whole grace period.
    (busy, *_) = [p for p in kube.list("Pod", ns) if p["metadata"]["name"].startswith("task-server-")]
    kube.merge_patch("Pod", busy["metadata"]["name"], ns, {"metadata": {"annotations": {BUSY_ANNOTATION: "true"}}})
    broker_only = BASE.format(ns=ns).split("task_server:")[0]
    project.write_stack(stack, broker_only)
    start = time.monotonic()
    project.up(stack)
    took = time.monotonic() - start
    # The pods stayed Terminating for their grace period and Pulumi waited them out.
    assert took >= grace - 2, took
    assert kube.get("Deployment", "task-server", ns) is None
    assert not [p for p in kube.list("Pod", ns) if p["metadata"]["name"].startswith("task-server-")]
    assert kube.get("StatefulSet", "redis", ns) is not None


def test_renaming_a_task_server_creates_the_new_fleet_before_deleting_the_old(deployed: tuple[Project, str, str]) -> None:
    project, stack, ns = deployed
    project.write_stack(stack, edit(ns, "name: task_server", "name: reports"))
    planned = changed_steps(project.preview_steps(stack))
    assert planned["kubernetes:apps/v1:Deployment::reports"] == "create"
    assert planned[DEPLOYMENT] == "delete"
    assert not any(op != "create" and op != "delete" for op in planned.values()), planned
    assert not any("Broker" in name or "redis" in name for name in planned), planned


def test_preview_says_plainly_when_kubernetes_forbids_an_in_place_change(
        deployed: tuple[Project, str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    project, stack, ns = deployed
    use_engine_env(project, monkeypatch)
    before = project.kube.get("StatefulSet", "redis", ns)
    # A new storage class: the claim template cannot change. The provider does not replace the
    # StatefulSet; the API server refuses, and gru says what that means.
    project.write_stack(stack, edit(ns, "max_memory_mb: 256", "max_memory_mb: 256\n  storage:\n    storage_class: fast"))
    with pytest.raises(GruError, match="forbids this edit of the broker's StatefulSet in place") as refused:
        api.preview(stack, project_dir=project.root, on_output=None)
    assert "Nothing was changed" in str(refused.value)
    after = project.kube.get("StatefulSet", "redis", ns)
    assert after is not None and before is not None and after["metadata"]["uid"] == before["metadata"]["uid"]
