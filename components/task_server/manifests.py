"""The Kubernetes objects of one Celery task server, each written as the manifest it becomes."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pulumi

from ..labels import CREDENTIALS_HASH_ANNOTATION, common_labels, selector_labels
from ..pod_security import (
    checkov_skip_annotations,
    container_security_context,
    image_pull_policy,
    pod_security_context,
)
from ..redis_broker.manifests import WORKER_URL_KEY
from ..stack_model import TaskServerSpec, kubernetes_name
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

# The init container's whole job (gru_worker.wait_for_broker): wait, bounded, until the broker
# answers an authenticated PING. It runs in the worker image, so only the workers' own image
# decides when their pods change.
WAIT_FOR_BROKER = ["python", "-m", "gru_worker.wait_for_broker"]


class TaskServerNames:
    def __init__(self, spec: TaskServerSpec) -> None:
        assert spec.namespace is not None, "the stack loader resolves a task server's namespace"
        self.base = kubernetes_name(spec.name)
        self.namespace: str = spec.namespace
        self.deployment = self.base
        self.service_account = self.base
        self.disruption_budget = self.base
        self.network_policy = self.base
        self.scaled_object = self.base
        self.trigger_authentication = f"{self.base}-broker"


def _metadata(names: TaskServerNames, name: str) -> Manifest:
    return {"name": name, "namespace": names.namespace, "labels": common_labels(APP, names.base, COMPONENT)}


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


def service_account(names: TaskServerNames) -> Manifest:
    """Its own identity, with no API token: workers never talk to the Kubernetes API."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(names, names.service_account),
        "automountServiceAccountToken": False,
    }


def disruption_budget(names: TaskServerNames) -> Manifest:
    """A node drain evicts at most a quarter of the workers at once (at least one, so a drain
    never blocks); each evicted worker gets its full grace period to finish its task.

    Unready workers may always be evicted: while Redis moves (a drain of its node), every
    worker is unready, and the default policy would then let no worker be evicted at all."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(names, names.disruption_budget),
        "spec": {
            "maxUnavailable": "25%",
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
            "selector": {"matchLabels": selector_labels(APP, names.base)},
        },
    }


def network_policy(names: TaskServerNames) -> Manifest:
    """Nothing connects to a worker; it only connects out (broker, task dependencies)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(names, names.network_policy),
        "spec": {"podSelector": {"matchLabels": selector_labels(APP, names.base)}, "policyTypes": ["Ingress"], "ingress": []},
    }


