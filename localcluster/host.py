"""What a real node changes on the host, recorded so `down` puts it back.

The kubelet and kube-proxy rewrite kernel settings, the CNI plugin makes a bridge and network
namespaces, kube-proxy and kube-router add iptables chains and ipsets, the kubelet mounts
volumes and makes cgroups. Each change is either made under the cluster's own directory or
written to its record (host.json) before it is made, so a `down` from another process (or
after a crash) can undo it.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

# Kernel settings the node's parts may change: ours (forwarding, bridge netfilter) and the
# kubelet's (it sets these unless protectKernelDefaults, and then refuses to start if they differ).
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/conf/all/route_localnet",
)
# Paths outside the cluster directory that containerd, the CNI plugins and the kubelet use
# whatever they are told; removed on `down` only if they did not exist before `up`.
DEFAULT_PATHS = (
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/run/containerd",
    "/run/netns",
    "/var/run/netns",
    "/etc/cni",
    "/opt/cni",
)
# Chain prefixes kube-proxy, kube-router and the CNI plugins create.
CHAIN_PREFIXES = ("KUBE-", "CNI-", "KUBE-ROUTER")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_NAME = "kubepods"


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, text=True, capture_output=True)


def read_sysctl(key: str) -> str | None:
    try:
        return (Path("/proc/sys") / key).read_text().strip()
    except OSError:
        return None


def write_sysctl(key: str, value: str) -> None:
    (Path("/proc/sys") / key).write_text(value + "\n")


class HostRecord:
    """host.json: the state of the host before the node started, and what it made."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)

    def take(self) -> None:
        """Record the sysctls, which default paths exist, and the iptables chains and ipsets
        already there (so `down` removes only ours)."""
        self.data["sysctls"] = {key: read_sysctl(key) for key in SYSCTLS}
        self.data["existing_paths"] = [p for p in DEFAULT_PATHS if os.path.lexists(p)]
        self.data["chains"] = sorted(list_chains())
        self.data["ipsets"] = sorted(list_ipsets())
        self.data["cgroups"] = [str(p) for p in kubepods_cgroups()]
        self.save()

    def restore(self) -> list[str]:
        """Put every recorded setting back; the problems met, for the caller to report."""
        problems: list[str] = []
        for key, value in self.data.get("sysctls", {}).items():
            if value is not None and read_sysctl(key) != value:
                try:
                    write_sysctl(key, value)
                except OSError as error:
                    problems.append(f"sysctl {key}: {error}")
        before_chains = set(self.data.get("chains", []))
        problems += remove_chains(before_chains)
        before_sets = set(self.data.get("ipsets", []))
        for name in list_ipsets() - before_sets:
            if run("ipset", "destroy", name, check=False).returncode != 0:
                problems.append(f"ipset {name} could not be destroyed")
        before_cgroups = set(self.data.get("cgroups", []))
        for cgroup in kubepods_cgroups():
            if str(cgroup) not in before_cgroups:
                problems += remove_cgroup_tree(cgroup)
        existing = set(self.data.get("existing_paths", []))
        for path in DEFAULT_PATHS:
            if path not in existing and os.path.lexists(path):
                problems += remove_tree(Path(path))
        return problems


def list_chains() -> set[str]:
    """'<table> <chain>' for every chain in the IPv4 filter, nat and mangle tables."""
    chains: set[str] = set()
    for table in ("filter", "nat", "mangle"):
        out = run("iptables", "-w", "-t", table, "-S", check=False).stdout
        for line in out.splitlines():
            if line.startswith("-N "):
                chains.add(f"{table} {line.split()[1]}")
    return chains


def remove_chains(keep: set[str]) -> list[str]:
    """Flush and delete the node's chains (and the rules that jump to them), keeping `keep`."""
    ours = {c for c in list_chains() - keep if c.split()[1].startswith(CHAIN_PREFIXES)}
    if not ours:
        return []
    tables = {c.split()[0] for c in ours}
    for table in tables:
        names = {c.split()[1] for c in ours if c.split()[0] == table}
        # Rules in any chain that jump to ours go first, then our chains are emptied and removed.
        for line in run("iptables", "-w", "-t", table, "-S", check=False).stdout.splitlines():
            parts = shlex.split(line)  # comments are quoted
            if parts[:1] == ["-A"] and "-j" in parts and parts[parts.index("-j") + 1] in names \
                    and parts[1] not in names:
                run("iptables", "-w", "-t", table, "-D", *parts[1:], check=False)
        for name in names:
            run("iptables", "-w", "-t", table, "-F", name, check=False)
        for name in names:
            run("iptables", "-w", "-t", table, "-X", name, check=False)
    left = {c for c in list_chains() - keep if c.split()[1].startswith(CHAIN_PREFIXES)}
    return [f"iptables chain {c} is still there" for c in sorted(left)]


def list_ipsets() -> set[str]:
    result = run("ipset", "list", "-n", check=False)
    return set(result.stdout.split()) if result.returncode == 0 else set()


def kubepods_cgroups() -> list[Path]:
    if not CGROUP_ROOT.is_dir():
        return []
    found = [p / CGROUP_NAME for p in CGROUP_ROOT.iterdir() if (p / CGROUP_NAME).is_dir()]
    unified = CGROUP_ROOT / "unified" / CGROUP_NAME
    return sorted({*found, *([unified] if unified.is_dir() else [])})


def remove_cgroup_tree(root: Path) -> list[str]:
    """rmdir a cgroup and its children, leaves first (a cgroup with processes cannot go)."""
    problems: list[str] = []
    for dirpath, _dirs, _files in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
        try:
            os.rmdir(dirpath)
        except OSError as error:
            problems.append(f"cgroup {dirpath}: {error.strerror}")
    return problems[:3]


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first."""
    prefix = str(root.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(set(points), key=len, reverse=True)


def unmount_under(root: Path) -> list[str]:
    problems = []
    for point in mounts_under(root):
        if run("umount", point, check=False).returncode != 0 and \
                run("umount", "-l", point, check=False).returncode != 0:
            problems.append(f"could not unmount {point}")
    return problems


def remove_tree(path: Path) -> list[str]:
    """Unmount whatever is mounted inside `path`, then remove it."""
    problems = unmount_under(path) if path.exists() else []
    result = run("rm", "-rf", "--one-file-system", str(path), check=False)
    if result.returncode != 0:
        problems.append(f"could not remove {path}: {result.stderr.strip()[:200]}")
    return problems
