"""The real program under the mock engine: what the seed YAML registers, and how."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from components.redis_broker.redis_acl import password_hash
from components.stack_model.task_server import DEFAULT_WORKER_IMAGE
from gru.mock_engine import Evaluation, Registration

from .conftest import SEED_YAML, URL_SPECIALS, EvaluateYaml, dumps, make_password

SECRET = "kubernetes:core/v1:Secret"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
STATEFULSET = "kubernetes:apps/v1:StatefulSet"
PASSWORD = "pulumi-python:dynamic/gru:GeneratedPassword"


def unwrap(value: Any) -> Any:
    """Secret values arrive wrapped in the engine's secret envelope."""
    if isinstance(value, dict) and "value" in value and len(value) == 2:
        return value["value"]
    return value


def secret_data(evaluation: Evaluation) -> dict[str, str]:
    (secret,) = evaluation.of_type(SECRET)
    return dict(unwrap(secret.inputs["stringData"]))


def children_of(evaluation: Evaluation, parent: Registration) -> list[Registration]:
    return [r for r in evaluation.registrations if r.parent == parent.urn]


def test_seed_yaml_registers_exactly_the_expected_resources(evaluate_yaml: EvaluateYaml) -> None:
    evaluation = evaluate_yaml(SEED_YAML)
    got = sorted((r.type, r.name) for r in evaluation.registrations)
    assert got == sorted([
        ("kubernetes:core/v1:Namespace", "gru"),
        ("gru:index:RedisBroker", "redis"),
        ("kubernetes:core/v1:ServiceAccount", "redis"),
        ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "redis"),
        ("kubernetes:policy/v1:PodDisruptionBudget", "redis"),
        (PASSWORD, "redis-password"),
        (PASSWORD, "redis-worker-password"),
        (PASSWORD, "redis-exporter-password"),
        (PASSWORD, "redis-keda-password"),
        (PASSWORD, "redis-admin-password"),
        (SECRET, "redis-credentials"),
        ("kubernetes:core/v1:ConfigMap", "redis-config"),
        ("kubernetes:core/v1:Service", "redis"),
        ("kubernetes:core/v1:Service", "redis-headless"),
        (STATEFULSET, "redis"),
        ("kubernetes:core/v1:PersistentVolumeClaimPatch", "data-redis-0"),
        ("gru:index:TaskServer", "task_server"),
        ("kubernetes:core/v1:ServiceAccount", "task-server"),
        ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "task-server"),
        ("kubernetes:policy/v1:PodDisruptionBudget", "task-server"),
        (DEPLOYMENT, "task-server"),
    ])
    broker, server = evaluation.of_type("gru:index:RedisBroker")[0], evaluation.of_type("gru:index:TaskServer")[0]
    assert sorted((r.type.rsplit(":", 1)[-1], r.name) for r in children_of(evaluation, broker)) == [
        ("ConfigMap", "redis-config"), ("GeneratedPassword", "redis-admin-password"),
        ("GeneratedPassword", "redis-exporter-password"), ("GeneratedPassword", "redis-keda-password"),
        ("GeneratedPassword", "redis-password"), ("GeneratedPassword", "redis-worker-password"), ("NetworkPolicy", "redis"),
        ("PersistentVolumeClaimPatch", "data-redis-0"), ("PodDisruptionBudget", "redis"),
        ("Secret", "redis-credentials"), ("Service", "redis"),
        ("Service", "redis-headless"), ("ServiceAccount", "redis"), ("StatefulSet", "redis")]
    assert sorted(r.type.rsplit(":", 1)[-1] for r in children_of(evaluation, server)) == [
        "Deployment", "NetworkPolicy", "PodDisruptionBudget", "ServiceAccount"]


def test_replicas_and_concurrency_land_in_the_deployment(evaluate_yaml: EvaluateYaml) -> None:
    evaluation = evaluate_yaml(SEED_YAML.replace("replicas: 4", "replicas: 7")
                               .replace("concurrency_per_replica: 1", "concurrency_per_replica: 3"))
    (deployment,) = evaluation.of_type(DEPLOYMENT)
    spec = deployment.inputs["spec"]
    assert spec["replicas"] == 7
    (worker,) = spec["template"]["spec"]["containers"]
    assert worker["command"] == ["celery"]
    assert worker["args"][:3] == ["-A", "gru_worker.app", "worker"]
    assert "--concurrency=3" in worker["args"]
    assert "--prefetch-multiplier=1" in worker["args"]
    # Requests follow concurrency: three processes, three times the per-process CPU.
    assert worker["resources"]["requests"]["cpu"] == "750m"
    # A pool process is recycled past 3/4 of its 512 MiB share of the limit, not every N tasks.
    assert "--max-memory-per-child=393216" in worker["args"]
    assert not any(a.startswith("--max-tasks-per-child") for a in worker["args"])
    assert evaluation.outputs["task_server_replicas"] == 7
    assert evaluation.outputs["task_server_concurrency"] == 3


