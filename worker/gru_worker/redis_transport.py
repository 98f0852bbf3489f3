"""kombu's Redis transport, kept working while the broker is full.

With `maxmemory-policy noeviction`, a full Redis refuses every command that may add memory,
and every command queued inside MULTI. kombu's stock transport then kills the worker:
the ack (ZREM + HDEL in a transaction) is refused, the unacked-sweep lock (SET NX) is
refused, and a queue binding (SADD) is refused. The workers, the only clients that can drain
the backlog, would crash-loop exactly when they are needed. This transport:

- acks with plain ZREM/HDEL (no MULTI): deletes are allowed on a full broker and free memory;
- skips an unacked sweep the broker refuses (the next sweep runs a few seconds later);
- treats a refused binding that already exists as done, and a refused new one as a
  connection error, so Celery retries the connection with back-off instead of exiting;
- retries the record of a delivered task (what redelivers it if this worker dies) for up to
  RECORD_RETRY_SECONDS: the BRPOP that delivered it has just freed as much memory as the
  record needs. If the broker is still full after that, the task runs unrecorded, with a
  warning in the log: it is lost only if this worker also dies before finishing it.

Selected by `broker_transport` in gru_worker.settings for redis:// and rediss:// brokers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)

RECORD_RETRY_SECONDS = 5.0
_RETRY_PAUSE_SECONDS = 0.05
T = TypeVar("T")


class BrokerFull(redis.exceptions.ConnectionError):
    """A connection error to kombu and Celery: retried with back-off, never fatal."""


def _retry_while_full(call: Callable[[], T], seconds: float) -> T:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except redis.exceptions.OutOfMemoryError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(_RETRY_PAUSE_SECONDS)


class QoS(kombu_redis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        try:
            _retry_while_full(lambda: super(QoS, self).append(message, delivery_tag), RECORD_RETRY_SECONDS)
        except redis.exceptions.OutOfMemoryError:
            log.warning("broker full for %.0fs: task message %s runs without a redelivery record "
                        "(lost only if this worker dies before it finishes)", RECORD_RETRY_SECONDS, delivery_tag)
            # The in-process bookkeeping only (kombu's virtual QoS), so the ack still works.
            kombu_redis.virtual.QoS.append(self, message, delivery_tag)

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        if pipe is not None:  # inside restore_by_tag's own transaction
            return super()._remove_from_indices(delivery_tag, pipe)
        # No MULTI: Redis refuses anything queued in MULTI when full, deletes alone it allows.
        with self.channel.conn_or_acquire() as client:
            return client.pipeline(transaction=False).zrem(self.unacked_index_key, delivery_tag) \
                .hdel(self.unacked_key, delivery_tag)

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        try:
            super().restore_visible(start=start, num=num, interval=interval)
        except redis.exceptions.OutOfMemoryError:
            log.warning("broker full: unacked sweep skipped, retried at the next interval")


class Channel(kombu_redis.Channel):
    QoS = QoS

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        try:
            super()._queue_bind(exchange, routing_key, pattern, queue)
        except redis.exceptions.OutOfMemoryError as full:
            key = self.keyprefix_queue % (exchange,)
            member = self.sep.join([routing_key or "", pattern or "", queue or ""])
            with self.conn_or_acquire() as client:
                if client.sismember(key, member):
                    return  # declared before: nothing to add
            raise BrokerFull(f"broker full: cannot declare queue {queue!r} yet ({full})") from full


class Transport(kombu_redis.Transport):
    Channel = Channel
