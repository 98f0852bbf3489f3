"""The dead-letter queue of a RabbitMQ broker, declared by the workers that feed it.

The broker's policies send a task returned `max_deliveries` times to the `gru.dead-letter`
exchange (components/rabbitmq_broker/definitions.py). The exchange and its quorum queue are
declared here, when a worker starts, rather than in the broker's definitions: definitions
are imported as each node boots, before the cluster has formed, and a quorum queue declared
then gets one member for good. A worker starts once the whole cluster is ready, so the
queue is replicated to every node. Declaring is idempotent. Redis brokers keep their own
dead-letter list (deliveries.py).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals
from kombu import Exchange, Queue

from .settings import _is_amqp

DEAD_LETTER_EXCHANGE = "gru.dead-letter"
DEAD_LETTER_QUEUE = "gru.dead-letter"

logger = logging.getLogger(__name__)


def dead_letter_queue() -> Queue:
    exchange = Exchange(DEAD_LETTER_EXCHANGE, type="fanout", durable=True)
    return Queue(DEAD_LETTER_QUEUE, exchange, durable=True, queue_arguments={"x-queue-type": "quorum"})


def declare(app: Celery) -> None:
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=10)
        dead_letter_queue().bind(connection.default_channel).declare()


def install(app: Celery) -> None:
    """Declare the dead-letter queue when `app`'s worker starts, on an AMQP broker."""
    def on_worker_init(**_: Any) -> None:
        if _is_amqp(app.conf.broker_url):
            declare(app)
            logger.info("dead-letter queue %s declared", DEAD_LETTER_QUEUE)
    signals.worker_init.connect(on_worker_init, weak=False)
