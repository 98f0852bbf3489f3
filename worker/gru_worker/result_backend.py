"""Celery's Redis result backend, made to drop a result the full broker refuses.

Results share the broker's memory. When it is full, Redis refuses the SETEX of a result, and
Celery's stock backend raises: a refused STARTED state stops the task from running at all,
and a refused result fails the task after it ran. A result is worth less than the task: this
backend logs the refusal and lets the task run and be acknowledged.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery.backends.redis import RedisBackend

log = logging.getLogger(__name__)

BACKEND = "gru_worker.result_backend:FullBrokerSafeRedisBackend"


class FullBrokerSafeRedisBackend(RedisBackend):  # type: ignore[misc]
    def set(self, key: str, value: Any, expires: Any = None, **retry_policy: Any) -> Any:
        try:
            return super().set(key, value, expires, **retry_policy)
        except redis.exceptions.OutOfMemoryError:
            log.warning("broker full: %s not stored", key)
            return None


def backend_setting(url: str) -> str:
    """`result_backend` for a Redis URL: Celery's `<backend class>+<url>` form."""
    return f"{BACKEND}+{url}"
