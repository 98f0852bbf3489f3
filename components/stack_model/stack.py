"""The whole validated stack: every broker and task server one cluster runs."""

from __future__ import annotations

from dataclasses import dataclass

from .brokers import AnyBrokerSpec
from .task_server import TaskServerSpec

# What a Deployment rollout may take beyond its pods' grace period (pulumi-kubernetes waits
# this long by default, and Kubernetes' progress deadline is the same).
ROLLOUT_ALLOWANCE_SECONDS = 600


@dataclass(frozen=True)
class StackSpec:
    """Brokers and task servers, cross-checked: every task server names a broker in this stack,
    every name is unique once it becomes a Kubernetes name, and task servers share their
    broker's namespace (they read its Secret)."""

    file: str
    brokers: tuple[AnyBrokerSpec, ...]
    task_servers: tuple[TaskServerSpec, ...]

    def task_servers_of(self, broker: AnyBrokerSpec) -> tuple[TaskServerSpec, ...]:
        return tuple(t for t in self.task_servers if t.broker_resource_name == broker.name)

    def visibility_timeout_of(self, broker: AnyBrokerSpec) -> int:
        """The one Redis visibility timeout every task server of a broker uses: the longest any needs.

        kombu keeps one index of unacknowledged tasks per Redis database, and each worker
        requeues every entry older than its own timeout, whichever queue it came from: a fleet
        with a shorter timeout would hand another fleet's running tasks out again.
        """
        return max((t.visibility_timeout_seconds for t in self.task_servers_of(broker)), default=0)

    def unacknowledged_limit_of(self, broker: AnyBrokerSpec) -> int:
        """How long a task may stay delivered and unacknowledged on a RabbitMQ broker (its
        `consumer_timeout`): as long as the Redis visibility timeout, twice the longest grace
        period, and at least RabbitMQ's own default of 30 minutes."""
        return max(1800, self.visibility_timeout_of(broker))

    def password_drop_after_of(self, broker: AnyBrokerSpec) -> int:
        """How long a rotated-out password stays valid: the longest rollout of the broker's task
        servers (rollout allowance plus grace period), so every worker that still holds it has
        been replaced first. Agents must restart onto the new password within this time."""
        return ROLLOUT_ALLOWANCE_SECONDS + max((t.termination_grace_seconds for t in self.task_servers_of(broker)), default=0)
