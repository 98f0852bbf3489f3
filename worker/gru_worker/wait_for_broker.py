"""`python -m gru_worker.wait_for_broker`: the task server's init container.

Waits, bounded by BROKER_WAIT_SECONDS, until the broker in CELERY_BROKER_URL accepts an
authenticated request: a Redis PING, or an AMQP connection (login and virtual host open).
It says what it waits for and what it last heard (never the URL: it holds the password).
Workers then never start ahead of their broker, after a node restart as much as on a first
deploy. It runs in the worker's own image, so a new broker image does not roll every fleet.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import redis
from kombu import Connection

from .broker import redis_client

RETRY_SECONDS = 2.0
PING_TIMEOUT_SECONDS = 5.0
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")


def _redis_check(url: str) -> Callable[[], str | None]:
    client = redis_client(url, PING_TIMEOUT_SECONDS)
    assert client is not None

    def check() -> str | None:
        try:
            return None if client.ping() else "no PONG"
        except redis.RedisError as error:
            return f"{type(error).__name__}: {error}"
    return check


def _amqp_check(url: str) -> Callable[[], str | None]:
    def check() -> str | None:
        connection = Connection(url, connect_timeout=PING_TIMEOUT_SECONDS)
        try:
            connection.connect()  # TCP, login and the virtual host: what a worker needs
            return None
        except Exception as error:  # noqa: BLE001 - any failure is "not ready yet", reported below
            return f"{type(error).__name__}: {error}"
        finally:
            connection.release()
    return check


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # PID 1 of the init container: the kernel ignores a signal PID 1 has no handler for, so
    # without this a deleted pod would wait out its grace period (up to BROKER_WAIT_SECONDS).
    sys.exit(128 + signum)


def main() -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    url = os.environ["CELERY_BROKER_URL"]
    wait = float(os.environ.get("BROKER_WAIT_SECONDS", "300"))
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port}"
    if parts.scheme in ("redis", "rediss"):
        check, what = _redis_check(url), "answer an authenticated PING"
    elif parts.scheme in AMQP_SCHEMES:
        check, what = _amqp_check(url), "accept an authenticated AMQP connection"
    else:
        print(f"CELERY_BROKER_URL has scheme {parts.scheme!r}; this wait speaks Redis and AMQP only",
              file=sys.stderr, flush=True)
        return 1
    print(f"waiting for broker {where} to {what} (up to {wait:.0f}s)", flush=True)
    deadline = time.monotonic() + wait
    while True:
        reply = check()
        if reply is None:
            print(f"broker {where} is ready", flush=True)
            return 0
        if time.monotonic() >= deadline:
            print(f"broker {where} did not answer within {wait:.0f}s (last reply: {reply}); giving up",
                  file=sys.stderr, flush=True)
            return 1
        print(f"broker not ready yet ({reply}); retrying in {RETRY_SECONDS:.0f}s", flush=True)
        time.sleep(RETRY_SECONDS)


if __name__ == "__main__":
    sys.exit(main())
