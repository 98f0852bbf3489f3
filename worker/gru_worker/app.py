"""The default Celery app of a task server: `celery -A gru_worker.app worker`."""

from __future__ import annotations

import time

from celery import Celery

from . import dead_letter, deliveries, health
from .settings import settings_from_env

app = Celery("gru_worker")
app.conf.update(settings_from_env())
health.install(app)
deliveries.install(app)
dead_letter.install(app)


@app.task(name="gru.ping")
def ping() -> str:
    """A round trip through broker, worker and result backend."""
    return "pong"


@app.task(name="gru.sleep")
def sleep(seconds: float, token: str = "") -> str:
    """Occupies a worker process for `seconds`; returns `token` so callers can match results."""
    time.sleep(seconds)
    return token
