from .component import TaskServer

__all__ = ["TaskServer"]
