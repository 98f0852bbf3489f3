"""The `type: rabbitmq` broker under the mock engine: what it registers, and what each object says."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

import pytest

from components.generated_password import _PasswordProvider
from components.rabbitmq_broker import definitions as defs
from components.rabbitmq_broker.component import _generated_logins
from components.rabbitmq_broker.definitions import DEAD_LETTER_QUEUE, password_hash
from components.stack_model import SpecError, parse_stack_spec
from gru.mock_engine import Evaluation, Registration
from gru_worker import dead_letter

from .conftest import SEED_YAML, EvaluateYaml
from .test_program import PASSWORD, children_of, unwrap

RABBIT_YAML = SEED_YAML.replace("type: redis", "type: rabbitmq").replace("name: redis", "name: rabbit") \
    .replace("broker_resource_name: redis", "broker_resource_name: rabbit")
STATEFULSET = "kubernetes:apps/v1:StatefulSet"


def objects(evaluation: Evaluation, kind: str) -> list[Registration]:
    return [r for r in evaluation.kubernetes_objects if r.inputs.get("kind") == kind
            or r.type.endswith(f":{kind}")]


def one(evaluation: Evaluation, kind: str, name: str) -> dict[str, Any]:
    (found,) = [r for r in objects(evaluation, kind) if r.name == name]
    return found.inputs


def secret_data(evaluation: Evaluation) -> dict[str, str]:
    (secret,) = objects(evaluation, "Secret")
    return dict(unwrap(secret.inputs["stringData"]))


def test_the_seed_task_server_on_a_rabbitmq_broker_registers_a_cluster(evaluate_yaml: EvaluateYaml) -> None:
    evaluation = evaluate_yaml(RABBIT_YAML)
    (broker,) = evaluation.of_type("gru:index:RabbitMQBroker")
    assert sorted((r.type.rsplit(":", 1)[-1], r.name) for r in children_of(evaluation, broker)) == [
        ("ConfigMap", "rabbit-config"), ("GeneratedPassword", "rabbit-agent-password"),
        ("GeneratedPassword", "rabbit-erlang-cookie"), ("GeneratedPassword", "rabbit-keda-password"),
        ("GeneratedPassword", "rabbit-worker-password"), ("NetworkPolicy", "rabbit"),
        *[("PersistentVolumeClaimPatch", f"data-rabbit-{i}") for i in range(3)],
        ("PodDisruptionBudget", "rabbit"), ("Secret", "rabbit-credentials"), ("Service", "rabbit"),
        ("Service", "rabbit-nodes"), ("ServiceAccount", "rabbit"), ("StatefulSet", "rabbit")]
    sts = one(evaluation, "StatefulSet", "rabbit")["spec"]
    assert sts["replicas"] == 3 and sts["podManagementPolicy"] == "Parallel"
    assert sts["serviceName"] == "rabbit-nodes"
    headless = one(evaluation, "Service", "rabbit-nodes")["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    # The task server is behind the broker's nodes, as with Redis (the engine expands a
    # dependency on the component to its children).
    (server,) = evaluation.of_type("gru:index:TaskServer")
    (nodes,) = evaluation.of_type(STATEFULSET)
    assert nodes.urn in server.dependencies


def test_the_node_names_fit_peer_discovery(evaluate_yaml: EvaluateYaml) -> None:
    """RabbitMQ 4.1's k8s discovery derives the seed node from the first label's -<ordinal>."""
    evaluation = evaluate_yaml(RABBIT_YAML)
    pod = one(evaluation, "StatefulSet", "rabbit")["spec"]["template"]["spec"]
    (server,) = [c for c in pod["containers"] if c["name"] == "rabbitmq"]
    env = {e["name"]: e.get("value") for e in server["env"]}
    name = env["RABBITMQ_NODENAME"].replace("$(POD_NAME)", "rabbit-2")
    assert re.match(r"^([^@]+@)([^.]*-)([0-9]+)", name)
    assert name == "rabbit@rabbit-2.rabbit-nodes.gru.svc.cluster.local"
    assert env["RABBITMQ_USE_LONGNAME"] == "true"
    conf = one(evaluation, "ConfigMap", "rabbit-config")["data"]["rabbitmq.conf"]
    assert "cluster_formation.peer_discovery_backend = k8s" in conf
    assert pod["automountServiceAccountToken"] is False  # no API rights needed


def test_the_images_conf_d_is_not_read(evaluate_yaml: EvaluateYaml) -> None:
    """The rabbitmq image's /etc/rabbitmq/conf.d (RabbitMQ's default RABBITMQ_CONFIG_FILES) turns
    the management metrics collector off and would win over rabbitmq.conf: the container points
    RABBITMQ_CONFIG_FILES into its read-only config mount, at a name the ConfigMap never holds.
    On real RabbitMQ with that conf.d in place: tests/test_rabbitmq_queue_depth.py."""
    evaluation = evaluate_yaml(RABBIT_YAML)
    pod = one(evaluation, "StatefulSet", "rabbit")["spec"]["template"]["spec"]
    (server,) = [c for c in pod["containers"] if c["name"] == "rabbitmq"]
    env = {e["name"]: e.get("value") for e in server["env"]}
    mount = next(m["mountPath"] for m in server["volumeMounts"] if m["name"] == "config")
    (volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
    data = one(evaluation, "ConfigMap", volume["configMap"]["name"])["data"]
    extra = env["RABBITMQ_CONFIG_FILES"]
    assert extra.startswith(f"{mount}/") and not extra.startswith("/etc/rabbitmq/conf.d")
    assert env["RABBITMQ_CONFIG_FILE"] == f"{mount}/rabbitmq.conf"
    assert extra.removeprefix(f"{mount}/").split("/")[0] not in data and "items" not in volume["configMap"]
    assert "management_agent.disable_metrics_collector = false" in data["rabbitmq.conf"].splitlines()


def test_credentials_live_only_in_the_secret(evaluate_yaml: EvaluateYaml) -> None:
    evaluation = evaluate_yaml(RABBIT_YAML)
    data = secret_data(evaluation)
    assert set(data) == {"rabbitmq-password", "broker-url", "worker-url", "keda-url", "erlang-cookie",
                         "definitions.json", "boot-definitions.json", "users", "drop-after-seconds", "cluster-size"}
    assert data["broker-url"].startswith("amqp://agent:") and data["broker-url"].endswith(
        "@rabbit.gru.svc.cluster.local:5672//")
    assert data["worker-url"].startswith("amqp://worker:")
    assert len(data["erlang-cookie"]) >= 32
    secrets = [data["rabbitmq-password"], data["erlang-cookie"], data["worker-url"].split(":")[2].split("@")[0]]
    for registration in evaluation.kubernetes_objects:
        if registration.inputs.get("kind") == "Secret" or registration.type.endswith(":Secret"):
            continue
        text = json.dumps(registration.inputs, default=str)
        assert not any(s in text for s in secrets), registration.name
    # The definitions hold hashes, never the passwords.
    assert data["rabbitmq-password"] not in data["definitions.json"]


def test_a_node_boots_with_the_definitions_but_no_queue(evaluate_yaml: EvaluateYaml) -> None:
    # Quorum queues declared from the boot import of a cluster still forming lost members for
    # good; the sidecar imports them once the cluster has formed (definitions_sync.py).
    data = secret_data(evaluate_yaml(RABBIT_YAML + "  queues: [celery, agents.long]\n"))
    whole, boot = json.loads(data["definitions.json"]), json.loads(data["boot-definitions.json"])
    assert whole["queues"] and whole["exchanges"] and whole["bindings"]
    assert {k: v for k, v in whole.items() if k not in ("queues", "exchanges", "bindings")} == boot
    (conf,) = [o.inputs["data"]["rabbitmq.conf"] for o in evaluate_yaml(RABBIT_YAML).kubernetes_objects
               if o.inputs.get("kind") == "ConfigMap"]
    assert "load_definitions = /etc/rabbitmq/definitions/boot-definitions.json" in conf.splitlines()


def test_password_hashes_are_rabbitmqs_salted_sha256() -> None:
    hashed = base64.b64decode(password_hash("worker", "s3cret"))
    salt, digest = hashed[:4], hashed[4:]
    assert digest == hashlib.sha256(salt + b"s3cret").digest()
    # Stable for the same password (no diff on every `pulumi up`), different for another.
    assert password_hash("worker", "s3cret") == password_hash("worker", "s3cret") != password_hash("worker", "other")


def test_each_task_server_gets_its_delivery_limit_and_the_dead_letter_queue(evaluate_yaml: EvaluateYaml) -> None:
    text = RABBIT_YAML + """  max_deliveries: 3
  queues: [celery, agents.long]
