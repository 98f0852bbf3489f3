"""A three-node RabbitMQ cluster as local processes on loopback (localrun/rabbitmq.py): it forms
one cluster, a quorum queue loses no confirmed message when a node is SIGKILLed, and close()
leaves nothing running. Needs Debian's rabbitmq-server (bash .ci/run installs it); not skipped."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import amqp
import pytest

import localrun.rabbitmq as localrun_rabbitmq
from localrun.rabbitmq import IMAGE_CONF_D, LocalRabbitMQCluster, have_rabbitmq, image_config_files, translate_conf

from .conftest import make_password

PASSWORD = make_password()
QUEUE = "celery-lost-check"
MESSAGES = 200

# What a 4.x StatefulSet would render: Kubernetes peer discovery, pod ports, a mounted definitions
# file, and 4.x-only keys that 3.10 does not know (dropped by the translation).
RENDERED_CONF = """\
cluster_formation.peer_discovery_backend = rabbit_peer_discovery_k8s
cluster_formation.k8s.host = kubernetes.default.svc.cluster.local
cluster_formation.k8s.address_type = hostname
cluster_formation.node_cleanup.only_log_warning = true
cluster_partition_handling = pause_minority
listeners.tcp.default = 5672
management.tcp.port = 15672
prometheus.tcp.port = 15692
load_definitions = /etc/rabbitmq/definitions/definitions.json
vm_memory_high_watermark.absolute = 1GB
disk_free_limit.absolute = 50MB
consumer_timeout = 1800000
log.console = true
log.console.level = info
default_queue_type = quorum
deprecated_features.permit.transient_nonexcl_queues = false
quorum_queue.continuous_membership_reconciliation.enabled = true
"""
ENABLED_PLUGINS = "[rabbitmq_peer_discovery_k8s,rabbitmq_prometheus,rabbitmq_management]."


def password_hash(password: str) -> str:
    """rabbit_password_hashing_sha256: base64(salt + sha256(salt + password)), 4-byte salt."""
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions() -> str:
    return json.dumps({
        "users": [{"name": "worker", "password_hash": password_hash(PASSWORD),
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []}],
        "vhosts": [{"name": "/"}],
        "permissions": [{"user": "worker", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}],
        "policies": [{"vhost": "/", "name": "celery-delivery-limit", "pattern": "^celery", "apply-to": "quorum_queues",
                      "priority": 0, "definition": {"delivery-limit": 10}}],
        "exchanges": [], "queues": [], "bindings": [], "parameters": [], "global_parameters": [],
    })


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRabbitMQCluster]:
    assert have_rabbitmq(), "rabbitmq-server 3.10 (/usr/lib/rabbitmq/bin) and epmd are needed: apt-get install rabbitmq-server"
    local = LocalRabbitMQCluster(tmp_path_factory.mktemp("rabbitmq"), RENDERED_CONF, ENABLED_PLUGINS, definitions(),
                                 cookie=secrets.token_hex(16))
    with local:
        started = time.monotonic()
        local.start()
        print(f"3-node cluster formed in {time.monotonic() - started:.1f}s")
        yield local


def connect(port: int) -> amqp.Connection:
    conn = amqp.Connection(host=f"127.0.0.1:{port}", userid="worker", password=PASSWORD, virtual_host="/",
                           confirm_publish=True, connect_timeout=5, read_timeout=10, write_timeout=10)
    conn.connect()
    return conn


def listening_addresses(groups: set[int]) -> set[tuple[str, int]]:
    """(host, port) of every listening TCP socket of the processes in these process groups, from /proc."""
    inodes: set[str] = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) in groups:
                inodes.update(os.readlink(fd)[8:-1] for fd in (proc / "fd").iterdir() if os.readlink(fd).startswith("socket:"))
        except OSError:
            continue  # exited meanwhile
    found: set[tuple[str, int]] = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for row in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                raw = b"".join(int.to_bytes(int(address[i:i + 8], 16), 4, "little") for i in range(0, len(address), 8))
                found.add((socket.inet_ntop(family, raw), int(port, 16)))
    return found


def closed_by_server(conn: amqp.Connection) -> bool:
    try:
        conn.drain_events(timeout=3)
    except TimeoutError:
        conn.close()
        return False
    except (OSError, amqp.exceptions.RecoverableConnectionError):
        return True
    raise AssertionError("no event expected on an idle connection")


def test_translation_keeps_what_it_does_not_name(tmp_path: Path) -> None:
    conf = translate_conf(RENDERED_CONF, nodes=3, amqp_port=1, management_port=2, prometheus_port=3,
                          definitions_path=tmp_path / "d.json", log_dir=tmp_path)
    keys = [line.split("=")[0].strip() for line in conf.splitlines() if "=" in line]
    assert "cluster_formation.k8s.host" not in keys and "default_queue_type" not in keys
    assert "cluster_formation.classic_config.nodes.3 = rabbit-2@localhost" in conf
    assert f"load_definitions = {tmp_path / 'd.json'}" in conf
    assert "listeners.tcp.1 = 127.0.0.1:1" in conf and "listeners.tcp.default" not in keys
    assert "cluster_partition_handling = pause_minority" in conf and "consumer_timeout = 1800000" in conf


def test_config_files_are_found_as_in_the_image(tmp_path: Path) -> None:
    """RABBITMQ_CONFIG_FILES as rendered, its path moved into the local copies; unset, the image's conf.d."""
    config, image = tmp_path / "config", tmp_path / "image" / "conf.d"
    rendered = {"RABBITMQ_CONFIG_FILE": "/etc/rabbitmq/config/rabbitmq.conf"}
    assert image_config_files(rendered, config, image) == str(image / "*.conf")
    assert image_config_files({**rendered, "RABBITMQ_CONFIG_FILES": "/etc/rabbitmq/config/conf.d"}, config,
                              image) == str(config / "conf.d")
    assert image_config_files({**rendered, "RABBITMQ_CONFIG_FILES": "/etc/rabbitmq/conf.d/*.conf"}, config,
                              image) == str(image / "*.conf")
    with pytest.raises(ValueError, match="does not model it"):
        image_config_files({**rendered, "RABBITMQ_CONFIG_FILES": "/opt/extra"}, config, image)
    assert "management_agent.disable_metrics_collector = true\n" in IMAGE_CONF_D.values()
    # Without the container's env, a node reads rabbitmq.conf alone: never the machine's conf.d.
    plain = LocalRabbitMQCluster(tmp_path / "plain", "", "[].", None, cookie="c", nodes=1)
    assert not Path(plain.config_files(0)).exists() and "/etc/rabbitmq" not in plain.config_files(0)


