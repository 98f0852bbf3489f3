"""The Kubernetes objects of one Celery task server, each written as the manifest it becomes."""

from __future__ import annotations

from typing import Any

import pulumi

from ..broker.manifests import PASSWORD_KEY, URL_KEY
from ..broker.redis_config import REDIS_PORT
from ..labels import CREDENTIALS_HASH_ANNOTATION, common_labels, selector_labels
from ..spec import TaskServerSpec, kubernetes_name
from .worker_settings import (
    BROKER_URL_ENV,
    HEALTH_DIR,
    LIVENESS_MAX_AGE_SECONDS,
    RESULT_BACKEND_ENV,
    app_settings_env,
    worker_args,
)

APP = "celery-worker"
COMPONENT = "task-server"
Manifest = dict[str, Any]

# The init container's whole job: wait, bounded, until the broker answers an authenticated
# PING, saying what it waits for and what it last heard. Workers then never start ahead of
# Redis, after a node restart as much as on first deploy.
WAIT_FOR_BROKER = """\
deadline=$(( $(date +%s) + BROKER_WAIT_SECONDS ))
echo "waiting for broker $BROKER_HOST:$BROKER_PORT to answer an authenticated PING (up to ${BROKER_WAIT_SECONDS}s)"
while :; do
  reply=$(timeout 5 redis-cli -h "$BROKER_HOST" -p "$BROKER_PORT" ping 2>&1 | head -n 1)
  if [ "$reply" = "PONG" ]; then
    echo "broker $BROKER_HOST:$BROKER_PORT is ready"
    exit 0
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "broker $BROKER_HOST:$BROKER_PORT did not answer within ${BROKER_WAIT_SECONDS}s (last reply: ${reply:-none}); giving up" >&2
    exit 1
  fi
  echo "broker not ready yet (reply: ${reply:-none}); retrying in 2s"
  sleep 2
done
"""


class TaskServerNames:
    def __init__(self, spec: TaskServerSpec) -> None:
        assert spec.namespace is not None, "the stack loader resolves a task server's namespace"
        self.base = kubernetes_name(spec.name)
        self.namespace: str = spec.namespace
        self.deployment = self.base


def _secret_env(name: str, secret: pulumi.Input[str], key: str) -> Manifest:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _probe(check: str, period: int, failures: int) -> Manifest:
    return {
        "exec": {"command": ["python", "-m", "gru_worker.probe", check,
                             f"--max-age={LIVENESS_MAX_AGE_SECONDS}"]},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def deployment(
    spec: TaskServerSpec,
    names: TaskServerNames,
    *,
    broker_host: pulumi.Input[str],
    broker_secret: pulumi.Input[str],
    broker_image: str,
    credentials_hash: pulumi.Input[str],
) -> Manifest:
    labels = common_labels(APP, names.base, COMPONENT)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": names.deployment, "namespace": names.namespace, "labels": labels},
        "spec": {
            "replicas": spec.replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector_labels(APP, names.base)},
            # New workers come up before old ones start their warm shutdown.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": labels,
                    # Changes exactly when the broker password does, rolling the workers onto it.
                    "annotations": {CREDENTIALS_HASH_ANNOTATION: credentials_hash},
                },
                "spec": {
                    # SIGTERM starts Celery's warm shutdown; the longest task gets to finish.
                    "terminationGracePeriodSeconds": spec.termination_grace_seconds,
                    "initContainers": [
                        {
                            "name": "wait-for-broker",
                            # The broker's own image: it has redis-cli, whatever the worker image is.
                            "image": broker_image,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["sh", "-c", WAIT_FOR_BROKER],
                            "env": [
                                {"name": "BROKER_HOST", "value": broker_host},
                                {"name": "BROKER_PORT", "value": str(REDIS_PORT)},
                                {"name": "BROKER_WAIT_SECONDS", "value": str(spec.broker_wait_seconds)},
                                _secret_env("REDISCLI_AUTH", broker_secret, PASSWORD_KEY),
                            ],
                            "resources": {
                                "requests": {"cpu": "10m", "memory": "16Mi"},
                                "limits": {"cpu": "100m", "memory": "32Mi"},
                            },
                        }
                    ],
                    "containers": [
                        {
                            "name": "worker",
                            "image": spec.image,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["celery"],
                            "args": worker_args(spec),
                            "env": [
                                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                _secret_env(BROKER_URL_ENV, broker_secret, URL_KEY),
                                _secret_env(RESULT_BACKEND_ENV, broker_secret, URL_KEY),
                                *({"name": k, "value": v} for k, v in app_settings_env(spec).items()),
                            ],
                            # Liveness: the worker's own timer keeps a file fresh. Costs one
                            # stat, unlike `celery inspect ping` (seconds of CPU per call).
                            "startupProbe": _probe("alive", period=5, failures=24),
                            "livenessProbe": _probe("alive", period=30, failures=3),
                            # Readiness: the consumer holds a live broker connection.
                            "readinessProbe": _probe("ready", period=10, failures=3),
                            "resources": spec.compute_resources.to_manifest(),
                            "volumeMounts": [{"name": "health", "mountPath": HEALTH_DIR}],
                        }
                    ],
                    "volumes": [{"name": "health", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}],
                },
            },
        },
    }
