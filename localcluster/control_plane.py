"""A Kubernetes control plane on loopback, from the binaries tools/engine/build makes.

etcd, kube-apiserver, kube-controller-manager (its garbage collector carries out foreground
deletes, its PV binder binds claims), kube-scheduler, and kwok, which plays the kubelet of a
few fake nodes: pods are scheduled, become Ready and, when deleted, stay Terminating until
their grace period ends, exactly as the API says. A volume provisioner stands in for a CSI
driver. With `real_node`, one real node joins too (real_node.py): a kubelet and containerd
that run the pods' containers. The control plane listens on 127.0.0.1 only; the processes keep
running after `up` returns and `down` stops them. State lives in one directory: pki/, etcd/,
logs/, kubeconfig, pids, and node/ for the real node.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from localrun import free_port

from . import keda
from .api import Kube, wait_for
from .processes import stop_groups
from .real_node import NODE_IP, RealNode, admission_config, is_ready, local_volume_dir

ZONES = ("zone-a", "zone-b", "zone-c")
STORAGE_CLASS = "standard"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
STAGES_FILE = Path(__file__).with_name("kwok_stages.yaml")
# A pod annotated so holds its full grace period when deleted (kwok_stages.yaml).
BUSY_ANNOTATION = "localcluster.gru.dev/busy"
SERVICE_CIDR = "10.96.0.0/16"
# The name in the front proxy's client certificate, the one aggregated APIs accept.
FRONT_PROXY_CLIENT = "front-proxy-client"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(pki: Path) -> None:
    """A CA, the API server's serving certificate (for 127.0.0.1, the real node's address and
    the `kubernetes` Service), the service-account keys, and the front proxy's own CA and
    client certificate, with which the API server calls aggregated APIs (KEDA's metrics)."""
    pki.mkdir(parents=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "7", "-subj", "/CN=gru-local-ca", cwd=pki)
    (pki / "server.ext").write_text(
        f"subjectAltName=IP:127.0.0.1,IP:{NODE_IP},IP:10.96.0.1,DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=kube-apiserver", cwd=pki)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "7", "-extfile", "server.ext", cwd=pki)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "front-proxy-ca.key",
             "-out", "front-proxy-ca.crt", "-days", "7", "-subj", "/CN=gru-local-front-proxy-ca", cwd=pki)
    (pki / "front-proxy.ext").write_text("extendedKeyUsage=clientAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "front-proxy-client.key",
             "-out", "front-proxy-client.csr", "-subj", f"/CN={FRONT_PROXY_CLIENT}", cwd=pki)
    _openssl("x509", "-req", "-in", "front-proxy-client.csr", "-CA", "front-proxy-ca.crt",
             "-CAkey", "front-proxy-ca.key", "-CAcreateserial", "-out", "front-proxy-client.crt",
             "-days", "7", "-extfile", "front-proxy.ext", cwd=pki)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def write_kubeconfig(path: Path, server: str, ca: Path, token: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode()}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
        "current-context": "local",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


