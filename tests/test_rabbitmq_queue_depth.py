"""KEDA's view of a task queue on real RabbitMQ: the rendered broker, its rabbitmq container's
env, and the rabbitmq image's own /etc/rabbitmq/conf.d (localrun/rabbitmq.py's IMAGE_CONF_D,
which disables the management metrics collector). KEDA's HTTP trigger reads `messages` from
`/api/queues/<vhost>/<queue>`, a missing field as 0: the rendered config must make every node
report it, or autoscaling sees an empty queue. Needs Debian's rabbitmq-server; not skipped."""

from __future__ import annotations

import base64
import json
import secrets
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, unquote, urlsplit

import amqp
import pytest

from gru.render import render_stack, write_manifests
from localrun import LocalStack
from localrun.rabbitmq import IMAGE_CONF_D, LocalRabbitMQCluster, have_rabbitmq

from .conftest import make_password

STACK = """
broker:
  type: rabbitmq
  name: rabbit
task_server:
  type: celery
  name: task_server
  broker_resource_name: rabbit
  autoscaling: {enabled: true}
"""
PUBLISHED = 25
# The management stats database refreshes every 5 s (collect_statistics_interval): a few rounds.
STATS_WAIT = 20.0

Rendered = tuple[LocalStack, dict[str, Any], dict[str, str]]
MakeCluster = Callable[[dict[str, str], int], LocalRabbitMQCluster]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    """The rendered stack, its KEDA trigger's metadata and the rabbitmq container's env."""
    root = tmp_path_factory.mktemp("queue-depth")
    (root / "stacks").mkdir()
    (root / "stacks" / "keda.yaml").write_text(STACK)
    write_manifests(render_stack("keda", root / "stacks", show_secrets=True,
                                 secret_config={"gru:rabbit-password": make_password()}), root / "rendered")
    stack = LocalStack.from_directory(root / "rendered", root / "run")
    (trigger,) = stack._object("ScaledObject", "task-server")["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq" and trigger["metadata"]["protocol"] == "http"
    (container,) = [c for c in stack._object("StatefulSet", "rabbit")["spec"]["template"]["spec"]["containers"]
                    if c["name"] == "rabbitmq"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    return stack, trigger["metadata"], env


@pytest.fixture
def make_cluster(rendered: Rendered, tmp_path: Path) -> Iterator[MakeCluster]:
    stack, _, _ = rendered
    started: list[LocalRabbitMQCluster] = []

    def make(container_env: dict[str, str], nodes: int) -> LocalRabbitMQCluster:
        data = stack._object("ConfigMap", "rabbit-config")["data"]
        cluster = LocalRabbitMQCluster(tmp_path / f"cluster-{len(started)}", data["rabbitmq.conf"],
                                       data["enabled_plugins"], stack.secret_value("rabbit", "boot-definitions.json"),
                                       cookie=secrets.token_hex(16), nodes=nodes, container_env=container_env)
        started.append(cluster)
        assert have_rabbitmq(), "rabbitmq-server (/usr/lib/rabbitmq/bin) and epmd are needed"
        cluster.start()
        return cluster

    yield make
    for cluster in started:
        cluster.close()


def publish(stack: LocalStack, cluster: LocalRabbitMQCluster, queue: str) -> amqp.Connection:
    """PUBLISHED confirmed messages on the quorum queue, with the workers' user, and one of them
    taken and held unacknowledged (a running late-acked task): the connection stays open."""
    worker = urlsplit(stack.secret_value("rabbit", "worker-url"))
    conn = amqp.Connection(host=f"127.0.0.1:{cluster.service_port()}", userid=unquote(worker.username or ""),
                           password=unquote(worker.password or ""), virtual_host="/", confirm_publish=True,
                           connect_timeout=5, read_timeout=10, write_timeout=10)
    conn.connect()
    channel = conn.channel()
    channel.queue_declare(queue, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})
    for i in range(PUBLISHED):
        channel.basic_publish(amqp.Message(str(i), delivery_mode=2), routing_key=queue)
    assert channel.basic_get(queue) is not None  # not acknowledged
    return conn


def keda_reads(stack: LocalStack, cluster: LocalRabbitMQCluster, index: int, trigger: dict[str, str]) -> dict[str, Any]:
    """GET the queue as KEDA's HTTP trigger does: the Secret's keda-url user, the path
    `/api/queues/<QueryEscape(vhostName)>/<QueryEscape(queueName)>`, here on node `index`
    (the Service may send KEDA to any node)."""
    keda = urlsplit(stack.secret_value("rabbit", "keda-url"))
    path = f"/api/queues/{quote_plus(trigger['vhostName'])}/{quote_plus(trigger['queueName'])}"
    token = base64.b64encode(f"{unquote(keda.username or '')}:{unquote(keda.password or '')}".encode()).decode()
    request = urllib.request.Request(f"http://127.0.0.1:{cluster.management_port(index)}{path}",
                                     headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body: dict[str, Any] = json.load(response)
    return body


def test_every_node_reports_the_queue_depth_keda_scales_on(rendered: Rendered, make_cluster: MakeCluster) -> None:
    """The rendered container env and rabbitmq.conf, with the image's conf.d in place."""
    stack, trigger, env = rendered
    cluster = make_cluster(env, 3)
    conn = publish(stack, cluster, trigger["queueName"])
    try:
        for index in range(cluster.nodes):
            deadline = time.monotonic() + STATS_WAIT
            body = keda_reads(stack, cluster, index, trigger)
            while body.get("messages") != PUBLISHED and time.monotonic() < deadline:
                time.sleep(1)
                body = keda_reads(stack, cluster, index, trigger)
            # What KEDA's Go client decodes: a missing `messages` is 0, an empty queue.
            assert body.get("messages", 0) == PUBLISHED, (
                f"node {index} reports messages={body.get('messages', '<absent>')}, fields {sorted(body)}; "
                f"config files it read:\n{config_files_logged(cluster, index)}")
            assert body["messages_unacknowledged"] == 1 and body["type"] == "quorum"
    finally:
        conn.close()


def test_the_images_conf_d_as_modelled_hides_the_depth(rendered: Rendered, make_cluster: MakeCluster) -> None:
    """The control: the same with RABBITMQ_CONFIG_FILES left to RabbitMQ's default, the image's
    conf.d, which wins over rabbitmq.conf: the queue has no `messages`, which KEDA reads as 0."""
    stack, trigger, env = rendered
    cluster = make_cluster({k: v for k, v in env.items() if k != "RABBITMQ_CONFIG_FILES"}, 1)
    conn = publish(stack, cluster, trigger["queueName"])
    try:
        deadline = time.monotonic() + STATS_WAIT
        while time.monotonic() < deadline:
            body = keda_reads(stack, cluster, 0, trigger)
            assert body["type"] == "quorum" and "messages" not in body, sorted(body)
            time.sleep(2)
    finally:
        conn.close()
    logged = config_files_logged(cluster, 0)
    assert all(str(cluster.image_conf_d / name) in logged for name in IMAGE_CONF_D), logged
    assert "Metrics collection disabled in management agent" in cluster.log(0, tail=1_000_000)


def config_files_logged(cluster: LocalRabbitMQCluster, index: int) -> str:
    """The node log's lines that name a config file it loaded."""
    return "\n".join(line for line in cluster.log(index, tail=1_000_000).splitlines()
                     if ".conf" in line and ("rabbitmq.conf" in line or "conf.d" in line))
