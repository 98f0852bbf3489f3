"""Counting what happened to tasks in a local run: which an agent had accepted, and how many
times each ran, read from the workers' own logs. Used by the end-to-end tests and by
benchmarks/failures.py alike."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from celery import Celery

from .runner import LocalStack

_SUCCEEDED = re.compile(r"Task gru\.sleep\[([0-9a-f-]+)\] succeeded")


def worker_names(stack: LocalStack, server: str) -> list[str]:
    return [p.name for p in stack._processes if p.name.startswith(f"{server}-local-") and not p.name.endswith("-init")]


def runs(stack: LocalStack, server: str) -> Counter[str]:
    """How many times each `gru.sleep` task id ran to success, from every worker's log."""
    counts: Counter[str] = Counter()
    names = set(worker_names(stack, server))
    # A pod started again (after a crash) appends to the same log: read each log once.
    logs = {process.log_path: process for process in stack._processes if process.name in names}
    for process in logs.values():
        counts.update(_SUCCEEDED.findall(process.log()))
    return counts


_SUCCEEDED_AT = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/[^\]]*\] "
                           r"Task gru\.sleep\[[0-9a-f-]+\] succeeded", re.MULTILINE)


def completions(stack: LocalStack, server: str) -> dict[str, list[float]]:
    """When each worker of `server` finished a `gru.sleep` task (wall clock, sorted), from
    the workers' own log lines."""
    out: dict[str, list[float]] = {}
    names = set(worker_names(stack, server))
    logs = {process.log_path: process for process in stack._processes if process.name in names}
    for process in logs.values():
        times = out.setdefault(process.name, [])
        for stamp in _SUCCEEDED_AT.findall(process.log()):
            times.append(time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[20:]) / 1000)
        times.sort()
    return out


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch in [start, end] with no entry of `times`: a consumer's stall."""
    inside = [start, *(t for t in times if start < t < end), end]
    return max(b - a for a, b in zip(inside, inside[1:], strict=False))


def wait_all_ran(stack: LocalStack, server: str, ids: list[str], timeout: float) -> Counter[str]:
    deadline = time.monotonic() + timeout
    while True:
        counts = runs(stack, server)
        if all(counts[i] for i in ids) or time.monotonic() > deadline:
            return counts
        time.sleep(0.5)


@dataclass
class Tally:
    accepted: int
    lost: list[str]
    duplicated: list[str]

    def line(self, name: str) -> str:
        return f"[{name}] accepted={self.accepted} lost={len(self.lost)} duplicated={len(self.duplicated)}"


def tally(sent: list[str], counts: Counter[str]) -> Tally:
    return Tally(len(sent), [i for i in sent if not counts[i]], [i for i in sent if counts[i] > 1])


class Publisher(threading.Thread):
    """An agent sending short `gru.sleep` tasks steadily; records the id of every publish the
    broker accepted (with publisher confirms on RabbitMQ, a reply to the push on Redis)."""

    def __init__(self, app: Celery, seconds: float = 0.2, every: float = 0.05,
                 options: list[dict[str, Any]] | None = None) -> None:
        super().__init__(daemon=True)
        self.app, self.seconds, self.every = app, seconds, every
        # Celery publish options (countdown, queue, ...), taken in turn, one per publish.
        self.options = options or [{}]
        self.confirmed: list[str] = []
        self.failed = 0
        # Every publish, accepted or not: (wall-clock start, seconds it took).
        self.publishes: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            options = self.options[len(self.publishes) % len(self.options)]
            task_id = uuid.uuid4().hex
            started = time.time()
            try:
                # A failed publish is the agent's to retry, and is not counted as accepted.
                self.app.send_task("gru.sleep", args=[self.seconds, task_id], task_id=task_id, retry=True,
                                   retry_policy={"max_retries": 30, "interval_start": 0.2, "interval_step": 0.2,
                                                 "interval_max": 1}, **options)
                self.confirmed.append(task_id)
            except Exception:  # noqa: BLE001 - counted: an unconfirmed publish is not an accepted task
                self.failed += 1
            self.publishes.append((started, time.time() - started))
            time.sleep(self.every)
