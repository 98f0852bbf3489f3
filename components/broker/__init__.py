from .component import Broker, broker_url

__all__ = ["Broker", "broker_url"]
