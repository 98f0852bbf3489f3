"""The Kubernetes objects of one RabbitMQ broker, each written as the manifest it becomes.

Values that are Pulumi Outputs (passwords, the definitions file, hashes) are passed in;
everything else is read off the validated RabbitMQBrokerSpec. Nothing here registers a resource.
"""

from __future__ import annotations

from typing import Any

import pulumi

from ..labels import CONFIG_HASH_ANNOTATION, common_labels, selector_labels
from ..pod_security import checkov_skip_annotations, container_security_context, image_pull_policy, pod_security_context
from ..stack_model import RabbitMQBrokerSpec, kubernetes_name
from .definitions_sync import FORMATION_WAIT_SECONDS, HEARTBEAT, IMPORTED, STATE_DIR, SYNC_SECONDS
from .rabbitmq_config import (
    ADDITIONAL_CONFIG_FILES,
    AMQP_PORT,
    BOOT_DEFINITIONS_FILE,
    CLUSTER_SIZE_FILE,
    CONFIG_DIR,
    CONFIG_FILE,
    COOKIE_DIR,
    COOKIE_KEY,
    DATA_DIR,
    DEFINITIONS_DIR,
    DEFINITIONS_FILE,
    DIST_PORT,
    DROP_AFTER_FILE,
    EPMD_PORT,
    MANAGEMENT_PORT,
    PLUGINS_FILE,
    PROMETHEUS_PORT,
    SYNC_FILE,
    USERS_FILE,
    node_name,
)

APP = "rabbitmq"
COMPONENT = "broker"
# The Secret's keys, beside COOKIE_KEY and the definitions files. Agents: `rabbitmq-password`
# and `broker-url`; workers: `worker-url`; KEDA: `keda-url` (the HTTP API, with its user).
PASSWORD_KEY = "rabbitmq-password"
URL_KEY = "broker-url"
WORKER_URL_KEY = "worker-url"
KEDA_URL_KEY = "keda-url"
DATA_VOLUME = "data"
CLAIM_TEMPLATE_SIZE = "spec.volumeClaimTemplates[0].spec.resources.requests.storage"
# Long enough for the preStop wait below to see the node's quorum queues safe elsewhere.
TERMINATION_GRACE_SECONDS = 600

Manifest = dict[str, Any]


class RabbitMQNames:
    """Every Kubernetes name a RabbitMQ broker owns, derived from its logical name in one place."""

    def __init__(self, spec: RabbitMQBrokerSpec) -> None:
        self.base = kubernetes_name(spec.name)
        self.namespace = spec.namespace
        self.service = self.base
        self.headless_service = f"{self.base}-nodes"
        self.secret = f"{self.base}-credentials"
        self.config_map = f"{self.base}-config"
        self.statefulset = self.base
        self.service_account = self.base
        self.disruption_budget = self.base
        self.network_policy = self.base
        self.service_monitor = self.base
        self.host = f"{self.service}.{self.namespace}.svc.{spec.cluster_domain}"
        self.cluster_domain = spec.cluster_domain

    def data_claims(self, replicas: int) -> list[str]:
        """The claims the StatefulSet's template makes, one per node."""
        return [f"{DATA_VOLUME}-{self.statefulset}-{i}" for i in range(replicas)]


def _metadata(names: RabbitMQNames, name: str) -> Manifest:
    return {"name": name, "namespace": names.namespace, "labels": common_labels(APP, names.base, COMPONENT)}


