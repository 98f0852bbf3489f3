"""The Kubernetes objects of one Redis broker, each written as the manifest it becomes.

Values that are Pulumi Outputs (the password, hashes) are passed in; everything else is
read off the validated BrokerSpec. Nothing here registers a resource.
"""

from __future__ import annotations

from typing import Any

import pulumi

from ..labels import CONFIG_HASH_ANNOTATION, common_labels, selector_labels
from ..spec import BrokerSpec, kubernetes_name
from .redis_config import AUTH_DIR, AUTH_FILE, CONFIG_DIR, CONFIG_FILE, DATA_DIR, REDIS_PORT

APP = "redis"
COMPONENT = "broker"
PASSWORD_KEY = "redis-password"
URL_KEY = "broker-url"
AUTH_CONF_KEY = AUTH_FILE

Manifest = dict[str, Any]

# Readiness wants a real PONG. Liveness also accepts LOADING: a large append-only file can
# take minutes to replay, and restarting Redis then would only start the replay over.
READY_CHECK = f'[ "$(redis-cli -h 127.0.0.1 -p {REDIS_PORT} ping)" = "PONG" ]'
ALIVE_CHECK = (
    f'case "$(redis-cli -h 127.0.0.1 -p {REDIS_PORT} ping)" in PONG|LOADING*) exit 0;; *) exit 1;; esac'
)


class BrokerNames:
    """Every Kubernetes name a broker owns, derived from its logical name in one place."""

    def __init__(self, spec: BrokerSpec) -> None:
        self.base = kubernetes_name(spec.name)
        self.namespace = spec.namespace
        self.service = self.base
        self.headless_service = f"{self.base}-headless"
        self.secret = f"{self.base}-credentials"
        self.config_map = f"{self.base}-config"
        self.statefulset = self.base
        self.host = f"{self.service}.{self.namespace}.svc.cluster.local"


def _metadata(names: BrokerNames, name: str) -> Manifest:
    return {
        "name": name,
        "namespace": names.namespace,
        "labels": common_labels(APP, names.base, COMPONENT),
    }


def credentials_secret(names: BrokerNames, password: pulumi.Input[str], url: pulumi.Input[str],
                       auth_conf: pulumi.Input[str]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(names, names.secret),
        "type": "Opaque",
        "stringData": {PASSWORD_KEY: password, URL_KEY: url, AUTH_CONF_KEY: auth_conf},
    }


def config_map(names: BrokerNames, redis_conf: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(names, names.config_map),
        "data": {CONFIG_FILE: redis_conf},
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


def statefulset(spec: BrokerSpec, names: BrokerNames, config_hash: pulumi.Input[str]) -> Manifest:
    labels = common_labels(APP, names.base, COMPONENT)
    data_volume: list[Manifest] = [] if spec.storage.enabled else [{"name": "data", "emptyDir": {}}]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(names, names.statefulset),
        "spec": {
            "serviceName": names.headless_service,
            "replicas": 1,
            "selector": {"matchLabels": selector_labels(APP, names.base)},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {
                    "labels": labels,
                    # A changed redis.conf restarts Redis; the ConfigMap alone would not.
                    "annotations": {CONFIG_HASH_ANNOTATION: config_hash},
                },
                "spec": {
                    "terminationGracePeriodSeconds": 60,
                    "containers": [
                        {
                            "name": "redis",
                            "image": spec.image,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["redis-server"],
                            "args": [f"{CONFIG_DIR}/{CONFIG_FILE}"],
                            "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
                            "env": [
                                # redis-cli reads REDISCLI_AUTH, so the probes authenticate
                                # without the password on any command line.
                                {
                                    "name": "REDISCLI_AUTH",
                                    "valueFrom": {"secretKeyRef": {"name": names.secret, "key": PASSWORD_KEY}},
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
                            "volumeMounts": [
                                {"name": "data", "mountPath": DATA_DIR},
                                {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                                {"name": "auth", "mountPath": AUTH_DIR, "readOnly": True},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "config", "configMap": {"name": names.config_map}},
                        {
                            "name": "auth",
                            "secret": {
                                "secretName": names.secret,
                                "items": [{"key": AUTH_CONF_KEY, "path": AUTH_FILE}],
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


def _data_claim(spec: BrokerSpec, labels: dict[str, str]) -> Manifest:
    claim_spec: Manifest = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": spec.storage.size}},
    }
    if spec.storage.storage_class is not None:
        claim_spec["storageClassName"] = spec.storage.storage_class
    return {"metadata": {"name": "data", "labels": labels}, "spec": claim_spec}
