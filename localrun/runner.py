"""Run the manifests `gru render` produces as local processes bound to 127.0.0.1.

No cluster runs here, but Redis and Celery do. The runner plays the kubelet for the rendered
objects: for each container it takes the rendered command, arguments and environment
(`value`, `secretKeyRef` from the rendered Secret, `fieldRef` to the pod name, `$(VAR)`
expansion), materialises the ConfigMap and Secret volumes as files, and execs the command
directly (exec form, no shell in between, so signals reach it as they would in a pod).

What it must translate, and nothing else, is listed in TRANSLATIONS.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .ports import free_port
from .rabbitmq import LocalRabbitMQCluster

Manifest = dict[str, Any]
REDIS_PORT = 6379
AMQP_PORT = 5672

TRANSLATIONS = (
    "Service DNS name and port (<broker>.<ns>.svc.cluster.local:6379) -> 127.0.0.1:<free port>, in env values "
    "(the broker URL from the Secret included) and in the Redis probe's `-p 6379`",
    "redis-server gets `--port <free port> --bind 127.0.0.1` appended (the rendered redis.conf binds all interfaces)",
    "volume mount paths (/data, /etc/redis, /etc/redis-auth, /tmp, /var/run/gru-health) -> per-pod local directories, "
    "in arguments, environment values and files materialised from ConfigMaps",
    "`celery` and `python` -> those of the running Python; the worker image's /app (PYTHONPATH) -> the repository's worker/",
    "TMPDIR points at the pod's /tmp volume, since the process does not see the rendered mount",
    "the Redis pod's sidecars get `REDIS_PORT` = the free port, the port Redis listens on here",
    "`sh` -> the machine's sh (the Redis image's busybox sh there)",
    "a RabbitMQ broker runs as localrun/rabbitmq.py's cluster (its own TRANSLATIONS), and its Service "
    "<broker>.<ns>.svc.cluster.local:5672 -> that cluster's local Service proxy",
    "a RabbitMQ pod's sidecars get their node's local name, HOME (cookie), epmd port and CLI path",
    "a RabbitMQ pod's exec readiness probes run as host commands on its translated paths",
)
# The RabbitMQ broker Secret's definitions files: what a node loads at boot, and the whole one
# its sidecar imports.
BOOT_DEFINITIONS = "boot-definitions.json"
DEFINITIONS = "definitions.json"

_VAR_REF = re.compile(r"\$\((\w+)\)|\$\$")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion of command and args: unknown references stay as they are."""
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))
    return _VAR_REF.sub(replace, text)


@dataclass
class LocalProcess:
    """One started container: its process, its log, and how to stop it like the kubelet."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def running(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        """Signal the container's main process only, as the kubelet's SIGTERM does."""
        if self.running():
            self.popen.send_signal(sig)

    def kill_all(self) -> None:
        """SIGKILL every process of the container (its process group), as at grace-period end."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.popen.wait(timeout=30)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)


@dataclass
class _Broker:
    name: str
    namespace: str
    port: int
    host: str
    statefulset: Manifest
    data_dir: Path | None = None
    process: LocalProcess | None = None
    sidecars: list[LocalProcess] = field(default_factory=list)
    cluster: LocalRabbitMQCluster | None = None


