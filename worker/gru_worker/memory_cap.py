"""A memory cap per pool process: a task that runs away with memory fails on its own.

Without it the container's memory limit is the only bound. On a cgroup v2 node the kubelet
(1.28 and later, kubernetes PR #117793) sets `memory.oom.group`, so the OOM killer then kills
the whole container: the Celery main process and every task beside the runaway one, which
wait a visibility timeout for redelivery and have a delivery counted against them. On cgroup
v1 the kernel kills the largest process, the runaway task's, which is then delivered again
until `max_deliveries` dead-letters it.

With the cap, each pool process may map at most its share of the container's memory
(GRU_TASK_MEMORY_LIMIT_MB, set by the task server from its memory limit and concurrency) as
data (RLIMIT_DATA: the heap and private writable mappings, which is where Python allocates).
An allocation past it raises MemoryError inside the task: that task fails, once, and the
process, its neighbours and the container stay up. The main process is not capped.
"""

from __future__ import annotations

import os
import resource
from typing import Any

from celery import Celery, signals

TASK_MEMORY_LIMIT_ENV = "GRU_TASK_MEMORY_LIMIT_MB"


def apply_cap(env: dict[str, str] | None = None) -> int | None:
    """Set this process's RLIMIT_DATA soft limit from the environment; the bytes set, if any."""
    value = (env if env is not None else os.environ).get(TASK_MEMORY_LIMIT_ENV, "").strip()
    if not value:
        return None
    cap = int(value) * 1024 * 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
    return cap


def _on_process_init(**_: Any) -> None:
    apply_cap()


def install(app: Celery) -> None:
    # Each prefork pool process, at its start; the main process keeps no cap.
    signals.worker_process_init.connect(_on_process_init, weak=False)
