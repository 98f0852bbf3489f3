"""Wall time of `pulumi up` until everything is Ready, on the local control plane, for the dev
stack and for stacks of 1, 10 and 50 task servers; next to the floor: the same rendered
manifests applied server-side with no engine and awaited until every workload is Ready.

    venv/bin/python benchmarks/deploy.py [--sizes dev,1,10,50]

Needs the engine (tools/engine/build; $GRU_ENGINE_BIN to skip the build check). Starts its own
cluster and stops it at the end. Prints one row per size; the key figure (pulumi up / floor at
the largest size) comes last.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gru.render import render_stack  # noqa: E402
from localcluster.api import Kube, wait_for  # noqa: E402
from localcluster.engine import engine_bin  # noqa: E402

PASSPHRASE = "benchmark-passphrase"


def stack_yaml(size: str, namespace: str) -> str:
    if size == "dev":
        text = (ROOT / "stacks" / "dev.yaml").read_text()
        return text.replace("name: redis\n", f"name: redis\n  namespace: {namespace}\n", 1)
    lines = ["broker:", "  type: redis", "  name: redis", f"  namespace: {namespace}", "task_server:"]
    for i in range(int(size)):
        lines.append(f"  - {{type: celery, name: workers_{i}, replicas: 2, broker_resource_name: redis}}")
    return "\n".join(lines) + "\n"


def workloads_ready(kube: Kube, namespace: str, expected: int) -> bool:
    ready = 0
    for kind in ("StatefulSet", "Deployment"):
        for obj in kube.list(kind, namespace):
            want = obj["spec"].get("replicas", 1)
            status = obj.get("status", {})
            if status.get("readyReplicas", 0) >= want and status.get("observedGeneration") == obj["metadata"]["generation"]:
                ready += 1
    return ready >= expected


def floor(kube: Kube, project: Path, size: str, namespace: str) -> float:
    """Apply the rendered manifests server-side, then wait until every workload is Ready."""
    (project / "stacks" / "floor.yaml").write_text(stack_yaml(size, namespace))
    objects = [o.manifest for o in render_stack("floor", project / "stacks")]
    workloads = sum(o["kind"] in ("StatefulSet", "Deployment") for o in objects)
    start = time.monotonic()
    for manifest in objects:
        kube.apply(manifest)
    wait_for(f"{workloads} workloads Ready in {namespace}", lambda: workloads_ready(kube, namespace, workloads), 1800, 0.2)
    return time.monotonic() - start


def pulumi_up(project: Path, env: dict[str, str], size: str, namespace: str, stack: str = "") -> float:
    stack = stack or f"bench-{size}"
    (project / "stacks" / f"{stack}.yaml").write_text(stack_yaml(size, namespace))
    subprocess.run(["pulumi", "stack", "init", stack, "--non-interactive"], cwd=project, env=env, check=True,
                   capture_output=True)
    start = time.monotonic()
    result = subprocess.run(["pulumi", "up", "--yes", "--skip-preview", "--non-interactive", "--stack", stack],
                            cwd=project, env=env, capture_output=True, text=True)
    took = time.monotonic() - start
    if result.returncode != 0:
        raise SystemExit(f"pulumi up failed for size {size}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return took


def make_project(tmp: Path) -> Path:
    project = tmp / "project"
    project.mkdir()
    for name in ("__main__.py", "requirements.txt"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(ROOT / "components", project / "components", ignore=shutil.ignore_patterns("__pycache__"))
    settings: dict[str, Any] = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    settings["runtime"]["options"]["virtualenv"] = sys.prefix
    (project / "Pulumi.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    (project / "stacks").mkdir()
    return project


@contextmanager
def local_cluster(tmp: Path, binaries: Path, *options: str) -> Iterator[Path]:
    """`tools/cluster up` in `tmp`/cluster, brought down at the end; its directory."""
    cluster = tmp / "cluster"
    tool_env = {**os.environ, "GRU_ENGINE_BIN": str(binaries), "GRU_PYTHON": sys.executable}
    subprocess.run([str(ROOT / "tools" / "cluster"), "up", str(cluster), *options], check=True, env=tool_env,
                   stdout=subprocess.DEVNULL)
    try:
        yield cluster
    finally:
        subprocess.run([str(ROOT / "tools" / "cluster"), "down", str(cluster)], check=False, env=tool_env)


def engine_env(tmp: Path, binaries: Path, cluster: Path) -> dict[str, str]:
    """The Pulumi CLI's environment: the built engine, state and home under `tmp`, the cluster."""
    (tmp / "state").mkdir(exist_ok=True)
    return {**os.environ, "PATH": f"{binaries}{os.pathsep}{os.environ['PATH']}",
            "PULUMI_HOME": str(tmp / "home"), "PULUMI_BACKEND_URL": f"file://{tmp / 'state'}",
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE, "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true", "KUBECONFIG": str(cluster / "kubeconfig")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="dev,1,10,50")
    args = parser.parse_args()
    sizes = args.sizes.split(",")
    binaries = engine_bin()
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"engine and control plane from {binaries}")
    with tempfile.TemporaryDirectory() as tmp_name, local_cluster(Path(tmp_name), binaries) as cluster:
        tmp = Path(tmp_name)
        kube = Kube(cluster / "kubeconfig")
        project = make_project(tmp)
        env = engine_env(tmp, binaries, cluster)
        # One untimed run first: plugin start-up caches, the venv's byte code.
        pulumi_up(project, env, "1", "bench-warmup", stack="warmup")
        rows = []
        print(f"{'size':>6} {'pulumi up s':>12} {'floor s':>9} {'ratio':>7}")
        for size in sizes:
            engine = pulumi_up(project, env, size, f"bench-{size}-engine")
            base = floor(kube, project, size, f"bench-{size}-floor")
            rows.append((size, engine, base))
            print(f"{size:>6} {engine:12.1f} {base:9.1f} {engine / base:7.2f}", flush=True)
        size, engine, base = rows[-1]
        print(f"key: pulumi up to Ready / server-side apply floor, {size} task servers: {engine / base:.2f}x "
              f"({engine:.1f} s vs {base:.1f} s)")

if __name__ == "__main__":
    main()
