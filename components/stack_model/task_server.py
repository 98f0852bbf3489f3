"""The validated shape of a `task_server:` entry."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StrictBool, StrictInt, StrictStr

from .common import MAX_REPLICAS, ComponentName, ComputeResources, Image, Namespace, Scheduling, StrictModel, invalid, quantity_to_mib
from .problems import CrossFieldProblem

SUPPORTED_TASK_SERVER_TYPES = ("celery",)
# The project's own worker image, built from worker/ and published, for amd64 and arm64, by
# .github/workflows/release.yml on a `worker-v<version>` tag (it refuses to publish anywhere
# but here, so this name and the published image cannot drift apart).
DEFAULT_WORKER_IMAGE = "ghcr.io/canso-ai/gru-worker:0.3.0"
DEFAULT_WORKER_APP = "gru_worker.app"

_QUEUE = re.compile(r"^[A-Za-z0-9_.:-]+$")
_APP = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_]*)?$")


def _queue(value: str) -> str:
    if not _QUEUE.match(value):
        raise invalid(
            f"{value!r} is not a queue name",
            "use letters, digits and '_.:-' only, no spaces or commas, like 'celery'",
        )
    return value


def _app(value: str) -> str:
    if not _APP.match(value):
        raise invalid(
            f"{value!r} is not a Celery app path",
            "write the importable module of the app, like 'gru_worker.app' or 'myproject.tasks:app'",
        )
    return value


QueueName = Annotated[StrictStr, AfterValidator(_queue)]
AppPath = Annotated[StrictStr, AfterValidator(_app)]

# Memory of a worker pod's main process, beside its pool processes.
WORKER_BASE_MEMORY_MIB = 128

# Seconds between the longest task finishing in warm shutdown and the kubelet's SIGKILL:
# as long as the task itself, between 5 s and 30 s, so short-task fleets stay quick to roll.
MIN_SHUTDOWN_HEADROOM_SECONDS = 5
MAX_SHUTDOWN_HEADROOM_SECONDS = 30


class Autoscaling(StrictModel):
    """KEDA scaling on the Redis list length of the task server's queues."""

    enabled: StrictBool = False
    max_replicas: StrictInt = Field(default=10, ge=1, le=MAX_REPLICAS)
    # Default: the replica's concurrency, so each replica has one queued task per process.
    queue_length_per_replica: StrictInt | None = Field(default=None, ge=1)
    polling_interval_seconds: StrictInt = Field(default=15, ge=1, le=3600)
    # Default: the termination grace period plus a minute.
    cooldown_seconds: StrictInt | None = Field(default=None, ge=1)
    # Scale down by at most one pod per this many seconds.
    # The HPA API accepts policy periods up to 1800 s.
    scale_down_period_seconds: StrictInt = Field(default=300, ge=15, le=1800)


class Results(StrictModel):
    """Task results, stored in the broker's Redis. Off by default: results share the broker's
    memory, and a full broker refuses new tasks. When on, each result expires after
    `expires_seconds`; size the broker for (results per second x expiry x result size)."""

    enabled: StrictBool = False
    expires_seconds: StrictInt = Field(default=3600, ge=60, le=7 * 24 * 3600)


