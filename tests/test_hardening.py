"""Production hardening, pinned on the rendered objects of the seed stack (no extra fields)
and of the full-featured example stack."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from components.pod_security import RUN_AS_ID
from gru.render import render_stack, write_manifests

from .conftest import ROOT, SEED_YAML, EvaluateYaml
from .rendered import Manifest, containers, is_exporter, named, of_kind, pod_specs
from .schemas.custom_resources import SCHEMAS
from .test_render import SUPPORTED_KUBERNETES

REDIS_STACKS = ["dev", "example"]
STACKS = [*REDIS_STACKS, "rabbitmq"]


@pytest.fixture(scope="module", params=STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def rendered(stack: str) -> list[Manifest]:
    return [o.manifest for o in render_stack(stack, ROOT / "stacks")]


@pytest.fixture(scope="module", params=REDIS_STACKS)
def redis_rendered(request: pytest.FixtureRequest) -> list[Manifest]:
    return [o.manifest for o in render_stack(str(request.param), ROOT / "stacks")]


@pytest.fixture(scope="module")
def rendered_with_secrets(stack: str) -> list[Manifest]:
    return [o.manifest for o in render_stack(stack, ROOT / "stacks", show_secrets=True)]


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES)
def test_every_object_validates_against_its_schema(rendered: list[Manifest], version: str) -> None:
    for obj in rendered:
        if obj["kind"] in SCHEMAS:
            jsonschema.validate(obj, SCHEMAS[obj["kind"]])
        else:
            kubernetes_validate.validate(obj, version, strict=True)


def test_custom_resource_schemas_can_fail() -> None:
    scaled = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x", "namespace": "y"},
              "spec": {"scaleTargetRef": {"name": "x"}, "triggers": [{"type": "redis", "metadata": {
                  "address": "a:6379", "listName": "q", "listLength": 5}}]}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, SCHEMAS["ScaledObject"])


def test_every_pod_runs_restricted(rendered: list[Manifest]) -> None:
    accounts = {o["metadata"]["name"]: o for o in of_kind(rendered, "ServiceAccount")}
    for workload, pod in pod_specs(rendered):
        name = workload["metadata"]["name"]
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["runAsUser"] == context["runAsGroup"] == context["fsGroup"] == RUN_AS_ID, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        account = accounts[pod["serviceAccountName"]]
        assert account["automountServiceAccountToken"] is False, name


def test_every_container_is_locked_down_and_bounded(rendered: list[Manifest]) -> None:
    for workload, container in containers(rendered):
        where = f"{workload['metadata']['name']}/{container['name']}"
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, where
        assert context["readOnlyRootFilesystem"] is True, where
        assert context["capabilities"] == {"drop": ["ALL"]}, where
        assert context["runAsNonRoot"] is True, where
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) == {"cpu", "memory"}, where
        image = container["image"]
        assert "@sha256:" in image or (":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")), where


def test_writable_paths_are_volumes(rendered: list[Manifest]) -> None:
    for workload, pod in pod_specs(rendered):
        mounts = {m["mountPath"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
        if workload["kind"] == "StatefulSet":
            assert {"/data"} <= mounts or {"/var/lib/rabbitmq", "/tmp"} <= mounts
        elif not is_exporter(workload):  # the exporter writes nothing
            assert {"/tmp", "/var/run/gru-health"} <= mounts


def test_only_clients_reach_redis(redis_rendered: list[Manifest]) -> None:
    rendered = redis_rendered
    policy = named(rendered, "NetworkPolicy", "redis")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    redis_rule = policy["spec"]["ingress"][0]
    assert redis_rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    keda = [peer for peer in redis_rule["from"] if peer["podSelector"]["matchLabels"] == {"app": "keda-operator"}]
    # KEDA's operator reads queue lengths, so it gets in exactly when something autoscales.
    autoscaled = bool(of_kind(rendered, "ScaledObject"))
    assert keda == ([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}},
                      "podSelector": {"matchLabels": {"app": "keda-operator"}}}] if autoscaled else [])
    client_labels = [peer["podSelector"]["matchLabels"] for peer in redis_rule["from"] if peer not in keda]
    assert all(len(labels) == 1 and list(labels.values()) == ["true"] for labels in client_labels)
    (client_label,) = {key for labels in client_labels for key in labels}
    # Every task server's pods carry the label; nothing else in the stack does.
    for workload, _ in pod_specs(rendered):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert (labels.get(client_label) == "true") == (workload["kind"] == "Deployment")
    # Redis takes nothing else: metrics come from the exporter's own pods.
    assert len(policy["spec"]["ingress"]) == 1


def test_workers_accept_no_connections(rendered: list[Manifest]) -> None:
    for deployment in of_kind(rendered, "Deployment"):
        if is_exporter(deployment):
            policy = named(rendered, "NetworkPolicy", deployment["metadata"]["name"])
            assert policy["spec"]["ingress"] == [
                {"from": [{"namespaceSelector": {}}], "ports": [{"port": 9121, "protocol": "TCP"}]}]
            continue
        policy = named(rendered, "NetworkPolicy", deployment["metadata"]["name"])
        assert policy["spec"]["ingress"] == []
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= deployment["spec"]["selector"]["matchLabels"].items()


def test_disruption_budgets_never_block_a_drain(rendered: list[Manifest]) -> None:
    for broker in of_kind(rendered, "StatefulSet"):
        # One node at a time, and never so many that a RabbitMQ cluster loses its majority.
        budget = named(rendered, "PodDisruptionBudget", broker["metadata"]["name"])["spec"]["maxUnavailable"]
        replicas = broker["spec"]["replicas"]
        assert budget >= 1 and (replicas == 1 or budget <= (replicas - 1) // 2)
    for deployment in of_kind(rendered, "Deployment"):
        if is_exporter(deployment):  # no budget: a drain may always move the exporter
            assert not [b for b in of_kind(rendered, "PodDisruptionBudget")
                        if b["metadata"]["name"] == deployment["metadata"]["name"]]
            continue
        budget = named(rendered, "PodDisruptionBudget", deployment["metadata"]["name"])
        assert budget["spec"]["maxUnavailable"] == "25%"
        # A drain must not stall while every worker is unready because Redis is moving.
        assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        assert "minAvailable" not in budget["spec"]


def test_workers_spread_over_nodes(rendered: list[Manifest]) -> None:
    for deployment in [d for d in of_kind(rendered, "Deployment") if not is_exporter(d)]:
        spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}


def test_no_secret_value_appears_in_any_other_object(rendered_with_secrets: list[Manifest]) -> None:
    values = [v for s in of_kind(rendered_with_secrets, "Secret") for v in s["stringData"].values()]
    password_like = [v for v in values if len(v) >= 16]
    assert password_like
    for obj in rendered_with_secrets:
        if obj["kind"] == "Secret":
            continue
        text = json.dumps(obj)
        for value in password_like:
            assert value not in text, f"{obj['kind']} {obj['metadata']['name']}"


def test_namespace_enforces_the_restricted_profile(rendered: list[Manifest]) -> None:
    (namespace,) = of_kind(rendered, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(o["metadata"].get("namespace") == namespace["metadata"]["name"]
               for o in rendered if o["kind"] != "Namespace")


def test_seed_stack_has_no_autoscaling_or_metrics_objects() -> None:
    kinds = {o.kind for o in render_stack("dev", ROOT / "stacks")}
    assert kinds.isdisjoint({"ScaledObject", "TriggerAuthentication", "ServiceMonitor"})


# --- autoscaling and metrics, on the example stack -------------------------------------------


@pytest.fixture(scope="module")
def example() -> list[Manifest]:
    return [o.manifest for o in render_stack("example", ROOT / "stacks")]


def test_scaled_object_follows_the_spec(example: list[Manifest]) -> None:
    scaled = named(example, "ScaledObject", "research-workers")["spec"]
    deployment = named(example, "Deployment", "research-workers")
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert scaled["scaleTargetRef"]["name"] == "research-workers"
    assert scaled["minReplicaCount"] == deployment["spec"]["replicas"] == 2
    assert scaled["maxReplicaCount"] == 20
    assert scaled["cooldownPeriod"] > grace
    scale_down = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert scale_down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 300}]
    assert {t["metadata"]["listName"] for t in scaled["triggers"]} == {"research", "research.priority"}
    # Concurrency 4 and prefetch 1: four waiting tasks per replica.
    assert {t["metadata"]["listLength"] for t in scaled["triggers"]} == {"4"}
    assert {t["authenticationRef"]["name"] for t in scaled["triggers"]} == {"research-workers-broker"}
    assert [t["name"] for t in scaled["triggers"]] == ["queue-0-research", "queue-1-research-priority"]
    auth = named(example, "TriggerAuthentication", "research-workers-broker")["spec"]
    # KEDA logs in as its own user, which may read list lengths and nothing else.
    assert auth == {"secretTargetRef": [{"parameter": "username", "name": "redis-credentials", "key": "keda-username"},
                                        {"parameter": "password", "name": "redis-credentials", "key": "keda-password"}]}
    batch = named(example, "ScaledObject", "batch-workers")["spec"]
    assert batch["minReplicaCount"] == 0 and {t["metadata"]["listLength"] for t in batch["triggers"]} == {"4"}


def test_autoscaled_replicas_are_left_to_the_autoscaler(evaluate_yaml: EvaluateYaml) -> None:
    text = SEED_YAML + "  autoscaling: {enabled: true, max_replicas: 8}\n"
    (deployment,) = evaluate_yaml(text).of_type("kubernetes:apps/v1:Deployment")
    assert "spec.replicas" in deployment.ignore_changes
    (fixed,) = evaluate_yaml(SEED_YAML).of_type("kubernetes:apps/v1:Deployment")
    assert fixed.ignore_changes == ()


def test_metrics_exporter_and_service_monitor(example: list[Manifest]) -> None:
    redis = named(example, "StatefulSet", "redis")["spec"]["template"]["spec"]
    assert [c["name"] for c in redis["containers"]] == ["redis", "acl-sync"]
    deployment = named(example, "Deployment", "redis-metrics")
    (exporter,) = deployment["spec"]["template"]["spec"]["containers"]
    service = named(example, "Service", "redis-metrics")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    env = {e["name"]: e for e in exporter["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "redis-credentials"
    # Queue depth of every task server's queue, and the dead-letter list's, as redis_key_size.
    assert set(env["REDIS_EXPORTER_CHECK_SINGLE_KEYS"]["value"].split(",")) == {
        "db0=celery", "db0=research", "db0=research.priority", "db0=batch", "db0=gru:dead-letter"}
    assert named(example, "Service", "redis-metrics")["spec"]["ports"][0]["port"] == 9121
    monitor = named(example, "ServiceMonitor", "redis")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # The label a default kube-prometheus-stack selects monitors by, beside the program's own.
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["metadata"]["labels"]["app.kubernetes.io/part-of"] == "gru"


def test_scheduling_passes_through(example: list[Manifest]) -> None:
    batch = named(example, "Deployment", "batch-workers")["spec"]["template"]["spec"]
    assert batch["nodeSelector"] == {"workload": "batch"}
    assert batch["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}]
    redis = named(example, "StatefulSet", "redis")["spec"]["template"]["spec"]
    assert redis["priorityClassName"] == "platform-critical"


def test_clients_from_other_namespaces(example: list[Manifest]) -> None:
    peers = named(example, "NetworkPolicy", "redis")["spec"]["ingress"][0]["from"]
    label = {"platform.example.com/task-broker-client": "true"}
    assert {"podSelector": {"matchLabels": label}} in peers
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "agents"}},
            "podSelector": {"matchLabels": label}} in peers


# --- checkov ----------------------------------------------------------------------------------


def _checkov() -> str:
    candidates = [os.environ.get("CHECKOV", ""), str(ROOT / "venv-checkov" / "bin" / "checkov"), shutil.which("checkov") or ""]
    found = next((c for c in candidates if c and Path(c).exists()), None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("checkov is not installed; .ci/run installs it into venv-checkov/")
        pytest.skip("checkov not installed here (bash .ci/run installs it into venv-checkov/)")
    return found


def _run_checkov(directory: Path) -> Any:
    # --skip-download and BC_SKIP_MAPPING keep checkov offline: its checks are all local.
    result = subprocess.run(
        [_checkov(), "-d", str(directory), "--framework", "kubernetes", "--output", "json", "--compact", "--skip-download"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    return json.loads(result.stdout)


def test_checkov_passes_with_zero_failures(stack: str, tmp_path: Path) -> None:
    write_manifests(render_stack(stack, ROOT / "stacks"), tmp_path)
    report = _run_checkov(tmp_path)
    results = report["results"]
    assert report["summary"]["failed"] == 0, [(f["check_id"], f["resource"]) for f in results["failed_checks"]]
    assert report["summary"]["passed"] > 100
    # Every skip is deliberate and carries its reason (listed in the README).
    skipped = results["skipped_checks"]
    assert {s["check_id"] for s in skipped} == {"CKV_K8S_35", "CKV_K8S_43", "CKV_K8S_15"}
    assert all(s["check_result"]["suppress_comment"] for s in skipped)


def test_checkov_catches_a_weakened_pod(tmp_path: Path) -> None:
    objects = render_stack("dev", ROOT / "stacks")
    for obj in objects:
        if obj.kind == "Deployment":
            for container in obj.manifest["spec"]["template"]["spec"]["containers"]:
                del container["securityContext"]
    write_manifests(objects, tmp_path)
    report = _run_checkov(tmp_path)
    failed = {f["check_id"] for f in report["results"]["failed_checks"]}
    assert {"CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_28"} <= failed


def test_task_server_edits_never_touch_the_redis_pod(evaluate_yaml: EvaluateYaml) -> None:
    """Queues feed the exporter, not the Redis pod: adding one must not restart the broker."""
    base = (ROOT / "stacks" / "example.yaml").read_text()
    assert "queues: [research, research.priority]" in base

    def statefulset_and_exporter(text: str) -> tuple[Any, Any]:
        # One password for both evaluations, as in a stack's state.
        evaluation = evaluate_yaml(text, config={"gru:redis-password": "same-password"}, secret_keys=["gru:redis-password"])
        (sts,) = evaluation.of_type("kubernetes:apps/v1:StatefulSet")
        exporter = [d for d in evaluation.of_type("kubernetes:apps/v1:Deployment") if d.name.endswith("redis-metrics")]
        return json.dumps(sts.inputs, sort_keys=True, default=str), json.dumps(exporter[0].inputs, sort_keys=True, default=str)

    before = statefulset_and_exporter(base)
    after = statefulset_and_exporter(base.replace("queues: [research, research.priority]",
                                                  "queues: [research, research.priority, research.new]"))
    assert before[0] == after[0]
    assert before[1] != after[1] and "research.new" in after[1]
