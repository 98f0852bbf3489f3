"""One real Kubernetes node beside the control plane: containers really run.

containerd (Debian's, with runc) runs the pods; the CNI bridge plugin wires them to a bridge of
our own on a documentation address range (RFC 5737 TEST-NET-2), so no pod address can collide
with, or leak to, a real network; kube-proxy (iptables mode) carries Service traffic; CoreDNS
answers cluster names; kube-router's firewall enforces NetworkPolicy; the kubelet joins the
control plane. All are host processes started from the binaries tools/node/build makes, with
their state under the cluster's directory; what they must change outside it is recorded in
host.json first (host.py) and put back by `stop`.

The node is tainted and labelled: only pods that tolerate the taint land on it. In a cluster
started with a real node the API server adds that toleration and node selector to every pod
whose namespace does not say otherwise (control_plane.py), so stacks deploy onto it unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

import yaml

from localrun import free_port

from . import host
from .api import ApiError, Kube, wait_for
from .processes import stop_groups

NAME = "real-node"
BRIDGE = "gru0"
NODE_IP = "198.51.100.1"
POD_SUBNET = "198.51.100.0/24"
POD_RANGE_START = "198.51.100.10"
DNS_SERVICE_IP = "10.96.0.10"
DNS_PORT = 5353
CLUSTER_DOMAIN = "cluster.local"
LABEL = "gru.dev/real-node"
TAINT = {"key": LABEL, "value": "true", "effect": "NoSchedule"}
TOLERATION = {"key": LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}
ZONE = "zone-a"
NODE_BINARIES = ("kubelet", "kube-proxy", "coredns", "kube-router")
# Debian's containerd, runc, CNI plugins and iptables; .ci/run installs them.
CNI_BIN = Path("/usr/lib/cni")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IMPORT = Path(__file__).resolve().parent.parent / "tools" / "images" / "import"


class RealNode:
    """The processes and host changes of the real node, all under `directory` (DIR/node)."""

    def __init__(self, directory: Path, node_bin: Path, images: Path, kubeconfig: Path,
                 start: StartProcess) -> None:
        self.dir = directory
        self.bin = node_bin
        self.images = images
        self.kubeconfig = kubeconfig
        self.start = start
        self.socket = self.dir / "containerd.sock"
        self.record = host.HostRecord(self.dir / "host.json")

    # ----- bring-up

    def check_parts(self) -> None:
        missing = [str(self.bin / b) for b in NODE_BINARIES if not (self.bin / b).is_file()]
        missing += [b for b in ("containerd", "containerd-shim-runc-v2", "runc", "iptables", "ipset", "ctr")
                    if shutil.which(b, path=SYSTEM_PATH) is None]
        missing += [str(CNI_BIN / p) for p in ("bridge", "host-local", "loopback", "portmap") if not (CNI_BIN / p).is_file()]
        if not (self.images / "images.json").is_file():
            missing.append(str(self.images / "images.json"))
        if missing:
            raise SystemExit("cluster: the real node needs " + ", ".join(missing)
                             + " (tools/node/build, tools/images/build and .ci/run's Debian packages)")
        if host.run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
            raise SystemExit(f"cluster: a network device {BRIDGE} already exists: another real-node cluster runs "
                             "here, or one was not brought down (`tools/cluster down DIR`; with none running, "
                             f"`ip link del {BRIDGE}`)")
        if len(str(self.socket)) > 100:
            raise SystemExit(f"cluster: {self.socket} is too long for a unix socket; use a shorter DIR")

    def image(self, role: str) -> str:
        return self.image_names()[role]

    def image_names(self) -> dict[str, str]:
        """Role -> reference of every image tools/images/build made."""
        images: dict[str, str] = json.loads((self.images / "images.json").read_text())
        return images

    def up_network(self) -> None:
        """The node's bridge, before the API server starts: the API server listens on the node
        address, so that pods reach it through the `kubernetes` Service (KEDA's do)."""
        self.check_parts()
        self.dir.mkdir(parents=True)
        (self.dir / "parts.json").write_text(json.dumps({"bin": str(self.bin), "images": str(self.images)}))
        self.record.take()
        self._network()

    def up(self, kube: Kube) -> None:
        """Everything else of the node, once the control plane answers (after `up_network`)."""
        self._containerd()
        self._import_images()
        self._dns(kube)
        self._kube_proxy()
        self._kubelet()
        wait_for("the real node to be Ready", lambda: node_ready(kube, NAME), 120)
        # kube-router finds its node by name at start: only once the kubelet has registered it.
        self._kube_router()
        wait_for("kube-router's NetworkPolicy chains", lambda: any(
            c.split()[1].startswith("KUBE-ROUTER-") for c in host.list_chains()), 60)

    def _network(self) -> None:
        for key, value in (("net/ipv4/ip_forward", "1"), ("net/bridge/bridge-nf-call-iptables", "1")):
            host.write_sysctl(key, value)
        host.run("ip", "link", "add", BRIDGE, "type", "bridge")
        self.record.data["bridge"] = BRIDGE
        self.record.save()
        host.run("ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
        host.run("ip", "link", "set", BRIDGE, "up")
        cni = self.dir / "cni"
        (cni / "net.d").mkdir(parents=True)
        (cni / "net.d" / "10-gru.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0",
            "name": "gru",
            "plugins": [
                {
                    "type": "bridge", "bridge": BRIDGE, "isGateway": True, "hairpinMode": True,
                    # No masquerade: pods talk to each other and to the node, never beyond it.
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local", "dataDir": str(cni / "ipam"),
                        "ranges": [[{"subnet": POD_SUBNET, "rangeStart": POD_RANGE_START, "gateway": NODE_IP}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }, indent=1))

    def _containerd(self) -> None:
        root = self.dir / "containerd"
        config = f"""version = 2
root = "{root / 'root'}"
state = "{root / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.image('pause')}"
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails to start.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{root / 'runc'}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{self.dir / 'cni' / 'net.d'}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root / 'opt'}"
"""
        root.mkdir()
        (root / "config.toml").write_text(config)
        self.start("containerd", ["containerd", "--config", str(root / "config.toml")], env={"PATH": SYSTEM_PATH})
        wait_for("containerd", lambda: self.ctr("version").returncode == 0, 60)

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ctr", "--address", str(self.socket), "-n", "k8s.io", *args],
                              text=True, capture_output=True, env={"PATH": SYSTEM_PATH}, timeout=300)

    def _import_images(self) -> None:
        result = subprocess.run([str(IMPORT), str(self.images), str(self.socket)], text=True, capture_output=True,
                                env={"PATH": SYSTEM_PATH}, timeout=600)
        if result.returncode != 0:
            raise SystemExit(f"cluster: importing the images failed: {result.stderr.strip()[-2000:]}")

    def _dns(self, kube: Kube) -> None:
        """CoreDNS as a host process on the node's address; the kube-dns Service points at it."""
        corefile = self.dir / "Corefile"
        corefile.write_text(f""".:{DNS_PORT} {{
    bind {NODE_IP}
    errors
    ready 127.0.0.1:{free_port()}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {self.kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
    loadbalance
}}
""")
        self.start("coredns", [str(self.bin / "coredns"), "-conf", str(corefile)])
        ports = [{"name": "dns", "port": 53, "targetPort": DNS_PORT, "protocol": "UDP"},
                 {"name": "dns-tcp", "port": 53, "targetPort": DNS_PORT, "protocol": "TCP"}]
        kube.apply({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
            "spec": {"clusterIP": DNS_SERVICE_IP, "ports": ports},
        })
        kube.apply({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kube-dns-node", "namespace": "kube-system",
                         "labels": {"kubernetes.io/service-name": "kube-dns",
                                    "endpointslice.kubernetes.io/managed-by": "gru-localcluster"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}],
            "ports": [{"name": p["name"], "port": DNS_PORT, "protocol": p["protocol"]} for p in ports],
        })

    def _kube_proxy(self) -> None:
        config = self.dir / "kube-proxy.yaml"
        config.write_text(yaml.safe_dump({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.kubeconfig)},
            "hostnameOverride": NAME,
            "bindAddress": NODE_IP,
            "mode": "iptables",
            "clusterCIDR": POD_SUBNET,
            "nodePortAddresses": [f"{NODE_IP}/32"],
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            # Leave the host's localhost routing and conntrack settings alone.
            "iptables": {"localhostNodePorts": False},
            "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }))
        self.start("kube-proxy", [str(self.bin / "kube-proxy"), f"--config={config}", "--v=1"], env={"PATH": SYSTEM_PATH})

    def _kube_router(self) -> None:
        """Only its firewall: the bridge plugin itself enforces no NetworkPolicy at all."""
        self.start("kube-router", [
            str(self.bin / "kube-router"), f"--kubeconfig={self.kubeconfig}", f"--hostname-override={NAME}",
            "--run-firewall=true", "--run-router=false", "--run-service-proxy=false", "--run-loadbalancer=false",
            "--metrics-port=0", f"--health-port={free_port()}", "--v=1",
        ], env={"PATH": SYSTEM_PATH})

    def _kubelet(self) -> None:
        config = self.dir / "kubelet.yaml"
        config.write_text(yaml.safe_dump({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_IP,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "clusterDomain": CLUSTER_DOMAIN,
            "clusterDNS": [DNS_SERVICE_IP],
            "registerWithTaints": [TAINT],
            # The API server calls the kubelet (logs, exec) without a client certificate.
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "nodeStatusUpdateFrequency": "4s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "20s",
            "resolvConf": "/etc/resolv.conf",
            "maxPods": 60,
            "shutdownGracePeriod": "0s",
        }))
        self.start("kubelet", [
            str(self.bin / "kubelet"), f"--config={config}", f"--kubeconfig={self.kubeconfig}",
            f"--hostname-override={NAME}", f"--node-ip={NODE_IP}",
            f"--root-dir={self.dir / 'kubelet'}", f"--cert-dir={self.dir / 'kubelet-pki'}",
            f"--node-labels={LABEL}=true,topology.kubernetes.io/zone={ZONE},topology.kubernetes.io/region=local",
            "--v=1",
        ], env={"PATH": SYSTEM_PATH})

    # ----- tear-down

    def stop(self, kube: Kube | None, pids: list[tuple[int, str]]) -> list[str]:
        """Stop the node's pods, its processes and undo its host changes; what could not be undone."""
        problems: list[str] = []
        named = {name: pid for pid, name in pids}
        if kube is not None and "kubelet" in named:
            problems += self._drain(kube)
        # The network parts first, with their own cleanup; then the kubelet and the runtime.
        for name in ("kube-router", "kube-proxy", "coredns", "kubelet"):
            if name in named:
                stop_groups([named[name]])
        cleanups = [[str(self.bin / "kube-router"), "--cleanup-config"],
                    [str(self.bin / "kube-proxy"), "--cleanup"]]
        for argv in cleanups:
            if Path(argv[0]).is_file():
                subprocess.run(argv, capture_output=True, env={"PATH": SYSTEM_PATH}, timeout=60, check=False)
        if "containerd" in named:
            problems += self._kill_containers()
            stop_groups([named["containerd"]])
        problems += self._kill_shims()
        problems += self._remove_netns()
        bridge = self.record.data.get("bridge")
        if isinstance(bridge, str):
            host.run("ip", "link", "del", bridge, check=False)
        problems += host.unmount_under(self.dir)
        problems += self.record.restore()
        return problems

    def remove_files(self) -> list[str]:
        return host.remove_tree(self.dir)

    def _drain(self, kube: Kube) -> list[str]:
        """Cordon the node and delete its pods, so the kubelet stops them and CNI DEL runs."""
        try:
            kube.merge_patch("Node", NAME, None, {"spec": {"unschedulable": True}})
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                pods = [p for p in kube.request("GET", f"api/v1/pods?fieldSelector=spec.nodeName%3D{NAME}").get("items", [])]
                if not pods:
                    return []
                for pod in pods:
                    meta = pod["metadata"]
                    if not meta.get("deletionTimestamp"):
                        kube.request("DELETE", Kube.path("Pod", meta["namespace"], meta["name"]),
                                     {"gracePeriodSeconds": 5})
                time.sleep(1)
            return ["pods on the real node were still there after 60 s; their containers were killed"]
        except (ApiError, OSError) as error:
            return [f"could not drain the real node: {error}"]

    def _kill_containers(self) -> list[str]:
        result = self.ctr("tasks", "ls", "-q")
        for task in result.stdout.split():
            self.ctr("tasks", "kill", "--all", "-s", "SIGKILL", task)
        time.sleep(0.5 if result.stdout.strip() else 0)
        return []

    def _kill_shims(self) -> list[str]:
        """containerd's shims outlive containerd by design: find ours by the address they serve."""
        problems = []
        address = str(self.socket)
        for pid in _pids():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and cmdline[0].endswith(b"containerd-shim-runc-v2") and address.encode() in cmdline:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.2)
        for pid in _pids():
            try:
                if address.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    problems.append(f"process {pid} still serves {address}")
            except OSError:
                continue
        return problems

    def _remove_netns(self) -> list[str]:
        """The pods' network namespaces (containerd 1.6 keeps them in /run/netns, named cni-*)."""
        problems = []
        netns = Path("/run/netns")
        if netns.is_dir():
            for entry in netns.glob("cni-*"):
                result = host.run("ip", "netns", "delete", entry.name, check=False)
                if result.returncode != 0 and entry.exists():
                    problems.append(f"network namespace {entry.name}: {result.stderr.strip()}")
        return problems


class StartProcess(Protocol):
    """What ControlPlane._start offers: start a logged, recorded process."""

    def __call__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None: ...


def is_ready(node: dict[str, Any] | None) -> bool:
    conditions = (node or {}).get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def node_ready(kube: Kube, name: str) -> bool:
    return is_ready(kube.get("Node", name))


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def admission_config(directory: Path) -> Path:
    """The API server's admission settings that put every pod on the real node, unless its
    namespace asks for another node selector or other tolerations (its own annotations)."""
    path = directory / "admission.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [
            {"name": "PodNodeSelector", "configuration": {
                "podNodeSelectorPluginConfig": {"clusterDefaultNodeSelector": f"{LABEL}=true"}}},
            {"name": "PodTolerationRestriction", "configuration": {
                "apiVersion": "podtolerationrestriction.admission.k8s.io/v1alpha1", "kind": "Configuration",
                "default": [TOLERATION]}},
        ],
    }, sort_keys=False))
    return path


def local_volume_dir(node_dir: Path) -> Path:
    """Where the provisioner makes the real node's `local` volumes."""
    return node_dir / "volumes"


def kwok_namespace_annotations() -> dict[str, str]:
    """A namespace with these annotations keeps its pods on kwok's fake nodes."""
    return {"scheduler.alpha.kubernetes.io/node-selector": "type=kwok",
            "scheduler.alpha.kubernetes.io/defaultTolerations": "[]"}

