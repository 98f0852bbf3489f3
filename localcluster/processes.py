"""Stopping the host processes a local cluster starts, each the leader of its own session."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # reap it if it is our child (it is not when `down` runs in another process)
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        # Not our child: a zombie still answers kill(0); its state says it is gone.
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
        except OSError:
            return False


def signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_groups(pids: Iterable[int], timeout: float = 20) -> None:
    """SIGTERM each process group in the order given, wait up to `timeout` for all of them
    together, then SIGKILL what is left."""
    pids = list(pids)
    for pid in pids:
        signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            signal_group(pid, signal.SIGKILL)
            while alive(pid) and time.monotonic() < deadline + 5:
                time.sleep(0.1)
