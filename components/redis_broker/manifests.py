"""The Kubernetes objects of one Redis broker, each written as the manifest it becomes.

Values that are Pulumi Outputs (the password, hashes) are passed in; everything else is
read off the validated BrokerSpec. Nothing here registers a resource.
"""

from __future__ import annotations

from typing import Any

import pulumi

from ..labels import CONFIG_HASH_ANNOTATION, CREDENTIALS_HASH_ANNOTATION, common_labels, selector_labels
from ..pod_security import (
    checkov_skip_annotations,
    container_security_context,
    image_pull_policy,
    pod_security_context,
)
from ..stack_model import BrokerSpec, kubernetes_name
from . import redis_acl
from .acl_sync import HEARTBEAT, STATE_DIR, SYNC_SECONDS
from .redis_config import (
    ACL_FILE,
    ACL_SYNC_FILE,
    ADMIN_PASSWORD_FILE,
    AUTH_DIR,
    CONFIG_DIR,
    CONFIG_FILE,
    DATA_DIR,
    DEAD_LETTER_KEY,
    DROP_AFTER_FILE,
    REDIS_PORT,
)

APP = "redis"
EXPORTER_APP = "redis-exporter"
COMPONENT = "broker"
# The Secret's keys. Agents: `redis-password` and `broker-url` (the default user's).
PASSWORD_KEY = "redis-password"
URL_KEY = "broker-url"
WORKER_URL_KEY = "worker-url"
EXPORTER_PASSWORD_KEY = "exporter-password"
KEDA_USERNAME_KEY = "keda-username"
KEDA_PASSWORD_KEY = "keda-password"
METRICS_PORT = 9121
DATA_VOLUME = "data"
# The StatefulSet's claim template is immutable; its size is left as first created and the
# claim itself is resized (see data_claim_size).
CLAIM_TEMPLATE_SIZE = "spec.volumeClaimTemplates[0].spec.resources.requests.storage"

Manifest = dict[str, Any]

# Readiness wants a real PONG. Liveness also accepts LOADING: a large append-only file can
# take minutes to replay, and restarting Redis then would only start the replay over.
_PING = f"redis-cli --user {redis_acl.ADMIN.name} -h 127.0.0.1 -p {REDIS_PORT} ping"
READY_CHECK = f'[ "$({_PING})" = "PONG" ]'
ALIVE_CHECK = f'case "$({_PING})" in PONG|LOADING*) exit 0;; *) exit 1;; esac'


class BrokerNames:
    """Every Kubernetes name a broker owns, derived from its logical name in one place."""

    def __init__(self, spec: BrokerSpec) -> None:
        self.base = kubernetes_name(spec.name)
        self.namespace = spec.namespace
        self.service = self.base
        self.headless_service = f"{self.base}-headless"
        self.metrics_service = f"{self.base}-metrics"
        self.secret = f"{self.base}-credentials"
        self.config_map = f"{self.base}-config"
        self.statefulset = self.base
        self.service_account = self.base
        self.disruption_budget = self.base
        self.network_policy = self.base
        self.service_monitor = self.base
        self.metrics_deployment = f"{self.base}-metrics"
        self.metrics_network_policy = f"{self.base}-metrics"
        self.data_claim = f"{DATA_VOLUME}-{self.statefulset}-0"  # what the StatefulSet's template makes
        self.host = f"{self.service}.{self.namespace}.svc.{spec.cluster_domain}"


def _metadata(names: BrokerNames, name: str) -> Manifest:
    return {
        "name": name,
        "namespace": names.namespace,
        "labels": common_labels(APP, names.base, COMPONENT),
    }


def credentials_secret(names: BrokerNames, passwords: dict[str, pulumi.Output[str]], url: pulumi.Input[str],
                       worker_url: pulumi.Input[str], users_file: pulumi.Input[str],
                       drop_after_seconds: int) -> Manifest:
    """Every client's credentials, and the users file the Redis pod loads and syncs."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(names, names.secret),
        "type": "Opaque",
        "stringData": {
            PASSWORD_KEY: passwords[redis_acl.AGENT.name],
            URL_KEY: url,
            WORKER_URL_KEY: worker_url,
            EXPORTER_PASSWORD_KEY: passwords[redis_acl.EXPORTER.name],
            KEDA_USERNAME_KEY: redis_acl.KEDA.name,
            KEDA_PASSWORD_KEY: passwords[redis_acl.KEDA.name],
            ADMIN_PASSWORD_FILE: passwords[redis_acl.ADMIN.name],
            ACL_FILE: users_file,
            DROP_AFTER_FILE: str(drop_after_seconds),
        },
    }


def config_map(names: BrokerNames, redis_conf: str, acl_sync_script: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(names, names.config_map),
        "data": {CONFIG_FILE: redis_conf, ACL_SYNC_FILE: acl_sync_script},
    }


def service_account(names: BrokerNames) -> Manifest:
    """Its own identity, with no API token: Redis never talks to the Kubernetes API."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(names, names.service_account),
        "automountServiceAccountToken": False,
    }


