"""A small Kubernetes API client on the standard library: enough for the local control plane's
setup, its volume provisioner and the integration tests' checks, with no client package."""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

# Where each kind this project touches lives in the API (kind -> (group/version path, plural, namespaced)).
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("api/v1", "namespaces", False),
    "Node": ("api/v1", "nodes", False),
    "PersistentVolume": ("api/v1", "persistentvolumes", False),
    "PersistentVolumeClaim": ("api/v1", "persistentvolumeclaims", True),
    "Pod": ("api/v1", "pods", True),
    "Secret": ("api/v1", "secrets", True),
    "ConfigMap": ("api/v1", "configmaps", True),
    "Service": ("api/v1", "services", True),
    "ServiceAccount": ("api/v1", "serviceaccounts", True),
    "Event": ("api/v1", "events", True),
    "EndpointSlice": ("apis/discovery.k8s.io/v1", "endpointslices", True),
    "Job": ("apis/batch/v1", "jobs", True),
    "StatefulSet": ("apis/apps/v1", "statefulsets", True),
    "Deployment": ("apis/apps/v1", "deployments", True),
    "ReplicaSet": ("apis/apps/v1", "replicasets", True),
    "NetworkPolicy": ("apis/networking.k8s.io/v1", "networkpolicies", True),
    "PodDisruptionBudget": ("apis/policy/v1", "poddisruptionbudgets", True),
    "StorageClass": ("apis/storage.k8s.io/v1", "storageclasses", False),
    "CustomResourceDefinition": ("apis/apiextensions.k8s.io/v1", "customresourcedefinitions", False),
    "ScaledObject": ("apis/keda.sh/v1alpha1", "scaledobjects", True),
    "TriggerAuthentication": ("apis/keda.sh/v1alpha1", "triggerauthentications", True),
    "ServiceMonitor": ("apis/monitoring.coreos.com/v1", "servicemonitors", True),
    "ClusterTriggerAuthentication": ("apis/keda.sh/v1alpha1", "clustertriggerauthentications", False),
    "HorizontalPodAutoscaler": ("apis/autoscaling/v2", "horizontalpodautoscalers", True),
    "PriorityClass": ("apis/scheduling.k8s.io/v1", "priorityclasses", False),
    "ClusterRole": ("apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": ("apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "APIService": ("apis/apiregistration.k8s.io/v1", "apiservices", False),
}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Kube:
    """Requests against one API server, authenticated as the kubeconfig's user (a bearer token)."""

    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        current = config.get("current-context")
        context = next((c["context"] for c in config.get("contexts", []) if c["name"] == current), None)
        cluster = next(c["cluster"] for c in config["clusters"] if context is None or c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if context is None or u["name"] == context["user"])
        self.server: str = cluster["server"].rstrip("/")
        self.token: str | None = user.get("token")
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        self.context = ssl.create_default_context(cadata=ca)
        if "client-certificate-data" in user:  # kind's and kubeadm's kubeconfigs
            with tempfile.TemporaryDirectory() as scratch:
                cert, key = Path(scratch) / "cert.pem", Path(scratch) / "key.pem"
                cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
                key.write_bytes(base64.b64decode(user["client-key-data"]))
                self.context.load_cert_chain(cert, key)

    def _authorize(self, req: urllib.request.Request) -> None:
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")

    def request(self, method: str, path: str, body: Obj | None = None,
                content_type: str = "application/json") -> Obj:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + "/" + path.lstrip("/"), data=data, method=method)
        self._authorize(req)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=30) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            text = error.read().decode(errors="replace")
            try:
                text = json.loads(text).get("message", text)
            except ValueError:
                pass
            raise ApiError(error.code, text) from None
        try:
            return json.loads(payload) if payload else {}
        except ValueError:  # /readyz, /healthz answer in plain text
            return {"text": payload.decode(errors="replace")}

    @staticmethod
    def path(kind: str, namespace: str | None = None, name: str | None = None) -> str:
        group, plural, namespaced = RESOURCES[kind]
        parts = [group]
        if namespaced and namespace is not None:
            parts += ["namespaces", namespace]
        parts.append(plural)
        if name is not None:
            parts.append(name)
        return "/".join(parts)

    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        try:
            return self.request("GET", self.path(kind, namespace, name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[Obj]:
        path = self.path(kind, namespace)
        if label_selector:
            path += "?labelSelector=" + urllib.parse.quote(label_selector)
        items: list[Obj] = self.request("GET", path).get("items", [])
        return items

    def create(self, obj: Obj) -> Obj:
        namespace = obj.get("metadata", {}).get("namespace")
        return self.request("POST", self.path(obj["kind"], namespace), obj)

    def apply(self, obj: Obj, manager: str = "gru-localcluster") -> Obj:
        """Server-side apply: create or update `obj`."""
        meta = obj["metadata"]
        path = self.path(obj["kind"], meta.get("namespace"), meta["name"]) + f"?fieldManager={manager}&force=true"
        return self.request("PATCH", path, obj, "application/apply-patch+yaml")

    def merge_patch(self, kind: str, name: str, namespace: str | None, patch: Obj, subresource: str = "") -> Obj:
        """A JSON merge patch of an object, or of its `subresource` (e.g. "status")."""
        path = self.path(kind, namespace, name) + (f"/{subresource}" if subresource else "")
        return self.request("PATCH", path, patch, "application/merge-patch+json")

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        try:
            self.request("DELETE", self.path(kind, namespace, name))
        except ApiError as error:
            if error.status != 404:
                raise

    def logs(self, namespace: str, pod: str, container: str | None = None, previous: bool = False) -> str:
        """A container's log, as the kubelet serves it through the API server."""
        query = urllib.parse.urlencode({**({"container": container} if container else {}),
                                        **({"previous": "true"} if previous else {})})
        req = urllib.request.Request(f"{self.server}/{self.path('Pod', namespace, pod)}/log?{query}")
        self._authorize(req)
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=30) as response:
                return str(response.read().decode(errors="replace"))
        except urllib.error.HTTPError as error:
            raise ApiError(error.code, error.read().decode(errors="replace")) from None

    def follow_logs(self, namespace: str, pod: str, container: str) -> Iterator[str]:
        """A container's log line by line, from its first line until the container ends."""
        query = urllib.parse.urlencode({"container": container, "follow": "true"})
        req = urllib.request.Request(f"{self.server}/{self.path('Pod', namespace, pod)}/log?{query}")
        self._authorize(req)
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=600) as response:
                for raw in response:
                    yield raw.decode(errors="replace")
        except urllib.error.HTTPError as error:
            raise ApiError(error.code, error.read().decode(errors="replace")) from None

    def evict(self, namespace: str, pod: str) -> None:
        """What `kubectl drain` does per pod: the Eviction API, which a PodDisruptionBudget may refuse (429)."""
        self.request("POST", f"{self.path('Pod', namespace, pod)}/eviction", {
            "apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": namespace}})

    def version(self) -> Obj:
        return self.request("GET", "version")


def wait_for(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.5) -> None:
    """Poll `check` until it holds; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
            last = None
        except (ApiError, OSError) as error:
            last = error
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}" + (f" (last error: {last})" if last else ""))