@dataclass
class LocalStack:
    """The objects of one rendered stack (rendered with Secret values shown), runnable here."""

    objects: list[Manifest]
    workdir: Path
    worker_dir: Path = field(default_factory=lambda: Path(__file__).resolve().parent.parent / "worker")
    _processes: list[LocalProcess] = field(default_factory=list)
    _brokers: dict[str, _Broker] = field(default_factory=dict)
    _clusters: list[LocalRabbitMQCluster] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for sts in self._of_kind("StatefulSet"):
            meta = sts["metadata"]
            host = f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
            self._brokers[meta["name"]] = _Broker(meta["name"], meta["namespace"], free_port(), host, sts)

    @classmethod
    def from_directory(cls, rendered: Path, workdir: Path) -> LocalStack:
        import yaml

        objects = [yaml.safe_load(p.read_text()) for p in sorted(rendered.glob("*.yaml"))]
        return cls(objects, workdir)

    # --- lookups -------------------------------------------------------------------------

    def _of_kind(self, kind: str) -> list[Manifest]:
        return [o for o in self.objects if o["kind"] == kind]

    def _object(self, kind: str, name: str) -> Manifest:
        (found,) = [o for o in self._of_kind(kind) if o["metadata"]["name"] == name]
        return found

    def _secret_value(self, name: str, key: str) -> str:
        data = self._object("Secret", name).get("stringData", {})
        value = data.get(key)
        if value is None or value.startswith("<redacted"):
            raise ValueError(f"Secret {name}/{key} is redacted: render with --show-secrets for the local runner")
        return str(value)

    def deployment(self, name: str) -> Manifest:
        return self._object("Deployment", name)

    def broker_port(self, broker: str = "redis") -> int:
        return self._brokers[broker].port

    def broker_url(self, broker: str = "redis", key: str = "broker-url") -> str:
        """A URL from the rendered Secret (by default the agents'), pointed at the local Redis."""
        return self._translate_hosts(self._secret_value(self.secret_name(broker), key))

    def _redis_pod(self, broker: str) -> tuple[Manifest, Manifest]:
        """(pod spec, redis container) of a broker's StatefulSet."""
        pod = self._brokers[broker].statefulset["spec"]["template"]["spec"]
        (container,) = [c for c in pod["containers"] if c["name"] == "redis"]
        return pod, container

    # --- translation ---------------------------------------------------------------------

    def _translate_hosts(self, text: str) -> str:
        for b in self._brokers.values():
            for port in (REDIS_PORT, AMQP_PORT):
                text = text.replace(f"{b.host}:{port}", f"127.0.0.1:{b.port}")
            text = text.replace(b.host, "127.0.0.1")
        return text

    def _env(self, container: Manifest, pod_name: str, mounts: dict[str, Path]) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in container.get("env", []):
            if "value" in item:
                value = expand(str(item["value"]), env)
            else:
                source = item["valueFrom"]
                if "secretKeyRef" in source:
                    ref = source["secretKeyRef"]
                    value = self._secret_value(ref["name"], ref["key"])
                elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
                    value = pod_name
                else:
                    raise NotImplementedError(f"env source {source} is not supported by the local runner")
            env[item["name"]] = self._translate_paths(self._translate_hosts(value), mounts)
        return env

    @staticmethod
    def _translate_paths(text: str, mounts: dict[str, Path]) -> str:
        if not mounts:
            return text
        # One pass, longest mount path first (/etc/redis-auth before /etc/redis), so a
        # replacement is never itself rewritten.
        paths = "|".join(re.escape(p) for p in sorted(mounts, key=len, reverse=True))
        return re.sub(rf"(?<![\w/])({paths})(?=/|\b|$)", lambda m: str(mounts[m.group(1)]), text)

    @staticmethod
    def _mounts_of(container: Manifest, pod_dir: Path) -> dict[str, Path]:
        """Mount path -> local directory of the container's volumes (where `_mounts` makes them)."""
        return {m["mountPath"]: pod_dir / "volumes" / m["name"] for m in container.get("volumeMounts", [])}

    def _mounts(self, pod: Manifest, container: Manifest, pod_dir: Path) -> dict[str, Path]:
        """Materialise the container's volumes under `pod_dir`; mount path -> local directory."""
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        mounts = self._mounts_of(container, pod_dir)
        for local in mounts.values():
            local.mkdir(parents=True, exist_ok=True)
        # Every container of the pod sees the same file of a shared volume: ConfigMap files are
        # translated with the mount paths of all of them (redis.conf names /data).
        pod_mounts = {path: local for c in pod.get("initContainers", []) + pod["containers"]
                      for path, local in self._mounts_of(c, pod_dir).items()}
        for mount in container.get("volumeMounts", []):
            volume = volumes.get(mount["name"], {})
            local = mounts[mount["mountPath"]]
            if "configMap" in volume:
                data = self._object("ConfigMap", volume["configMap"]["name"])["data"]
                for key, text in data.items():
                    # Files from ConfigMaps name mount paths too (redis.conf's `dir` and `aclfile`).
                    (local / key).write_text(self._translate_paths(text, pod_mounts))
            elif "secret" in volume:
                self._project_secret(local, volume["secret"])
        return mounts

    def _project_secret(self, local: Path, source: Manifest) -> None:
        """The Secret's items into the volume directory `local` the way the kubelet's atomic
        writer does it: all of them at once, in a fresh directory that one rename of the `..data`
        link makes current, so a reader never sees one key updated and another not."""
        fresh = local / f"..{time.time_ns()}"
        for item in source.get("items", []):
            path = fresh / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self._secret_value(source["secretName"], item["key"]))
            path.chmod(0o600)
        previous = (local / "..data").resolve() if (local / "..data").is_symlink() else None
        link = local / "..data_tmp"
        link.unlink(missing_ok=True)
        link.symlink_to(fresh.name)
        link.replace(local / "..data")
        for top in {Path(item["path"]).parts[0] for item in source.get("items", [])}:
            if not (local / top).is_symlink():
                (local / top).symlink_to(Path("..data") / top)
        if previous is not None:
            shutil.rmtree(previous)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> LocalProcess:
        log_path = self.workdir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        base = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "HOME") if k in os.environ}
        with log_path.open("ab") as log:
            popen = subprocess.Popen(argv, env={**base, **env}, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        process = LocalProcess(name, popen, log_path)
        self._processes.append(process)
        return process

    # --- the broker ----------------------------------------------------------------------

    def start_broker(self, broker: str = "redis", wait_ready: float = 20.0) -> LocalProcess:
        """Start Redis with the rendered command, args, env and config files."""
        b = self._brokers[broker]
        pod, container = self._redis_pod(broker)
        pod_dir = self.workdir / f"{broker}-0"
        if b.data_dir is None:
            pod_dir.mkdir(parents=True, exist_ok=True)
        mounts = self._mounts(pod, container, pod_dir)
        b.data_dir = mounts.get("/data")
        env = self._env(container, f"{broker}-0", mounts)
        argv = [expand(a, env) for a in container["command"] + container.get("args", [])]
        argv = [self._translate_paths(a, mounts) for a in argv]
        argv += ["--port", str(b.port), "--bind", "127.0.0.1"]
        b.process = self._spawn(f"{broker}-0", argv, env, pod_dir)
        if not any(s.running() for s in b.sidecars):
            b.sidecars = [self._start_sidecar(broker, pod, c, pod_dir) for c in pod["containers"] if c["name"] != "redis"]
        if wait_ready:
            self.wait_broker_ready(broker, wait_ready)
        return b.process

    def _start_sidecar(self, broker: str, pod: Manifest, container: Manifest, pod_dir: Path) -> LocalProcess:
        mounts = self._mounts(pod, container, pod_dir)
        env = self._env(container, f"{broker}-0", mounts)
        if "REDIS_PORT" in env:
            env["REDIS_PORT"] = str(self._brokers[broker].port)
        argv = [self._translate_paths(expand(a, env), mounts) for a in container["command"] + container.get("args", [])]
        return self._spawn(f"{broker}-0-{container['name']}", argv, env, pod_dir)

    def sidecar(self, broker: str, name: str) -> LocalProcess:
        (found,) = [s for s in self._brokers[broker].sidecars if s.name == f"{broker}-0-{name}"]
        return found

    def secret_name(self, broker: str = "redis") -> str:
        volumes = self._brokers[broker].statefulset["spec"]["template"]["spec"]["volumes"]
        return str(next(v["secret"]["secretName"] for v in volumes if "secret" in v))

    def update_secret(self, broker: str, string_data: dict[str, str]) -> None:
        """What `pulumi up` and the kubelet do to a changed Secret: new values in the object, and
        the files of the broker pod's Secret volume refreshed in place (the pod keeps running)."""
        self._object("Secret", self.secret_name(broker))["stringData"].update(string_data)
        b = self._brokers[broker]
        pod = b.statefulset["spec"]["template"]["spec"]
        if any(c["name"] == "rabbitmq" for c in pod["containers"]):
            if b.cluster is None:
                return  # its pods read the Secret when they start
            if BOOT_DEFINITIONS in string_data:
                b.cluster.update_definitions(string_data[BOOT_DEFINITIONS])
            pod_dirs = [self.workdir / f"{broker}-{index}" for index in range(b.cluster.nodes)]
        else:
            pod, _ = self._redis_pod(broker)
            pod_dirs = [self.workdir / f"{broker}-0"]
        secret = self.secret_name(broker)
        for pod_dir in pod_dirs:
            for volume in pod["volumes"]:
                if volume.get("secret", {}).get("secretName") == secret:
                    local = pod_dir / "volumes" / volume["name"]
                    local.mkdir(parents=True, exist_ok=True)
                    self._project_secret(local, volume["secret"])

    def secret_value(self, broker: str, key: str) -> str:
        return self._secret_value(self.secret_name(broker), key)

    def _exec_probe(self, container: Manifest, pod_name: str, probe: str = "readinessProbe",
                    port: tuple[int, int] | None = None) -> bool:
        """Run a container's exec probe as the kubelet would: its command, with the container's
        env and its mounts at their local paths (and the `port` pair's -p rewritten to the local one)."""
        mounts = self._mounts_of(container, self.workdir / pod_name)
        env = self._env(container, pod_name, mounts)
        argv = [self._translate_paths(a, mounts) for a in container[probe]["exec"]["command"]]
        if port is not None:
            argv = [a.replace(f"-p {port[0]}", f"-p {port[1]}") for a in argv]
        result = subprocess.run(argv, env={"PATH": os.environ.get("PATH", ""), **env}, capture_output=True, timeout=30)
        return result.returncode == 0

    def broker_probe(self, broker: str = "redis", probe: str = "readinessProbe") -> bool:
        """The Redis container's rendered probe, run as the kubelet would."""
        _, container = self._redis_pod(broker)
        return self._exec_probe(container, f"{broker}-0", probe, port=(REDIS_PORT, self._brokers[broker].port))

    def wait_broker_ready(self, broker: str = "redis", timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        process = self._brokers[broker].process
        while time.monotonic() < deadline:
            if process is not None and not process.running():
                raise RuntimeError(f"redis-server exited with {process.popen.returncode}:\n{process.log()}")
            if self.broker_probe(broker):
                return
            time.sleep(0.1)
        raise TimeoutError(f"broker {broker} not ready within {timeout}s")

    def stop_broker(self, broker: str = "redis", timeout: float = 30.0) -> int:
        """SIGTERM, as on pod deletion: Redis flushes its append-only file and exits."""
        process = self._brokers[broker].process
        assert process is not None
        process.signal(signal.SIGTERM)
        return process.wait(timeout)

    def start_any_broker(self, broker: str) -> LocalRabbitMQCluster | None:
        """Start `broker` as whichever type it was rendered: Redis, or a RabbitMQ cluster (returned)."""
        containers = self._brokers[broker].statefulset["spec"]["template"]["spec"]["containers"]
        if any(c["name"] == "rabbitmq" for c in containers):
            return self.start_rabbitmq(broker)
        self.start_broker(broker)
        return None

    def start_rabbitmq(self, broker: str, wait: float = 120) -> LocalRabbitMQCluster:
        """A RabbitMQ broker's nodes, with the rendered rabbitmq.conf, plugins, boot definitions
        and Erlang cookie, clustered, and their sidecars; its URLs then point at the cluster's
        Service proxy. Returns once every pod is ready, as `pulumi up` waits for the
        StatefulSet (the sidecars have imported the whole definitions)."""
        b = self._brokers[broker]
        pod = b.statefulset["spec"]["template"]["spec"]
        (config,) = [v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v]
        data = self._object("ConfigMap", config)["data"]
        secret = self.secret_name(broker)
        cluster = LocalRabbitMQCluster(
            self.workdir / broker, conf=data["rabbitmq.conf"], enabled_plugins=data["enabled_plugins"],
            definitions=self._secret_value(secret, BOOT_DEFINITIONS),
            cookie=self._secret_value(secret, "erlang-cookie"), nodes=int(b.statefulset["spec"]["replicas"]))
        self._clusters.append(cluster)
        b.cluster = cluster
        cluster.start(wait)
        b.port = cluster.service_port()
        for index in range(cluster.nodes):
            for container in pod["containers"]:
                if container["name"] != "rabbitmq":
                    self._start_rabbitmq_sidecar(broker, cluster, index, pod, container)
        self.wait_broker_pods_ready(broker, wait)
        return cluster

    def wait_broker_pods_ready(self, broker: str, timeout: float = 120) -> None:
        """Until every RabbitMQ pod's sidecars pass their exec readiness probes (the rabbitmq
        container's own probe is its AMQP port, which start() has seen)."""
        b = self._brokers[broker]
        assert b.cluster is not None
        pod = b.statefulset["spec"]["template"]["spec"]
        deadline = time.monotonic() + timeout
        for index in range(b.cluster.nodes):
            for container in pod["containers"]:
                command = container.get("readinessProbe", {}).get("exec", {}).get("command")
                if container["name"] == "rabbitmq" or not command:
                    continue
                while not self._exec_probe(container, f"{broker}-{index}"):
                    if time.monotonic() > deadline:
                        logs = "\n".join(p.log()[-3000:] for p in b.sidecars)
                        raise TimeoutError(f"{broker}-{index}'s {container['name']} not ready within {timeout}s "
                                           f"({' '.join(command)}):\n{logs}")
                    time.sleep(0.2)

    def definitions_file(self, broker: str, index: int = 0) -> Path:
        """The whole definitions file as node `index`'s pod mounts it (what its sidecar imports)."""
        pod = self._brokers[broker].statefulset["spec"]["template"]["spec"]
        (volume,) = [v["name"] for v in pod["volumes"]
                     if any(i["key"] == DEFINITIONS for i in v.get("secret", {}).get("items", []))]
        return self.workdir / f"{broker}-{index}" / "volumes" / volume / DEFINITIONS

    def _start_rabbitmq_sidecar(self, broker: str, cluster: LocalRabbitMQCluster, index: int, pod: Manifest,
                                container: Manifest) -> LocalProcess:
        """A sidecar of node `index`'s pod (definitions-sync), with the rendered command and env;
        what makes it speak to its node (name, HOME, epmd) is the local node's; it reads its
        pod's mounted Secret files, which update_secret refreshes."""
        pod_name = f"{broker}-{index}"
        pod_dir = self.workdir / pod_name
        mounts = self._mounts(pod, container, pod_dir)
        env = self._env(container, pod_name, mounts)
        node = cluster.node_env(index)
        for key in ("RABBITMQ_NODENAME", "RABBITMQ_USE_LONGNAME", "HOME", "PATH", "ERL_EPMD_PORT",
                    "ERL_EPMD_ADDRESS", "RABBITMQ_CTL_ERL_ARGS"):
            env[key] = node[key]
        argv = [self._translate_paths(expand(a, env), mounts) for a in container["command"] + container.get("args", [])]
        process = self._spawn(f"{pod_name}-{container['name']}", argv, env, pod_dir)
        self._brokers[broker].sidecars.append(process)
        return process

    # --- task servers --------------------------------------------------------------------

    def _pod(self, server: str) -> Manifest:
        return self.deployment(server)["spec"]["template"]["spec"]

    def start_wait_step(self, server: str, index: int = 0) -> LocalProcess:
        """The pod's init container: waits until the broker answers an authenticated PING."""
        pod = self._pod(server)
        (init,) = pod["initContainers"]
        pod_name = f"{server}-local-{index}"
        pod_dir = self.workdir / pod_name
        pod_dir.mkdir(parents=True, exist_ok=True)
        env = self._env(init, pod_name, {})
        env["PYTHONPATH"] = str(self.worker_dir)
        argv = [expand(a, env) for a in init["command"] + init.get("args", [])]
        if argv[0] == "python":
            argv[0] = sys.executable
        return self._spawn(f"{pod_name}-init", argv, env, pod_dir)

    def start_worker(self, server: str, index: int = 0, replace_args: dict[str, str] | None = None,
                     extra_env: dict[str, str] | None = None) -> LocalProcess:
        """The worker container, with the rendered command, arguments and environment.

        `replace_args` and `extra_env` exist for comparisons (benchmarks/fleet.py runs Celery's
        defaults next to the rendered settings); tests of the rendered stack pass neither.
        """
        pod = self._pod(server)
        (container,) = pod["containers"]
        pod_name = f"{server}-local-{index}"
        pod_dir = self.workdir / pod_name
        pod_dir.mkdir(parents=True, exist_ok=True)
        mounts = self._mounts(pod, container, pod_dir)
        env = self._env(container, pod_name, mounts)
        env["PYTHONPATH"] = str(self.worker_dir)
        if "/tmp" in mounts:
            env["TMPDIR"] = str(mounts["/tmp"])
        env.update(extra_env or {})
        argv = [expand(a, env) for a in container["command"] + container.get("args", [])]
        argv = [(replace_args or {}).get(a, a) for a in argv]
        argv = [self._translate_paths(a, mounts) for a in argv]
        if argv[0] == "celery":
            argv[0] = str(Path(sys.executable).with_name("celery"))
        return self._spawn(pod_name, argv, env, pod_dir)

    def start_pod(self, server: str, index: int = 0, init_timeout: float = 60.0, **worker: Any) -> LocalProcess:
        """Init container to completion, then the worker: a pod's start, in order."""
        init = self.start_wait_step(server, index)
        code = init.wait(init_timeout)
        if code != 0:
            raise RuntimeError(f"init container of {server}-local-{index} failed ({code}):\n{init.log()}")
        return self.start_worker(server, index, **worker)

    def start_replicas(self, server: str, replicas: int | None = None, **worker: Any) -> list[LocalProcess]:
        count = self.deployment(server)["spec"]["replicas"] if replicas is None else replicas
        return [self.start_pod(server, i, **worker) for i in range(count)]

    def roll(self, server: str, old_pods: list[LocalProcess], new_indexes: list[int], timeout: float = 30.0) -> list[int]:
        """A Deployment's rolling update: the new pods start and become ready, then the old ones
        get SIGTERM (each finishes its running task); the old pods' exit codes."""
        for index in new_indexes:
            self.start_pod(server, index)
        self.wait_workers_ready(server, new_indexes)
        for pod in old_pods:
            pod.signal(signal.SIGTERM)
        return [pod.wait(timeout) for pod in old_pods]

    def health_file(self, server: str, index: int, name: str) -> Path:
        return self.workdir / f"{server}-local-{index}" / "volumes" / "health" / name

    def wait_workers_ready(self, server: str, indexes: Iterable[int], timeout: float = 60.0) -> None:
        """Until each worker's readiness file exists: its consumer holds a broker connection."""
        deadline = time.monotonic() + timeout
        pending = set(indexes)
        while pending and time.monotonic() < deadline:
            pending = {i for i in pending if not self.health_file(server, i, "ready").exists()}
            time.sleep(0.1)
        if pending:
            logs = "\n".join(p.log()[-2000:] for p in self._processes if p.name.startswith(server))
            raise TimeoutError(f"workers {sorted(pending)} of {server} not ready within {timeout}s\n{logs}")

    # --- cleanup -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process this runner started: SIGTERM, then SIGKILL to the group."""
        for process in reversed(self._processes):
            process.signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in reversed(self._processes):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            process.kill_all()
        for cluster in self._clusters:
            cluster.close()

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def have_redis() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None
