from .component import RabbitMQBroker, amqp_url

__all__ = ["RabbitMQBroker", "amqp_url"]
