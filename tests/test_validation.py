"""Every bad stack file fails with a message naming the file, the field and the fix, before
a single resource is registered."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.stack_model import SpecError, load_stack_spec, parse_stack_spec
from gru.mock_engine import Evaluation

from .conftest import SEED_YAML, EvaluateYaml

CASES: list[tuple[str, bytes, list[str]]] = [
    ("empty file", b"", ["file is empty"]),
    ("only comments", b"# nothing\n", ["file is empty"]),
    ("not utf-8", b"broker:\n  name: \xff\xfe\n", ["not UTF-8", "line 2"]),
    ("yaml syntax", b"broker:\n  type: redis\n name: [x\n", ["YAML syntax error", "line 3"]),
    ("limit below request",
     b"broker:\n  type: redis\n  name: redis\n"
     b"  resources: {cpu_request: 500m, memory_request: 1Gi, cpu_limit: 250m, memory_limit: 2Gi}\n",
     ["broker.resources.cpu_limit", "below cpu_request (500m)", "raise cpu_limit to at least 500m"]),
    ("task server memory limit below request",
     b"broker:\n  type: redis\n  name: redis\ntask_server:\n  type: celery\n  name: ts\n  broker_resource_name: redis\n"
     b"  resources: {cpu_request: 100m, memory_request: 1Gi, cpu_limit: '1', memory_limit: 1000Mi}\n",
     ["task_server.resources.memory_limit", "below memory_request (1Gi)"]),
    ("nul byte", b"broker:\n  type: redis\n  name: re\x00dis\n", ["U+0000 is not allowed", "line 3"]),
    ("top level list", b"- broker\n", ["top level is a list", "not a mapping"]),
    ("top level scalar", b"just text\n", ["top level is 'just text' (text)"]),
    ("string where mapping belongs", b"broker: redis\n", ["broker: is 'redis' (text), not a mapping"]),
    ("unknown section", b"brokers:\n  type: redis\n  name: redis\n", ["unknown section 'brokers'", "did you mean 'broker'?"]),
    ("typo in field", SEED_YAML.replace("concurrency_per_replica", "concurency_per_replica").encode(),
     ["task_server.concurency_per_replica: unknown field", "did you mean 'concurrency_per_replica'?", "line 8"]),
    ("unknown field without close match", SEED_YAML.replace("  replicas: 4", "  zzz: 4").encode(),
     ["unknown field 'zzz'", "valid fields are"]),
    ("replicas as string", SEED_YAML.replace("replicas: 4", 'replicas: "4"').encode(),
     ["task_server.replicas: must be a whole number, got '4' (text)"]),
    ("replicas as boolean", SEED_YAML.replace("replicas: 4", "replicas: yes").encode(),
     ["task_server.replicas: must be a whole number, got true (a boolean)"]),
    ("replicas as float", SEED_YAML.replace("replicas: 4", "replicas: 4.5").encode(),
     ["task_server.replicas: must be a whole number, got 4.5 (a number)"]),
    ("negative replicas", SEED_YAML.replace("replicas: 4", "replicas: -1").encode(),
     ["task_server.replicas: must be at least 0, got -1"]),
    ("replicas above int32", SEED_YAML.replace("replicas: 4", "replicas: 2147483648").encode(),
     ["task_server.replicas: must be at most 2147483647"]),
    ("zero concurrency", SEED_YAML.replace("concurrency_per_replica: 1", "concurrency_per_replica: 0").encode(),
     ["task_server.concurrency_per_replica: must be at least 1, got 0"]),
    ("unknown broker type", SEED_YAML.replace("type: redis", "type: kafka").encode(),
     ["unsupported broker type 'kafka'", "use one of: redis, rabbitmq"]),
    ("unknown task server type", SEED_YAML.replace("type: celery", "type: rq").encode(),
     ["unsupported task_server type 'rq'", "use one of: celery"]),
    ("missing broker", SEED_YAML.replace("broker_resource_name: redis", "broker_resource_name: redsi").encode(),
     ["no broker named 'redsi' in this stack (brokers here: redis)", "did you mean 'redis'?"]),
    ("missing required field", SEED_YAML.replace("  broker_resource_name: redis\n", "").encode(),
     ["task_server.broker_resource_name: required field is missing", "add `broker_resource_name: redis`"]),
    ("duplicate names", b"broker:\n  - {type: redis, name: redis}\n  - {type: redis, name: redis}\n",
     ["broker[1].name: 'redis' is already the name of a broker"]),
    ("names colliding in kubernetes", b"broker:\n  - {type: redis, name: a_b}\n  - {type: redis, name: a-b}\n",
     ["'a-b' and 'a_b' (broker) both become the Kubernetes name 'a-b'"]),
    ("name kubernetes cannot take", SEED_YAML.replace("name: task_server", "name: Task.Server").encode(),
     ["name 'Task.Server'", "not a valid DNS-1035 label"]),
    ("name too long", SEED_YAML.replace("name: task_server", "name: " + "w" * 41).encode(),
     ["is 41 characters long; the limit is 40"]),
    ("duplicate key", b"broker:\n  type: redis\n  name: a\n  name: b\n", ["key 'name' appears twice (first on line 3)"]),
    ("namespace mismatch", SEED_YAML.replace("  broker_resource_name: redis", "  broker_resource_name: redis\n  namespace: other").encode(),
     ["differs from its broker's ('gru')"]),
    ("unpinned image", SEED_YAML.replace("name: task_server", "name: task_server\n  image: myorg/worker").encode(),
     ["has no tag", "pin a version"]),
    ("bad quantity", SEED_YAML.replace("name: redis\n", "name: redis\n  storage: {size: lots}\n", 1).encode(),
     ["broker.storage.size: 'lots' is not a Kubernetes quantity"]),
    ("name read as boolean", b"broker:\n  type: redis\n  name: no\n", ["broker.name: must be text, got false (a boolean)", "quote"]),
    ("empty list", b"broker: []\n", ["broker: is an empty list"]),
    ("owning a system namespace", b"broker: {type: redis, name: r, namespace: default}\n",
     ["broker.create_namespace: namespace 'default' always exists", "create_namespace: false"]),
    ("service monitor without metrics", b"broker: {type: redis, name: r, metrics: {service_monitor: true}}\n",
     ["broker.metrics.service_monitor: a ServiceMonitor needs the metrics exporter"]),
    ("service monitor labels without a monitor",
     b"broker: {type: redis, name: r, metrics: {enabled: true, service_monitor_labels: {release: prom}}}\n",
     ["broker.metrics.service_monitor_labels: labels a ServiceMonitor that is not created", "service_monitor: true"]),
    ("service monitor label of ours", b"broker: {type: redis, name: r, metrics: {enabled: true, service_monitor: true, "
     b"service_monitor_labels: {app.kubernetes.io/name: x}}}\n",
     ["broker.metrics.service_monitor_labels.app.kubernetes.io/name: 'app.kubernetes.io/name' is a label this program sets"]),
    ("bad service monitor label value", b"broker: {type: redis, name: r, metrics: {enabled: true, service_monitor: true, "
     b"service_monitor_labels: {release: 'a b'}}}\n", ["'a b' is not a Kubernetes label value"]),
    ("autoscaler below the floor", (SEED_YAML + "  autoscaling: {enabled: true, max_replicas: 2}\n").encode(),
     ["task_server.autoscaling.max_replicas: is 2, below `replicas` (4)"]),
    ("cooldown shorter than the grace period", (SEED_YAML + "  autoscaling: {enabled: true, cooldown_seconds: 60}\n").encode(),
     ["task_server.autoscaling.cooldown_seconds: is 60s, not longer than the termination grace period (630s)"]),
    ("typo in autoscaling", (SEED_YAML + "  autoscaling: {enabled: true, max_replica: 9}\n").encode(),
     ["unknown field 'max_replica'", "did you mean 'max_replicas'?"]),
    ("bad client label", b"broker: {type: redis, name: r, client_label: 'a b'}\n", ["'a b' is not a Kubernetes label key"]),
    ("bad toleration", (SEED_YAML + "  tolerations: [{key: a, effect: Sometimes}]\n").encode(),
     ["task_server.tolerations[0].effect"]),
    ("unknown affinity", (SEED_YAML + "  affinity: {nodeAffinty: {}}\n").encode(), ["affinity has unknown keys ['nodeAffinty']"]),
    ("scale-down period the HPA rejects", (SEED_YAML + "  autoscaling: {enabled: true, scale_down_period_seconds: 3600}\n").encode(),
     ["task_server.autoscaling.scale_down_period_seconds: must be at most 1800"]),
    ("repeated queue", (SEED_YAML + "  queues: [celery, bulk, celery]\n").encode(), ["task_server.queues: lists 'celery' more than once"]),
    ("bad cluster domain", b"broker: {type: redis, name: r, cluster_domain: 'not a domain'}\n", ["is not a DNS domain"]),
    ("brokers disagree on their namespace", b"broker:\n  - {type: redis, name: a}\n  - {type: redis, name: b, create_namespace: false}\n",
     ["broker[1].create_namespace: broker 'a' in namespace 'gru' has create_namespace: true"]),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_reported_with_file_field_and_fix(text: bytes, expected: list[str]) -> None:
    with pytest.raises(SpecError) as caught:
        parse_stack_spec(text, "stacks/bad.yaml")
    message = str(caught.value)
    assert message.startswith("stacks/bad.yaml: ")
    assert "Fix: " in message
    assert "Traceback" not in message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


@pytest.mark.parametrize("text", [t for _, t, _ in CASES], ids=[c[0] for c in CASES])
def test_bad_input_registers_nothing(evaluate_yaml: EvaluateYaml, text: bytes) -> None:
    seen = Evaluation()
    with pytest.raises(SpecError):
        evaluate_yaml(text, into=seen)
    assert seen.registrations == []


def test_a_valid_file_does_register(evaluate_yaml: EvaluateYaml) -> None:
    """The check above can fail: the same harness does see registrations."""
    seen = Evaluation()
    evaluate_yaml(SEED_YAML, into=seen)
    assert len(seen.registrations) == 21  # everything the seed registers


def test_all_problems_are_reported_at_once() -> None:
    text = SEED_YAML.replace("type: redis", "type: memcached").replace("replicas: 4", "replicas: -1") \
        .replace("concurrency_per_replica: 1", "concurrency_per_replica: 0")
    with pytest.raises(SpecError) as caught:
        parse_stack_spec(text.encode(), "stacks/x.yaml")
    assert len(caught.value.problems) == 3
    assert "3 problems found" in str(caught.value)


def test_missing_stack_file_says_where_it_looked(evaluate_yaml: EvaluateYaml, stacks_dir) -> None:
    from components.program import run
    from gru.mock_engine import evaluate

    with pytest.raises(SpecError) as caught:
        evaluate(lambda: run(stacks_dir), stack="prod-eu")
    message = str(caught.value)
    assert str(stacks_dir / "prod-eu.yaml") in message
    assert "create" in message and "copy stacks/dev.yaml" in message


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [{', '.join(['*' + prev] * 10)}]")
    lines.append("broker: *l")
    with pytest.raises(SpecError) as caught:
        parse_stack_spec("\n".join(lines).encode(), "stacks/bomb.yaml")
    # 10**12 values if expanded: reaching this line at all shows the sizing did not expand them.
    assert "anchors and aliases expand" in str(caught.value)


def test_small_aliases_are_fine() -> None:
    text = b"""
