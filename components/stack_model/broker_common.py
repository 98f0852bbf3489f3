"""What every broker entry has, whatever its type: identity, namespace, who may connect."""

from __future__ import annotations

from pydantic import Field, StrictBool, StrictStr

from .common import ComponentName, DnsDomain, LabelKey, Namespace, Quantity, Scheduling, StrictModel
from .names import kubernetes_name
from .problems import CrossFieldProblem

DEFAULT_NAMESPACE = "gru"
# Namespaces every cluster already has; a stack must not try to create or own them.
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class BrokerStorage(StrictModel):
    """The broker's persistent volume. Off means queued tasks die with the pod."""

    enabled: StrictBool = True
    size: Quantity = "8Gi"
    storage_class: StrictStr | None = None


class BrokerBase(Scheduling):
    """Fields shared by every broker type; each type adds its own (see its spec module)."""

    name: ComponentName
    namespace: Namespace = DEFAULT_NAMESPACE
    create_namespace: StrictBool = True
    # Pods labelled `<client_label>: "true"` may connect (the broker's task servers carry it).
    client_label: LabelKey | None = None
    client_namespaces: list[Namespace] = Field(default_factory=list)
    # Where the autoscaler (KEDA's operator) runs; it reads queue lengths from the broker.
    keda_namespace: Namespace = "keda"
    cluster_domain: DnsDomain = "cluster.local"

    @property
    def client_label_key(self) -> str:
        return self.client_label or f"gru.dev/client-of-{kubernetes_name(self.name)}"

    def common_problems(self) -> list[CrossFieldProblem]:
        problems: list[CrossFieldProblem] = []
        if self.create_namespace and self.namespace in SYSTEM_NAMESPACES:
            problems.append((("create_namespace",),
                             f"namespace {self.namespace!r} always exists and must not be owned by a stack",
                             "set `create_namespace: false`, or use a namespace of its own, like 'gru'"))
        if kubernetes_name(self.name) == "kubernetes" and self.namespace == "default":
            problems.append((("name",), "the Service 'kubernetes' in namespace 'default' is the API server's own",
                             "give the broker another name, or another namespace"))
        return problems