def credentials_secret(spec: RabbitMQBrokerSpec, names: RabbitMQNames, agent_password: pulumi.Input[str], url: pulumi.Input[str],
                       worker_url: pulumi.Input[str], keda_url: pulumi.Input[str], cookie: pulumi.Input[str],
                       definitions: pulumi.Input[str], boot_definitions: pulumi.Input[str], users: pulumi.Input[str],
                       drop_after_seconds: int) -> Manifest:
    """Every client's credentials, the Erlang cookie the nodes share, the definitions files (the
    whole one and the one a node boots with: definitions.py), the user names they hold, how
    long a rotated-out user stays, and the cluster's size, read live by the sync sidecar
    (definitions_sync.py)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(names, names.secret),
        "type": "Opaque",
        "stringData": {
            PASSWORD_KEY: agent_password,
            URL_KEY: url,
            WORKER_URL_KEY: worker_url,
            KEDA_URL_KEY: keda_url,
            COOKIE_KEY: cookie,
            DEFINITIONS_FILE: definitions,
            BOOT_DEFINITIONS_FILE: boot_definitions,
            USERS_FILE: users,
            DROP_AFTER_FILE: str(drop_after_seconds),
            CLUSTER_SIZE_FILE: str(spec.replicas),
        },
    }


def config_map(names: RabbitMQNames, conf: str, plugins: str, sync_script: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(names, names.config_map),
        "data": {CONFIG_FILE: conf, PLUGINS_FILE: plugins, SYNC_FILE: sync_script},
    }


def service_account(names: RabbitMQNames) -> Manifest:
    """Its own identity, with no API token: peer discovery uses DNS names, not the API."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(names, names.service_account),
        "automountServiceAccountToken": False,
    }


def headless_service(names: RabbitMQNames) -> Manifest:
    """The nodes' stable DNS names (`<pod>.<broker>-nodes...`), published before they are ready:
    a node must resolve its peers to join them, and it is ready only once it has."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(names, names.headless_service),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector_labels(APP, names.base),
            "ports": [
                {"name": "epmd", "port": EPMD_PORT, "targetPort": "epmd", "protocol": "TCP"},
                {"name": "cluster", "port": DIST_PORT, "targetPort": "cluster", "protocol": "TCP"},
                {"name": "amqp", "port": AMQP_PORT, "targetPort": "amqp", "protocol": "TCP"},
            ],
        },
    }


def service(spec: RabbitMQBrokerSpec, names: RabbitMQNames) -> Manifest:
    """What clients connect to: `<broker>.<namespace>.svc.cluster.local:5672` (any ready node)."""
    ports: list[Manifest] = [
        {"name": "amqp", "port": AMQP_PORT, "targetPort": "amqp", "protocol": "TCP"},
        {"name": "management", "port": MANAGEMENT_PORT, "targetPort": "management", "protocol": "TCP"},
    ]
    if spec.metrics.enabled:
        ports.append({"name": "metrics", "port": PROMETHEUS_PORT, "targetPort": "metrics", "protocol": "TCP"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(names, names.service),
        "spec": {"type": "ClusterIP", "selector": selector_labels(APP, names.base), "ports": ports},
    }


def service_monitor(names: RabbitMQNames, labels: dict[str, str]) -> Manifest:
    """For the Prometheus Operator; rendered only when asked for, since the CRD may not exist.
    `labels` are the user's, for the Prometheus that selects monitors by label."""
    metadata = _metadata(names, names.service_monitor)
    metadata["labels"] = {**labels, **metadata["labels"]}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": selector_labels(APP, names.base)},
            "namespaceSelector": {"matchNames": [names.namespace]},
            "endpoints": [{"port": "metrics", "interval": "30s", "path": "/metrics"}],
        },
    }


