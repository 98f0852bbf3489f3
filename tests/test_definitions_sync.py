"""The RabbitMQ definitions-sync sidecar's decisions, against a stand-in for RabbitMQ's CLI
tools that records what it is asked: when it makes its first import (and its pod ready),
which rotated-out users it deletes and which departed nodes it forgets, and what it leaves
alone. The real tools and nodes run the same script in
tests/test_rabbitmq_end_to_end.py (rotation, shrink)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from components.rabbitmq_broker import definitions as defs
from components.rabbitmq_broker.definitions_sync import SCRIPT
from components.rabbitmq_broker.topology import DELIVERY_EXCHANGE

# rabbitmqctl and rabbitmq-queues: answer from files in $FAKE, record every call in $FAKE/calls.
FAKE_CLI = r"""#!/bin/sh
echo "$(basename "$0") $*" >> "$FAKE/calls"
case "$*" in
  *list_users*) cat "$FAKE/cluster-users";;
  *cluster_status*) cat "$FAKE/status.json";;
  *list_exchanges*) cat "$FAKE/exchanges";;
  *delete_user*) grep -v "^$3	" "$FAKE/cluster-users" > "$FAKE/u.new"; mv "$FAKE/u.new" "$FAKE/cluster-users";;
esac
exit 0
"""


def run_sync(tmp_path: Path, *, listed: list[str], cluster_users: list[str], status: dict[str, list[str]],
             size: int, seconds: float = 4.0, exchanges: tuple[str, ...] = (), formation_wait: int = 120,
             expect_import: bool = True) -> list[str]:
    fake = tmp_path / "fake"
    bin_dir = fake / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("rabbitmqctl", "rabbitmq-queues"):
        (bin_dir / tool).write_text(FAKE_CLI)
        (bin_dir / tool).chmod(0o755)
    (bin_dir / "epmd").write_text("#!/bin/sh\nexit 0\n")  # "the server's epmd answers"
    (bin_dir / "epmd").chmod(0o755)
    (fake / "cluster-users").write_text("".join(f"{u}\t[]\n" for u in cluster_users))
    (fake / "status.json").write_text(json.dumps(status, separators=(",", ":")) + "\n")
    (fake / "exchanges").write_text("".join(f"{e}\n" for e in exchanges))
    (fake / "calls").touch()
    mounted = tmp_path / "definitions"
    mounted.mkdir()
    (mounted / "definitions.json").write_text("{}\n")
    (mounted / "users").write_text("".join(f"{u}\n" for u in listed))
    (mounted / "drop-after-seconds").write_text("0")
    (mounted / "cluster-size").write_text(str(size))
    (tmp_path / "state").mkdir()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE": str(fake), "RABBITMQ_NODENAME": "rabbit@rabbit-0",
           "DEFINITIONS_FILE": str(mounted / "definitions.json"), "USERS_FILE": str(mounted / "users"),
           "DROP_AFTER_FILE": str(mounted / "drop-after-seconds"), "CLUSTER_SIZE_FILE": str(mounted / "cluster-size"),
           "STATE_DIR": str(tmp_path / "state"), "SYNC_SECONDS": "1", "FORMATION_WAIT_SECONDS": str(formation_wait)}
    process = subprocess.Popen(["sh", "-c", SCRIPT], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    time.sleep(seconds)
    os.killpg(process.pid, 15)
    output, _ = process.communicate(timeout=10)
    calls = (fake / "calls").read_text().splitlines()
    imported = any("import_definitions" in c for c in calls)
    # The readiness file is there exactly when the whole definitions were imported.
    assert (imported, (tmp_path / "state" / "imported").exists()) == (expect_import, expect_import), output.decode()
    return calls


def node(i: int) -> str:
    return f"rabbit@rabbit-{i}.rabbit-nodes.gru.svc.cluster.local"


def test_only_managed_users_that_left_the_file_are_deleted(tmp_path: Path) -> None:
    staged = defs.login_name(defs.WORKER, "next", original=False)
    calls = run_sync(tmp_path, listed=["agent", "keda", staged], size=3,
                     cluster_users=["guest", "agent", "worker", "keda", staged, "worker-ffffffff", "ops-team"],
                     status={"disk_nodes": [node(i) for i in range(3)], "running_nodes": [node(i) for i in range(3)]})
    deleted = sorted(c.split()[-1] for c in calls if "delete_user" in c)
    # Rotated out: managed names no longer listed. Never the listed ones, nor anyone else's.
    assert deleted == ["worker", "worker-ffffffff"]


def test_the_first_import_waits_for_every_replica_of_a_new_cluster(tmp_path: Path) -> None:
    # Node 0 has booted; its peers are still joining and nothing was imported before: no queue
    # is declared yet, and the pod stays unready.
    calls = run_sync(tmp_path, listed=["agent"], cluster_users=["agent"], size=3, expect_import=False,
                     status={"disk_nodes": [node(0), node(1)], "running_nodes": [node(0)]})
    assert any("cluster_status" in c for c in calls)


def test_a_cluster_formed_before_is_imported_into_at_once(tmp_path: Path) -> None:
    # A pod restarted while a peer is down: the topology exists, so this is no first formation.
    calls = run_sync(tmp_path, listed=["agent"], cluster_users=["agent"], size=3, exchanges=("amq.direct", DELIVERY_EXCHANGE),
                     status={"disk_nodes": [node(i) for i in range(3)], "running_nodes": [node(0)]})
    assert any("import_definitions" in c for c in calls)


def test_a_replica_that_never_comes_delays_the_first_import_only_so_long(tmp_path: Path) -> None:
    run_sync(tmp_path, listed=["agent"], cluster_users=["agent"], size=3, formation_wait=1, seconds=5,
             status={"disk_nodes": [node(0)], "running_nodes": [node(0)]})


def test_nothing_is_deleted_without_a_users_file(tmp_path: Path) -> None:
    calls = run_sync(tmp_path, listed=[], cluster_users=["agent", "worker", "keda"], size=3,
                     status={"disk_nodes": [node(i) for i in range(3)], "running_nodes": [node(i) for i in range(3)]})
    assert not any("delete_user" in c for c in calls)


def test_only_departed_nodes_are_forgotten(tmp_path: Path) -> None:
    # Shrunk from 7 to 3: node 4 and 6 stopped (departed), node 5 still stopping; node 1 is
    # down too, but below the size: a restart, never forgotten.
    calls = run_sync(tmp_path, listed=["agent", "worker", "keda"], cluster_users=["agent", "worker", "keda"], size=3,
                     status={"disk_nodes": [node(i) for i in range(7)],
                             "running_nodes": [node(0), node(2), node(3), node(5)]})
    forgotten = sorted(c.split()[-1] for c in calls if "forget_cluster_node" in c)
    shrunk = sorted(c.split()[-1] for c in calls if c.startswith("rabbitmq-queues") and " shrink " in c)
    assert set(forgotten) == set(shrunk) == {node(4), node(6)}
    # Node 5 keeps it looking on every turn until it is gone too.
    assert len([c for c in calls if "cluster_status" in c]) >= 2
