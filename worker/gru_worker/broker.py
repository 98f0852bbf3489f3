"""A short-lived, bounded Redis client on the task server's broker, for the worker's own checks
(health pings, delivery counts, the init container's wait), beside Celery's connections."""

from __future__ import annotations

import redis

REDIS_SCHEMES = ("redis://", "rediss://")


def redis_client(url: str | None, timeout: float) -> redis.Redis | None:
    """A client whose every connect and reply is bounded by `timeout`; None for a non-Redis broker."""
    if not url or not url.startswith(REDIS_SCHEMES):
        return None
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
