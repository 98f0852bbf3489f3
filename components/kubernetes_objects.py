"""Registering a manifest dict as its typed pulumi-kubernetes resource.

The manifests modules write objects exactly as Kubernetes spells them; this is the one place
that knows which SDK class takes which kind, and the few top-level fields the SDK names in
snake_case.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

Manifest = dict[str, Any]

_CLASSES: dict[tuple[str, str], Callable[..., pulumi.CustomResource]] = {
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "Secret"): k8s.core.v1.Secret,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("v1", "Service"): k8s.core.v1.Service,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("apps/v1", "StatefulSet"): k8s.apps.v1.StatefulSet,
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
}
# Server-side-apply patches of objects that something else creates (a StatefulSet's claims).
_PATCH_CLASSES: dict[tuple[str, str], Callable[..., pulumi.CustomResource]] = {
    ("v1", "PersistentVolumeClaim"): k8s.core.v1.PersistentVolumeClaimPatch,
}
_SNAKE = {"stringData": "string_data", "automountServiceAccountToken": "automount_service_account_token"}


def create(manifest: Manifest, opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    """Register `manifest`; the Pulumi resource is named like the Kubernetes object."""
    api_version, kind = manifest["apiVersion"], manifest["kind"]
    name = manifest["metadata"]["name"]
    fields = {_SNAKE.get(k, k): v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
    cls = _CLASSES.get((api_version, kind))
    if cls is None:
        # Custom resources (KEDA, Prometheus Operator) have no typed class.
        return k8s.apiextensions.CustomResource(name, api_version=api_version, kind=kind, opts=opts, **fields)
    return cls(name, opts=opts, **fields)


def patch(manifest: Manifest, opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    """Server-side apply `manifest`'s fields onto an existing object, without owning the object."""
    cls = _PATCH_CLASSES[(manifest["apiVersion"], manifest["kind"])]
    fields = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
    return cls(manifest["metadata"]["name"], opts=opts, **fields)
