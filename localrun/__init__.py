"""Run a rendered stack's containers as local processes on 127.0.0.1 (see runner.py)."""

from .runner import TRANSLATIONS, LocalProcess, LocalStack, free_port

__all__ = ["TRANSLATIONS", "LocalProcess", "LocalStack", "free_port"]
