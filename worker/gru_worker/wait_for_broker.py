"""`python -m gru_worker.wait_for_broker`: the task server's init container.

Waits, bounded by BROKER_WAIT_SECONDS, until the broker in CELERY_BROKER_URL answers an
authenticated PING, saying what it waits for and what it last heard (never the URL: it holds
the password). Workers then never start ahead of their broker, after a node restart as much
as on a first deploy. It runs in the worker's own image, so a new broker image does not roll
every worker fleet.
"""

from __future__ import annotations

import os
import sys
import time

import redis

from .broker import redis_client

RETRY_SECONDS = 2.0
PING_TIMEOUT_SECONDS = 5.0


def main() -> int:
    url = os.environ["CELERY_BROKER_URL"]
    wait = float(os.environ.get("BROKER_WAIT_SECONDS", "300"))
    client = redis_client(url, PING_TIMEOUT_SECONDS)
    if client is None:
        print("CELERY_BROKER_URL is not a redis:// URL; this wait speaks Redis only", file=sys.stderr, flush=True)
        return 1
    kwargs = client.connection_pool.connection_kwargs
    where = f"{kwargs.get('host')}:{kwargs.get('port')}"
    print(f"waiting for broker {where} to answer an authenticated PING (up to {wait:.0f}s)", flush=True)
    deadline = time.monotonic() + wait
    while True:
        try:
            if client.ping():
                print(f"broker {where} is ready", flush=True)
                return 0
            reply = "no PONG"
        except redis.RedisError as error:
            reply = f"{type(error).__name__}: {error}"
        if time.monotonic() >= deadline:
            print(f"broker {where} did not answer within {wait:.0f}s (last reply: {reply}); giving up",
                  file=sys.stderr, flush=True)
            return 1
        print(f"broker not ready yet ({reply}); retrying in {RETRY_SECONDS:.0f}s", flush=True)
        time.sleep(RETRY_SECONDS)


if __name__ == "__main__":
    sys.exit(main())
