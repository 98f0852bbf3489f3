"""The validated shape of a `type: redis` broker entry."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictBool, StrictInt, StrictStr

from .broker_common import BrokerBase, BrokerStorage
from .common import (
    ComputeResources,
    Image,
    LabelKey,
    LabelValue,
    StrictModel,
    quantity_to_mib,
    service_monitor_label_problems,
)
from .problems import CrossFieldProblem

# Redis 7.2 is the last BSD-licensed line; pinned so every rollout runs the same server.
# 7.2.11: fixes CVE-2025-21605 (7.2.8) and CVE-2025-49844 (7.2.11).
DEFAULT_REDIS_IMAGE = "redis:7.2.11-alpine"
DEFAULT_EXPORTER_IMAGE = "oliver006/redis_exporter:v1.62.0"


class BrokerMetrics(StrictModel):
    """A redis_exporter sidecar on port 9121, and a ServiceMonitor only when asked for
    (the Prometheus Operator's CRD may not exist in the cluster)."""

    enabled: StrictBool = False
    service_monitor: StrictBool = False
    # Extra labels on the ServiceMonitor: a Prometheus selects the monitors it scrapes by label
    # (kube-prometheus-stack's default: `release: <its release name>`).
    service_monitor_labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    image: Image = DEFAULT_EXPORTER_IMAGE


class BrokerSpec(BrokerBase):
    """A `type: redis` broker: one Redis server with its append-only file."""

    type: Literal["redis"]
    image: Image = DEFAULT_REDIS_IMAGE
    max_memory_mb: StrictInt = Field(default=512, ge=16, le=1_048_576)
    storage: BrokerStorage = BrokerStorage()
    resources: ComputeResources | None = None
    metrics: BrokerMetrics = BrokerMetrics()
    # Any text; a new value rotates every generated broker password (see the README).
    password_rotation: StrictStr = ""

    def cross_field_problems(self) -> list[CrossFieldProblem]:
        """Problems no single field shows: (path within this entry, message, fix)."""
        problems = self.common_problems()
        if self.metrics.service_monitor and not self.metrics.enabled:
            problems.append((("metrics", "service_monitor"), "a ServiceMonitor needs the metrics exporter",
                             "set `metrics: {enabled: true, service_monitor: true}`"))
        problems += service_monitor_label_problems(self.metrics.service_monitor_labels, self.metrics.service_monitor)
        if self.resources is not None:
            resolved = self.compute_resources
            problems += [(("resources", *path), message, fix) for path, message, fix in resolved.problems()]
            floor = self.min_memory_limit_mib
            if resolved.memory_limit and quantity_to_mib(resolved.memory_limit) < floor:
                problems.append((("resources", "memory_limit"),
                                 f"is {resolved.memory_limit}, too little for maxmemory ({self.max_memory_mb} MiB) plus "
                                 "the fork that rewrites the append-only file: the kernel would kill Redis mid-rewrite",
                                 f"raise it to at least {floor}Mi, or lower max_memory_mb"))
        return problems

    @property
    def min_memory_limit_mib(self) -> int:
        """maxmemory, half of it again for pages the rewrite fork copies, and 64 MiB of overhead."""
        return self.max_memory_mb * 3 // 2 + 64

    @property
    def compute_resources(self) -> ComputeResources:
        """Explicit resources, or ones sized from `max_memory_mb`.

        The memory limit leaves room for the fork that rewrites the append-only file
        (copy-on-write can touch every page) so a rewrite does not get the pod OOM-killed.
        The CPU limit is two cores: Redis serves commands on one thread, but the rewrite fork
        and its fsync and lazy-free threads run beside it, and a one-core quota would throttle
        the command thread exactly while a rewrite runs. A limit stays (rather than none) so a
        runaway broker cannot starve the node's other pods.
        """
        defaults = ComputeResources(
            cpu_request="100m",
            memory_request=f"{self.max_memory_mb + self.max_memory_mb // 4 + 64}Mi",
            cpu_limit="2",
            memory_limit=f"{self.max_memory_mb * 2 + 64}Mi",
        )
        return self.resources.over(defaults) if self.resources is not None else defaults
