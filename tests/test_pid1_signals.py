"""Every container process of ours stops promptly on SIGTERM as its container's PID 1.

The kernel delivers a signal to a PID namespace's init only if it has a handler for it: a
shell loop or a Python program with none ignores the kubelet's SIGTERM, and its pod then sits
out the whole grace period (60 s for Redis, 600 s for RabbitMQ, BROKER_WAIT_SECONDS for the
workers' init step). Each process here runs as PID 1 of a fresh PID namespace (`unshare`), as
in a container, and must exit within seconds of SIGTERM. The real-node suite shows the same
for whole pods (tests/node/test_seed_stack.py, the Redis pod's deletion).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.rabbitmq_broker import definitions_sync
from components.redis_broker import acl_sync
from localrun import free_port

from .conftest import ROOT


def _start_as_pid1(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Run argv as PID 1 of a new PID namespace; the process and the host PID of that init."""
    process = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", *argv], env=env, cwd=cwd,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = children.read_text().split() if children.exists() else []
        if pids:
            return process, int(pids[0])
        time.sleep(0.05)
    process.kill()
    raise AssertionError("unshare started no child")


def _seconds_to_stop(argv: list[str], env: dict[str, str], cwd: Path, settle: float = 1.5) -> float:
    process, init = _start_as_pid1(argv, env, cwd)
    try:
        time.sleep(settle)  # into its loop: past any start-up work
        assert process.poll() is None, "it exited before the signal"
        os.kill(init, signal.SIGTERM)
        started = time.monotonic()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return float("inf")
        return time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def shell_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "auth").mkdir()
    (tmp_path / "state").mkdir()
    (tmp_path / "auth" / "users.acl").write_text("user default on nopass ~* +@all\n")
    (tmp_path / "auth" / "admin-password").write_text("x\n")
    (tmp_path / "definitions.json").write_text("{}\n")
    return {"PATH": os.environ["PATH"], "AUTH_DIR": str(tmp_path / "auth"), "STATE_DIR": str(tmp_path / "state"),
            "REDIS_PORT": "1", "SYNC_SECONDS": "5", "DEFINITIONS_FILE": str(tmp_path / "definitions.json")}


def test_the_acl_sync_sidecar_stops_on_sigterm(shell_env: dict[str, str], tmp_path: Path) -> None:
    script = acl_sync.SCRIPT.replace("$STATE_DIR/beat", f"{tmp_path}/state/beat")
    assert _seconds_to_stop(["sh", "-c", script], shell_env, tmp_path) < 2


def test_the_definitions_sync_sidecar_stops_on_sigterm(shell_env: dict[str, str], tmp_path: Path) -> None:
    # rabbitmqctl is not needed: with none on PATH the loop reports "not ready" and sleeps.
    script = definitions_sync.SCRIPT.replace("$STATE_DIR/beat", f"{tmp_path}/state/beat")
    assert _seconds_to_stop(["sh", "-c", script], {**shell_env, "PATH": "/usr/bin:/bin"}, tmp_path) < 2


def test_the_workers_wait_for_the_broker_stops_on_sigterm(tmp_path: Path) -> None:
    # A broker that refuses every connection: the wait keeps retrying until told to stop.
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT / "worker"),
           "CELERY_BROKER_URL": "redis://:pw@127.0.0.1:1/0", "BROKER_WAIT_SECONDS": "300"}
    assert _seconds_to_stop([sys.executable, "-m", "gru_worker.wait_for_broker"], env, tmp_path, settle=3) < 2


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _processes_with_env(entry: bytes) -> list[int]:
    """PIDs whose environment holds `entry` (a daemon our test caused, though not our child)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and entry in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            pass
    return found


def test_the_definitions_sync_sidecar_starts_no_epmd_before_its_server(shell_env: dict[str, str], tmp_path: Path) -> None:
    # RabbitMQ's CLI starts an epmd when none answers. In the sidecar that epmd would belong to
    # the sidecar's container, and the server starting after it would register there.
    rabbitmq_bin = Path("/usr/lib/rabbitmq/bin")
    assert (rabbitmq_bin / "rabbitmqctl").is_file(), "needs Debian's rabbitmq-server (.ci/run installs it)"
    port = free_port()
    (tmp_path / "home").mkdir()
    env = {**shell_env, "PATH": f"{rabbitmq_bin}:{os.environ['PATH']}", "HOME": str(tmp_path / "home"),
           "ERL_EPMD_PORT": str(port), "ERL_EPMD_ADDRESS": "127.0.0.1", "RABBITMQ_NODENAME": "rabbit@localhost",
           "SYNC_SECONDS": "2"}
    script = definitions_sync.SCRIPT.replace("$STATE_DIR/beat", f"{tmp_path}/state/beat")
    process = subprocess.Popen(["sh", "-c", script], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 12  # several sync rounds, each of which would call the CLI
        while time.monotonic() < deadline and not _listening(port):
            time.sleep(0.5)
        assert not _listening(port), "the sidecar started an epmd of its own"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        for pid in _processes_with_env(f"ERL_EPMD_PORT={port}".encode()):
            os.kill(pid, signal.SIGKILL)
