"""The contract between a task server's manifests and the Celery app in its pods.

Options the `celery worker` command line accepts go on the command line; options only the
app can set travel as these environment variables, which the shipped worker app
(worker/gru_worker/settings.py) reads. A custom app reads them the same way.
"""

from __future__ import annotations

from ..stack_model import TaskServerSpec

BROKER_URL_ENV = "CELERY_BROKER_URL"
RESULT_BACKEND_ENV = "GRU_RESULT_BACKEND_URL"
VISIBILITY_TIMEOUT_ENV = "GRU_VISIBILITY_TIMEOUT"
ACKS_LATE_ENV = "GRU_ACKS_LATE"
REJECT_ON_WORKER_LOST_ENV = "GRU_REJECT_ON_WORKER_LOST"
HEALTH_DIR_ENV = "GRU_HEALTH_DIR"
MAX_DELIVERIES_ENV = "GRU_MAX_DELIVERIES"
# Each pool process's memory cap (gru_worker.memory_cap): a runaway task fails on its own.
TASK_MEMORY_LIMIT_ENV = "GRU_TASK_MEMORY_LIMIT_MB"
RESULT_EXPIRES_ENV = "GRU_RESULT_EXPIRES_SECONDS"

HEALTH_DIR = "/var/run/gru-health"
# The liveness file is touched by the worker's own timer; a file older than this means the
# worker's event loop is stuck.
LIVENESS_MAX_AGE_SECONDS = 60


def worker_args(spec: TaskServerSpec) -> list[str]:
    """`celery -A <app> worker ...` arguments, for exec form: SIGTERM reaches Celery itself."""
    args = [
        "-A", spec.app, "worker",
        "--loglevel=INFO",
        f"--concurrency={spec.concurrency_per_replica}",
        # One reserved task per process: long tasks never strand short ones behind them,
        # and the queue length the autoscaler sees is the real backlog.
        "--prefetch-multiplier=1",
        f"--queues={','.join(spec.queues)}",
        # $(POD_NAME) is expanded by the kubelet: each pod is a distinct Celery node.
        "--hostname=celery@$(POD_NAME)",
        # Gossip and mingle cost broker round trips per worker and buy nothing here. Event
        # heartbeats go out on a second connection with publisher confirms: on RabbitMQ, one
        # waiting for a confirm from a frozen node stalled the worker's whole event loop.
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    # Against leaks: replace a pool process that grew past its share of the memory limit.
    args.append(f"--max-memory-per-child={spec.recycle_memory_mb * 1024}")
    if spec.max_tasks_per_child is not None:
        args.append(f"--max-tasks-per-child={spec.max_tasks_per_child}")
    return args


def app_settings_env(spec: TaskServerSpec, visibility_timeout_seconds: int | None = None) -> dict[str, str]:
    """Settings only the Celery app can take, as plain (non-secret) environment values.

    `visibility_timeout_seconds` is the broker's (StackSpec.visibility_timeout_of), shared by all
    its task servers; alone, a task server's own.
    """
    return {
        VISIBILITY_TIMEOUT_ENV: str(visibility_timeout_seconds or spec.visibility_timeout_seconds),
        ACKS_LATE_ENV: "true",
        REJECT_ON_WORKER_LOST_ENV: "true",
        HEALTH_DIR_ENV: HEALTH_DIR,
        MAX_DELIVERIES_ENV: str(spec.max_deliveries),
        TASK_MEMORY_LIMIT_ENV: str(spec.process_memory_share_mb),
        **({RESULT_EXPIRES_ENV: str(spec.results.expires_seconds)} if spec.results.enabled else {}),
        "PYTHONUNBUFFERED": "1",
    }
