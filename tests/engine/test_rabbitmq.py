"""The seed task server pointed at `broker: {type: rabbitmq, name: rabbit}`, through the plain
Pulumi CLI on a real API server: the three-node StatefulSet Ready before any worker object is
created, pods admitted under `restricted`, no change on a second preview, routine edits that
leave the nodes alone, destroy in reverse, and no credential in state or output."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from ..conftest import SEED_YAML
from .conftest import Project, changed_steps, unique
from .test_deploy import events, is_task_server_object, step_times

STACK = "rabbit"
STATEFULSET = "kubernetes:apps/v1:StatefulSet::rabbit"
SECRET = "kubernetes:core/v1:Secret::rabbit-credentials"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap::rabbit-config"
DEPLOYMENT = "kubernetes:apps/v1:Deployment::task-server"
PASSWORD = "pulumi-python:dynamic/gru:GeneratedPassword"


def rabbit_stack(ns: str, broker_extra: str = "", server_extra: str = "") -> str:
    """The seed YAML with its broker swapped for the issue's `{type: rabbitmq, name: rabbit}`."""
    text = SEED_YAML.replace("type: redis\n  name: redis\n",
                             f"type: rabbitmq\n  name: rabbit\n  namespace: {ns}\n{broker_extra}")
    text = text.replace("broker_resource_name: redis", f"broker_resource_name: rabbit\n  namespace: {ns}")
    return text + server_extra


def is_rabbit_object(urn: str) -> bool:
    return "gru:index:RabbitMQBroker" in urn.split("::")[2]


def test_a_rabbitmq_broker_deploys_first_updates_in_place_and_goes_last(project: Project, tmp_path: Path) -> None:
    kube = project.kube
    ns = unique("rmq")
    project.write_stack(STACK, rabbit_stack(ns))
    project.init(STACK)
    up_log, destroy_log = tmp_path / "up.jsonl", tmp_path / "destroy.jsonl"
    project.up(STACK, event_log=up_log)

    sts = kube.get("StatefulSet", "rabbit", ns)
    assert sts is not None and sts["status"].get("readyReplicas") == 3
    pods = kube.list("Pod", ns)
    nodes = sorted(p["metadata"]["name"] for p in pods if p["metadata"]["labels"].get("app.kubernetes.io/name") == "rabbitmq")
    assert nodes == ["rabbit-0", "rabbit-1", "rabbit-2"]
    assert len([p for p in pods if p["metadata"]["name"].startswith("task-server-")]) == 4
    assert sorted(c["metadata"]["name"] for c in kube.list("PersistentVolumeClaim", ns)) == [
        "data-rabbit-0", "data-rabbit-1", "data-rabbit-2"]

    # The broker first: the StatefulSet of three was Ready before any task-server object started.
    log = events(up_log)
    started, finished = step_times(log, "pre"), step_times(log, "done")
    (statefulset,) = [urn for urn in finished if urn.endswith(STATEFULSET)]
    server_starts = [seq for urn, seq in started.items() if is_task_server_object(urn)]
    assert len(server_starts) >= 4
    assert finished[statefulset] < min(server_starts)

    assert changed_steps(project.preview_steps(STACK)) == {}
    # Task-server edits reach the nodes through the Secret's definitions, never a node restart.
    project.write_stack(STACK, rabbit_stack(ns, server_extra="  max_deliveries: 3\n  queues: [celery, reports]\n"))
    assert changed_steps(project.preview_steps(STACK)) == {DEPLOYMENT: "update", SECRET: "update"}
    # A broker setting rolls the nodes in place: an update, never a replacement of their data.
    project.write_stack(STACK, rabbit_stack(ns, broker_extra="  disk_free_limit: 2Gi\n"))
    assert changed_steps(project.preview_steps(STACK)) == {CONFIG_MAP: "update", STATEFULSET: "update"}

    # A password rotation: every generated password moves to its staged successor, whose user
    # the nodes already hold; the Secret updates in place and the workers roll. No node restarts.
    def decoded() -> dict[str, str]:
        found = kube.get("Secret", "rabbit-credentials", ns)
        assert found is not None
        return {k: base64.b64decode(v).decode() for k, v in found["data"].items()}

    before = decoded()
    staged = [n for n in before["users"].split() if n.startswith("worker-")]
    generation = kube.get("StatefulSet", "rabbit", ns)["metadata"]["generation"]  # type: ignore[index]
    project.write_stack(STACK, rabbit_stack(ns, broker_extra="  password_rotation: '2026-12'\n"))
    passwords = {f"{PASSWORD}::rabbit-{user}-password": "update" for user in ("agent", "worker", "keda")}
    assert changed_steps(project.preview_steps(STACK)) == {**passwords, SECRET: "update", DEPLOYMENT: "update"}
    project.up(STACK)
    after = decoded()
    assert after["worker-url"].startswith(f"amqp://{staged[0]}:") and len(staged) == 1
    assert staged[0] in {u["name"] for u in json.loads(before["definitions.json"])["users"]}
    assert "worker" in before["users"].split() and "worker" not in after["users"].split()
    assert kube.get("StatefulSet", "rabbit", ns)["metadata"]["generation"] == generation  # type: ignore[index]
    assert changed_steps(project.preview_steps(STACK)) == {}

    # No credential in the state backend or anything the engine printed.
    secret = kube.get("Secret", "rabbit-credentials", ns)
    assert secret is not None
    values = [base64.b64decode(secret["data"][k]).decode() for k in ("rabbitmq-password", "erlang-cookie")]
    assert all(len(v) >= 32 for v in values)
    for value in values:
        assert value not in project.state_text()
        assert value not in up_log.read_text()
        assert all(value not in output for output in project.logs)

    project.destroy(STACK, event_log=destroy_log)
    log = events(destroy_log)
    started, finished = step_times(log, "pre"), step_times(log, "done")
    server_done = [seq for urn, seq in finished.items() if is_task_server_object(urn)]
    broker_starts = [seq for urn, seq in started.items() if is_rabbit_object(urn)]
    assert server_done and broker_starts
    assert max(server_done) < min(broker_starts)
    assert kube.get("StatefulSet", "rabbit", ns) is None
    # The volumes stay, as the README says: losing queued tasks must be deliberate.
    assert len(kube.list("PersistentVolumeClaim", ns)) == 3
