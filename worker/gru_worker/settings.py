"""Celery settings from the environment variables a task server's pods carry.

A custom Celery app picks them up with:

    from gru_worker.settings import settings_from_env
    app.conf.update(settings_from_env())
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

_TRUE = {"1", "true", "yes", "on"}


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    return default if value is None else value.strip().lower() in _TRUE


def settings_from_env(env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    visibility_timeout = int(env.get("GRU_VISIBILITY_TIMEOUT", "3600"))
    transport_options = {
        # Must outlast the longest task, or Redis hands a running task to a second worker.
        "visibility_timeout": visibility_timeout,
        # kombu sweeps for tasks of dead workers only every interval x throttle seconds
        # (100 s by default), on top of the visibility timeout. Sweep every eighth of the
        # timeout (1 to 60 s), every time: one ZRANGE per worker per sweep.
        "unacked_restore_interval": max(1, min(60, visibility_timeout // 8)),
        "unacked_restore_throttle": 1,
    }
    settings: dict[str, Any] = {
        "broker_url": env.get("CELERY_BROKER_URL"),
        "broker_transport_options": transport_options,
        # Acknowledge after the task ran: a task whose worker died is delivered again.
        "task_acks_late": _flag(env, "GRU_ACKS_LATE", True),
        # ...including when the pool process itself is killed (OOM, SIGKILL).
        "task_reject_on_worker_lost": _flag(env, "GRU_REJECT_ON_WORKER_LOST", True),
        "worker_prefetch_multiplier": 1,
        # A task whose broker connection dropped will be redelivered; running it on would
        # execute it twice.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "broker_connection_retry_on_startup": True,
        "task_track_started": True,
        "result_expires": 24 * 3600,
    }
    backend = env.get("GRU_RESULT_BACKEND_URL")
    if backend:
        settings["result_backend"] = backend
        settings["result_backend_transport_options"] = {"visibility_timeout": visibility_timeout}
    return settings
