"""What the benchmarks that run both broker types share: each type's broker name in their
stacks, and starting it locally, retried in a fresh directory when a RabbitMQ node dies at
start. The failure the retry was written for, a free port taken before the node bound it, is
now avoided where ports are chosen (localrun/ports.py); the retry stays as a net."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from localrun import LocalStack

BROKERS = {"redis": "redis", "rabbitmq": "rabbit"}  # broker type -> the stack's broker name
ATTEMPTS = 3
T = TypeVar("T")


class BrokerStartError(Exception):
    pass


def start_broker(stack: LocalStack, broker: str) -> None:
    """Start the stack's broker of type `broker` (a RabbitMQ start that fails becomes BrokerStartError)."""
    try:
        stack.start_any_broker(BROKERS[broker])
    except RuntimeError as error:  # a node that died at start: the run goes again, fresh
        if broker == "redis":
            raise
        raise BrokerStartError(str(error)[:300]) from error


def with_fresh_starts(broker: str, run: Callable[[], T]) -> T:
    """`run()`, again in a fresh directory (up to ATTEMPTS times) when its broker did not start."""
    for attempt in range(ATTEMPTS):
        try:
            return run()
        except BrokerStartError as error:
            print(f"# {broker} did not start (attempt {attempt + 1}), again in a fresh directory: {error}")
    raise RuntimeError(f"{broker} did not start in {ATTEMPTS} attempts")
