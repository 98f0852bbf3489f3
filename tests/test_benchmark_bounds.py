"""The bounds benchmarks/fleet.py measures efficiency against."""

from __future__ import annotations

import sys

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import fleet  # noqa: E402


def test_bounds_of_the_default_workload() -> None:
    work = fleet.durations(1000, 0.02, 2.0)
    # 100 indivisible 2 s tasks on 32 slots need 4 rounds: 8.0 s, though the average load is 6.8 s.
    assert fleet.optimum_makespan(work, 32) == (8.0, True)
    assert round(sum(work) / 32, 2) == 6.81
    assert round(fleet.fifo_makespan(work, 32), 2) == 8.36


def test_fifo_takes_tasks_in_order_and_the_optimum_reorders() -> None:
    # FIFO on 2 slots: [1, 1] first, then 3 on one slot: 4 s. The optimum puts 3 alone: 3 s.
    assert fleet.fifo_makespan([1, 1, 3, 1], 2) == 4
    assert fleet.optimum_makespan([1, 1, 3, 1], 2) == (3, True)


def test_completion_times_come_from_the_workers_succeeded_lines() -> None:
    # The worker's own format (a pool process's INFO line), with its millisecond timestamp in UTC.
    log = (
        "[2026-11-24 11:04:01,112: INFO/MainProcess] Task gru.sleep[42a82f03-ad9a-42f8-b624-99b3eb205392] received\n"
        "[2026-11-24 11:04:01,113: INFO/ForkPoolWorker-2] Task gru.sleep[42a82f03-ad9a-42f8-b624-99b3eb205392] "
        "succeeded in 0.0004201320007268805s: 'x'\n"
        "[2026-11-24 11:04:02,500: ERROR/ForkPoolWorker-1] Task gru.sleep[b8348c4e-8de5-4c91-bcfd-30d68dd43a74] "
        "raised unexpected: ValueError()\n"
    )
    done, failed = fleet.completions([log])
    assert done == {"42a82f03-ad9a-42f8-b624-99b3eb205392": 1795518241.113}
    assert failed == {"b8348c4e-8de5-4c91-bcfd-30d68dd43a74"}
