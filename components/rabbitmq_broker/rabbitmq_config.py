"""rabbitmq.conf and the enabled plugins of a RabbitMQ broker, rendered from its spec."""

from __future__ import annotations

from ..stack_model import RabbitMQBrokerSpec

AMQP_PORT = 5672
MANAGEMENT_PORT = 15672  # the HTTP API KEDA reads queue depths from
PROMETHEUS_PORT = 15692
EPMD_PORT = 4369
DIST_PORT = 25672  # Erlang distribution between the nodes (AMQP port + 20000)

NET_TICKTIME_SECONDS = 15

DATA_DIR = "/var/lib/rabbitmq"  # HOME too: the Erlang cookie lives here
CONFIG_DIR = "/etc/rabbitmq/config"
CONFIG_FILE = "rabbitmq.conf"
# RABBITMQ_CONFIG_FILES: the files RabbitMQ reads after rabbitmq.conf, each winning over it. Its
# default, /etc/rabbitmq/conf.d, is where the rabbitmq image ships 10-defaults.conf and
# 20-management_agent.disable_metrics_collector.conf; the latter leaves the HTTP API's queues
# without `messages`, which KEDA then reads as 0. This path lies inside the read-only ConfigMap
# mount, which holds no such entry (its keys are ours, none named so): rabbitmq.conf is the whole
# configuration, and nothing the image ships overrides it.
ADDITIONAL_CONFIG_FILES = f"{CONFIG_DIR}/conf.d"
PLUGINS_FILE = "enabled_plugins"
SYNC_FILE = "definitions-sync.sh"
DEFINITIONS_DIR = "/etc/rabbitmq/definitions"
DEFINITIONS_FILE = "definitions.json"
# What a node loads at boot: users, permissions and policies, no queues. A quorum queue a node
# declares from its boot import, while its peers are still joining, can lose a member for good
# (definitions_sync.py); the sidecar imports the whole file once the cluster has formed.
BOOT_DEFINITIONS_FILE = "boot-definitions.json"
# Beside the definitions, in the same Secret volume: the user names they hold (the sidecar
# deletes managed users that left them) and how long a rotated-out user stays.
USERS_FILE = "users"
DROP_AFTER_FILE = "drop-after-seconds"
# The StatefulSet's replicas, read live: nodes of higher ordinals that are down have departed
# (a shrink) and the sidecar removes them from the cluster.
CLUSTER_SIZE_FILE = "cluster-size"
COOKIE_DIR = "/etc/rabbitmq/cookie"
COOKIE_KEY = "erlang-cookie"
VHOST = "/"

# Management serves the HTTP API KEDA counts ready and unacknowledged messages through;
# Prometheus the metrics endpoint; k8s peer discovery forms the cluster from the pods' DNS names.
PLUGINS = ("rabbitmq_management", "rabbitmq_prometheus", "rabbitmq_peer_discovery_k8s")


def enabled_plugins() -> str:
    return f"[{','.join(PLUGINS)}].\n"


def node_name(pod: str, headless_service: str, namespace: str, cluster_domain: str) -> str:
    return f"rabbit@{pod}.{headless_service}.{namespace}.svc.{cluster_domain}"


def rabbitmq_conf(spec: RabbitMQBrokerSpec, cluster_name: str, consumer_timeout_seconds: int) -> str:
    """The whole configuration; a change here rolls the nodes one at a time."""
    memory_watermark = int(spec.memory_limit_bytes * spec.memory_high_watermark)
    lines = [
        "# Rendered by gru from the stack file; edit the stack file, not this.",
        f"cluster_name = {cluster_name}",
        # Peer discovery from the StatefulSet's stable DNS names (RabbitMQ 4.1+): the node with
        # ordinal 0 seeds the cluster and the others join it, so no two clusters form when
        # the pods start in parallel, and the pods need no Kubernetes API rights.
        "cluster_formation.peer_discovery_backend = k8s",
        # A node cut off from the majority stops serving instead of diverging.
        "cluster_partition_handling = pause_minority",
        # A node that stops answering (a hung VM, a long pause) is declared down after 15 to
        # 19 s instead of Erlang's 60 to 75: until then every queue, exchange and binding
        # declaration waits on it cluster-wide, and so does every client that reconnects
        # (Celery declares on each new connection). RabbitMQ's guidance allows 15 s on a
        # reliable network; below 10 s, false alarms grow.
        f"net_ticktime = {NET_TICKTIME_SECONDS}",
        f"listeners.tcp.default = {AMQP_PORT}",
        f"management.tcp.port = {MANAGEMENT_PORT}",
        # The HTTP API reports each queue's ready and unacknowledged messages, which KEDA scales
        # on. Said here for the record: it holds because the image's conf.d, which turns it off
        # and would win over this file, is not read (ADDITIONAL_CONFIG_FILES).
        "management_agent.disable_metrics_collector = false",
        f"prometheus.tcp.port = {PROMETHEUS_PORT}",
        # Users, permissions and the delivery limits (from the Secret); the sidecar adds the
        # exchanges, queues and bindings once the cluster has formed.
        f"load_definitions = {DEFINITIONS_DIR}/{BOOT_DEFINITIONS_FILE}",
        # A late-acknowledged task holds its delivery for as long as it runs: the channel must
        # not be closed (and the task redelivered, in a loop) before the longest may finish.
        f"consumer_timeout = {consumer_timeout_seconds * 1000}",
        # Publishers block, rather than the kernel killing the node, before the memory limit.
        f"vm_memory_high_watermark.absolute = {memory_watermark}",
        f"disk_free_limit.absolute = {spec.disk_free_limit_bytes}",
        # Each queue's leader on the node with the fewest, so no node carries them all.
        "queue_leader_locator = balanced",
        # A quorum queue that lost a member (a node replaced with an empty volume) grows back
        # to one member per node, so its majority again survives losing a node.
        "quorum_queue.continuous_membership_reconciliation.enabled = true",
        f"quorum_queue.continuous_membership_reconciliation.target_group_size = {spec.replicas}",
        "log.console = true",
        "log.console.level = info",
        "log.file = false",
    ]
    return "\n".join(lines) + "\n"
