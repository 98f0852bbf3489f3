"""Helpers over rendered manifests: pods, containers and objects by kind."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Manifest = dict[str, Any]


def pod_specs(objects: list[Manifest]) -> Iterator[tuple[Manifest, Manifest]]:
    """(workload, pod spec) for every object that runs pods."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            yield obj, obj["spec"]["template"]["spec"]


def containers(objects: list[Manifest]) -> Iterator[tuple[Manifest, Manifest]]:
    """(workload, container) for every container, init containers included."""
    for workload, pod in pod_specs(objects):
        for container in pod.get("initContainers", []) + pod["containers"]:
            yield workload, container


def of_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[Manifest], kind: str, name: str) -> Manifest:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def is_exporter(workload: Manifest) -> bool:
    """The broker's metrics exporter, a Deployment beside the task servers' ones."""
    return bool(workload["metadata"]["labels"].get("app.kubernetes.io/name") == "redis-exporter")
