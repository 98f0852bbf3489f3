"""`tools/cluster up` says why it could not start: its own checks, and the processes' logs
(a caller such as CI removes the directory, logs included, with `down`)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from localcluster.__main__ import log_tails
from localcluster.engine import images_dir, node_bin
from localcluster.real_node import BRIDGE, RealNode


def test_log_tails_give_each_log_s_last_lines_newest_first(tmp_path: Path) -> None:
    old = tmp_path / "etcd.log"
    old.write_text("".join(f"etcd line {i}\n" for i in range(40)))
    new = tmp_path / "kubelet.log"
    new.write_text("kubelet: failed to run Kubelet: the error\n")
    os.utime(old, (time.time() - 60, time.time() - 60))
    tails = log_tails(tmp_path, lines=3)
    assert tails[0] == "--- kubelet.log (last 1 lines)\nkubelet: failed to run Kubelet: the error"
    assert tails[1] == "--- etcd.log (last 3 lines)\netcd line 37\netcd line 38\netcd line 39"
    assert log_tails(tmp_path / "missing") == []


def test_a_real_node_refuses_to_start_over_a_leftover_bridge(tmp_path: Path) -> None:
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0:
        pytest.fail(f"{BRIDGE} exists before this test: a real-node cluster was left running")
    node = RealNode(tmp_path / "node", node_bin(), images_dir(), tmp_path / "kubeconfig", lambda *a, **k: None)
    node.check_parts()  # everything there: the bridge is the only problem below
    subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    try:
        with pytest.raises(SystemExit, match=f"a network device {BRIDGE} already exists.*ip link del {BRIDGE}"):
            node.check_parts()
    finally:
        subprocess.run(["ip", "link", "del", BRIDGE], check=True)
