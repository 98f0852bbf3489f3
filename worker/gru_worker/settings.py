"""Celery settings from the environment variables a task server's pods carry.

A custom Celery app picks them up with:

    from gru_worker.settings import settings_from_env
    app.conf.update(settings_from_env())
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from . import result_backend

_TRUE = {"1", "true", "yes", "on"}


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    return default if value is None else value.strip().lower() in _TRUE


# A broker that vanishes without closing TCP (a lost node, a frozen process) must fail calls,
# not hang them: bounded reads and connects, TCP keepalive, and a ping on idle connections.
# The read timeout stays above kombu's 1 s BRPOP wait, and short: the worker's event loop
# makes some calls synchronously (the unacked sweep), and a frozen broker must not stall it.
SOCKET_TIMEOUT_SECONDS = 5
CONNECTION_OPTIONS: dict[str, Any] = {
    "socket_timeout": SOCKET_TIMEOUT_SECONDS,
    "socket_connect_timeout": 5,
    "socket_keepalive": True,
    # A peer that is gone (not merely frozen) is found after about 60 + 3 x 10 s.
    "socket_keepalive_options": {socket.TCP_KEEPIDLE: 60, socket.TCP_KEEPINTVL: 10, socket.TCP_KEEPCNT: 3},
    "retry_on_timeout": False,  # a retry would double each stall; kombu and Celery retry above this
    "health_check_interval": 10,
}


def _scheme(url: str | None) -> str:
    return (url or "").split("://", 1)[0].lower()


def _is_amqp(url: str | None) -> bool:
    return _scheme(url) in ("amqp", "amqps", "pyamqp")


# kombu's Redis transport, made to keep consuming while the broker is full (see the module).
FULL_BROKER_SAFE_TRANSPORT = "gru_worker.redis_transport:Transport"


def _redis_transport_options(env: Mapping[str, str]) -> dict[str, Any]:
    visibility_timeout = int(env.get("GRU_VISIBILITY_TIMEOUT", "3600"))
    return {
        # Must outlast the longest task, or Redis hands a running task to a second worker.
        "visibility_timeout": visibility_timeout,
        # kombu sweeps for tasks of dead workers only every interval x throttle seconds
        # (100 s by default), on top of the visibility timeout. Sweep every eighth of the
        # timeout (1 to 60 s), every time: one ZRANGE per worker per sweep.
        "unacked_restore_interval": max(1, min(60, visibility_timeout // 8)),
        "unacked_restore_throttle": 1,
        **CONNECTION_OPTIONS,
    }


# A node that stops answering (a hung VM, a long pause, a black-holed network) keeps its TCP
# connections open, and py-amqp would wait on it without bound. Every socket read and write
# and the connection handshake are bounded instead: a publish waiting for its confirm on a
# frozen node fails after AMQP_IO_TIMEOUT_SECONDS and the retry reconnects through the
# Service; a consuming worker, which reads nothing while its queue is empty, learns from AMQP
# heartbeats within two intervals that its node went silent (Celery's default is 120 s).
AMQP_IO_TIMEOUT_SECONDS = 5
AMQP_HEARTBEAT_SECONDS = 5

# RabbitMQ: quorum queues (replicated by Raft: a task survives the loss of a node), publisher
# confirms (a publish returns only once the queue's majority has the task), and Celery's
# native delayed delivery, which ETA and countdown tasks need on quorum queues. The
# delivery limit and dead-letter queue are the broker's policies (definitions.py), and the
# broker declares the task queues and the delayed-delivery topology (topology.py).
AMQP_SETTINGS: dict[str, Any] = {
    "task_default_queue_type": "quorum",
    # Native delayed delivery binds through topic exchanges; with the default direct exchange
    # Celery skips it and a countdown task would sit in a worker, holding its only slot.
    "task_default_exchange_type": "topic",
    "worker_detect_quorum_queues": True,
    # Any queue but the default one (a task server's `queues`, an agent's `queue=`) is made by
    # Celery as a classic queue on a direct exchange unless told otherwise: not replicated, no
    # delivery limit, and a countdown task on it would wait in a worker.
    "task_create_missing_queue_type": "quorum",
    "task_create_missing_queue_exchange_type": "topic",
    "broker_native_delayed_delivery_queue_type": "quorum",
    "broker_transport_options": {"confirm_publish": True, "read_timeout": AMQP_IO_TIMEOUT_SECONDS,
                                 "write_timeout": AMQP_IO_TIMEOUT_SECONDS},
    "broker_connection_timeout": AMQP_IO_TIMEOUT_SECONDS,
    "broker_heartbeat": AMQP_HEARTBEAT_SECONDS,
    # The remote-control queue (celery@<host>.celery.pidbox) is exclusive by default, owned by
    # one connection: a worker that reconnects before the broker has noticed its old connection
    # is gone gets RESOURCE_LOCKED, which Celery treats as unrecoverable, and the worker exits.
    # Non-exclusive, it is still auto-deleted 10 s after its last consumer (control_queue_expires).
    "control_queue_exclusive": False,
    # The broker declares the delayed-delivery topology (gru_worker.consumer says why).
    "worker_consumer": "gru_worker.consumer:Consumer",
}


def settings_from_env(env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    broker_url = env.get("CELERY_BROKER_URL")
    settings: dict[str, Any] = {
        "broker_url": broker_url,
        # Acknowledge after the task ran: a task whose worker died is delivered again.
        "task_acks_late": _flag(env, "GRU_ACKS_LATE", True),
        # ...including when the pool process itself is killed (OOM, SIGKILL).
        "task_reject_on_worker_lost": _flag(env, "GRU_REJECT_ON_WORKER_LOST", True),
        "worker_prefetch_multiplier": 1,
        # On AMQP a task whose connection dropped can no longer be acked and will be delivered
        # again: running it on would execute it twice. On Redis the ack is a delete by delivery
        # tag that works after reconnecting, and cancelling would lose the running task
        # (it is never delivered again): keep running it.
        "worker_cancel_long_running_tasks_on_connection_loss": _is_amqp(broker_url),
        "broker_connection_retry_on_startup": True,
    }
    if _scheme(broker_url) in ("redis", "rediss"):
        settings["broker_transport"] = FULL_BROKER_SAFE_TRANSPORT
        settings["broker_transport_options"] = _redis_transport_options(env)
    elif _is_amqp(broker_url):
        settings.update(AMQP_SETTINGS)
    # Results are off unless the task server turns them on: they live in the broker's memory,
    # and results that pile up faster than they expire would fill it and stop every fleet.
    backend = env.get("GRU_RESULT_BACKEND_URL")
    settings["task_ignore_result"] = not backend
    if backend:
        redis_backend = _scheme(backend) in ("redis", "rediss")
        settings["result_backend"] = result_backend.backend_setting(backend) if redis_backend else backend
        settings.update({
            "task_track_started": True,
            # A result that cannot be stored because the broker is away (restarting, frozen) is
            # retried with back-off for a few minutes, instead of turning a task that ran into
            # a FAILURE of TimeoutError.
            "result_backend_always_retry": True,
            "result_backend_max_retries": 20,
            "result_expires": int(env.get("GRU_RESULT_EXPIRES_SECONDS", "3600")),
            "redis_socket_timeout": SOCKET_TIMEOUT_SECONDS,
            "redis_socket_connect_timeout": 5,
            "redis_socket_keepalive": True,
            "redis_retry_on_timeout": False,
            "redis_backend_health_check_interval": 10,
        })
    return settings