def deployment(
    spec: TaskServerSpec,
    names: TaskServerNames,
    *,
    broker_host: pulumi.Input[str],
    broker_secret: pulumi.Input[str],
    broker_client_label: str,
    credentials_hash: pulumi.Input[str],
    visibility_timeout_seconds: int | None = None,
) -> Manifest:
    labels = common_labels(APP, names.base, COMPONENT)
    selector = selector_labels(APP, names.base)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {**_metadata(names, names.deployment),
                     "annotations": checkov_skip_annotations([spec.image])},
        "spec": {
            "replicas": spec.replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector},
            # New workers come up before old ones start their warm shutdown.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    # The client label is the NetworkPolicy's key to the broker.
                    "labels": {**labels, broker_client_label: "true"},
                    # Changes exactly when the broker password does, rolling the workers onto it.
                    "annotations": {CREDENTIALS_HASH_ANNOTATION: credentials_hash},
                },
                "spec": {
                    "serviceAccountName": names.service_account,
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(),
                    # SIGTERM starts Celery's warm shutdown; the longest task gets to finish.
                    "terminationGracePeriodSeconds": spec.termination_grace_seconds,
                    # Spread over nodes and zones, so losing one takes few workers with it.
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": key,
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": selector},
                            "matchLabelKeys": ["pod-template-hash"],
                        }
                        for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
                    ],
                    **spec.pod_spec_fields(),
                    "initContainers": [
                        {
                            "name": "wait-for-broker",
                            "image": spec.image,
                            "imagePullPolicy": image_pull_policy(spec.image),
                            "command": WAIT_FOR_BROKER,
                            "env": [
                                {"name": "BROKER_WAIT_SECONDS", "value": str(spec.broker_wait_seconds)},
                                _secret_env(BROKER_URL_ENV, broker_secret, WORKER_URL_KEY),
                            ],
                            "resources": {
                                # A Python start-up and redis-py: about 25 MiB resident.
                                "requests": {"cpu": "10m", "memory": "48Mi"},
                                "limits": {"cpu": "200m", "memory": "96Mi"},
                            },
                            "securityContext": container_security_context(),
                        }
                    ],
                    "containers": [
                        {
                            "name": "worker",
                            "image": spec.image,
                            "imagePullPolicy": image_pull_policy(spec.image),
                            "command": ["celery"],
                            "args": worker_args(spec),
                            "env": [
                                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                _secret_env(BROKER_URL_ENV, broker_secret, WORKER_URL_KEY),
                                *([_secret_env(RESULT_BACKEND_ENV, broker_secret, WORKER_URL_KEY)] if spec.results.enabled else []),
                                *({"name": k, "value": v} for k, v in app_settings_env(spec, visibility_timeout_seconds).items()),
                            ],
                            # Liveness: the worker's own timer keeps a file fresh. Costs one
                            # stat, unlike `celery inspect ping` (seconds of CPU per call).
                            "startupProbe": _probe("alive", period=5, failures=24),
                            "livenessProbe": _probe("alive", period=30, failures=3),
                            # Readiness: the consumer holds a live broker connection.
                            "readinessProbe": _probe("ready", period=10, failures=3),
                            "resources": spec.compute_resources.to_manifest(),
                            "securityContext": container_security_context(),
                            "volumeMounts": [
                                {"name": "health", "mountPath": HEALTH_DIR},
                                # The root filesystem is read-only; tasks get a scratch /tmp.
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "health", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                    ],
                },
            },
        },
    }


def trigger_authentication(names: TaskServerNames, secret_refs: list[Manifest]) -> Manifest:
    """KEDA reads its broker credentials from the broker's Secret; no password in any KEDA object."""
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": _metadata(names, names.trigger_authentication),
        "spec": {"secretTargetRef": secret_refs},
    }


def scaled_object(spec: TaskServerSpec, names: TaskServerNames, trigger: Callable[[str, int], Manifest]) -> Manifest:
    """Replicas follow queue length: one replica per `queue_length_per_replica` waiting tasks
    (default: its concurrency, since each process reserves one task). Scale-down waits out a
    cooldown longer than the grace period and then removes one pod per period, so busy
    workers are not killed mid-task. With several queues there is one trigger per queue and
    the HPA follows the busiest one (the largest of the per-queue replica counts)."""
    scaling = spec.autoscaling
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _metadata(names, names.scaled_object),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": names.deployment},
            "minReplicaCount": spec.replicas,
            "maxReplicaCount": scaling.max_replicas,
            "pollingInterval": scaling.polling_interval_seconds,
            "cooldownPeriod": spec.cooldown_seconds,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleDown": {
                            # The HPA caps its window at an hour; KEDA's cooldown covers the last pod.
                            "stabilizationWindowSeconds": min(spec.cooldown_seconds, 3600),
                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": scaling.scale_down_period_seconds}],
                        }
                    }
                }
            },
            # The broker's own trigger for each queue (its type knows how to count one).
            "triggers": [
                {
                    **trigger(queue, spec.queue_length_target),
                    # Indexed: queue names that differ only in '.', '_' or ':' stay distinct.
                    "name": f"queue-{index}-" + re.sub(r"[^a-z0-9]+", "-", queue.lower()).strip("-")[:40],
                    "authenticationRef": {"name": names.trigger_authentication},
                }
                for index, queue in enumerate(spec.queues)
            ],
        },
    }