class TaskServerSpec(Scheduling):
    type: Literal["celery"]
    name: ComponentName
    broker_resource_name: StrictStr
    replicas: StrictInt = Field(default=1, ge=0, le=MAX_REPLICAS)
    concurrency_per_replica: StrictInt = Field(default=1, ge=1, le=1024)
    namespace: Namespace | None = None
    image: Image = DEFAULT_WORKER_IMAGE
    app: AppPath = DEFAULT_WORKER_APP
    queues: list[QueueName] = Field(default_factory=lambda: ["celery"], min_length=1)
    max_task_seconds: StrictInt = Field(default=600, ge=1, le=7 * 24 * 3600)
    # Off by default: each recycle leaves the process slot empty for seconds (measured 1.5-3 s),
    # a stall every N tasks for a one-process pod. Memory-based recycling guards leaks instead.
    max_tasks_per_child: StrictInt | None = Field(default=None, ge=1)
    max_memory_per_child_mb: StrictInt | None = Field(default=None, ge=16)
    broker_wait_seconds: StrictInt = Field(default=300, ge=5, le=3600)
    # A task delivered this many times without finishing (its process killed: OOM, segfault)
    # goes to the broker's dead-letter list instead of looping forever.
    max_deliveries: StrictInt = Field(default=5, ge=1, le=1000)
    results: Results = Results()
    resources: ComputeResources | None = None
    autoscaling: Autoscaling = Autoscaling()

    def cross_field_problems(self) -> list[CrossFieldProblem]:
        """Problems no single field shows: (path within this entry, message, fix)."""
        problems: list[CrossFieldProblem] = []
        repeated = sorted({q for q in self.queues if self.queues.count(q) > 1})
        if repeated:
            problems.append((("queues",), f"lists {', '.join(map(repr, repeated))} more than once",
                             "list each queue once"))
        scaling = self.autoscaling
        if scaling.enabled and scaling.max_replicas < self.replicas:
            problems.append((("autoscaling", "max_replicas"),
                             f"is {scaling.max_replicas}, below `replicas` ({self.replicas}), the autoscaler's floor",
                             f"set max_replicas to at least {self.replicas}"))
        if scaling.enabled and scaling.cooldown_seconds is not None \
                and scaling.cooldown_seconds <= self.termination_grace_seconds:
            problems.append((("autoscaling", "cooldown_seconds"),
                             f"is {scaling.cooldown_seconds}s, not longer than the termination grace period "
                             f"({self.termination_grace_seconds}s), so scale-down could kill busy workers",
                             f"set it above {self.termination_grace_seconds}, or remove it for the default"))
        if self.resources is not None:
            problems += [(("resources", *path), message, fix) for path, message, fix in self.compute_resources.problems()]
        return problems

    @property
    def queue_length_target(self) -> int:
        return self.autoscaling.queue_length_per_replica or self.concurrency_per_replica

    @property
    def cooldown_seconds(self) -> int:
        return self.autoscaling.cooldown_seconds or self.termination_grace_seconds + 60

    @property
    def termination_grace_seconds(self) -> int:
        """Long enough for SIGTERM's warm shutdown to finish the longest task."""
        headroom = min(MAX_SHUTDOWN_HEADROOM_SECONDS, max(MIN_SHUTDOWN_HEADROOM_SECONDS, self.max_task_seconds))
        return self.max_task_seconds + headroom

    @property
    def visibility_timeout_seconds(self) -> int:
        """Longer than the grace period, so a running task is never handed to a second worker."""
        return 2 * self.termination_grace_seconds

    @property
    def process_memory_share_mb(self) -> int:
        """Each pool process's share of the container's memory limit, after the main process's."""
        limit = quantity_to_mib(str(self.compute_resources.memory_limit))
        return max(16, int((limit - WORKER_BASE_MEMORY_MIB) / self.concurrency_per_replica))

    @property
    def recycle_memory_mb(self) -> int:
        """A pool process is replaced after a task leaves it above this: explicit, or three
        quarters of its share of the container's memory limit (before the OOM killer acts)."""
        if self.max_memory_per_child_mb is not None:
            return self.max_memory_per_child_mb
        return max(16, int(self.process_memory_share_mb * 3 / 4))

    @property
    def compute_resources(self) -> ComputeResources:
        """Explicit resources, or ones that follow concurrency: one Celery process per slot."""
        c = self.concurrency_per_replica
        defaults = ComputeResources(
            cpu_request=f"{250 * c}m",
            memory_request=f"{256 * c + WORKER_BASE_MEMORY_MIB}Mi",
            cpu_limit=f"{1000 * c}m",
            memory_limit=f"{512 * c + WORKER_BASE_MEMORY_MIB}Mi",
        )
        return self.resources.over(defaults) if self.resources is not None else defaults
