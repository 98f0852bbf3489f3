"""The shipped worker app's contract with the rendered environment, and its probe."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.stack_model import parse_stack_spec
from components.task_server.worker_settings import app_settings_env
from gru_worker.probe import check
from gru_worker.settings import settings_from_env

from .conftest import ROOT, SEED_YAML


def test_settings_follow_the_rendered_environment() -> None:
    (server,) = parse_stack_spec(SEED_YAML.encode(), "dev.yaml").task_servers
    env = {**app_settings_env(server), "CELERY_BROKER_URL": "redis://:x@h:6379/0", "GRU_RESULT_BACKEND_URL": "redis://:x@h:6379/0"}
    settings = settings_from_env(env)
    transport = settings["broker_transport_options"]
    assert transport["visibility_timeout"] == server.visibility_timeout_seconds > server.termination_grace_seconds
    # Tasks of dead workers are swept for at least every eighth of the timeout, not every 100 s.
    assert transport["unacked_restore_throttle"] == 1
    assert transport["unacked_restore_interval"] <= server.visibility_timeout_seconds // 8
    assert settings["task_acks_late"] is True
    assert settings["task_reject_on_worker_lost"] is True
    assert settings["worker_prefetch_multiplier"] == 1
    # The Redis backend and transport that keep the worker up while the broker is full.
    assert settings["result_backend"] == "gru_worker.result_backend:FullBrokerSafeRedisBackend+" + env["GRU_RESULT_BACKEND_URL"]
    assert settings["broker_transport"] == "gru_worker.redis_transport:Transport"
    assert settings["task_ignore_result"] is False and settings["task_track_started"] is True


def test_results_are_off_by_default_and_expire_when_on() -> None:
    (server,) = parse_stack_spec(SEED_YAML.encode(), "dev.yaml").task_servers
    assert "GRU_RESULT_EXPIRES_SECONDS" not in app_settings_env(server)
    settings = settings_from_env({**app_settings_env(server), "CELERY_BROKER_URL": "redis://:x@h:6379/0"})
    assert settings["task_ignore_result"] is True and "result_backend" not in settings
    on = parse_stack_spec((SEED_YAML + "  results: {enabled: true, expires_seconds: 600}\n").encode(),
                          "dev.yaml").task_servers[0]
    env = {**app_settings_env(on), "CELERY_BROKER_URL": "redis://:x@h:6379/0", "GRU_RESULT_BACKEND_URL": "redis://:x@h:6379/0"}
    assert settings_from_env(env)["result_expires"] == 600


def test_an_amqp_broker_keeps_celerys_own_transport() -> None:
    settings = settings_from_env({"CELERY_BROKER_URL": "amqp://u:p@h:5672//"})
    assert "broker_transport" not in settings
    assert settings["worker_cancel_long_running_tasks_on_connection_loss"] is True
    # Quorum queues with publisher confirms, and no Redis-only visibility timeout.
    assert settings["task_default_queue_type"] == "quorum"
    assert settings["worker_detect_quorum_queues"] is True
    # Every read, write and handshake bounded: a frozen node fails a call, never hangs it.
    assert settings["broker_transport_options"] == {"confirm_publish": True, "read_timeout": 5, "write_timeout": 5}
    assert settings["broker_connection_timeout"] == 5 and settings["broker_heartbeat"] == 5
    # Queues named by a task server or an agent are quorum queues on topic exchanges too.
    assert (settings["task_create_missing_queue_type"], settings["task_create_missing_queue_exchange_type"]) == \
        ("quorum", "topic")


def test_flags_can_be_turned_off() -> None:
    settings = settings_from_env({"GRU_ACKS_LATE": "false", "GRU_VISIBILITY_TIMEOUT": "16",
                                  "CELERY_BROKER_URL": "redis://:x@h:6379/0"})
    assert settings["task_acks_late"] is False
    assert settings["broker_transport_options"]["unacked_restore_interval"] == 2
    assert "result_backend" not in settings


def test_probe_reads_file_age(tmp_path: Path) -> None:
    assert check("alive", 60, tmp_path) == (False, f"{tmp_path / 'alive'} does not exist")
    (tmp_path / "alive").touch()
    assert check("alive", 60, tmp_path)[0] is True
    old = time.time() - 120
    os.utime(tmp_path / "alive", (old, old))
    ok, message = check("alive", 60, tmp_path)
    assert not ok and "limit 60s" in message


def test_a_reconnecting_worker_is_alive_but_not_ready(tmp_path: Path) -> None:
    (tmp_path / "reconnecting").touch()
    assert check("alive", 60, tmp_path)[0] is True
    assert check("ready", 60, tmp_path)[0] is False


def test_probe_command_exit_codes(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "worker"), "GRU_HEALTH_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "gru_worker.probe", "ready", "--max-age=60"]
    assert subprocess.run(command, env=env, capture_output=True).returncode == 1
    (tmp_path / "ready").touch()
    assert subprocess.run(command, env=env, capture_output=True).returncode == 0


def test_running_tasks_are_cancelled_on_connection_loss_only_on_amqp() -> None:
    # On Redis cancelling would lose the task (test_end_to_end proves it keeps running instead).
    assert settings_from_env({"CELERY_BROKER_URL": "redis://:x@h:6379/0"})[
        "worker_cancel_long_running_tasks_on_connection_loss"] is False
    assert settings_from_env({"CELERY_BROKER_URL": "amqp://u:x@h:5672//"})[
        "worker_cancel_long_running_tasks_on_connection_loss"] is True


def test_health_markers_are_cleared_when_a_worker_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The health volume outlives a container restart: stale markers must not pass a new container's probes.
    from gru_worker import health

    monkeypatch.setenv("GRU_HEALTH_DIR", str(tmp_path))
    for name in ("alive", "ready", "reconnecting"):
        (tmp_path / name).touch()
    assert check("ready", 60, tmp_path)[0]
    health.reset()
    assert not check("ready", 60, tmp_path)[0] and not check("alive", 60, tmp_path)[0]


def test_the_delivery_cap_travels_to_the_worker_and_the_dead_letters_to_the_metrics() -> None:
    from components.redis_broker.redis_config import DEAD_LETTER_KEY
    from gru_worker.deliveries import DEAD_LETTER_KEY as WORKER_DEAD_LETTER_KEY

    (server,) = parse_stack_spec((SEED_YAML + "  max_deliveries: 7\n").encode(), "dev.yaml").task_servers
    assert app_settings_env(server)["GRU_MAX_DELIVERIES"] == "7"
    (default,) = parse_stack_spec(SEED_YAML.encode(), "dev.yaml").task_servers
    assert app_settings_env(default)["GRU_MAX_DELIVERIES"] == "5"
    assert DEAD_LETTER_KEY == WORKER_DEAD_LETTER_KEY  # the exporter watches the list the workers write
