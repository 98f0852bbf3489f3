"""The whole validated stack: every broker and task server one cluster runs."""

from __future__ import annotations

from dataclasses import dataclass

from .broker import BrokerSpec
from .task_server import TaskServerSpec


@dataclass(frozen=True)
class StackSpec:
    """Brokers and task servers, cross-checked: every task server names a broker in this stack,
    every name is unique once it becomes a Kubernetes name, and task servers share their
    broker's namespace (they read its Secret)."""

    file: str
    brokers: tuple[BrokerSpec, ...]
    task_servers: tuple[TaskServerSpec, ...]

    def task_servers_of(self, broker: BrokerSpec) -> tuple[TaskServerSpec, ...]:
        return tuple(t for t in self.task_servers if t.broker_resource_name == broker.name)
