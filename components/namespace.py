"""The namespace a stack creates for its brokers and task servers."""

from __future__ import annotations

from typing import Any

from .labels import PART_OF


def namespace(name: str) -> dict[str, Any]:
    """Pod Security Admission enforces the "restricted" profile on everything in it, so a pod
    that slips past this program's own settings is refused by the cluster."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/part-of": PART_OF,
                "app.kubernetes.io/managed-by": "pulumi",
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
                "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/audit": "restricted",
            },
        },
    }
