"""Labels every object carries, so `kubectl get -l app.kubernetes.io/part-of=gru` finds them all."""

from __future__ import annotations

PART_OF = "gru"
# Pod annotation whose change rolls the worker pods when the broker's password changes.
CREDENTIALS_HASH_ANNOTATION = "gru.dev/broker-credentials-hash"
CONFIG_HASH_ANNOTATION = "gru.dev/config-hash"


def selector_labels(app: str, instance: str) -> dict[str, str]:
    """The labels a workload selects its pods by; they never change after creation."""
    return {"app.kubernetes.io/name": app, "app.kubernetes.io/instance": instance}


def common_labels(app: str, instance: str, component: str) -> dict[str, str]:
    return {
        **selector_labels(app, instance),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": "pulumi",
    }