def test_every_worker_resource_depends_on_the_broker(evaluate_yaml: EvaluateYaml) -> None:
    evaluation = evaluate_yaml(SEED_YAML)
    (broker,) = evaluation.of_type("gru:index:RedisBroker")
    (statefulset,) = evaluation.of_type(STATEFULSET)
    assert statefulset.parent == broker.urn
    (server,) = evaluation.of_type("gru:index:TaskServer")
    # Depending on a component means depending on its children, the StatefulSet included.
    assert statefulset.urn in server.dependencies
    for child in children_of(evaluation, server):
        assert statefulset.urn in child.dependencies, child.name


def test_workers_wait_for_an_authenticated_broker_ping(evaluate_yaml: EvaluateYaml) -> None:
    evaluation = evaluate_yaml(SEED_YAML)
    (deployment,) = evaluation.of_type(DEPLOYMENT)
    (init,) = deployment.inputs["spec"]["template"]["spec"]["initContainers"]
    env = {e["name"]: e for e in init["env"]}
    assert env["CELERY_BROKER_URL"]["valueFrom"]["secretKeyRef"] == {"name": "redis-credentials", "key": "worker-url"}
    assert env["BROKER_WAIT_SECONDS"]["value"] == "300"
    assert init["command"] == ["python", "-m", "gru_worker.wait_for_broker"]


def test_broker_image_is_not_in_the_worker_pods(evaluate_yaml: EvaluateYaml) -> None:
    # A Redis image bump must not roll every worker fleet: the init container runs the worker image.
    (deployment,) = evaluate_yaml(SEED_YAML.replace("name: redis\n", "name: redis\n  image: redis:7.4.2-alpine\n", 1)
                                  ).of_type(DEPLOYMENT)
    pod = deployment.inputs["spec"]["template"]["spec"]
    assert {c["image"] for c in pod["initContainers"] + pod["containers"]} == {DEFAULT_WORKER_IMAGE}
    assert "7.4.2" not in str(deployment.inputs)


def test_no_password_appears_outside_the_secret(evaluate_yaml: EvaluateYaml) -> None:
    password = make_password()
    evaluation = evaluate_yaml(SEED_YAML, config={"gru:redis-password": password},
                               secret_keys=["gru:redis-password"])
    data = secret_data(evaluation)
    assert data["redis-password"] == password
    forms = {password, quote(password, safe=""), data["broker-url"], password_hash(password)}
    for registration in evaluation.registrations:
        if registration.type == SECRET:
            continue
        text = dumps(registration.inputs)
        for form in forms:
            assert form not in text, f"{registration.type} {registration.name} carries the password"
    for name, value in evaluation.outputs.items():
        assert password not in dumps(value), name


def test_broker_url_url_encodes_the_password(evaluate_yaml: EvaluateYaml) -> None:
    password = make_password()
    evaluation = evaluate_yaml(SEED_YAML, config={"gru:redis-password": password},
                               secret_keys=["gru:redis-password"])
    url = secret_data(evaluation)["broker-url"]
    token = password.removesuffix(URL_SPECIALS)  # URL-safe already
    assert url == f"redis://:{token}%40%3A%2F%25%23%3F@redis.gru.svc.cluster.local:6379/0"


def test_generated_password_is_used_when_none_is_configured(evaluate_yaml: EvaluateYaml) -> None:
    evaluation = evaluate_yaml(SEED_YAML)
    assert all(generator.inputs["length"] >= 32 for generator in evaluation.of_type(PASSWORD))
    data = secret_data(evaluation)
    assert data["redis-password"] and data["redis-password"] in data["broker-url"]


def test_each_client_kind_has_its_own_user_with_a_staged_next_password(evaluate_yaml: EvaluateYaml) -> None:
    evaluation = evaluate_yaml(SEED_YAML)
    data = secret_data(evaluation)
    generated = {g.name: (g.inputs["result"], g.inputs["next"]) for g in evaluation.of_type(PASSWORD)}
    users = {line.split()[1]: line for line in data["users.acl"].splitlines() if line.startswith("user ")}
    assert set(users) == {"default", "worker", "exporter", "keda", "admin"}
    for user, resource in [("default", "redis-password"), ("worker", "redis-worker-password"),
                           ("exporter", "redis-exporter-password"), ("keda", "redis-keda-password")]:
        current, staged = generated[resource]
        # Redis accepts the password in use and the one a rotation moves to, as hashes only.
        assert f"#{password_hash(current)} #{password_hash(staged)} " in users[user], user
        assert current not in data["users.acl"] and staged not in data["users.acl"]
    assert data["worker-url"].startswith("redis://worker:") and generated["redis-worker-password"][0] in data["worker-url"]
    # Nothing but the worker user may run what destroys or reconfigures the server, and it may not either.
    assert "-@dangerous" in users["worker"]
    for user in ("default", "exporter", "keda", "admin"):
        assert " -@all " in users[user] and "+@all" not in users[user], user
    assert "+acl|setuser" in users["admin"] and "+acl" not in users["worker"]


