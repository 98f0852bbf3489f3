"""The worker's consumer on a gru RabbitMQ broker: Celery's, without the delayed-delivery step.

Celery's DelayedDelivery step declares the 28-level native delayed-delivery topology and binds
every task queue to it, at each (re)connection and synchronously: no task is consumed and no
heartbeat is sent meanwhile, and while a node is frozen each declaration waits on it until the
worker is disconnected again. The broker declares that topology itself, from its definitions
(components/rabbitmq_broker/topology.py), before any agent or worker connects; agents still
publish ETA and countdown tasks through it as Celery does.
"""

from __future__ import annotations

from celery.worker.consumer import Consumer as CeleryConsumer

DELAYED_DELIVERY_STEP = "celery.worker.consumer.delayed_delivery:DelayedDelivery"


class Consumer(CeleryConsumer):
    class Blueprint(CeleryConsumer.Blueprint):
        default_steps = [step for step in CeleryConsumer.Blueprint.default_steps if step != DELAYED_DELIVERY_STEP]
