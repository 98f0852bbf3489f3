"""The local control plane's volume provisioner: what a CSI driver and its sidecars do, minus disks.

Claims of the `standard` StorageClass get a PersistentVolume pre-bound to them once the
scheduler has picked a node (WaitForFirstConsumer); released volumes are deleted; a claim
whose request grows is expanded (the PV's capacity and then the claim's status), as the
external resizer and the kubelet would. On kwok's nodes no container runs, so a hostPath
volume that is never written is enough. On the real node the volume is a `local` one, a
directory made here: the kubelet gives `local` volumes the pod's fsGroup, which a hostPath
volume never gets (a non-root Redis could not write it).

Run as `python -m localcluster.provisioner KUBECONFIG [LOCAL_VOLUMES_DIR]`; `tools/cluster up`
starts it.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from components.stack_model.common import quantity_to_mib

from .api import ApiError, Kube, Obj
from .real_node import NAME as REAL_NODE

PROVISIONER = "gru.local/provisioner"
STORAGE_CLASS = "standard"
SELECTED_NODE = "volume.kubernetes.io/selected-node"


def volume_for(claim: Obj, local_dir: Path | None = None) -> Obj:
    meta, spec = claim["metadata"], claim["spec"]
    node = meta.get("annotations", {}).get(SELECTED_NODE)
    source: Obj = {"hostPath": {"path": f"/var/lib/gru-local-volumes/{meta['uid']}"}}
    if node == REAL_NODE and local_dir is not None:
        path = local_dir / meta["uid"]
        path.mkdir(parents=True, exist_ok=True)
        source = {"local": {"path": str(path)}}
    volume: Obj = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"pvc-{meta['uid']}", "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
        "spec": {
            "capacity": {"storage": spec["resources"]["requests"]["storage"]},
            "accessModes": spec.get("accessModes", ["ReadWriteOnce"]),
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": STORAGE_CLASS,
            "volumeMode": spec.get("volumeMode", "Filesystem"),
            **source,
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                         "name": meta["name"], "uid": meta["uid"]},
        },
    }
    if node:
        volume["spec"]["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}
    return volume


def reconcile(kube: Kube, local_dir: Path | None = None) -> None:
    for claim in kube.list("PersistentVolumeClaim"):
        meta, spec, status = claim["metadata"], claim["spec"], claim.get("status", {})
        if spec.get("storageClassName", STORAGE_CLASS) != STORAGE_CLASS:
            continue
        if status.get("phase") == "Pending" and not spec.get("volumeName") and SELECTED_NODE in meta.get("annotations", {}):
            try:
                kube.create(volume_for(claim, local_dir))
            except ApiError as error:
                if error.status != 409:  # already provisioned, waiting for the binder
                    raise
        elif status.get("phase") == "Bound":
            wanted = spec["resources"]["requests"]["storage"]
            has = status.get("capacity", {}).get("storage", wanted)
            if quantity_to_mib(wanted) > quantity_to_mib(has):
                kube.merge_patch("PersistentVolume", spec["volumeName"], None, {"spec": {"capacity": {"storage": wanted}}})
                kube.merge_patch("PersistentVolumeClaim", meta["name"], meta["namespace"],
                                 {"status": {"capacity": {"storage": wanted}}}, subresource="status")
    for volume in kube.list("PersistentVolume"):
        provisioned = volume["metadata"].get("annotations", {}).get("pv.kubernetes.io/provisioned-by") == PROVISIONER
        if provisioned and volume.get("status", {}).get("phase") == "Released" \
                and volume["spec"].get("persistentVolumeReclaimPolicy") == "Delete":
            kube.delete("PersistentVolume", volume["metadata"]["name"])
            local = volume["spec"].get("local", {}).get("path")
            if local and local_dir is not None and Path(local).parent == local_dir:
                shutil.rmtree(local, ignore_errors=True)


def main() -> None:
    kube = Kube(Path(sys.argv[1]))
    local_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    while True:
        try:
            reconcile(kube, local_dir)
        except (ApiError, OSError, KeyError, ValueError) as error:
            print(f"provisioner: {error}", file=sys.stderr, flush=True)
        time.sleep(0.5)


if __name__ == "__main__":
    main()
