"""Health files the worker keeps fresh, read by `python -m gru_worker.probe`.

`alive` is touched by a timer in the consumer's event loop: a stale file means the loop is
stuck, which a restart fixes. While the consumer reconnects to its broker the loop does not
turn, so `reconnecting` marks that state and the liveness probe accepts it: restarting a worker
cannot bring Redis back, and restarted workers would only crash-loop until it is (Celery gives
up after broker_connection_max_retries and exits by itself). `ready` exists only while the
consumer holds a broker connection and consumes, and the broker answered the last PING (each
beat sends one, bounded by a short timeout, so a broker that stops answering makes the worker
unready at the next beat while the loop still turns; a loop that stalls leaves both files to
go stale). Both cost the kubelet a `stat`, where `celery inspect ping` costs seconds of CPU
and a broker round trip.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import redis
from celery import Celery, bootsteps, signals

from .broker import redis_client

HEALTH_DIR_ENV = "GRU_HEALTH_DIR"
DEFAULT_HEALTH_DIR = "/var/run/gru-health"
BEAT_SECONDS = 10.0
PING_TIMEOUT_SECONDS = 3.0


def health_dir() -> Path:
    return Path(os.environ.get(HEALTH_DIR_ENV, DEFAULT_HEALTH_DIR))


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


class ConsumerHealth(bootsteps.StartStopStep):
    """Runs once the task consumer has started, i.e. connected and consuming."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._timer_ref: Any = None
        self._dir = health_dir()
        self._ping: redis.Redis | None = None

    def _beat(self) -> None:
        _touch(self._dir / "alive")
        if self._broker_answers():
            _touch(self._dir / "ready")
        else:
            (self._dir / "ready").unlink(missing_ok=True)

    def _broker_answers(self) -> bool:
        if self._ping is None:
            return True  # not a Redis broker: the consumer's connection is the signal
        try:
            return bool(self._ping.ping())
        except Exception:  # noqa: BLE001 - any failure means "not answering"
            return False

    def start(self, parent: Any) -> None:
        if self._ping is None:
            self._ping = redis_client(parent.app.conf.broker_url, PING_TIMEOUT_SECONDS)
        (self._dir / "reconnecting").unlink(missing_ok=True)
        self._beat()
        self._timer_ref = parent.timer.call_repeatedly(BEAT_SECONDS, self._beat)

    def _stop_beating(self) -> None:
        if self._timer_ref is not None:
            self._timer_ref.cancel()
            self._timer_ref = None
        (self._dir / "ready").unlink(missing_ok=True)

    def stop(self, parent: Any) -> None:
        """The consumer stops to reconnect (lost broker connection), or before shutdown."""
        self._stop_beating()
        _touch(self._dir / "reconnecting")

    def shutdown(self, parent: Any) -> None:
        self._stop_beating()
        (self._dir / "reconnecting").unlink(missing_ok=True)


def reset(**_: Any) -> None:
    """Clear the markers when the worker starts: the health volume outlives a container
    restart, and a stale `ready` or `alive` would pass the probes of a new container that hangs."""
    for name in ("alive", "ready", "reconnecting"):
        (health_dir() / name).unlink(missing_ok=True)


def install(app: Celery) -> None:
    """Add the health files to `app`'s workers (a custom app calls this too)."""
    app.steps["consumer"].add(ConsumerHealth)
    signals.worker_init.connect(reset, weak=False)
