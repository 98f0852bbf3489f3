"""Every broker type a stack file may declare, by its `type:`."""

from __future__ import annotations

from .broker import BrokerSpec
from .rabbitmq_broker import RabbitMQBrokerSpec

# A stack's broker: the model its `type:` selects.
AnyBrokerSpec = BrokerSpec | RabbitMQBrokerSpec
BROKER_MODELS: dict[str, type[BrokerSpec] | type[RabbitMQBrokerSpec]] = {
    "redis": BrokerSpec,
    "rabbitmq": RabbitMQBrokerSpec,
}
SUPPORTED_BROKER_TYPES = tuple(BROKER_MODELS)