"""
    definitions = json.loads(secret_data(evaluate_yaml(text))["definitions.json"])
    (policy,) = definitions["policies"]
    assert policy["definition"] == {"delivery-limit": 2, "dead-letter-exchange": "gru.dead-letter",
                                    "dead-letter-strategy": "at-least-once", "overflow": "reject-publish"}
    pattern = re.compile(policy["pattern"])
    assert pattern.match("celery") and pattern.match("agents.long")
    assert not pattern.match("agentsXlong") and not pattern.match("celery_delayed_0")
    # The task queues and the delayed-delivery topology are the broker's (topology.py); the
    # dead-letter queue is the workers' (imported before the nodes cluster, it would get one
    # member, and the sidecar's grow is what fixes that for the others).
    queues = {q["name"] for q in definitions["queues"]}
    assert {"celery", "agents.long", "celery_delayed_0", "celery_delayed_27"} <= queues
    assert DEAD_LETTER_QUEUE not in queues
    assert (DEAD_LETTER_QUEUE, "gru.dead-letter") == (dead_letter.DEAD_LETTER_QUEUE, dead_letter.DEAD_LETTER_EXCHANGE)
    tags = {u["name"]: u["tags"] for u in definitions["users"]}
    assert {name: tags[name] for name in ("agent", "worker", "keda")} == {"agent": [], "worker": [], "keda": ["monitoring"]}


def test_each_role_has_a_staged_user_beside_the_one_in_use(evaluate_yaml: EvaluateYaml) -> None:
    evaluation = evaluate_yaml(RABBIT_YAML, stable_secrets=True)
    passwords = {g.name: (g.inputs["result"], g.inputs["next"]) for g in evaluation.of_type(PASSWORD)}
    data = secret_data(evaluation)
    definitions = json.loads(data["definitions.json"])
    users = {u["name"]: u for u in definitions["users"]}
    rights = {p["user"]: (p["configure"], p["write"], p["read"]) for p in definitions["permissions"]}
    assert data["users"].splitlines() == list(users) and set(rights) == set(users)
    assert data["drop-after-seconds"] == "1230"  # the longest rollout: 600 s allowance + the default grace
    for role in defs.USERS:
        current, staged = passwords[f"rabbit-{role.name}-password"]
        successor = defs.login_name(role, staged, original=False)
        assert re.fullmatch(rf"{role.name}-[0-9a-f]{{8}}", successor)
        for name, password in ((role.name, current), (successor, staged)):
            assert users[name]["password_hash"] == password_hash(name, password)
            assert users[name]["tags"] == list(role.tags) and rights[name] == role.permissions
        assert current not in data["definitions.json"] and staged not in data["definitions.json"]
    assert len(users) == 6
    assert data["worker-url"].startswith("amqp://worker:") and data["keda-url"].startswith("http://keda:")


def test_a_rotation_moves_clients_onto_the_staged_user_by_the_rotations_count() -> None:
    provider = _PasswordProvider()
    created = provider.create({"length": 32, "rotation": "", "count_rotations": True}).outs
    assert created["rotations"] == 0
    rotated = provider.update("id", created, {"length": 32, "rotation": "2026-12", "count_rotations": True}).outs
    # Setting the text back to "" is one more rotation, never a return to the plain name.
    back = provider.update("id", rotated, {"length": 32, "rotation": "", "count_rotations": True}).outs
    assert (rotated["rotations"], back["rotations"]) == (1, 2)
    assert rotated["result"] == created["next"] and back["result"] == rotated["next"]
    before = _generated_logins(defs.WORKER, [created["result"], created["next"], created["rotations"]])
    after = _generated_logins(defs.WORKER, [rotated["result"], rotated["next"], rotated["rotations"]])
    again = _generated_logins(defs.WORKER, [back["result"], back["next"], back["rotations"]])
    # In use after a rotation: exactly the user staged before it, whose password it keeps.
    assert after[0] == before[1] and again[0] == after[1]
    assert [u.name for u in before][0] == "worker" and all(u.name != "worker" for u in after + again)
    # State from before the count never rotated: it gains the count, 0, and keeps both passwords.
    old = {"length": 32, "rotation": "", "result": "a" * 32, "next": "b" * 32}
    news = {"length": 32, "rotation": "", "count_rotations": True}
    assert provider.diff("id", old, news).changes
    counted = provider.update("id", old, news).outs
    assert (counted["result"], counted["next"], counted["rotations"]) == (old["result"], old["next"], 0)
    assert not provider.diff("id", counted, news).changes
    # A password that does not count (Redis's) never changes for it.
    assert not provider.diff("id", old, {"length": 32, "rotation": ""}).changes
    assert "rotations" not in provider.create({"length": 32, "rotation": ""}).outs


def test_an_agent_password_from_config_has_one_user_and_no_successor(evaluate_yaml: EvaluateYaml) -> None:
    from .conftest import make_password

    password = make_password()
    data = secret_data(evaluate_yaml(RABBIT_YAML, config={"gru:rabbit-password": password},
                                     secret_keys=["gru:rabbit-password"]))
    agents = [u for u in json.loads(data["definitions.json"])["users"] if u["name"].startswith("agent")]
    assert [u["name"] for u in agents] == ["agent"] and agents[0]["password_hash"] == password_hash("agent", password)
    assert data["rabbitmq-password"] == password


def test_login_names_are_stable_digests_and_the_sidecar_manages_exactly_them() -> None:
    staged = defs.logins(defs.WORKER, "current", "staged", rotated=False)
    assert [u.name for u in staged] == ["worker", defs.login_name(defs.WORKER, "staged", original=False)]
    assert defs.login_name(defs.WORKER, "staged", original=False) == staged[1].name  # same input, same user
    assert defs.login_name(defs.WORKER, "other", original=False) != staged[1].name
    assert defs.login_name(defs.AGENT, "staged", original=False) != staged[1].name.replace("worker", "agent")
    assert [u.name for u in defs.logins(defs.AGENT, "p", None, rotated=False)] == ["agent"]
    # The sh case pattern of definitions_sync matches every name logins() makes, and no other.
    pattern = "|".join(re.escape(a).replace(r"\[0\-9a\-f\]", "[0-9a-f]")
                       for a in defs.managed_user_pattern().split("|"))
    regex = re.compile(f"^({pattern})$")
    names = [u.name for role in defs.USERS for u in defs.logins(role, "a", "b", rotated=True)] + ["agent", "keda"]
    assert all(regex.match(n) for n in names)
    assert not any(regex.match(n) for n in ("guest", "admin", "worker-", "worker-123", "worker-0123456789", "workerx"))


def test_the_consumer_timeout_outlasts_the_longest_task(evaluate_yaml: EvaluateYaml) -> None:
    text = RABBIT_YAML + "  max_task_seconds: 7200\n"
    conf = one(evaluate_yaml(text), "ConfigMap", "rabbit-config")["data"]["rabbitmq.conf"]
    (timeout,) = re.findall(r"^consumer_timeout = (\d+)$", conf, re.M)
    assert int(timeout) > 7200 * 1000


def test_the_service_monitor_carries_the_labels_prometheus_selects(evaluate_yaml: EvaluateYaml) -> None:
    text = RABBIT_YAML.replace("name: rabbit\n", "name: rabbit\n  metrics: {enabled: true, service_monitor: true, "
                               "service_monitor_labels: {release: monitoring}}\n", 1)
    labels = one(evaluate_yaml(text), "ServiceMonitor", "rabbit")["metadata"]["labels"]
    assert labels["release"] == "monitoring" and labels["app.kubernetes.io/instance"] == "rabbit"


def test_ports_open_only_to_whom_they_serve(evaluate_yaml: EvaluateYaml) -> None:
    rules = one(evaluate_yaml(RABBIT_YAML), "NetworkPolicy", "rabbit")["spec"]["ingress"]
    assert [[p["port"] for p in r["ports"]] for r in rules] == [[5672], [4369, 25672, 5672]]
    assert rules[1]["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "rabbitmq",
                                                                 "app.kubernetes.io/instance": "rabbit"}}}]
    scaled = RABBIT_YAML.replace("broker_resource_name: rabbit", "broker_resource_name: rabbit\n  autoscaling: {enabled: true}") \
        .replace("name: rabbit\n", "name: rabbit\n  metrics: {enabled: true}\n", 1)
    evaluation = evaluate_yaml(scaled)
    rules = one(evaluation, "NetworkPolicy", "rabbit")["spec"]["ingress"]
    assert [[p["port"] for p in r["ports"]] for r in rules] == [[5672], [4369, 25672, 5672], [15672], [15692]]
    assert rules[2]["from"][0]["podSelector"] == {"matchLabels": {"app": "keda-operator"}}
    # KEDA counts ready and unacknowledged messages through the HTTP API, with its own user.
    (trigger,) = one(evaluation, "ScaledObject", "task-server")["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["protocol"] == "http" and "excludeUnacknowledged" not in trigger["metadata"]
    auth = one(evaluation, "TriggerAuthentication", "task-server-broker")["spec"]["secretTargetRef"]
    assert auth == [{"parameter": "host", "name": "rabbit-credentials", "key": "keda-url"}]


@pytest.mark.parametrize(("replicas", "budget"), [(1, 1), (3, 1), (5, 2), (7, 3)])
def test_a_drain_keeps_a_majority(evaluate_yaml: EvaluateYaml, replicas: int, budget: int) -> None:
    evaluation = evaluate_yaml(RABBIT_YAML.replace("name: rabbit\n", f"name: rabbit\n  replicas: {replicas}\n", 1))
    assert one(evaluation, "PodDisruptionBudget", "rabbit")["spec"]["maxUnavailable"] == budget
    lifecycle = one(evaluation, "StatefulSet", "rabbit")["spec"]["template"]["spec"]["containers"][0]["lifecycle"]
    # Each stopping node first waits until its quorum queues keep a majority without it.
    assert ("preStop" in lifecycle) == (replicas > 1)


def test_workers_wait_for_and_use_the_amqp_url(evaluate_yaml: EvaluateYaml) -> None:
    pod = one(evaluate_yaml(RABBIT_YAML), "Deployment", "task-server")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    refs = [e["valueFrom"]["secretKeyRef"] for c in (init, *pod["containers"]) for e in c["env"]
            if e["name"] == "CELERY_BROKER_URL"]
    assert refs == [{"name": "rabbit-credentials", "key": "worker-url"}] * 2


def test_task_server_edits_do_not_restart_the_nodes(evaluate_yaml: EvaluateYaml) -> None:
    """Delivery limits and queues travel in the definitions, which the sidecar imports live."""
    def statefulset(text: str) -> str:
        evaluation = evaluate_yaml(text, config={"gru:rabbit-password": "same"}, secret_keys=["gru:rabbit-password"],
                                   stable_secrets=True)
        return json.dumps(one(evaluation, "StatefulSet", "rabbit"), sort_keys=True, default=str)

    base = statefulset(RABBIT_YAML)
    assert statefulset(RABBIT_YAML.replace("replicas: 4", "replicas: 9") + "  max_deliveries: 9\n  queues: [a, b]\n") == base
    assert statefulset(RABBIT_YAML.replace("name: rabbit\n", "name: rabbit\n  disk_free_limit: 2Gi\n", 1)) != base


def test_a_stack_may_mix_both_broker_types(evaluate_yaml: EvaluateYaml) -> None:
    text = """broker:
  - {type: redis, name: redis}
  - {type: rabbitmq, name: rabbit, replicas: 1}