defaults: &worker {type: celery, broker_resource_name: redis, replicas: 2}
broker: {type: redis, name: redis}
task_server:
  - {<<: *worker, name: a}
  - {<<: *worker, name: b}
"""
    with pytest.raises(SpecError) as caught:
        parse_stack_spec(text, "stacks/x.yaml")
    # The anchor holder itself is an unknown section; the merged entries are valid.
    assert [p.path for p in caught.value.problems] == [("defaults",)]


def test_the_seed_yaml_is_accepted_exactly_as_written() -> None:
    spec = parse_stack_spec(SEED_YAML.encode(), "stacks/dev.yaml")
    (server,) = spec.task_servers
    assert (server.name, server.replicas, server.concurrency_per_replica, server.broker_resource_name) == (
        "task_server", 4, 1, "redis")


@pytest.mark.parametrize(("case", "text", "expected"), [
    ("a key in the wrong case, on its own line", b"task_server:\n  type: celery\n  name: t\n  Replicas: 4\n",
     ["line 4, task_server.Replicas: unknown field 'Replicas'", "keys are lowercase: write 'replicas'"]),
    ("a nested key in the wrong case", b"broker:\n  type: redis\n  name: r\n  storage: {Size: 1Gi}\n",
     ["broker.storage.Size: unknown field 'Size'", "write 'size'"]),
    ("Exists with a value", b"broker: {type: redis, name: r, tolerations: [{key: k, operator: Exists, value: v}]}\n",
     ["`operator: Exists` may not have a `value`", "remove `value`"]),
    ("no key without Exists", b"broker: {type: redis, name: r, tolerations: [{operator: Equal, value: v}]}\n",
     ["without a `key` must have `operator: Exists`"]),
    ("toleration_seconds without NoExecute",
     b"broker: {type: redis, name: r, tolerations: [{key: k, operator: Exists, toleration_seconds: 5}]}\n",
     ["only to `effect: NoExecute`"]),
    ("the API server's own Service", b"broker: {type: redis, name: kubernetes, namespace: default, create_namespace: false}\n",
     ["broker.name: the Service 'kubernetes' in namespace 'default' is the API server's own"]),
    ("no room for the rewrite fork", b"broker: {type: redis, name: r, max_memory_mb: 1024, resources: {memory_limit: 1200Mi}}\n",
     ["broker.resources.memory_limit: is 1200Mi, too little for maxmemory (1024 MiB)", "at least 1600Mi"]),
    ("a boolean quantity", b"broker: {type: redis, name: r, resources: {cpu_limit: true}}\n",
     ["broker.resources.cpu_limit: must be a quantity, got true"]),
    ("a node selector value Kubernetes refuses", b"broker: {type: redis, name: r, node_selector: {pool: 'a b'}}\n",
     ["is not a Kubernetes label value"]),
    ("a priority class Kubernetes refuses", b"broker: {type: redis, name: r, priority_class_name: High_Priority}\n",
     ["is not a PriorityClass name"]),
    ("a name too long", b"broker: {type: redis, name: " + b"r" * 41 + b"}\n", ["the limit is 40", "shorten it"]),
    ("an empty queue list", b"task_server: {type: celery, name: t, broker_resource_name: r, queues: []}\n",
     ["must be a non-empty list, got an empty list", "[celery]"]),
])
def test_what_the_api_server_would_refuse_is_caught_first(stacks_dir: Path, case: str, text: bytes,
                                                          expected: list[str]) -> None:
    (stacks_dir / "bad.yaml").write_bytes(text)
    with pytest.raises(SpecError) as raised:
        load_stack_spec(stacks_dir / "bad.yaml", "stacks/bad.yaml")
    message = str(raised.value)
    for part in expected:
        assert part in message, f"{case}: {part!r} not in:\n{message}"


def test_quantities_may_be_yaml_numbers_and_each_resource_keeps_its_default(stacks_dir: Path) -> None:
    (stacks_dir / "ok.yaml").write_bytes(
        b"broker: {type: redis, name: r, resources: {cpu_limit: 1}}\n"
        b"task_server: {type: celery, name: t, broker_resource_name: r, resources: {cpu_request: 0.5, cpu_limit: 2}}\n")
    spec = load_stack_spec(stacks_dir / "ok.yaml", "stacks/ok.yaml")
    (broker,), (server,) = spec.brokers, spec.task_servers
    assert broker.compute_resources.cpu_limit == "1"
    assert broker.compute_resources.memory_limit == "1088Mi"  # the default for max_memory_mb 512
    assert server.compute_resources.cpu_request == "0.5" and server.compute_resources.cpu_limit == "2"
    assert server.compute_resources.memory_limit == "640Mi"
