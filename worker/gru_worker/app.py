"""The default Celery app of a task server: `celery -A gru_worker.app worker`."""

from __future__ import annotations

import time

from celery import Celery

from . import dead_letter, deliveries, health, memory_cap
from .settings import settings_from_env

app = Celery("gru_worker")
app.conf.update(settings_from_env())
health.install(app)
deliveries.install(app)
dead_letter.install(app)
memory_cap.install(app)


@app.task(name="gru.ping")
def ping() -> str:
    """A round trip through broker, worker and result backend."""
    return "pong"


@app.task(name="gru.sleep")
def sleep(seconds: float, token: str = "") -> str:
    """Occupies a worker process for `seconds`; returns `token` so callers can match results."""
    time.sleep(seconds)
    return token


@app.task(name="gru.allocate")
def allocate(megabytes: int, seconds: float = 0.0, token: str = "") -> str:
    """Holds `megabytes` of memory for `seconds`: checks a fleet's memory bounds (a task past
    its process's share fails with MemoryError; see memory_cap). Returns `token`."""
    block = bytearray(megabytes * 1024 * 1024)
    for offset in range(0, len(block), 4096):  # touched, so it is resident, not just reserved
        block[offset] = 1
    time.sleep(seconds)
    return token