def headless_service(names: BrokerNames) -> Manifest:
    """Governs the StatefulSet's stable pod DNS names."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(names, names.headless_service),
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels(APP, names.base),
            "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis"}],
        },
    }


def service(names: BrokerNames) -> Manifest:
    """What clients connect to: `<broker>.<namespace>.svc.cluster.local:6379`."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(names, names.service),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(APP, names.base),
            "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}],
        },
    }


def metrics_service(names: BrokerNames) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(names, names.metrics_service),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(EXPORTER_APP, names.base),
            "ports": [{"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}],
        },
    }


def service_monitor(names: BrokerNames, labels: dict[str, str]) -> Manifest:
    """For the Prometheus Operator; rendered only when asked for, since the CRD may not exist.
    `labels` are the user's, for the Prometheus that selects monitors by label."""
    metadata = _metadata(names, names.service_monitor)
    metadata["labels"] = {**labels, **metadata["labels"]}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": {**selector_labels(APP, names.base)}},
            "namespaceSelector": {"matchNames": [names.namespace]},
            "endpoints": [{"port": "metrics", "interval": "30s", "path": "/metrics"}],
        },
    }


def disruption_budget(names: BrokerNames) -> Manifest:
    """One Redis pod: maxUnavailable 1 lets a node drain evict it (and the StatefulSet bring it
    back with its volume) instead of blocking the drain forever, as minAvailable 1 would."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(names, names.disruption_budget),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(APP, names.base)}},
    }


def network_policy(spec: BrokerSpec, names: BrokerNames, autoscaled: bool) -> Manifest:
    """Redis accepts connections on 6379 only from pods labelled `<client_label>: "true"`: its
    own task servers, and agents given the label, here or in `client_namespaces`; and, when
    one of its task servers autoscales, from KEDA's operator, which reads the queue lengths."""
    client = {"matchLabels": {spec.client_label_key: "true"}}
    peers: list[Manifest] = [{"podSelector": client}]
    peers += [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}, "podSelector": client}
        for ns in spec.client_namespaces
    ]
    if autoscaled:
        peers.append({
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": spec.keda_namespace}},
            "podSelector": {"matchLabels": {"app": "keda-operator"}},
        })
    rules: list[Manifest] = [{"from": peers, "ports": [{"port": REDIS_PORT, "protocol": "TCP"}]}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(names, names.network_policy),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(APP, names.base)},
            "policyTypes": ["Ingress"],
            "ingress": rules,
        },
    }


