"""kombu's Redis transport, kept working while the broker is full.

With `maxmemory-policy noeviction`, a full Redis refuses every command that may add memory,
and every command queued inside MULTI. kombu's stock transport then kills the worker:
the ack (ZREM + HDEL in a transaction) is refused, the unacked-sweep lock (SET NX) is
refused, and a queue declaration (its LLEN count, inside MULTI, and its binding's SADD) is
refused. The workers, the only clients that can drain the backlog, would crash-loop exactly
when they are needed. This transport:

- acks with plain ZREM/HDEL (no MULTI): deletes are allowed on a full broker and free memory;
- skips an unacked sweep the broker refuses (the next sweep runs a few seconds later);
- counts a declared queue's messages with plain LLENs: kombu sends them inside MULTI, and the
  refusal ended a worker starting on a full broker before it consumed anything;
- consumes even when the broker refuses to store a new queue binding (the worker's own
  control queue, named after its host, is new at every pod's first start): consuming needs
  no binding, BRPOP reads a queue by name and control messages come by PUBSUB. The binding is
  stored from the event loop once there is room;
- retries the record of a delivered task (what redelivers it if this worker dies) for up to
  RECORD_RETRY_SECONDS: the BRPOP that delivered it has just freed about as much memory as the
  record needs (a little less: the record's command also fills an input buffer on the
  server). If the broker is still full after that, the task runs unrecorded, with a
  warning in the log: it is lost only if this worker also dies before finishing it. A worker
  that stops before running it (a warm shutdown) puts it back from memory, retrying while the
  broker refuses for up to RESTORE_RETRY_SECONDS.

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
# Within the 5 s the grace period gives beyond the longest task.
RESTORE_RETRY_SECONDS = 4.0
_RETRY_PAUSE_SECONDS = 0.05
T = TypeVar("T")


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
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Deliveries the full broker refused to record: only this process holds their message.
        self._unrecorded: set[str] = set()

    def append(self, message: Any, delivery_tag: str) -> None:
        try:
            _retry_while_full(lambda: super(QoS, self).append(message, delivery_tag), RECORD_RETRY_SECONDS)
        except redis.exceptions.OutOfMemoryError:
            log.warning("broker full for %.0fs: task message %s runs without a redelivery record "
                        "(lost only if this worker dies before it finishes)", RECORD_RETRY_SECONDS, delivery_tag)
            # The in-process bookkeeping only (kombu's virtual QoS), so the ack still works.
            kombu_redis.virtual.QoS.append(self, message, delivery_tag)
            self._unrecorded.add(delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        self._unrecorded.discard(delivery_tag)  # ran: it must not be put back
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        super().reject(delivery_tag, requeue=requeue)  # a requeue goes through restore_by_tag
        self._unrecorded.discard(delivery_tag)

    def restore_by_tag(self, tag: str, client: Any = None, leftmost: bool = False) -> None:
        """Put a delivered, unacked message back in its queue (warm shutdown, requeue)."""
        if tag not in self._unrecorded:
            return super().restore_by_tag(tag, client=client, leftmost=leftmost)
        # kombu restores from the record, and there is none: a message taken on a full broker
        # and not yet run when the worker stops would vanish. It is put back from memory.
        message = self._delivered.get(tag)
        self._unrecorded.discard(tag)
        if message is None:
            return None
        info = message.delivery_info

        def push() -> None:
            with self.channel.conn_or_acquire(client) as conn:
                pipe = conn.pipeline(transaction=False)  # a write on its own, never in MULTI
                self.channel._do_restore_message(message._raw, info["exchange"], info["routing_key"],
                                                 pipe, leftmost)
                pipe.execute()

        try:
            _retry_while_full(push, RESTORE_RETRY_SECONDS)
        except redis.exceptions.OutOfMemoryError:
            log.error("broker full for %.0fs: task message %s, never recorded, could not be put back "
                      "and is lost", RESTORE_RETRY_SECONDS, tag)
        return None

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


Binding = tuple[str, str, str | None, str]  # exchange, routing key, pattern, queue
FULL_LOG_INTERVAL_SECONDS = 60.0


class Channel(kombu_redis.Channel):
    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._unstored_bindings: dict[Binding, None] = {}  # ordered, as they were declared
        self._full_logged_at = -FULL_LOG_INTERVAL_SECONDS
        super().__init__(*args, **kwargs)

    def _size(self, queue: str) -> int:
        # No MULTI: a full Redis refuses every command queued inside one, LLEN alone it allows.
        # The count only informs the declaration's reply, so one snapshot is not needed.
        with self.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            for pri in self.priority_steps:
                pipe.llen(self._q_for_pri(queue, pri))
            return sum(pipe.execute())

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        # A passive declaration: EXISTS, without MULTI for the same reason.
        with self.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            for pri in self.priority_steps:
                pipe.exists(self._q_for_pri(queue, pri))
            return any(pipe.execute())

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str | None, queue: str) -> None:
        try:
            super()._queue_bind(exchange, routing_key, pattern, queue)
        except redis.exceptions.OutOfMemoryError:
            key = self.keyprefix_queue % (exchange,)
            member = self.sep.join([routing_key or "", pattern or "", queue or ""])
            with self.conn_or_acquire() as client:
                if client.sismember(key, member):
                    return  # declared before: nothing to add
            # kombu's _queue_bind has recorded the fanout (PUBSUB) route before writing, and
            # Celery's publishers store a task queue's binding themselves before they publish,
            # which a full broker refuses anyway: the worker consumes now, stores it later.
            self._unstored_bindings[(exchange, routing_key, pattern, queue)] = None
            log.warning("broker full: binding of queue %r to exchange %r not stored yet; consuming "
                        "anyway, stored once there is room", queue, exchange)

    def _store_unstored_bindings(self) -> None:
        for binding in list(self._unstored_bindings):
            try:
                super()._queue_bind(*binding)
            except redis.exceptions.OutOfMemoryError:
                return  # still full: retried at the next call
            del self._unstored_bindings[binding]
            log.info("binding of queue %r to exchange %r stored", binding[3], binding[0])

    def maybe_refresh_binding_expiry(self) -> None:
        """Called every second from the event loop (kombu's MultiChannelPoller)."""
        try:
            self._store_unstored_bindings()
            super().maybe_refresh_binding_expiry()
        except redis.exceptions.OutOfMemoryError:
            # kombu would log this with a traceback every second the broker stays full.
            now = time.monotonic()
            if now - self._full_logged_at >= FULL_LOG_INTERVAL_SECONDS:
                self._full_logged_at = now
                log.warning("broker full: binding refresh refused, retried every second")

    def get_table(self, exchange: str) -> list[tuple[str, ...]]:
        # Routing through a named exchange reads its bindings from Redis: one this channel
        # declared but could not store must still route this channel's publishes.
        table = super().get_table(exchange)
        for bound, routing_key, pattern, queue in self._unstored_bindings:
            row = (routing_key or "", pattern or "", queue or "")
            if bound == exchange and row not in table:
                table.append(row)
        return table

    def _delete(self, queue: str, exchange: str, routing_key: str, pattern: str | None, *args: Any,
                **kwargs: Any) -> None:
        # A deleted queue's binding must not be stored afterwards.
        self._unstored_bindings.pop((exchange, routing_key, pattern, queue), None)
        super()._delete(queue, exchange, routing_key, pattern, *args, **kwargs)


class Transport(kombu_redis.Transport):
    Channel = Channel
