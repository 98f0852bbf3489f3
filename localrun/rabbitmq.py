"""A rendered RabbitMQ cluster as local processes bound to 127.0.0.1 (Debian's rabbitmq-server 3.10).

The rendered StatefulSet runs RabbitMQ 4.x with Kubernetes peer discovery behind a Service. Here
each pod is one `rabbitmq-server` process with its own node name, data directory, HOME (Erlang
cookie) and ports; a small TCP proxy plays the Service. The rendered rabbitmq.conf,
enabled_plugins and definitions are used as they are, except for what TRANSLATIONS lists.

Config files: given the rendered rabbitmq container's env (`container_env`), a node finds them as
the image's RabbitMQ does: rabbitmq.conf, then every file RABBITMQ_CONFIG_FILES names, later
files winning (3.10 and 4.3 find and order them alike); unset, that is the image's
/etc/rabbitmq/conf.d, modelled by IMAGE_CONF_D. Without that env (the runner passes none yet) a
node reads rabbitmq.conf alone; the machine's own /etc/rabbitmq/conf.d never applies.

Formation: all nodes boot in parallel (as with podManagementPolicy Parallel). 3.10's
classic_config backend takes a lock across the listed nodes before a node joins or initialises,
so parallel boots form one cluster; start() checks that every node reports all nodes in
`running_nodes`, and resets and joins to node 0 any node that still formed a cluster of its own.

3.10 quirks met here:
- /usr/sbin/rabbitmq-server `su`s to the rabbitmq user when run as root (HOME and paths are
  lost), so the node runs /usr/lib/rabbitmq/bin/rabbitmq-server directly, as root.
- That script exits 0 even when the boot fails (its `wait ... || true`); a node that exits
  during start() is a failure whatever its code.
- The conf parser refuses unknown keys ("Conf file attempted to set unknown variable") and the
  node stops; start() raises with those keys and the node's log. Keys of all installed plugins
  are known, enabled or not.
- `cluster_status` reports the management and prometheus listeners as `[::]` although they bind
  127.0.0.1 as configured; check the sockets, not that report.
- epmd started with `-address 127.0.0.1` also listens on ::1 (it always adds the loopbacks).
"""

from __future__ import annotations

import json
import os
import random
import re
import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType

from .ports import free_port

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
LOOPBACK = "127.0.0.1"
# Loopback for the node's and the CLI's distribution listeners; one scheduler each (2-core
# machines boot three nodes at once: fewer schedulers boot faster there).
_ERL_LOOPBACK = "-kernel inet_dist_use_interface {127,0,0,1}"
_SERVER_ERL_ARGS = f"+S 1:1 {_ERL_LOOPBACK}"

# Keys of a 4.x rabbitmq.conf that 3.10's schema lacks, dropped with the reason it is harmless here.
DROPPED_KEYS: dict[str, str] = {
    "deprecated_features.permit.": "3.10 has no deprecated-features switch; what 4.x can forbid, 3.10 permits",
    "quorum_queue.continuous_membership_reconciliation.": "3.10 does not reconcile quorum queue members; "
                                                          "the local cluster's membership is fixed anyway",
    "default_queue_type": "3.10 has no global default queue type: queues that rely on it are classic here, "
                          "so declare x-queue-type explicitly",
}

# The image's config directory (RabbitMQ's default RABBITMQ_CONFIG_FILES; its SYS_PREFIX is empty)
# and what the rabbitmq image (4.3, tags without -management) ships there, key for key.
IMAGE_CONF_DIR = "/etc/rabbitmq/conf.d"
IMAGE_CONF_D: dict[str, str] = {
    "10-defaults.conf": "loopback_users.guest = false\nlog.console = true\n",
    "20-management_agent.disable_metrics_collector.conf": "management_agent.disable_metrics_collector = true\n",
}