def statefulset(spec: BrokerSpec, names: BrokerNames, config_hash: pulumi.Input[str]) -> Manifest:
    labels = common_labels(APP, names.base, COMPONENT)
    images = [spec.image]
    data_volume: list[Manifest] = [] if spec.storage.enabled else [{"name": DATA_VOLUME, "emptyDir": {}}]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {**_metadata(names, names.statefulset), "annotations": checkov_skip_annotations(images)},
        "spec": {
            "serviceName": names.headless_service,
            "replicas": 1,
            "selector": {"matchLabels": selector_labels(APP, names.base)},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {
                    "labels": labels,
                    # A changed redis.conf or password restarts Redis; the objects alone would not.
                    "annotations": {CONFIG_HASH_ANNOTATION: config_hash},
                },
                "spec": {
                    "serviceAccountName": names.service_account,
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(),
                    "terminationGracePeriodSeconds": 60,
                    **spec.pod_spec_fields(),
                    "containers": [
                        {
                            "name": "redis",
                            "image": spec.image,
                            "imagePullPolicy": image_pull_policy(spec.image),
                            "command": ["redis-server"],
                            "args": [f"{CONFIG_DIR}/{CONFIG_FILE}"],
                            "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
                            "env": [
                                # redis-cli reads REDISCLI_AUTH, so the probes authenticate
                                # without the password on any command line.
                                {
                                    "name": "REDISCLI_AUTH",
                                    "valueFrom": {"secretKeyRef": {"name": names.secret, "key": ADMIN_PASSWORD_FILE}},
                                },
                            ],
                            "startupProbe": {
                                "exec": {"command": ["sh", "-c", ALIVE_CHECK]},
                                "periodSeconds": 5,
                                "timeoutSeconds": 3,
                                "failureThreshold": 60,
                            },
                            "readinessProbe": {
                                "exec": {"command": ["sh", "-c", READY_CHECK]},
                                "periodSeconds": 5,
                                "timeoutSeconds": 3,
                                "failureThreshold": 3,
                            },
                            "livenessProbe": {
                                "exec": {"command": ["sh", "-c", ALIVE_CHECK]},
                                "periodSeconds": 10,
                                "timeoutSeconds": 5,
                                "failureThreshold": 6,
                            },
                            "resources": spec.compute_resources.to_manifest(),
                            "securityContext": container_security_context(),
                            "volumeMounts": [
                                {"name": DATA_VOLUME, "mountPath": DATA_DIR},
                                {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                                {"name": "auth", "mountPath": AUTH_DIR, "readOnly": True},
                            ],
                        },
                        _acl_sync(spec),
                    ],
                    "volumes": [
                        {"name": "config", "configMap": {"name": names.config_map}},
                        {"name": "acl-sync", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                        {
                            "name": "auth",
                            "secret": {
                                "secretName": names.secret,
                                # No subPath: the kubelet refreshes these files in place.
                                "items": [{"key": key, "path": key} for key in (ACL_FILE, ADMIN_PASSWORD_FILE, DROP_AFTER_FILE)],
                                "defaultMode": 0o440,  # group-readable: Redis reads it through fsGroup
                            },
                        },
                        *data_volume,
                    ],
                },
            },
            **(
                {
                    "volumeClaimTemplates": [_data_claim(spec, labels)],
                    # Deleting the stack keeps the data volume: losing queued tasks must be
                    # a deliberate act, not a side effect of `pulumi destroy`.
                    "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
                }
                if spec.storage.enabled
                else {}
            ),
        },
    }


def _acl_sync(spec: BrokerSpec) -> Manifest:
    """The sidecar that applies a changed users file to the running Redis (acl_sync.py)."""
    return {
        "name": "acl-sync",
        "image": spec.image,  # sh and redis-cli, already on the node
        "imagePullPolicy": image_pull_policy(spec.image),
        "command": ["sh", f"{CONFIG_DIR}/{ACL_SYNC_FILE}"],
        "env": [
            {"name": "AUTH_DIR", "value": AUTH_DIR},
            {"name": "REDIS_PORT", "value": str(REDIS_PORT)},
            {"name": "SYNC_SECONDS", "value": str(SYNC_SECONDS)},
            {"name": "STATE_DIR", "value": STATE_DIR},
        ],
        # Ready once the loop turned; alive while it keeps turning. Cost: one stat.
        "readinessProbe": {"exec": {"command": ["test", "-e", HEARTBEAT]}, "periodSeconds": 10, "timeoutSeconds": 3},
        "livenessProbe": {
            "exec": {"command": ["sh", "-c", f'[ -n "$(find {HEARTBEAT} -mmin -2)" ]']},
            "periodSeconds": 30,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "resources": {"requests": {"cpu": "5m", "memory": "8Mi"}, "limits": {"cpu": "100m", "memory": "32Mi"}},
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "auth", "mountPath": AUTH_DIR, "readOnly": True},
            {"name": "acl-sync", "mountPath": STATE_DIR},
        ],
    }


