"""The local control plane's volume provisioner: what a CSI driver and its sidecars do, minus disks.

Claims of the `standard` StorageClass get a PersistentVolume pre-bound to them once the
scheduler has picked a node (WaitForFirstConsumer); released volumes are deleted; a claim
whose request grows is expanded (the PV's capacity and then the claim's status), as the
external resizer and the kubelet would. kwok runs no containers, so no data is ever written.

Run as `python -m localcluster.provisioner KUBECONFIG`; `tools/cluster up` starts it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from components.spec.common import quantity_to_mib

from .api import ApiError, Kube, Obj

PROVISIONER = "gru.local/provisioner"
STORAGE_CLASS = "standard"
SELECTED_NODE = "volume.kubernetes.io/selected-node"


def volume_for(claim: Obj) -> Obj:
    meta, spec = claim["metadata"], claim["spec"]
    node = meta.get("annotations", {}).get(SELECTED_NODE)
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
            "hostPath": {"path": f"/var/lib/gru-local-volumes/{meta['uid']}"},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                         "name": meta["name"], "uid": meta["uid"]},
        },
    }
    if node:
        volume["spec"]["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}
    return volume


def reconcile(kube: Kube) -> None:
    for claim in kube.list("PersistentVolumeClaim"):
        meta, spec, status = claim["metadata"], claim["spec"], claim.get("status", {})
        if spec.get("storageClassName", STORAGE_CLASS) != STORAGE_CLASS:
            continue
        if status.get("phase") == "Pending" and not spec.get("volumeName") and SELECTED_NODE in meta.get("annotations", {}):
            try:
                kube.create(volume_for(claim))
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


def main() -> None:
    kube = Kube(Path(sys.argv[1]))
    while True:
        try:
            reconcile(kube)
        except (ApiError, OSError, KeyError, ValueError) as error:
            print(f"provisioner: {error}", file=sys.stderr, flush=True)
        time.sleep(0.5)


if __name__ == "__main__":
    main()