task_server:
  - {type: celery, name: on_redis, broker_resource_name: redis}
  - {type: celery, name: on_rabbit, broker_resource_name: rabbit}
"""
    evaluation = evaluate_yaml(text)
    urls = {r.name: [e for e in r.inputs["spec"]["template"]["spec"]["containers"][0]["env"]
                     if e["name"] == "CELERY_BROKER_URL"][0]["valueFrom"]["secretKeyRef"]["name"]
            for r in objects(evaluation, "Deployment")}
    assert urls == {"on-redis": "redis-credentials", "on-rabbit": "rabbit-credentials"}


@pytest.mark.parametrize(("extra", "expected"), [
    ("  replicas: 2\n", "broker.replicas: is 2: an even cluster"),
    ("  replicas: 9\n", "broker.replicas: must be at most 7"),
    ("  disk_free_limit: 8Gi\n", "broker.disk_free_limit: is 8Gi, not below the volume's size (8Gi)"),
    ("  resources: {memory_limit: 256Mi, memory_request: 256Mi}\n", "too little for a RabbitMQ node"),
    ("  max_memory_mb: 512\n", "broker.max_memory_mb: unknown field"),
    ("  password_rotation: 2\n", "broker.password_rotation: must be text"),
    ("  memory_high_watermark: 0.95\n", "broker.memory_high_watermark: must be at most 0.9"),
    ("  metrics: {service_monitor: true}\n", "a ServiceMonitor needs the metrics endpoint"),
    ("  metrics: {enabled: true, service_monitor_labels: {release: prom}}\n",
     "broker.metrics.service_monitor_labels: labels a ServiceMonitor that is not created"),
    ("  memory_high_watermark: '0.5'\n", "broker.memory_high_watermark: must be a number, got '0.5' (text)"),
    ("  disk_free_limit: true\n", "broker.disk_free_limit: must be a quantity, got true (a boolean)"),
])
def test_rabbitmq_mistakes_are_reported_before_anything_is_applied(extra: str, expected: str) -> None:
    text = RABBIT_YAML.replace("name: rabbit\n", "name: rabbit\n" + extra, 1)
    with pytest.raises(SpecError) as caught:
        parse_stack_spec(text.encode(), "stacks/x.yaml")
    assert expected in str(caught.value), str(caught.value)


def test_results_on_a_rabbitmq_broker_are_refused_with_the_way_out() -> None:
    with pytest.raises(SpecError) as caught:
        parse_stack_spec((RABBIT_YAML + "  results: {enabled: true}\n").encode(), "stacks/x.yaml")
    assert "task_server.results.enabled: broker 'rabbit' is RabbitMQ; stored task results need a Redis broker" in str(caught.value)
    assert "point this task server at a Redis broker" in str(caught.value)