def disruption_budget(spec: RabbitMQBrokerSpec, names: RabbitMQNames) -> Manifest:
    """A drain never takes the cluster below a majority: quorum queues stop without one.
    A single node may always be evicted (it has no majority to keep; the StatefulSet brings it
    back with its volume), so a drain is never blocked forever."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(names, names.disruption_budget),
        "spec": {"maxUnavailable": max(1, (spec.replicas - 1) // 2),
                 "selector": {"matchLabels": selector_labels(APP, names.base)}},
    }


def network_policy(spec: RabbitMQBrokerSpec, names: RabbitMQNames, autoscaled: bool) -> Manifest:
    """AMQP on 5672 from pods labelled `<client_label>: "true"` (here or in `client_namespaces`);
    epmd and clustering (4369, 25672) only between the broker's own pods; the HTTP API on 15672
    only for KEDA's operator when a task server autoscales; metrics on 15692 only when on."""
    client = {"matchLabels": {spec.client_label_key: "true"}}
    clients: list[Manifest] = [{"podSelector": client}]
    clients += [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}, "podSelector": client}
                for ns in spec.client_namespaces]
    peers = [{"podSelector": {"matchLabels": selector_labels(APP, names.base)}}]
    rules: list[Manifest] = [
        {"from": clients, "ports": [{"port": AMQP_PORT, "protocol": "TCP"}]},
        {"from": peers, "ports": [{"port": EPMD_PORT, "protocol": "TCP"}, {"port": DIST_PORT, "protocol": "TCP"},
                                  {"port": AMQP_PORT, "protocol": "TCP"}]},
    ]
    if autoscaled:
        rules.append({
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": spec.keda_namespace}},
                      "podSelector": {"matchLabels": {"app": "keda-operator"}}}],
            "ports": [{"port": MANAGEMENT_PORT, "protocol": "TCP"}],
        })
    if spec.metrics.enabled:
        # Metrics carry no task data: any scraper in the cluster may read them.
        rules.append({"from": [{"namespaceSelector": {}}], "ports": [{"port": PROMETHEUS_PORT, "protocol": "TCP"}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(names, names.network_policy),
        "spec": {"podSelector": {"matchLabels": selector_labels(APP, names.base)},
                 "policyTypes": ["Ingress"], "ingress": rules},
    }


def _node_env(names: RabbitMQNames) -> list[Manifest]:
    """What makes a container speak as (or to) this pod's node: its long name and HOME,
    where the Erlang cookie is."""
    return [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "RABBITMQ_USE_LONGNAME", "value": "true"},
        {"name": "RABBITMQ_NODENAME",
         "value": node_name("$(POD_NAME)", names.headless_service, names.namespace, names.cluster_domain)},
        {"name": "HOME", "value": DATA_DIR},
    ]


def statefulset(spec: RabbitMQBrokerSpec, names: RabbitMQNames, config_hash: str) -> Manifest:
    labels = common_labels(APP, names.base, COMPONENT)
    selector = selector_labels(APP, names.base)
    data_volume: list[Manifest] = [] if spec.storage.enabled else [{"name": DATA_VOLUME, "emptyDir": {}}]
    # Before a node stops (rollout, drain), wait until each of its quorum queues has enough
    # replicas on other nodes to keep a majority without it, so a rolling restart never stops
    # a queue. A single node has no other replicas to wait for.
    pre_stop = ({"preStop": {"exec": {"command": [
        "rabbitmq-upgrade", "await_online_quorum_plus_one", "-t", str(TERMINATION_GRACE_SECONDS - 60)]}}}
        if spec.replicas > 1 else {})
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {**_metadata(names, names.statefulset), "annotations": checkov_skip_annotations([spec.image])},
        "spec": {
            "serviceName": names.headless_service,
            "replicas": spec.replicas,
            # All nodes start together, so the cluster forms; pod -0 seeds it.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {
                    "labels": labels,
                    # A changed rabbitmq.conf or plugin list restarts the nodes, one at a time.
                    "annotations": {CONFIG_HASH_ANNOTATION: config_hash},
                },
                "spec": {
                    "serviceAccountName": names.service_account,
                    "automountServiceAccountToken": False,
                    # The image lets any user run RabbitMQ; HOME and the data are on the volume.
                    "securityContext": pod_security_context(),
                    "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                    # One node per host and zone where possible: a lost host takes one node.
                    "topologySpreadConstraints": [
                        {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
                         "labelSelector": {"matchLabels": selector}}
                        for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
                    ],
                    **spec.pod_spec_fields(),
                    "initContainers": [{
                        # Erlang refuses a cookie file others can read; a Secret volume is group-readable.
                        "name": "erlang-cookie",
                        "image": spec.image,
                        "imagePullPolicy": image_pull_policy(spec.image),
                        "command": ["sh", "-c", f"install -m 600 {COOKIE_DIR}/{COOKIE_KEY} {DATA_DIR}/.erlang.cookie"],
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                                      "limits": {"cpu": "100m", "memory": "32Mi"}},
                        "securityContext": container_security_context(),
                        "volumeMounts": [{"name": DATA_VOLUME, "mountPath": DATA_DIR},
                                         {"name": "cookie", "mountPath": COOKIE_DIR, "readOnly": True}],
                    }],
                    "containers": [
                        {
                            "name": "rabbitmq",
                            "image": spec.image,
                            "imagePullPolicy": image_pull_policy(spec.image),
                            "command": ["rabbitmq-server"],
                            "env": [
                                *_node_env(names),
                                {"name": "RABBITMQ_CONFIG_FILE", "value": f"{CONFIG_DIR}/{CONFIG_FILE}"},
                                # Not the image's /etc/rabbitmq/conf.d, which would override
                                # rabbitmq.conf (see ADDITIONAL_CONFIG_FILES).
                                {"name": "RABBITMQ_CONFIG_FILES", "value": ADDITIONAL_CONFIG_FILES},
                                {"name": "RABBITMQ_ENABLED_PLUGINS_FILE", "value": f"{CONFIG_DIR}/{PLUGINS_FILE}"},
                            ],
                            "ports": [
                                {"name": "amqp", "containerPort": AMQP_PORT, "protocol": "TCP"},
                                {"name": "management", "containerPort": MANAGEMENT_PORT, "protocol": "TCP"},
                                {"name": "metrics", "containerPort": PROMETHEUS_PORT, "protocol": "TCP"},
                                {"name": "epmd", "containerPort": EPMD_PORT, "protocol": "TCP"},
                                {"name": "cluster", "containerPort": DIST_PORT, "protocol": "TCP"},
                            ],
                            # RabbitMQ opens its AMQP port only once booted and clustered: a TCP
                            # check says ready at the cost of a connect, where rabbitmq-diagnostics
                            # starts an Erlang VM per probe. Liveness asks only that the Erlang VM
                            # still takes connections on its clustering port, open from its first
                            # second: restarting a node that is slow to recover its queues would
                            # only start the recovery over.
                            "startupProbe": {"tcpSocket": {"port": "amqp"}, "periodSeconds": 10,
                                             "timeoutSeconds": 5, "failureThreshold": 60},
                            "readinessProbe": {"tcpSocket": {"port": "amqp"}, "periodSeconds": 10,
                                               "timeoutSeconds": 5, "failureThreshold": 3},
                            "livenessProbe": {"tcpSocket": {"port": "cluster"}, "periodSeconds": 30,
                                              "timeoutSeconds": 10, "failureThreshold": 6},
                            "lifecycle": pre_stop,
                            "resources": spec.compute_resources.to_manifest(),
                            "securityContext": container_security_context(),
                            "volumeMounts": [
                                {"name": DATA_VOLUME, "mountPath": DATA_DIR},
                                {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                                {"name": "definitions", "mountPath": DEFINITIONS_DIR, "readOnly": True},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        },
                        _definitions_sync(spec, names),
                    ],
                    "volumes": [
                        {"name": "config", "configMap": {"name": names.config_map}},
                        {"name": "definitions", "secret": {
                            "secretName": names.secret,
                            # No subPath: the kubelet refreshes the file in place for the sidecar.
                            "items": [{"key": key, "path": key}
                                      for key in (DEFINITIONS_FILE, BOOT_DEFINITIONS_FILE, USERS_FILE, DROP_AFTER_FILE,
                                                  CLUSTER_SIZE_FILE)],
                            "defaultMode": 0o440}},
                        {"name": "cookie", "secret": {"secretName": names.secret,
                                                      "items": [{"key": COOKIE_KEY, "path": COOKIE_KEY}],
                                                      "defaultMode": 0o440}},
                        {"name": "definitions-sync", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                        *data_volume,
                    ],
                },
            },
            **(
                {
                    "volumeClaimTemplates": [_data_claim(spec, labels)],
                    # Deleting the stack keeps the volumes: losing queued tasks must be deliberate.
                    "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
                }
                if spec.storage.enabled
                else {}
            ),
        },
    }