TRANSLATIONS = (
    "`cluster_formation.*` (Kubernetes peer discovery) -> classic_config listing the local node names "
    "(rabbit-<i>@localhost, short names)",
    "`listeners.tcp*` -> `listeners.tcp.1 = 127.0.0.1:<free port>`; `management.tcp.ip/port` and "
    "`prometheus.tcp.ip/port` -> 127.0.0.1:<free port> (set whether or not the rendered conf has them)",
    "`load_definitions` / `definitions.local.path` -> a local file holding the rendered definitions",
    "`log.dir` -> <workdir>/logs; the console log (stdout) goes to <workdir>/logs/rabbit-<i>.console.log",
    "`distribution.listener.*` dropped: the distribution port is RABBITMQ_DIST_PORT, bound to 127.0.0.1",
    *(f"`{key}*` dropped: {why}" for key, why in DROPPED_KEYS.items()),
    "a private epmd on 127.0.0.1:<free port> (ERL_EPMD_PORT), so nodes never meet another cluster's",
    f"the image's {IMAGE_CONF_DIR} -> <workdir>/image/conf.d holding IMAGE_CONF_D; the ConfigMap mount (the "
    "rendered RABBITMQ_CONFIG_FILE's directory) -> <node>/config, holding the translated rabbitmq.conf and "
    "enabled_plugins; the rendered RABBITMQ_CONFIG_FILES -> its path in those (only with `container_env`)",
)

_RABBITMQ_CONF_DIR = "/etc/rabbitmq"


def image_config_files(container_env: Mapping[str, str], config_copy: Path, image_conf_d: Path) -> str:
    """The local RABBITMQ_CONFIG_FILES of a node whose rendered container has `container_env`:
    the rendered value with its path moved into the local copies of the ConfigMap mount (the
    directory of the rendered RABBITMQ_CONFIG_FILE) or of the image's conf.d; unset, the image's
    conf.d, as RabbitMQ's default. A path in neither is not modelled: ValueError."""
    value = container_env.get("RABBITMQ_CONFIG_FILES")
    if value is None:
        return str(image_conf_d / "*.conf")
    mount = PurePosixPath(container_env.get("RABBITMQ_CONFIG_FILE", f"{_RABBITMQ_CONF_DIR}/rabbitmq.conf")).parent
    path = PurePosixPath(value)
    for rendered, local in ((mount, config_copy), (PurePosixPath(IMAGE_CONF_DIR), image_conf_d)):
        if path == rendered or rendered in path.parents:
            return str(local.joinpath(*path.relative_to(rendered).parts))
    raise ValueError(f"RABBITMQ_CONFIG_FILES={value} is neither in the config mount ({mount}) nor in the "
                     f"image's {IMAGE_CONF_DIR}: localrun does not model it")


_UNKNOWN_KEY = re.compile(r"Conf file attempted to set unknown variable: (\S+)")


def node_name(index: int) -> str:
    return f"rabbit-{index}@localhost"


def translate_conf(conf: str, *, nodes: int, amqp_port: int, management_port: int, prometheus_port: int,
                   definitions_path: Path | None, log_dir: Path) -> str:
    """The rendered rabbitmq.conf with the TRANSLATIONS applied; every other line is kept as it is."""
    out: list[str] = []
    saw_definitions = False
    for line in conf.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            out.append(line)
            continue
        key = stripped.split("=", 1)[0].strip()
        if key in ("load_definitions", "definitions.local.path"):
            if definitions_path is None:
                raise ValueError(f"the conf loads definitions ({stripped}) but no definitions were given")
            saw_definitions = True
            out.append(f"{key} = {definitions_path}")
        elif key == "log.dir":
            out.append(f"log.dir = {log_dir}")
        elif (key.startswith(("cluster_formation.", "listeners.tcp.", "distribution.listener."))
              or key in ("listeners.tcp", "management.tcp.ip", "management.tcp.port",
                         "prometheus.tcp.ip", "prometheus.tcp.port")
              or any(key == k or (k.endswith(".") and key.startswith(k)) for k in DROPPED_KEYS)):
            continue
        else:
            out.append(line)
    if definitions_path is not None and not saw_definitions:
        raise ValueError("definitions were given but the conf has no load_definitions line to load them")
    out += [
        "",
        "# localrun/rabbitmq.py: the local cluster",
        "cluster_formation.peer_discovery_backend = classic_config",
        *(f"cluster_formation.classic_config.nodes.{i + 1} = {node_name(i)}" for i in range(nodes)),
        f"listeners.tcp.1 = {LOOPBACK}:{amqp_port}",
        f"management.tcp.ip = {LOOPBACK}",
        f"management.tcp.port = {management_port}",
        f"prometheus.tcp.ip = {LOOPBACK}",
        f"prometheus.tcp.port = {prometheus_port}",
    ]
    return "\n".join(out) + "\n"


