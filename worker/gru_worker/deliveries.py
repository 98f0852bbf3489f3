"""A cap on deliveries: a poison task goes to a dead-letter list instead of looping forever.

With late acks and reject-on-worker-lost, a task whose pool process dies (the OOM killer, a
segfault) goes back to its queue and is delivered again, forever. The worker counts each
delivery of a task in the broker (`gru:deliveries:<task id>:<retries>`, so a task's own
retries start afresh); past GRU_MAX_DELIVERIES the task is not run: it is recorded in the
list `gru:dead-letter` (JSON: id, name, queue, deliveries, time; never its arguments, which
may hold secrets) and revoked, which acknowledges its message. `gru:dead-letter:count`
counts them all. Redis brokers only.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import Celery, signals
from celery.worker import state

from .broker import redis_client

DEAD_LETTER_KEY = "gru:dead-letter"
DEAD_LETTER_COUNT_KEY = "gru:dead-letter:count"
MAX_DEAD_LETTERS = 10_000
DELIVERY_KEY_TTL_SECONDS = 7 * 24 * 3600
CLIENT_TIMEOUT_SECONDS = 5.0


def delivery_key(task_id: str, retries: int) -> str:
    return f"gru:deliveries:{task_id}:{retries}"


class DeliveryCap:
    def __init__(self, app: Celery, max_deliveries: int) -> None:
        self.app = app
        self.max_deliveries = max_deliveries
        self._client: redis.Redis | None = None

    def client(self) -> redis.Redis | None:
        if self._client is None:
            self._client = redis_client(self.app.conf.broker_url, CLIENT_TIMEOUT_SECONDS)
        return self._client

    def on_received(self, request: Any = None, **_: Any) -> None:
        client = self.client()
        if client is None or request is None:
            return
        retries = int(getattr(request, "request_dict", {}).get("retries") or 0)
        key = delivery_key(request.id, retries)
        try:
            pipe = client.pipeline()
            pipe.incr(key)
            pipe.expire(key, DELIVERY_KEY_TTL_SECONDS)
            deliveries = int(pipe.execute()[0])
        except redis.RedisError:
            return  # counting is best effort: a broker hiccup must not stop work
        if deliveries <= self.max_deliveries:
            return
        entry = {"id": request.id, "name": request.name, "queue": request.delivery_info.get("routing_key"),
                 "deliveries": deliveries - 1, "time": time.time()}
        try:
            pipe = client.pipeline()
            pipe.lpush(DEAD_LETTER_KEY, json.dumps(entry))
            pipe.ltrim(DEAD_LETTER_KEY, 0, MAX_DEAD_LETTERS - 1)
            pipe.incr(DEAD_LETTER_COUNT_KEY)
            pipe.delete(key)
            pipe.execute()
        except redis.RedisError:
            return
        # A revoked request is acknowledged instead of run (Request.execute_using_pool).
        state.revoked.add(request.id)


def install(app: Celery) -> None:
    """Cap deliveries for `app`'s workers at GRU_MAX_DELIVERIES (a custom app calls this too)."""
    limit = int(os.environ.get("GRU_MAX_DELIVERIES", "5"))
    cap = DeliveryCap(app, limit)
    signals.task_received.connect(cap.on_received, weak=False)
