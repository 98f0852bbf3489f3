from .component import RedisBroker, broker_url

__all__ = ["RedisBroker", "broker_url"]
