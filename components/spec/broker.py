"""The validated shape of a `broker:` entry."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictBool, StrictInt, StrictStr

from .common import ComponentName, ComputeResources, Image, Namespace, Quantity, StrictModel

SUPPORTED_BROKER_TYPES = ("redis",)
# Redis 7.2 is the last BSD-licensed line; pinned so every rollout runs the same server.
DEFAULT_REDIS_IMAGE = "redis:7.2.7-alpine"


class BrokerStorage(StrictModel):
    """Where Redis keeps its append-only file. Off means queued tasks die with the pod."""

    enabled: StrictBool = True
    size: Quantity = "8Gi"
    storage_class: StrictStr | None = None


class BrokerSpec(StrictModel):
    type: Literal["redis"]
    name: ComponentName
    namespace: Namespace = "default"
    image: Image = DEFAULT_REDIS_IMAGE
    max_memory_mb: StrictInt = Field(default=512, ge=16, le=1_048_576)
    storage: BrokerStorage = BrokerStorage()
    resources: ComputeResources | None = None

    @property
    def compute_resources(self) -> ComputeResources:
        """Explicit resources, or ones sized from `max_memory_mb`.

        The memory limit leaves room for the fork that rewrites the append-only file
        (copy-on-write can touch every page) so a rewrite does not get the pod OOM-killed.
        """
        if self.resources is not None:
            return self.resources
        return ComputeResources(
            cpu_request="100m",
            memory_request=f"{self.max_memory_mb + self.max_memory_mb // 4 + 64}Mi",
            cpu_limit="1",
            memory_limit=f"{self.max_memory_mb * 2 + 64}Mi",
        )