class ControlPlane:
    def __init__(self, directory: Path, bin_dir: Path) -> None:
        self.dir = directory.resolve()
        self.bin = bin_dir
        self.logs = self.dir / "logs"
        self.pids = self.dir / "pids"
        self.kubeconfig = self.dir / "kubeconfig"

    @property
    def node_dir(self) -> Path:
        return self.dir / "node"

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        # A session of its own: `down` stops the whole process group, and a test runner's
        # Ctrl-C does not reach it half-way through.
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, cwd=self.dir,
                                   env={**os.environ, **env} if env else None)
        with self.pids.open("a") as handle:
            handle.write(f"{process.pid} {name}\n")

    def up(self, nodes: int = 3, real_node: tuple[Path, Path] | None = None,
           addons: Path | None = None) -> None:
        """Start the control plane and `nodes` fake nodes; with `real_node` (the node's bin
        directory and the images directory), one real node too. With `addons`
        (tools/addons/build's directory) the cluster has the CRDs of KEDA and of the Prometheus
        Operator's monitoring kinds, as a platform cluster does; with a real node as well, KEDA
        itself runs on it."""
        if self.dir.exists() and any(self.dir.iterdir()):
            raise SystemExit(f"cluster: {self.dir} is not empty; `tools/cluster down {self.dir}` first")
        real = RealNode(self.node_dir, real_node[0], real_node[1], self.kubeconfig, self._start) \
            if real_node else None
        if addons is not None:
            keda.check_parts(addons)
        for binary in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"):
            if not (self.bin / binary).is_file():
                raise SystemExit(f"cluster: {self.bin / binary} is missing; run tools/engine/build")
        self.logs.mkdir(parents=True)
        pki = self.dir / "pki"
        make_pki(pki)
        token = secrets.token_hex(24)
        (pki / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
        (pki / "tokens.csv").chmod(0o600)

        # With a real node, pods land on it unless their namespace says otherwise (real_node.py).
        admission = ["--enable-admission-plugins=PodNodeSelector,PodTolerationRestriction",
                     f"--admission-control-config-file={admission_config(pki)}"] if real else []
        # With a real node the API server listens on the node's address, where its pods reach
        # it through the `kubernetes` Service; without, on loopback only.
        address = "127.0.0.1"
        if real is not None:
            real.up_network()
            address = NODE_IP
        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        self._start("etcd", [
            str(self.bin / "etcd"), "--name=local", f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}", f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}", f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=local=http://127.0.0.1:{etcd_peer}", "--listen-metrics-urls=",
            # A throwaway test cluster: no fsync keeps etcd off the disk's critical path.
            "--unsafe-no-fsync", "--log-level=warn",
        ])
        self._start("kube-apiserver", [
            str(self.bin / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--bind-address={address}", f"--advertise-address={address}", f"--secure-port={api_port}",
            f"--tls-cert-file={pki / 'server.crt'}", f"--tls-private-key-file={pki / 'server.key'}",
            f"--client-ca-file={pki / 'ca.crt'}", f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--cert-dir={pki}", "--allow-privileged=false", "--profiling=false", "--v=0",
            # Logs and exec: dial the kubelet at its address, not its (unresolvable) name.
            "--kubelet-preferred-address-types=InternalIP", *admission,
            # Aggregated APIs (KEDA's external metrics): the API server authenticates to them as
            # the front proxy and dials their pods directly, as kind and kubeadm clusters can.
            f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}", "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group", "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}", "--enable-aggregator-routing=true",
        ])
        server = f"https://{address}:{api_port}"
        write_kubeconfig(self.kubeconfig, server, pki / "ca.crt", token)
        kube = Kube(self.kubeconfig)
        wait_for("the API server", lambda: bool(kube.request("GET", "readyz?verbose=false") is not None), 120)

        self._start("kube-controller-manager", [
            str(self.bin / "kube-controller-manager"), f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}", f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--leader-elect=false",
            f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=false", "--controllers=*", f"--cert-dir={pki / 'kcm'}",
            "--profiling=false",
        ])
        self._start("kube-scheduler", [
            str(self.bin / "kube-scheduler"), f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}", f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--leader-elect=false",
            f"--cert-dir={pki / 'scheduler'}", "--profiling=false",
        ])
        self._start("kwok", [
            str(self.bin / "kwok"), f"--kubeconfig={self.kubeconfig}", f"--config={STAGES_FILE}",
            "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            "--cidr=10.244.0.1/16", "--node-ip=10.0.0.1", "--node-lease-duration-seconds=40",
        ])
        self._start("provisioner", [sys.executable, "-m", "localcluster.provisioner", str(self.kubeconfig),
                                    str(local_volume_dir(self.node_dir))])

        wait_for("the default namespace", lambda: kube.get("Namespace", "default") is not None, 120)
        for index in range(nodes):
            kube.create(fake_node(f"node-{index}", ZONES[index % len(ZONES)]))
        kube.create({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "gru.local/provisioner", "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": True,
        })
        wait_for(f"{nodes} Ready nodes", lambda: ready_nodes(kube) >= nodes, 120)
        wait_for("the default service account", lambda: kube.get("ServiceAccount", "default", "default") is not None, 120)
        if real is not None:
            real.up(kube)
        if addons is not None:
            keda.install_crds(kube, addons)
            if real is not None:
                keda.install(kube, addons, real.image_names())

    def recorded_real_node(self) -> RealNode | None:
        """The real node this cluster runs, from its record (None for a kwok-only cluster)."""
        parts = self.node_dir / "parts.json"
        if not parts.is_file():
            return None
        recorded = json.loads(parts.read_text())
        return RealNode(self.node_dir, Path(recorded["bin"]), Path(recorded["images"]), self.kubeconfig, self._start)

    def down(self) -> list[str]:
        """Stop everything `up` started and remove the directory; the host changes that could
        not be undone (empty when all went well)."""
        problems: list[str] = []
        entries = [line.split() for line in self.pids.read_text().splitlines() if line.strip()] \
            if self.pids.is_file() else []
        real = self.recorded_real_node()
        if real is not None:
            # The node first, while the API server still answers: its pods are deleted properly.
            kube = Kube(self.kubeconfig) if self.kubeconfig.is_file() else None
            problems += real.stop(kube, [(int(pid), name) for pid, name in entries])
        # In reverse: kwok and the controllers before the API server, etcd last.
        stop_groups(int(pid) for pid, _name in reversed(entries))
        if real is not None:
            problems += real.remove_files()
        shutil.rmtree(self.dir, ignore_errors=True)
        return problems


def fake_node(name: str, zone: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                "topology.kubernetes.io/zone": zone, "topology.kubernetes.io/region": "local",
                "type": "kwok",
            },
        },
        "status": {
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "500Gi"},
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "500Gi"},
        },
    }


def ready_nodes(kube: Kube) -> int:
    return sum(1 for node in kube.list("Node") if is_ready(node))