def test_plaintext_password_in_config_is_refused_before_anything_registers(evaluate_yaml: EvaluateYaml) -> None:
    from components.program import PlaintextPasswordError

    with pytest.raises(PlaintextPasswordError, match="config set --secret redis-password"):
        evaluate_yaml(SEED_YAML, config={"gru:redis-password": make_password()})


def test_a_new_password_rolls_only_the_clients_that_use_it(evaluate_yaml: EvaluateYaml) -> None:
    def pod_templates(password: str) -> tuple[str, str, str]:
        evaluation = evaluate_yaml(SEED_YAML, config={"gru:redis-password": password},
                                   secret_keys=["gru:redis-password"], stable_secrets=True)
        (deployment,) = evaluation.of_type(DEPLOYMENT)
        (statefulset,) = evaluation.of_type(STATEFULSET)
        return (deployment.inputs["spec"]["template"]["metadata"]["annotations"]["gru.dev/broker-credentials-hash"],
                dumps(statefulset.inputs["spec"]["template"]), secret_data(evaluation)["users.acl"])

    one, another = pod_templates(make_password()), pod_templates(make_password())
    # The agents' password changed: Redis takes it without a restart, and workers, who log in
    # as their own user, do not roll.
    assert one[2] != another[2]
    assert one[:2] == another[:2]


