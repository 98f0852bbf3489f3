"""Field types shared by the broker and task server specs."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr, model_validator
from pydantic_core import PydanticCustomError

from .names import kubernetes_name_problem
from .problems import CrossFieldProblem

# Kubernetes caps replica counts at int32.
MAX_REPLICAS = 2_147_483_647

_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def invalid(reason: str, fix: str) -> PydanticCustomError:
    """A validation error that carries its own fix, for the stack file's error report."""
    return PydanticCustomError("gru_invalid", "{reason}", {"reason": reason, "fix": fix})


def _quantity(value: str) -> str:
    if not _QUANTITY.match(value):
        raise invalid(
            f"{value!r} is not a Kubernetes quantity",
            "write it like '500m' or '2' for CPU, '256Mi' or '8Gi' for memory and storage",
        )
    return value


def _image(value: str) -> str:
    if not _IMAGE.match(value):
        raise invalid(
            f"{value!r} is not a container image reference",
            "write it like 'registry.example.com/team/image:1.2.3'",
        )
    if "@" not in value and ":" not in value.rsplit("/", 1)[-1]:
        raise invalid(
            f"image {value!r} has no tag, which means ':latest' and changes under you",
            f"pin a version, like '{value}:1.2.3', or a digest",
        )
    if value.endswith(":latest"):
        raise invalid(f"image {value!r} uses ':latest'", "pin a version tag or a digest")
    return value


def _namespace(value: str) -> str:
    if len(value) > 63 or not _NAMESPACE.match(value):
        raise invalid(
            f"{value!r} is not a Kubernetes namespace name",
            "use lowercase letters, digits and '-', at most 63 characters",
        )
    return value


def _component_name(value: str) -> str:
    problem = kubernetes_name_problem(value)
    if problem is not None:
        raise invalid(
            f"name {value!r} {problem}",
            "shorten it" if "limit is" in problem else
            "use lowercase letters, digits, '-' or '_', starting with a letter, like 'redis' or 'task_server'",
        )
    return value


_UNIT_MIB = {"": 1 / 2**20, "m": 1 / 2**20 / 1000, "k": 1000 / 2**20, "M": 10**6 / 2**20, "G": 10**9 / 2**20,
             "T": 10**12 / 2**20, "P": 10**15 / 2**20, "E": 10**18 / 2**20, "Ki": 1 / 1024, "Mi": 1,
             "Gi": 1024, "Ti": 1024**2, "Pi": 1024**3, "Ei": 1024**4}


def quantity_to_mib(value: str) -> float:
    """A quantity ('640Mi', '1G', '2Gi'; '500m' and '2' on the same scale) in MiB."""
    match = re.match(r"^([0-9.]+)([A-Za-z]*)$", value)
    if match is None or match.group(2) not in _UNIT_MIB:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    return float(match.group(1)) * _UNIT_MIB[match.group(2)]


def _number_as_quantity(value: Any) -> Any:
    """Kubernetes takes `cpu: 1` and `cpu: 0.5` as YAML numbers; so does the stack file."""
    if isinstance(value, bool):
        return value  # refused as not text: `true` is no quantity
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return value


Quantity = Annotated[StrictStr, AfterValidator(_quantity), BeforeValidator(_number_as_quantity)]
Image = Annotated[StrictStr, AfterValidator(_image)]
Namespace = Annotated[StrictStr, AfterValidator(_namespace)]
ComponentName = Annotated[StrictStr, AfterValidator(_component_name)]
PositiveInt = Annotated[StrictInt, Field(ge=1)]


class StrictModel(BaseModel):
    """Unknown keys are errors and values are never coerced (`"4"` is not 4, `true` is not 1)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ComputeResources(StrictModel):
    """Requests and limits for one container, as Kubernetes spells them. Each field left out
    keeps its default (see the component's `compute_resources`)."""

    cpu_request: Quantity | None = None
    memory_request: Quantity | None = None
    cpu_limit: Quantity | None = None
    memory_limit: Quantity | None = None

    def over(self, defaults: ComputeResources) -> ComputeResources:
        """These values, each missing one taken from `defaults`."""
        return ComputeResources(**{name: getattr(self, name) or getattr(defaults, name)
                                   for name in ComputeResources.model_fields})

    def to_manifest(self) -> dict[str, dict[str, str | None]]:
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }

    def problems(self) -> list[tuple[tuple[str, ...], str, str]]:
        """Limits below requests: valid quantities each, but the API server refuses the pod.
        Called on resolved resources (every field set)."""
        out: list[tuple[tuple[str, ...], str, str]] = []
        for what in ("cpu", "memory"):
            request, limit = getattr(self, f"{what}_request"), getattr(self, f"{what}_limit")
            # The same scale for both (any unit), so the comparison holds for CPU too.
            if request and limit and quantity_to_mib(limit) < quantity_to_mib(request):
                out.append(((f"{what}_limit",), f"is {limit}, below {what}_request ({request}); Kubernetes refuses "
                            "a container whose limit is below its request",
                            f"raise {what}_limit to at least {request}, or lower {what}_request"))
        return out


