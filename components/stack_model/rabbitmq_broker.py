"""The validated shape of a `type: rabbitmq` broker entry."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr

from .broker_common import BrokerBase, BrokerStorage
from .common import (
    ComputeResources,
    Image,
    LabelKey,
    LabelValue,
    Quantity,
    StrictModel,
    quantity_to_mib,
    service_monitor_label_problems,
)
from .problems import CrossFieldProblem

# Pinned so every node of the cluster, and every rollout, runs the same server. 4.1+ for
# peer discovery without API rights.
DEFAULT_RABBITMQ_IMAGE = "rabbitmq:4.3.2"
# Quorum queues replicate to every node; past seven, each publish waits on more peers for no
# real gain in safety.
MAX_RABBITMQ_REPLICAS = 7
# Below this a node spends its memory on the Erlang VM, the plugins and the management
# database, and alarms with an empty queue.
MIN_RABBITMQ_MEMORY_MIB = 512


class RabbitMQMetrics(StrictModel):
    """RabbitMQ's own Prometheus endpoint (port 15692) opened to scrapers, and a
    ServiceMonitor only when asked for (the Prometheus Operator's CRD may not exist)."""

    enabled: StrictBool = False
    service_monitor: StrictBool = False
    # Extra labels on the ServiceMonitor: a Prometheus selects the monitors it scrapes by label
    # (kube-prometheus-stack's default: `release: <its release name>`).
    service_monitor_labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)


class RabbitMQBrokerSpec(BrokerBase):
    """A `type: rabbitmq` broker: a RabbitMQ cluster whose task queues are quorum queues."""

    type: Literal["rabbitmq"]
    # Three is the least that survives losing a node: quorum queues need a majority.
    replicas: StrictInt = Field(default=3, ge=1, le=MAX_RABBITMQ_REPLICAS)
    image: Image = DEFAULT_RABBITMQ_IMAGE
    storage: BrokerStorage = BrokerStorage()
    resources: ComputeResources | None = None
    # Publishers are blocked when a node uses this fraction of its memory limit.
    memory_high_watermark: StrictFloat = Field(default=0.6, ge=0.1, le=0.9)
    # Publishers are blocked when the data volume has less than this free.
    disk_free_limit: Quantity = "1Gi"
    metrics: RabbitMQMetrics = RabbitMQMetrics()
    # Any text; a new value rotates every generated broker password (see the README).
    password_rotation: StrictStr = ""

    def cross_field_problems(self) -> list[CrossFieldProblem]:
        """Problems no single field shows: (path within this entry, message, fix)."""
        problems = self.common_problems()
        if self.replicas % 2 == 0:
            problems.append((("replicas",),
                             f"is {self.replicas}: an even cluster survives no more node losses than one node fewer, "
                             "and a split in half stops every quorum queue",
                             f"use an odd number: {self.replicas - 1} or {self.replicas + 1}"))
        if self.metrics.service_monitor and not self.metrics.enabled:
            problems.append((("metrics", "service_monitor"), "a ServiceMonitor needs the metrics endpoint",
                             "set `metrics: {enabled: true, service_monitor: true}`"))
        problems += service_monitor_label_problems(self.metrics.service_monitor_labels, self.metrics.service_monitor)
        if self.storage.enabled and quantity_to_mib(self.disk_free_limit) >= quantity_to_mib(self.storage.size):
            problems.append((("disk_free_limit",),
                             f"is {self.disk_free_limit}, not below the volume's size ({self.storage.size}): "
                             "RabbitMQ would refuse every publish from the start",
                             "lower disk_free_limit, or raise storage.size"))
        if self.resources is not None:
            resolved = self.compute_resources
            problems += [(("resources", *path), message, fix) for path, message, fix in resolved.problems()]
            if resolved.memory_limit and quantity_to_mib(resolved.memory_limit) < MIN_RABBITMQ_MEMORY_MIB:
                problems.append((("resources", "memory_limit"),
                                 f"is {resolved.memory_limit}, too little for a RabbitMQ node: it would raise "
                                 "its memory alarm and block publishers with empty queues",
                                 f"raise it to at least {MIN_RABBITMQ_MEMORY_MIB}Mi"))
        return problems

    @property
    def compute_resources(self) -> ComputeResources:
        """Explicit resources, or 1 GiB and up to two cores per node.

        Memory request equals the limit: RabbitMQ sizes its watermark from the limit, and a
        node evicted for using what it was promised would fail over every queue leader on it.
        """
        defaults = ComputeResources(cpu_request="250m", memory_request="1Gi", cpu_limit="2", memory_limit="1Gi")
        return self.resources.over(defaults) if self.resources is not None else defaults

    @property
    def memory_limit_bytes(self) -> int:
        return int(quantity_to_mib(str(self.compute_resources.memory_limit)) * 2**20)

    @property
    def disk_free_limit_bytes(self) -> int:
        return int(quantity_to_mib(self.disk_free_limit) * 2**20)
