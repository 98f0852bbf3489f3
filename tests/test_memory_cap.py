"""The per-process memory cap (gru_worker.memory_cap): past its share, an allocation fails with
MemoryError inside the process; within it, allocations work; without the variable, no cap."""

from __future__ import annotations

import subprocess
import sys

from components.stack_model import TaskServerSpec
from components.task_server.worker_settings import TASK_MEMORY_LIMIT_ENV, app_settings_env

from .conftest import ROOT

PROBE = """
import sys
from gru_worker import memory_cap
print(memory_cap.apply_cap())
try:
    block = bytearray(int(sys.argv[1]) * 1024 * 1024)
    print("allocated")
except MemoryError:
    print("MemoryError")
"""


def _run(megabytes: int, cap_mb: str | None) -> list[str]:
    env = {"PYTHONPATH": str(ROOT / "worker"), **({TASK_MEMORY_LIMIT_ENV: cap_mb} if cap_mb is not None else {})}
    out = subprocess.run([sys.executable, "-c", PROBE, str(megabytes)], env=env, text=True, capture_output=True,
                         check=True, timeout=60)
    return out.stdout.split()


def test_an_allocation_past_the_cap_fails_inside_the_process() -> None:
    assert _run(400, "200") == [str(200 * 1024 * 1024), "MemoryError"]


def test_allocations_within_the_cap_work() -> None:
    assert _run(50, "200") == [str(200 * 1024 * 1024), "allocated"]


def test_no_variable_no_cap() -> None:
    assert _run(400, None) == ["None", "allocated"]


def test_the_cap_is_each_processs_share_of_the_memory_limit() -> None:
    spec = TaskServerSpec.model_validate({"type": "celery", "name": "t", "broker_resource_name": "redis",
                                          "concurrency_per_replica": 2})
    # 512 MiB per process plus the main process's 128 MiB: the default limit is 1152Mi.
    assert spec.compute_resources.memory_limit == "1152Mi"
    assert app_settings_env(spec)[TASK_MEMORY_LIMIT_ENV] == "512"