def _definitions_sync(spec: RabbitMQBrokerSpec, names: RabbitMQNames) -> Manifest:
    """The sidecar that re-imports a changed definitions file (definitions_sync.py)."""
    return {
        "name": "definitions-sync",
        "image": spec.image,  # sh and rabbitmqctl, already on the node
        "imagePullPolicy": image_pull_policy(spec.image),
        "command": ["sh", f"{CONFIG_DIR}/{SYNC_FILE}"],
        "env": [
            *_node_env(names),
            {"name": "DEFINITIONS_FILE", "value": f"{DEFINITIONS_DIR}/{DEFINITIONS_FILE}"},
            {"name": "USERS_FILE", "value": f"{DEFINITIONS_DIR}/{USERS_FILE}"},
            {"name": "DROP_AFTER_FILE", "value": f"{DEFINITIONS_DIR}/{DROP_AFTER_FILE}"},
            {"name": "CLUSTER_SIZE_FILE", "value": f"{DEFINITIONS_DIR}/{CLUSTER_SIZE_FILE}"},
            {"name": "SYNC_SECONDS", "value": str(SYNC_SECONDS)},
            {"name": "FORMATION_WAIT_SECONDS", "value": str(FORMATION_WAIT_SECONDS)},
            {"name": "STATE_DIR", "value": STATE_DIR},
        ],
        # Ready once it has imported the whole definitions into the formed cluster: the pod takes
        # agents (the Service) only when every exchange and queue they may use exists.
        "readinessProbe": {"exec": {"command": ["test", "-e", IMPORTED]}, "periodSeconds": 5, "timeoutSeconds": 3},
        "livenessProbe": {
            "exec": {"command": ["sh", "-c", f'[ -n "$(find {HEARTBEAT} -mmin -3)" ]']},
            "periodSeconds": 30, "timeoutSeconds": 5, "failureThreshold": 3,
        },
        # rabbitmqctl starts an Erlang VM for each import.
        "resources": {"requests": {"cpu": "5m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": DATA_VOLUME, "mountPath": DATA_DIR, "readOnly": True},
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "definitions", "mountPath": DEFINITIONS_DIR, "readOnly": True},
            {"name": "definitions-sync", "mountPath": STATE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def _data_claim(spec: RabbitMQBrokerSpec, labels: dict[str, str]) -> Manifest:
    claim_spec: Manifest = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": spec.storage.size}}}
    if spec.storage.storage_class is not None:
        claim_spec["storageClassName"] = spec.storage.storage_class
    return {"metadata": {"name": DATA_VOLUME, "labels": labels}, "spec": claim_spec}


def data_claim_size(spec: RabbitMQBrokerSpec, names: RabbitMQNames, claim: str) -> Manifest:
    """The size of one node's volume claim, applied to the claim the StatefulSet made (the
    template is immutable; growing the claim expands the volume in place, with no restart)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "namespace": names.namespace,
                     "annotations": {"pulumi.com/skipAwait": "true", "pulumi.com/patchForce": "true"}},
        "spec": {"resources": {"requests": {"storage": spec.storage.size}}},
    }


def keda_trigger(queue: str, target: int) -> Manifest:
    """KEDA's rabbitmq trigger through the HTTP API, which counts ready and unacknowledged
    messages (a running late-acked task is unacknowledged): scale-down never counts a busy
    worker as idle. The URL with KEDA's user comes from the TriggerAuthentication."""
    return {"type": "rabbitmq",
            "metadata": {"protocol": "http", "mode": "QueueLength", "value": str(target), "queueName": queue,
                         "vhostName": "/"}}


def keda_auth(secret: pulumi.Input[str]) -> list[Manifest]:
    return [{"parameter": "host", "name": secret, "key": KEDA_URL_KEY}]