def test_cluster_forms_on_loopback(cluster: LocalRabbitMQCluster) -> None:
    expected = {f"rabbit-{i}@localhost" for i in range(3)}
    for index in range(3):
        status = json.loads(cluster.rabbitmqctl(index, "cluster_status", "--formatter", "json"))
        assert set(status["running_nodes"]) == expected
    # The sockets, not cluster_status: 3.10 reports its HTTP listeners as [::] whatever they bind.
    groups = [cluster.pid(i) for i in range(3)] + [cluster.epmd_pid()]
    addresses = listening_addresses({g for g in groups if g is not None})
    assert len(addresses) == 3 * 4 + 2  # AMQP, distribution, management, prometheus; epmd on both loopbacks
    assert {host for host, _ in addresses} == {"127.0.0.1", "::1"}
    users = json.loads(cluster.rabbitmqctl(0, "list_users", "--formatter", "json"))
    assert "worker" in {u["user"] for u in users}
    assert cluster.rejoined == []


def test_quorum_queue_loses_nothing_when_a_node_is_killed(cluster: LocalRabbitMQCluster) -> None:
    conn = connect(cluster.service_port())
    channel = conn.channel()
    channel.queue_declare(QUEUE, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})
    for i in range(MESSAGES):
        channel.basic_publish(amqp.Message(str(i), delivery_mode=2), routing_key=QUEUE)  # waits for the confirm
    conn.close()

    (queue,) = json.loads(cluster.rabbitmqctl(0, "list_queues", "name", "type", "leader", "members", "--formatter", "json"))
    assert queue["type"] == "quorum" and len(queue["members"]) == 3
    leader = int(queue["leader"].split("@")[0].rsplit("-", 1)[1])
    # Idle connections through the Service until every node holds one (it picks at random).
    idle: dict[amqp.Connection, int | None] = {}
    while set(idle.values()) != {0, 1, 2}:
        assert len(idle) < 60, f"the Service never reached every node: {sorted(map(str, idle.values()))}"
        conn = connect(cluster.service_port())
        idle[conn] = cluster.node_behind(conn.sock.getsockname()[1])
    cluster.kill(leader)  # the leader: the harder case, a new one must be elected
    # The proxy closes the client side of the killed node's connections, and only those.
    assert {c: closed_by_server(c) for c in idle} == {c: node == leader for c, node in idle.items()}

    received: set[str] = set()
    deadline = time.monotonic() + 90
    while len(received) < MESSAGES and time.monotonic() < deadline:
        try:
            conn = connect(cluster.service_port())
            channel = conn.channel()
            while len(received) < MESSAGES:
                message = channel.basic_get(QUEUE)
                if message is None:
                    time.sleep(0.2)
                    continue
                received.add(message.body if isinstance(message.body, str) else message.body.decode())
                channel.basic_ack(message.delivery_tag)
            conn.close()
        except (OSError, amqp.exceptions.AMQPError):
            time.sleep(0.5)  # the proxy hands the next connection to a live node
    lost = {str(i) for i in range(MESSAGES)} - received
    assert not lost, f"{len(lost)} confirmed messages lost"

    cluster.restart(leader)
    running = json.loads(cluster.rabbitmqctl(leader, "cluster_status", "--formatter", "json"))["running_nodes"]
    assert len(running) == 3