def _reachable(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


# A quorum queue's Ra state machine that died (3.10 logs it so, in colour, on the console).
BOOT_CRASH = "** State machine "
FORMATION_ATTEMPTS = 3
# Long enough for the imported queues to elect their leaders after the cluster formed.
BOOT_SETTLE_SECONDS = 2.0


class ServiceProxy:
    """The Service in front of the pods: each new connection goes to a node picked at random
    among those that accept, as kube-proxy's iptables mode picks an endpoint; when either side
    closes, both are closed, as a client of a dead pod sees. A frozen node still accepts (its
    kernel does; so does a tcpSocket readiness probe), so it keeps being picked."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(0.2)  # so the accept loop notices close()
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._routes: dict[int, int] = {}  # client's port -> the node's AMQP port it was handed to
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name=f"service-proxy-{self.port}", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            picked = self._connect()
            if picked is None:
                client.close()
                continue
            backend, port = picked
            with self._lock:
                if self._closed.is_set():
                    client.close()
                    backend.close()
                    return
                self._open.update((client, backend))
                self._routes[int(address[1])] = port
            threading.Thread(target=self._pump, args=(client, backend), daemon=True).start()

    def _connect(self) -> tuple[socket.socket, int] | None:
        for port in random.sample(self.backends, len(self.backends)):
            try:
                backend = socket.create_connection((LOOPBACK, port), timeout=2)
            except OSError:
                continue  # a killed or stopped node refuses: skip it, as endpoints drop an unready pod
            backend.settimeout(None)
            return backend, port
        return None

    def backend_of(self, client_port: int) -> int | None:
        """The node AMQP port the connection from this local client port was handed to."""
        with self._lock:
            return self._routes.get(client_port)

    def _pump(self, client: socket.socket, backend: socket.socket) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(client, selectors.EVENT_READ, backend)
            selector.register(backend, selectors.EVENT_READ, client)
            try:
                while True:
                    for key, _ in selector.select():
                        source: socket.socket = key.fileobj  # type: ignore[assignment]
                        data = source.recv(65536)
                        if not data:
                            return
                        key.data.sendall(data)
            except OSError:
                pass
            finally:
                for sock in (client, backend):
                    _shutdown(sock)
                    sock.close()
                with self._lock:
                    self._open.difference_update((client, backend))

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self._thread.join(timeout=5)
        with self._lock:
            for sock in list(self._open):
                _shutdown(sock)  # wakes its pump, which closes both sides


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


@dataclass
class _Node:
    index: int
    directory: Path
    amqp_port: int = field(default_factory=free_port)
    management_port: int = field(default_factory=free_port)
    prometheus_port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    popen: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return node_name(self.index)

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class LocalRabbitMQCluster:
    """`nodes` RabbitMQ nodes on loopback forming one cluster, plus the Service proxy."""

    workdir: Path
    conf: str
    enabled_plugins: str
    definitions: str | None
    cookie: str
    nodes: int = 3
    # The rendered rabbitmq container's env: where RabbitMQ finds its config files (see above).
    container_env: Mapping[str, str] | None = None
    _nodes: list[_Node] = field(default_factory=list, init=False, repr=False)
    _epmd: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _epmd_port: int = field(default=0, init=False, repr=False)
    _proxy: ServiceProxy | None = field(default=None, init=False, repr=False)
    rejoined: list[str] = field(default_factory=list, init=False)
    # Per formation 3.10 had to repeat: how many quorum-queue state machines crashed in it.
    reformed: list[int] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.log_dir = self.workdir / "logs"
        self._nodes = [_Node(i, self.workdir / f"rabbit-{i}") for i in range(self.nodes)]

    # --- files and environment -----------------------------------------------------------

    def _prepare(self, node: _Node) -> None:
        home = node.directory / "home"
        for directory in (home, node.directory / "mnesia", self.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        if cookie.exists():
            cookie.chmod(0o600)
        cookie.write_text(self.cookie)
        cookie.chmod(0o400)  # Erlang refuses a cookie file others can read
        definitions_path = None
        if self.definitions is not None:
            definitions_path = self.definitions_path
            definitions_path.write_text(self.definitions)
        conf = translate_conf(self.conf, nodes=self.nodes, amqp_port=node.amqp_port,
                              management_port=node.management_port, prometheus_port=node.prometheus_port,
                              definitions_path=definitions_path, log_dir=self.log_dir)
        config = self._config_copy(node)
        config.mkdir(parents=True, exist_ok=True)
        (config / "rabbitmq.conf").write_text(conf)
        (config / "enabled_plugins").write_text(self.enabled_plugins)
        if self.container_env is not None:
            self.image_conf_d.mkdir(parents=True, exist_ok=True)
            for name, text in IMAGE_CONF_D.items():
                (self.image_conf_d / name).write_text(text)

    @staticmethod
    def _config_copy(node: _Node) -> Path:
        """The node's copy of its pod's ConfigMap mount."""
        return node.directory / "config"

    @property
    def image_conf_d(self) -> Path:
        """The local copy of the image's /etc/rabbitmq/conf.d (IMAGE_CONF_D), shared by the nodes."""
        return self.workdir / "image" / "conf.d"

    def config_files(self, index: int) -> str:
        """Node `index`'s RABBITMQ_CONFIG_FILES: the files it reads after rabbitmq.conf."""
        node = self._nodes[index]
        if self.container_env is None:
            return str(node.directory / "no-conf.d")  # nothing there: rabbitmq.conf alone
        return image_config_files(self.container_env, self._config_copy(node), self.image_conf_d)

    def _env(self, node: _Node) -> dict[str, str]:
        base = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL") if k in os.environ}
        return {
            **base,
            "HOME": str(node.directory / "home"),
            # Nonexistent on purpose: the machine's /etc/rabbitmq files must not apply.
            "RABBITMQ_CONF_ENV_FILE": str(node.directory / "rabbitmq-env.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(node.directory / "advanced.config"),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_USE_LONGNAME": "false",
            "RABBITMQ_MNESIA_BASE": str(node.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.log_dir),
            "RABBITMQ_CONFIG_FILE": str(self._config_copy(node) / "rabbitmq.conf"),
            "RABBITMQ_CONFIG_FILES": self.config_files(node.index),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self._config_copy(node) / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(node.directory / "rabbit.pid"),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "ERL_EPMD_ADDRESS": LOOPBACK,
            "ERL_EPMD_PORT": str(self._epmd_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": _SERVER_ERL_ARGS,
            "RABBITMQ_CTL_ERL_ARGS": _ERL_LOOPBACK,
        }

    def console_log(self, index: int) -> Path:
        return self.log_dir / f"rabbit-{index}.console.log"

    def _console_size(self, index: int) -> int:
        path = self.console_log(index)
        return path.stat().st_size if path.exists() else 0

    def _console_text(self, index: int, since: int = 0) -> str:
        with self.console_log(index).open("rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")

    def log(self, index: int, tail: int = 6000) -> str:
        """The end of the node's console output (boot errors land there) and of its log file."""
        text = ""
        for path in (self.console_log(index), self.log_dir / f"{node_name(index)}.log"):
            if path.exists():
                text += f"--- {path}\n{path.read_text(errors='replace')[-tail:]}\n"
        return text

    # --- processes -----------------------------------------------------------------------

    def _start_epmd(self) -> None:
        if self._epmd is not None and self._epmd.poll() is None:
            return
        self._epmd_port = free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / "epmd.log").open("ab") as log:
            self._epmd = subprocess.Popen(["epmd", "-address", LOOPBACK, "-port", str(self._epmd_port)],
                                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        deadline = time.monotonic() + 10
        while not _reachable(self._epmd_port, 0.2):
            if self._epmd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"epmd did not start:\n{(self.log_dir / 'epmd.log').read_text()}")
            time.sleep(0.05)

    def _launch(self, node: _Node) -> None:
        self._prepare(node)
        with self.console_log(node.index).open("ab") as log:
            # A session of its own: kill() and the kubelet-like SIGKILL reach the whole group.
            node.popen = subprocess.Popen([str(RABBITMQ_BIN / "rabbitmq-server")], env=self._env(node),
                                          cwd=node.directory, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)

    def _check_alive(self, node: _Node) -> None:
        if node.running():
            return
        log = self.log(node.index)
        unknown = sorted(set(_UNKNOWN_KEY.findall(log)))
        if unknown:
            raise RuntimeError(f"{node.name}: RabbitMQ 3.10 does not know the conf keys {unknown}; translate or "
                               f"drop them in localrun/rabbitmq.py (DROPPED_KEYS).\n{log}")
        raise RuntimeError(f"{node.name} exited during start:\n{log}")

    def running_nodes(self, index: int) -> set[str]:
        """`running_nodes` as node `index` sees it (empty if it does not answer)."""
        try:
            status = json.loads(self.rabbitmqctl(index, "cluster_status", "--formatter", "json"))
        except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError):
            return set()
        return set(status.get("running_nodes", []))

    def _wait_formed(self, members: list[_Node], deadline: float, anchor: _Node | None = None) -> None:
        """Until every node in `members` runs, serves AMQP, and sees exactly `members` running.

        With an `anchor`, a booted node that formed a cluster of its own (one the anchor does not
        see) is reset and joined to the anchor's."""
        expected = {n.name for n in members}
        pending = list(members)
        while pending:
            for node in list(pending):
                self._check_alive(node)
                seen = self.running_nodes(node.index)
                if seen == expected and _reachable(node.amqp_port):
                    pending.remove(node)
                elif (anchor is not None and node is not anchor and seen and anchor.name not in seen
                        and _reachable(node.amqp_port) and _reachable(anchor.amqp_port)
                        and node.name not in self.running_nodes(anchor.index)):
                    self._rejoin(node, anchor)
                elif time.monotonic() > deadline:
                    raise TimeoutError(f"{node.name} sees running nodes {sorted(seen)}, expected {sorted(expected)}:\n"
                                       f"{self.log(node.index)}")
            if pending:
                time.sleep(0.5)

    def _rejoin(self, node: _Node, anchor: _Node) -> None:
        self.rejoined.append(node.name)
        for args in (("stop_app",), ("reset",), ("join_cluster", anchor.name), ("start_app",)):
            self.rabbitmqctl(node.index, *args)

    def start(self, wait: float = 120) -> None:
        """Start all nodes in parallel; wait until they form one cluster of `nodes` running nodes.

        3.10's classic_config takes a lock across the listed nodes before a node joins or
        initialises, so parallel boots have formed one cluster every time here. Should a node
        still form a cluster of its own, it is reset and joined to node 0's (and named in
        `rejoined`) rather than left apart."""
        deadline = time.monotonic() + wait
        try:
            self._start_epmd()
            for attempt in range(FORMATION_ATTEMPTS):
                logged = [self._console_size(n.index) for n in self._nodes]
                for node in self._nodes:
                    self._launch(node)
                self._wait_formed(self._nodes, deadline, anchor=self._nodes[0])
                time.sleep(BOOT_SETTLE_SECONDS)
                crashed = sum(self._console_text(n.index, logged[n.index]).count(BOOT_CRASH) for n in self._nodes)
                if not crashed or attempt == FORMATION_ATTEMPTS - 1:
                    break
                # A boot-time definitions import that declares quorum queues races the forming
                # cluster: a member whose node is still joining can crash for good (the rendered
                # broker boots without queues for this reason; definitions_sync.py). A caller
                # that boots with queues anyway needs a healthy cluster for its tests, so this
                # formation is thrown away, data and all, and done again.
                self.reformed.append(crashed)
                print(f"localrun: {crashed} quorum-queue state machines crashed while 3.10 formed the cluster; "
                      "forming it again from empty data")
                for node in self._nodes:
                    self._kill_group(node)
                    if node.popen is not None:
                        node.popen.wait(30)
                    shutil.rmtree(node.directory / "mnesia", ignore_errors=True)
            if self._proxy is None:
                self._proxy = ServiceProxy([n.amqp_port for n in self._nodes])
        except BaseException:
            self.close()  # nothing left running; the logs stay under workdir/logs
            raise

    def amqp_port(self, index: int) -> int:
        return self._nodes[index].amqp_port

    def management_port(self, index: int) -> int:
        return self._nodes[index].management_port

    def prometheus_port(self, index: int) -> int:
        return self._nodes[index].prometheus_port

    def service_port(self) -> int:
        if self._proxy is None:
            raise RuntimeError("start() the cluster first")
        return self._proxy.port

    def node_behind(self, client_port: int) -> int | None:
        """Which node the Service handed the connection from this local client port to."""
        port = None if self._proxy is None else self._proxy.backend_of(client_port)
        return next((n.index for n in self._nodes if n.amqp_port == port), None)

    def pid(self, index: int) -> int | None:
        """The node's process group (rabbitmq-server's shell and its beam)."""
        popen = self._nodes[index].popen
        return None if popen is None else popen.pid

    def epmd_pid(self) -> int | None:
        return None if self._epmd is None else self._epmd.pid

    def kill(self, index: int) -> None:
        """SIGKILL the node's whole process group: a crashed pod, no shutdown of any kind."""
        node = self._nodes[index]
        if node.popen is None or node.popen.poll() is not None:
            return
        try:
            os.killpg(node.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        node.popen.wait(timeout=30)

    def freeze(self, index: int) -> None:
        """SIGSTOP the node's process group: a hung VM, a long pause, a network black hole. Its
        sockets stay open and the kernel still accepts connections for it, but nothing answers."""
        self._signal_group(index, signal.SIGSTOP)

    def thaw(self, index: int) -> None:
        self._signal_group(index, signal.SIGCONT)

    def _signal_group(self, index: int, sig: signal.Signals) -> None:
        node = self._nodes[index]
        if node.popen is not None and node.popen.poll() is None:
            try:
                os.killpg(node.popen.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, index: int, timeout: float = 60) -> None:
        """Pod deletion: SIGTERM to rabbitmq-server (its shell stops beam gracefully), SIGKILL to
        the group after `timeout`, as at grace-period end; then TimeoutError, since it was not graceful."""
        node = self._nodes[index]
        if node.popen is None or node.popen.poll() is not None:
            return
        node.popen.send_signal(signal.SIGTERM)
        try:
            node.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(index)
            raise TimeoutError(f"{node.name} did not stop within {timeout}s; killed") from None
        self._kill_group(node)

    @staticmethod
    def _kill_group(node: _Node) -> None:
        """Right after the shell exited: its group id is not reused while leftovers (erl_child_setup) hold it."""
        if node.popen is None:
            return
        try:
            os.killpg(node.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def restart(self, index: int, wait: float = 120) -> None:
        """Start the node again on its data directory; wait until it rejoined and runs."""
        node = self._nodes[index]
        if node.running():
            raise RuntimeError(f"{node.name} is running; kill() or stop() it first")
        self._launch(node)
        members = [n for n in self._nodes if n.running()]
        self._wait_formed([node, *(n for n in members if n is not node)], time.monotonic() + wait)

    @property
    def definitions_path(self) -> Path:
        """The definitions file every node loads at boot (the pods' mounted boot definitions)."""
        return self.workdir / "definitions.json"

    def update_definitions(self, text: str) -> None:
        """New definitions in place, as the kubelet refreshes a changed Secret (atomically)."""
        self.definitions = text
        fresh = self.definitions_path.with_name("definitions.json.new")
        fresh.write_text(text)
        fresh.replace(self.definitions_path)

    def node_env(self, index: int) -> dict[str, str]:
        """What a process in node `index`'s pod needs to speak to it (a sidecar's rabbitmqctl):
        its node name, HOME with the cookie, the private epmd and the CLI's loopback args."""
        env = self._env(self._nodes[index])
        env["PATH"] = f"{RABBITMQ_BIN}{os.pathsep}{env.get('PATH', os.environ.get('PATH', ''))}"
        return env

    def rabbitmqctl(self, index: int, *args: str, timeout: float = 60) -> str:
        return self.cli(index, "rabbitmqctl", *args, timeout=timeout)

    def cli(self, index: int, tool: str, *args: str, timeout: float = 60) -> str:
        """A RabbitMQ CLI tool (rabbitmqctl, rabbitmq-upgrade, ...) run against node `index`, as a
        command in its pod would be (a rendered preStop hook, say)."""
        node = self._nodes[index]
        result = subprocess.run([str(RABBITMQ_BIN / tool), "-n", node.name, *args], env=self._env(node),
                                cwd=node.directory, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} on {node.name} failed ({result.returncode}):\n"
                               f"{result.stdout.decode(errors='replace')}{result.stderr.decode(errors='replace')}")
        return result.stdout.decode()

    def close(self) -> None:
        """Stop the proxy, the nodes (SIGTERM all at once, SIGKILL after 20 s) and epmd. Idempotent."""
        if self._proxy is not None:
            self._proxy.close()
            self._proxy = None
        running = [n for n in self._nodes if n.running()]
        for node in running:
            self.thaw(node.index)  # a frozen node would sit out SIGTERM

        def stop(node: _Node) -> None:
            try:
                self.stop(node.index, timeout=20)
            except TimeoutError:
                pass  # already SIGKILLed
        if running:
            with ThreadPoolExecutor(len(running)) as pool:
                list(pool.map(stop, running))
        if self._epmd is not None:
            if self._epmd.poll() is None:
                self._epmd.kill()
            self._epmd.wait(timeout=10)
            self._epmd = None

    def __enter__(self) -> LocalRabbitMQCluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def have_rabbitmq() -> bool:
    return (all((RABBITMQ_BIN / name).exists() for name in ("rabbitmq-server", "rabbitmqctl"))
            and shutil.which("epmd") is not None)
