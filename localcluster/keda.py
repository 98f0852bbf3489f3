"""KEDA on the local cluster, installed from its own release manifests, and the CRDs of the
Prometheus Operator's monitoring kinds.

A platform cluster has these before any stack names a ScaledObject or a ServiceMonitor; the
local cluster has their CRDs always (from tools/addons/build), and KEDA itself runs where
pods really run (on the real node).

tools/addons/build renders KEDA's "core" release file from the module's kustomizations and
builds its two binaries; tools/images/build makes them images. Here the release file is
applied as a cluster operator would, with two changes only: each container runs the image
built here (matched by container name: upstream's names point at a registry), and never
pulls it (no registry answers). The operator then makes its own certificates, as it does in
any cluster, and the API server reaches its metrics server through the APIService.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .api import ApiError, Kube, wait_for

NAMESPACE = "keda"
# Container name in KEDA's manifests -> image role in tools/images/build's images.json.
IMAGES = {"keda-operator": "keda", "keda-metrics-apiserver": "keda_adapter"}
METRICS_API = "v1beta1.external.metrics.k8s.io"
MANIFEST = Path("manifests") / "keda-core.yaml"
MONITORING_CRDS = Path("manifests") / "monitoring-crds.yaml"


def check_parts(addons: Path) -> None:
    missing = [str(addons / m) for m in (MANIFEST, MONITORING_CRDS) if not (addons / m).is_file()]
    if missing:
        raise SystemExit(f"cluster: the add-ons need {', '.join(missing)} (tools/addons/build)")


def install_crds(kube: Kube, addons: Path) -> None:
    """KEDA's CRDs and the monitoring ones, applied and established."""
    crds = [o for o in _load(addons / MANIFEST) + _load(addons / MONITORING_CRDS)
            if o["kind"] == "CustomResourceDefinition"]
    for obj in crds:
        kube.apply(obj)
    wait_for("the add-ons' CRDs to be established",
             lambda: all(_established(kube, o["metadata"]["name"]) for o in crds), 60)


def _load(path: Path) -> list[dict[str, Any]]:
    return [o for o in yaml.safe_load_all(path.read_text()) if o]


def release_objects(addons: Path, images: dict[str, str]) -> list[dict[str, Any]]:
    """KEDA's release objects, pointed at the images built here."""
    objects = _load(addons / MANIFEST)
    seen: set[str] = set()
    for obj in objects:
        if obj["kind"] != "Deployment":
            continue
        for container in obj["spec"]["template"]["spec"]["containers"]:
            role = IMAGES.get(container["name"])
            if role is None:
                raise SystemExit(f"cluster: KEDA's release has a container {container['name']!r} "
                                 f"this cluster has no image for (known: {', '.join(IMAGES)})")
            container["image"] = images[role]
            container["imagePullPolicy"] = "Never"
            seen.add(container["name"])
    if seen != set(IMAGES):
        raise SystemExit(f"cluster: KEDA's release lacks the containers {sorted(set(IMAGES) - seen)}")
    return objects


def install(kube: Kube, addons: Path, images: dict[str, str], timeout: float = 240) -> None:
    """Apply KEDA's release (after `install_crds`) and wait until it serves external metrics."""
    objects = release_objects(addons, images)
    for obj in objects:
        if obj["kind"] == "Namespace":
            kube.apply(obj)
    for obj in objects:
        if obj["kind"] not in ("CustomResourceDefinition", "Namespace"):
            kube.apply(obj)
    wait_for("KEDA's operator and metrics server to be ready", lambda: _deployments_ready(kube), timeout)
    wait_for(f"the {METRICS_API} API to be available", lambda: _api_available(kube), timeout)


def _established(kube: Kube, name: str) -> bool:
    crd = kube.get("CustomResourceDefinition", name) or {}
    return any(c.get("type") == "Established" and c.get("status") == "True"
               for c in crd.get("status", {}).get("conditions", []))


def _deployments_ready(kube: Kube) -> bool:
    deployments = kube.list("Deployment", NAMESPACE)
    return len(deployments) == len(IMAGES) and all(
        d.get("status", {}).get("readyReplicas", 0) >= d["spec"].get("replicas", 1) for d in deployments)


def _api_available(kube: Kube) -> bool:
    try:
        service = kube.get("APIService", METRICS_API) or {}
    except ApiError:
        return False
    return any(c.get("type") == "Available" and c.get("status") == "True"
               for c in service.get("status", {}).get("conditions", []))