def metrics_deployment(spec: BrokerSpec, names: BrokerNames, queues: list[str],
                       credentials_hash: pulumi.Input[str]) -> Manifest:
    """redis_exporter, reporting each task-server queue's length, and the dead-letter list's,
    as `redis_key_size`, beside Redis's own memory and client figures.

    Its own Deployment, not a sidecar of Redis: the queues it watches change whenever a task
    server's do, and a new exporter (or exporter image) must not restart the broker."""
    labels = common_labels(EXPORTER_APP, names.base, COMPONENT)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {**_metadata(names, names.metrics_deployment), "labels": labels,
                     "annotations": checkov_skip_annotations([spec.metrics.image])},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector_labels(EXPORTER_APP, names.base)},
            "template": {
                # The client label lets it through the broker's NetworkPolicy; the hash rolls
                # it onto a rotated password.
                "metadata": {"labels": {**labels, spec.client_label_key: "true"},
                             "annotations": {CREDENTIALS_HASH_ANNOTATION: credentials_hash}},
                "spec": {
                    "serviceAccountName": names.service_account,
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(),
                    **spec.pod_spec_fields(),
                    "containers": [{
                        "name": "metrics",
                        "image": spec.metrics.image,
                        "imagePullPolicy": image_pull_policy(spec.metrics.image),
                        "env": [
                            {"name": "REDIS_ADDR", "value": f"redis://{names.host}:{REDIS_PORT}"},
                            {"name": "REDIS_USER", "value": redis_acl.EXPORTER.name},
                            {"name": "REDIS_PASSWORD",
                             "valueFrom": {"secretKeyRef": {"name": names.secret, "key": EXPORTER_PASSWORD_KEY}}},
                            {"name": "REDIS_EXPORTER_CHECK_SINGLE_KEYS",
                             "value": ",".join(f"db0={k}" for k in [*queues, DEAD_LETTER_KEY])},
                        ],
                        "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
                        "readinessProbe": {"tcpSocket": {"port": "metrics"}, "periodSeconds": 10, "timeoutSeconds": 3},
                        "livenessProbe": {"tcpSocket": {"port": "metrics"}, "periodSeconds": 30, "timeoutSeconds": 3},
                        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                                      "limits": {"cpu": "200m", "memory": "64Mi"}},
                        "securityContext": container_security_context(),
                    }],
                },
            },
        },
    }


def metrics_network_policy(names: BrokerNames) -> Manifest:
    """The exporter takes scrapes on its metrics port only; metrics carry no task data, so any
    scraper in the cluster may read them."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(names, names.metrics_network_policy),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(EXPORTER_APP, names.base)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": {}}], "ports": [{"port": METRICS_PORT, "protocol": "TCP"}]}],
        },
    }


def _data_claim(spec: BrokerSpec, labels: dict[str, str]) -> Manifest:
    claim_spec: Manifest = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": spec.storage.size}},
    }
    if spec.storage.storage_class is not None:
        claim_spec["storageClassName"] = spec.storage.storage_class
    return {"metadata": {"name": DATA_VOLUME, "labels": labels}, "spec": claim_spec}


def data_claim_size(spec: BrokerSpec, names: BrokerNames) -> Manifest:
    """The size of Redis's volume claim, applied to the claim the StatefulSet made.

    Kubernetes refuses any change to a StatefulSet's volumeClaimTemplates, so a new
    `storage.size` there would make Pulumi replace the StatefulSet and still leave the volume
    at its old size. Growing the claim itself expands the volume in place (where the
    StorageClass allows expansion) with no restart of Redis; shrinking is refused by the API.
    """
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": names.data_claim,
            "namespace": names.namespace,
            # The StatefulSet's readiness already covers the claim; the provider's own wait on a
            # patched claim never ends (it times out after 5 minutes though the claim is Bound).
            # patchForce: the StatefulSet controller created the claim and owns the field; the
            # stack takes it over (server-side apply would otherwise report a conflict).
            "annotations": {"pulumi.com/skipAwait": "true", "pulumi.com/patchForce": "true"},
        },
        "spec": {"resources": {"requests": {"storage": spec.storage.size}}},
    }


def keda_trigger(names: BrokerNames, queue: str, target: int) -> Manifest:
    """KEDA's redis trigger: the queue's list length, read with KEDA's own ACL user."""
    return {"type": "redis",
            "metadata": {"address": f"{names.host}:{REDIS_PORT}", "listName": queue, "listLength": str(target),
                         "databaseIndex": "0"}}


def keda_auth(secret: pulumi.Input[str]) -> list[Manifest]:
    """KEDA reads its own broker user and password from the Secret; no password in any KEDA object."""
    return [{"parameter": "username", "name": secret, "key": KEDA_USERNAME_KEY},
            {"parameter": "password", "name": secret, "key": KEDA_PASSWORD_KEY}]