_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def _label_value(value: str) -> str:
    if not _LABEL_VALUE.match(value):
        raise invalid(f"{value!r} is not a Kubernetes label value",
                      "use at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit")
    return value


_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _priority_class(value: str) -> str:
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise invalid(f"{value!r} is not a PriorityClass name",
                      "use lowercase letters, digits, '-' and '.', like 'high-priority'")
    return value


def _label_key(value: str) -> str:
    prefix, _, name = value.rpartition("/")
    if not _LABEL_NAME.match(name) or (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix))):
        raise invalid(
            f"{value!r} is not a Kubernetes label key",
            "use an optional DNS prefix and a name of at most 63 characters, like 'example.com/agent'",
        )
    return value


LabelKey = Annotated[StrictStr, AfterValidator(_label_key)]
LabelValue = Annotated[StrictStr, AfterValidator(_label_value)]
# The program's own labels (components/labels.py) sit under this prefix; no user label may.
RESERVED_LABEL_PREFIX = "app.kubernetes.io/"


def service_monitor_label_problems(labels: dict[str, str], service_monitor: bool) -> list[CrossFieldProblem]:
    """`metrics.service_monitor_labels`: only with a ServiceMonitor, and none of ours."""
    problems: list[CrossFieldProblem] = []
    if labels and not service_monitor:
        problems.append((("metrics", "service_monitor_labels"), "labels a ServiceMonitor that is not created",
                         "set `metrics.service_monitor: true`, or remove service_monitor_labels"))
    for key in labels:
        if key.startswith(RESERVED_LABEL_PREFIX):
            problems.append((("metrics", "service_monitor_labels", key), f"{key!r} is a label this program sets itself",
                             f"use a label outside {RESERVED_LABEL_PREFIX}, such as `release: <your Prometheus release>`"))
    return problems


def _dns_domain(value: str) -> str:
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise invalid(f"{value!r} is not a DNS domain", "write the cluster's DNS domain, like 'cluster.local'")
    return value


DnsDomain = Annotated[StrictStr, AfterValidator(_dns_domain)]


class Toleration(StrictModel):
    """A Kubernetes toleration, fields in snake_case."""

    key: StrictStr | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: StrictStr | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: StrictInt | None = None

    @model_validator(mode="after")
    def _as_kubernetes_checks(self) -> Toleration:
        # The API server's own rules for a toleration, caught before anything is applied.
        if self.operator == "Exists" and self.value:
            raise invalid("a toleration with `operator: Exists` may not have a `value`",
                          "remove `value`, or use `operator: Equal`")
        if not self.key and self.operator != "Exists":
            raise invalid("a toleration without a `key` must have `operator: Exists` (it then tolerates every taint)",
                          "add the taint's `key`, or set `operator: Exists`")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise invalid("`toleration_seconds` applies only to `effect: NoExecute`",
                          "set `effect: NoExecute`, or remove `toleration_seconds`")
        if self.key:
            _label_key(self.key)
        if self.value:
            _label_value(self.value)  # Kubernetes checks a toleration's value as a label value
        return self

    def to_manifest(self) -> dict[str, Any]:
        fields = {"key": self.key, "operator": self.operator, "value": self.value, "effect": self.effect,
                  "tolerationSeconds": self.toleration_seconds}
        return {k: v for k, v in fields.items() if v is not None}


def _affinity(value: dict[str, Any]) -> dict[str, Any]:
    allowed = {"nodeAffinity", "podAffinity", "podAntiAffinity"}
    unknown = set(value) - allowed
    if unknown:
        raise invalid(
            f"affinity has unknown keys {sorted(unknown)}",
            "write affinity exactly as in a Kubernetes pod spec: nodeAffinity, podAffinity, podAntiAffinity",
        )
    return value


class Scheduling(StrictModel):
    """Where a component's pods may run; passed through to the pod spec."""

    node_selector: dict[LabelKey, Annotated[StrictStr, AfterValidator(_label_value)]] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    # Kubernetes' own affinity object, camelCase, as it appears in a pod spec.
    affinity: Annotated[dict[str, Any], AfterValidator(_affinity)] | None = None
    priority_class_name: Annotated[StrictStr, AfterValidator(_priority_class)] | None = None

    def pod_spec_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if self.node_selector:
            fields["nodeSelector"] = dict(self.node_selector)
        if self.tolerations:
            fields["tolerations"] = [t.to_manifest() for t in self.tolerations]
        if self.affinity:
            fields["affinity"] = self.affinity
        if self.priority_class_name:
            fields["priorityClassName"] = self.priority_class_name
        return fields
