"""The topology a RabbitMQ broker declares (components/rabbitmq_broker/topology.py) is exactly
what kombu and Celery declare themselves, argument for argument: RabbitMQ refuses a
declaration that differs from an existing queue, so any drift would break either the workers'
and agents' own declarations or the broker's import of its definitions."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

from celery import Celery
from kombu.transport.base import to_rabbitmq_queue_arguments
from kombu.transport.native_delayed_delivery import (
    bind_queue_to_native_delayed_delivery_exchange,
    declare_native_delayed_delivery_exchanges_and_queues,
)

from components.rabbitmq_broker.topology import delayed_delivery, task_queue, topology
from gru_worker.settings import settings_from_env

_DeclareOk = namedtuple("_DeclareOk", "queue message_count consumer_count")


class RecordingChannel:
    """What a kombu entity sends the broker, in the definitions file's terms."""

    def __init__(self) -> None:
        self.exchanges: list[dict[str, Any]] = []
        self.queues: list[dict[str, Any]] = []
        self.bindings: list[dict[str, Any]] = []
        self.connection = self

    def channel(self) -> RecordingChannel:
        return self

    def prepare_queue_arguments(self, arguments: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return to_rabbitmq_queue_arguments(arguments, **kwargs)  # as kombu's pyamqp channel does

    def exchange_declare(self, exchange: str, type: str, durable: bool, auto_delete: bool,  # noqa: A002
                         arguments: dict[str, Any] | None = None, nowait: bool = False,
                         passive: bool = False) -> None:
        assert not passive
        self.exchanges.append({"name": exchange, "vhost": "/", "type": type, "durable": durable,
                               "auto_delete": auto_delete, "internal": False, "arguments": arguments or {}})

    def queue_declare(self, queue: str, passive: bool, durable: bool, exclusive: bool, auto_delete: bool,
                      arguments: dict[str, Any] | None, nowait: bool = False) -> _DeclareOk:
        assert not passive and not exclusive
        self.queues.append({"name": queue, "vhost": "/", "durable": durable, "auto_delete": auto_delete,
                            "arguments": arguments or {}})
        return _DeclareOk(queue, 0, 0)

    def queue_bind(self, queue: str, exchange: str, routing_key: str = "", arguments: dict[str, Any] | None = None,
                   nowait: bool = False) -> None:
        self.bindings.append({"source": exchange, "vhost": "/", "destination": queue, "destination_type": "queue",
                              "routing_key": routing_key, "arguments": arguments or {}})

    def exchange_bind(self, destination: str, source: str = "", routing_key: str = "", nowait: bool = False,
                      arguments: dict[str, Any] | None = None) -> None:
        self.bindings.append({"source": source, "vhost": "/", "destination": destination,
                              "destination_type": "exchange", "routing_key": routing_key,
                              "arguments": arguments or {}})


def _key(entry: dict[str, Any]) -> str:
    return repr(sorted(entry.items()))


def same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    return sorted(map(_key, a)) == sorted(map(_key, b))


def test_the_delayed_delivery_topology_is_kombus_own() -> None:
    channel = RecordingChannel()
    declare_native_delayed_delivery_exchanges_and_queues(channel, "quorum")  # type: ignore[arg-type]
    exchanges, queues, bindings = delayed_delivery()
    assert len(queues) == 28
    assert same(exchanges, channel.exchanges)
    assert same(queues, channel.queues)
    assert same(bindings, channel.bindings)


def test_a_task_queue_is_what_a_worker_and_an_agent_declare() -> None:
    app = Celery("agent")
    app.conf.update(settings_from_env({"CELERY_BROKER_URL": "amqp://agent:x@broker:5672//"}))
    for name in ("celery", "agents.long"):
        queue = app.amqp.queues[name]  # what Celery makes of a queue named on --queues or in send_task
        channel = RecordingChannel()
        queue.bind(channel).declare()
        # What Celery's DelayedDelivery step adds to bind it to the delivery exchange.
        bind_queue_to_native_delayed_delivery_exchange(channel, queue)  # type: ignore[arg-type]
        exchanges, queues, bindings = task_queue(name)
        assert same(exchanges, channel.exchanges), name
        assert same(queues, channel.queues), name
        assert same(bindings, channel.bindings), name


def test_each_queue_is_declared_once() -> None:
    document = topology(["celery", "b", "celery"])
    names = [q["name"] for q in document["queues"]]
    assert len(names) == len(set(names)) == 30
