"""The exchanges, queues and bindings Celery uses on this broker, declared by the broker itself.

Celery declares them too, from every new connection: the workers their task queues and the
28-level native delayed-delivery topology (ETA and countdown tasks on quorum queues), the
agents the queue they publish to. Left to Celery alone, two things go wrong:

- A countdown task published before a worker has finished its first declarations is routed
  nowhere: confirmed to the agent, then dropped (or refused, before any worker has started).
- A worker that reconnects re-declares all of it, synchronously, before it consumes again:
  while a node is frozen every declaration waits on it, the worker sends no heartbeats and
  is disconnected again.

Here they are part of the definitions the sidecar imports once the cluster has formed, before
its pod is ready, so they exist before any agent can connect (through the Service); the workers skip the delayed-delivery step
(gru_worker.consumer). Each entry is what kombu declares, argument for argument
(`kombu.transport.native_delayed_delivery` and Celery's queues of a `topic` default exchange
on quorum queues): RabbitMQ refuses a declaration that differs from an existing queue's, and a
test holds the two to the same.
"""

from __future__ import annotations

from typing import Any

from .rabbitmq_config import VHOST

# kombu.transport.native_delayed_delivery: 28 levels, one bit of the delay (in seconds) each.
DELAY_LEVELS = 28
DELIVERY_EXCHANGE = "celery_delayed_delivery"


def level_name(level: int) -> str:
    return f"celery_delayed_{level}"


def _exchange(name: str) -> dict[str, Any]:
    return {"name": name, "vhost": VHOST, "type": "topic", "durable": True, "auto_delete": False,
            "internal": False, "arguments": {}}


def _queue(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "vhost": VHOST, "durable": True, "auto_delete": False, "arguments": arguments}


def _binding(source: str, destination: str, destination_type: str, routing_key: str) -> dict[str, Any]:
    return {"source": source, "vhost": VHOST, "destination": destination, "destination_type": destination_type,
            "routing_key": routing_key, "arguments": {}}


def delayed_delivery() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Level n holds a message 2^n s when bit n of its routing key is 1, and passes it on to
    level n-1 when it is 0; level 0 hands it to the delivery exchange."""
    top = DELAY_LEVELS - 1
    exchanges = [_exchange(level_name(level)) for level in range(top, -1, -1)]
    queues = [_queue(level_name(level), {
        "x-queue-type": "quorum",
        "x-overflow": "reject-publish",
        "x-message-ttl": 2 ** level * 1000,
        "x-dead-letter-exchange": level_name(level - 1) if level > 0 else DELIVERY_EXCHANGE,
        "x-dead-letter-strategy": "at-least-once",
    }) for level in range(top, -1, -1)]
    bindings = [_binding(level_name(level), level_name(level), "queue", "*." * (top - level) + "1.#")
                for level in range(top, -1, -1)]
    bindings += [_binding(level_name(level), level_name(level - 1), "exchange", "*." * (top - level) + "0.#")
                 for level in range(top, 0, -1)]
    exchanges.append(_exchange(DELIVERY_EXCHANGE))
    bindings.append(_binding(level_name(0), DELIVERY_EXCHANGE, "exchange", "*." * top + "0.#"))
    return exchanges, queues, bindings


def task_queue(name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """A task queue as Celery makes it (gru_worker.settings: quorum queues, topic exchanges):
    an exchange of its name bound to it by its name, and its route back from delayed delivery."""
    delayed_key = f"#.{name}"
    return ([_exchange(name)], [_queue(name, {"x-queue-type": "quorum"})],
            [_binding(name, name, "queue", name),
             _binding(DELIVERY_EXCHANGE, name, "exchange", delayed_key),
             _binding(name, name, "queue", delayed_key)])


def topology(task_queues: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The definitions' exchanges, queues and bindings for these task queues."""
    exchanges, queues, bindings = delayed_delivery()
    for name in sorted(set(task_queues)):
        its_exchanges, its_queues, its_bindings = task_queue(name)
        exchanges += its_exchanges
        queues += its_queues
        bindings += its_bindings
    return {"exchanges": exchanges, "queues": queues, "bindings": bindings}