def test_workers_read_the_broker_url_from_the_secret(evaluate_yaml: EvaluateYaml) -> None:
    evaluation = evaluate_yaml(SEED_YAML)
    (deployment,) = evaluation.of_type(DEPLOYMENT)
    pod = deployment.inputs["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["CELERY_BROKER_URL"]["valueFrom"]["secretKeyRef"] == {"name": "redis-credentials", "key": "worker-url"}
    assert "value" not in env["CELERY_BROKER_URL"]
    # Late acks only help if Redis never redelivers a running task: visibility > grace period.
    grace = pod["terminationGracePeriodSeconds"]
    assert grace == 600 + 30
    assert int(env["GRU_VISIBILITY_TIMEOUT"]["value"]) > grace
    assert env["GRU_ACKS_LATE"]["value"] == "true"


def test_redis_is_a_broker_that_never_evicts(evaluate_yaml: EvaluateYaml) -> None:
    evaluation = evaluate_yaml(SEED_YAML.replace("name: redis\n", "name: redis\n  max_memory_mb: 256\n", 1))
    (config_map,) = evaluation.of_type("kubernetes:core/v1:ConfigMap")
    conf = config_map.inputs["data"]["redis.conf"]
    assert "appendonly yes" in conf
    assert "maxmemory 256mb" in conf
    assert "maxmemory-policy noeviction" in conf
    assert "requirepass" not in conf and "aclfile /etc/redis-auth/users.acl" in conf
    (statefulset,) = evaluation.of_type(STATEFULSET)
    spec = statefulset.inputs["spec"]
    assert spec["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "8Gi"
    redis, sync = spec["template"]["spec"]["containers"]
    assert sync["name"] == "acl-sync" and sync["image"] == redis["image"]
    assert redis["image"].startswith("redis:") and ":latest" not in redis["image"]
    assert redis["readinessProbe"]["exec"]["command"][-1].count("redis-cli") == 1


def test_storage_can_be_switched_off(evaluate_yaml: EvaluateYaml) -> None:
    evaluation = evaluate_yaml(SEED_YAML.replace("name: redis\n", "name: redis\n  storage: {enabled: false}\n", 1))
    (statefulset,) = evaluation.of_type(STATEFULSET)
    assert "volumeClaimTemplates" not in statefulset.inputs["spec"]
    volumes = {v["name"]: v for v in statefulset.inputs["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["data"]


def test_several_brokers_and_task_servers(evaluate_yaml: EvaluateYaml) -> None:
    evaluation = evaluate_yaml("""
broker:
  - {type: redis, name: fast}
  - {type: redis, name: bulk, namespace: batch}
task_server:
  - {type: celery, name: agents_fast, broker_resource_name: fast, replicas: 2}
  - {type: celery, name: agents_bulk, broker_resource_name: bulk, replicas: 3, queues: [bulk, reports]}
""")
    deployments = {d.name: d for d in evaluation.of_type(DEPLOYMENT)}
    assert set(deployments) == {"agents-fast", "agents-bulk"}
    bulk = deployments["agents-bulk"].inputs
    assert bulk["metadata"]["namespace"] == "batch"
    assert {n.name for n in evaluation.of_type("kubernetes:core/v1:Namespace")} == {"gru", "batch"}
    assert "--queues=bulk,reports" in bulk["spec"]["template"]["spec"]["containers"][0]["args"]
    statefulsets = {s.name: s for s in evaluation.of_type(STATEFULSET)}
    assert statefulsets["bulk"].urn in deployments["agents-bulk"].dependencies
    assert statefulsets["fast"].urn not in deployments["agents-bulk"].dependencies
    assert evaluation.outputs["bulk_host"] == "bulk.batch.svc.cluster.local"
    assert evaluation.outputs["agents_fast_deployment_name"] == "agents-fast"


def test_exports_per_component(evaluate_yaml: EvaluateYaml) -> None:
    evaluation = evaluate_yaml(SEED_YAML)
    assert evaluation.outputs == {
        "redis_host": "redis.gru.svc.cluster.local",
        "redis_port": 6379,
        "redis_secret_name": "redis-credentials",
        "task_server_deployment_name": "task-server",
        "task_server_replicas": 4,
        "task_server_concurrency": 1,
    }


def test_memory_recycling_follows_explicit_resources(evaluate_yaml: EvaluateYaml) -> None:
    text = SEED_YAML + "  resources: {cpu_request: 500m, memory_request: 1Gi, cpu_limit: '1', memory_limit: 2Gi}\n"
    text += "  max_tasks_per_child: 5000\n"
    (deployment,) = evaluate_yaml(text).of_type(DEPLOYMENT)
    args = deployment.inputs["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--max-memory-per-child={(2048 - 128) * 3 // 4 * 1024}" in args
    assert "--max-tasks-per-child=5000" in args


def test_cluster_domain_reaches_every_broker_address(evaluate_yaml: EvaluateYaml) -> None:
    text = SEED_YAML.replace("name: redis\n", "name: redis\n  cluster_domain: corp.internal\n", 1)
    evaluation = evaluate_yaml(text)
    assert evaluation.outputs["redis_host"] == "redis.gru.svc.corp.internal"
    assert "@redis.gru.svc.corp.internal:6379/0" in secret_data(evaluation)["broker-url"]


def test_deployment_waits_out_the_workers_grace_period_on_delete(evaluate_yaml: EvaluateYaml) -> None:
    # The default grace period is 630 s; the provider's own wait (600 s) would fail a delete.
    (deployment,) = evaluate_yaml(SEED_YAML).of_type(DEPLOYMENT)
    grace = deployment.inputs["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace == 630
    assert int(deployment.delete_timeout.removesuffix("s")) >= grace + 600
    (long,) = evaluate_yaml(SEED_YAML + "  max_task_seconds: 14400\n").of_type(DEPLOYMENT)
    assert int(long.delete_timeout.removesuffix("s")) >= 14400 + 600


def test_broker_statefulsets_wait_as_long_as_their_slowest_rollout(evaluate_yaml: EvaluateYaml) -> None:
    # The provider's 10-minute default would fail `pulumi up` while a rollout goes well: each
    # pod may take its grace period to stop and its startup budget to start again.
    (redis,) = evaluate_yaml(SEED_YAML).of_type("kubernetes:apps/v1:StatefulSet")
    pod = redis.inputs["spec"]["template"]["spec"]
    startup = pod["containers"][0]["startupProbe"]
    floor = pod["terminationGracePeriodSeconds"] + startup["periodSeconds"] * startup["failureThreshold"]
    assert int(redis.update_timeout.removesuffix("s")) >= floor + 600
    assert int(redis.delete_timeout.removesuffix("s")) >= pod["terminationGracePeriodSeconds"] + 600
    rabbit_yaml = SEED_YAML.replace("type: redis", "type: rabbitmq").replace("name: redis", "name: rabbit") \
        .replace("broker_resource_name: redis", "broker_resource_name: rabbit")
    (rabbit,) = evaluate_yaml(rabbit_yaml).of_type("kubernetes:apps/v1:StatefulSet")
    pod = rabbit.inputs["spec"]["template"]["spec"]
    assert rabbit.inputs["spec"]["replicas"] == 3 and pod["terminationGracePeriodSeconds"] == 600
    # Three nodes, one after another: each its 600 s grace and 600 s startup budget.
    assert int(rabbit.update_timeout.removesuffix("s")) >= 3 * (600 + 600)
    assert int(rabbit.create_timeout.removesuffix("s")) >= 600