def test_graceful_stop_and_restart(cluster: LocalRabbitMQCluster) -> None:
    cluster.stop(1)
    assert len(cluster.running_nodes(0)) == 2
    cluster.restart(1)
    assert len(cluster.running_nodes(0)) == 3


def test_unknown_conf_key_is_reported(tmp_path: Path) -> None:
    with LocalRabbitMQCluster(tmp_path, "no_such.key = 1\n", "[].", None, cookie=secrets.token_hex(16), nodes=1) as one:
        with pytest.raises(RuntimeError, match=r"does not know the conf keys \['no_such.key'\]"):
            one.start(wait=60)
        assert one.pid(0) is not None
        _assert_gone(one, [one.pid(0)])


def _assert_gone(cluster: LocalRabbitMQCluster, groups: list[int | None], epmd: int | None = None) -> None:
    for group in groups:
        assert group is not None
        with pytest.raises(ProcessLookupError):
            os.killpg(group, 0)
    if epmd is not None:
        with pytest.raises(ProcessLookupError):
            os.kill(epmd, 0)
    # Nothing else started from its directories (beam's command line names its HOME there).
    found = subprocess.run(["pgrep", "-af", str(cluster.workdir)], capture_output=True, text=True).stdout
    assert found == ""


def test_close_leaves_nothing_running(cluster: LocalRabbitMQCluster) -> None:
    groups = [cluster.pid(i) for i in range(3)]
    epmd = cluster.epmd_pid()
    assert epmd is not None
    cluster.close()
    _assert_gone(cluster, groups, epmd)
    cluster.close()  # idempotent


def test_a_formation_whose_queue_members_crashed_is_formed_again(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # The crash itself cannot be ordered up: a line every boot prints stands in for it.
    monkeypatch.setattr(localrun_rabbitmq, "BOOT_CRASH", "Starting broker...")
    monkeypatch.setattr(localrun_rabbitmq, "FORMATION_ATTEMPTS", 2)
    with LocalRabbitMQCluster(tmp_path, "listeners.tcp.default = 5672\n", "[].", None, cookie=secrets.token_hex(16),
                              nodes=1) as one:
        one.start(wait=120)
        assert one.reformed == [1]  # thrown away once; the last attempt is kept whatever it logged
        assert one.running_nodes(0) == {"rabbit-0@localhost"}
        first = one.pid(0)
    _assert_gone(one, [first])
