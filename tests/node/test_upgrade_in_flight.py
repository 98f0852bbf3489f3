"""Upgrading the program with tasks in flight, on the real node.

The previous release (tests/upgrade/previous-release) deploys the seed stack with its own
program and its own default worker image, built from that release's `worker/` by that
release's tools/images/build and known to the node under the default name the release's
program renders. Workers run long tasks, more wait, and an agent keeps enqueuing; then this
commit's program updates the same state, as `pulumi up` after a `git pull` does: the fleet
rolls onto this release's default image. Asserted: every task accepted before and during the
upgrade runs exactly once, the workers rolled onto the new image, and Redis was neither
restarted nor given a new volume.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from localcluster.api import wait_for
from localcluster.engine import addons_dir, node_bin

from ..conftest import ROOT, SEED_YAML
from ..engine.conftest import Cluster, copy_program, new_project
from ..engine.test_upgrade import PREVIOUS, checkout
from .cluster import (
    CLIENT_LABEL,
    NAMESPACE,
    REDIS,
    RETRY_POLICY,
    SECRET,
    STEADY_AGENT,
    WORKERS,
    Images,
    WorkerLogs,
    enqueue,
    run_job,
    secret_env,
    wait_ready,
    with_images,
)
from .conftest import EXTERNAL_KUBECONFIG


def default_worker_image(program: Path) -> str:
    """The worker image a program renders when the stack names none (read from its source: the
    stack-file model's folder was renamed between releases)."""
    for path in sorted(program.glob("components/*/task_server.py")):
        found = re.search(r'^DEFAULT_WORKER_IMAGE = "([^"]+)"$', path.read_text(), re.MULTILINE)
        if found:
            return found.group(1)
    raise AssertionError(f"no DEFAULT_WORKER_IMAGE in {program}/components/*/task_server.py")


def build_images(program: Path) -> Images:
    """The images a checkout's own tools/images/build makes (cached: only its worker is new)."""
    env = {**os.environ, "GRU_NODE_BIN": str(node_bin()), "GRU_ADDONS_BIN": str(addons_dir() / "bin")}
    built = subprocess.run([str(program / "tools" / "images" / "build")], env=env, check=True,
                           capture_output=True, text=True, timeout=1800)
    directory = Path(built.stdout.strip().splitlines()[-1])
    return Images(directory, json.loads((directory / "images.json").read_text()))


class NodeImages:
    """The real node's containerd image store, in the namespace its kubelet reads."""

    def __init__(self, cluster: Cluster) -> None:
        self.socket = cluster.kubeconfig.parent / "node" / "containerd.sock"
        self.added: list[str] = []  # the names load_as gave, removed again by the fixture

    def ctr(self, *args: str) -> str:
        done = subprocess.run(["ctr", "--address", str(self.socket), "-n", "k8s.io", *args],
                              check=True, capture_output=True, text=True, timeout=300)
        return done.stdout

    def load_as(self, tarball: Path, local: str, name: str) -> None:
        """`tarball`'s image (`local`) in the store, also under `name`, as a pull of it would leave it."""
        self.ctr("images", "import", str(tarball))
        self.ctr("images", "tag", "--force", local, name)
        self.added.append(name)


@pytest.fixture
def node_images(cluster: Cluster) -> Iterator[NodeImages]:
    if os.environ.get(EXTERNAL_KUBECONFIG):
        pytest.skip("loads images into the local real node's containerd; another cluster needs its own loading")
    images = NodeImages(cluster)
    yield images
    for name in images.added:
        images.ctr("images", "rm", name)


def test_tasks_in_flight_run_once_across_an_upgrade_of_the_program(
        cluster: Cluster, engine_bin: Path, images: Images, node_images: NodeImages,
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    previous = checkout(PREVIOUS, tmp_path / "previous-release")
    old_default, new_default = default_worker_image(previous), default_worker_image(ROOT)
    assert old_default != new_default, "the release did not move the default worker image: nothing rolls"
    old_images = build_images(previous)
    assert old_images.worker != images.worker, "the previous release's worker is this one's: the test proves nothing"
    for tarball, local, name in ((old_images.directory / "worker.tar", old_images.worker, old_default),
                                 (images.directory / "worker.tar", images.worker, new_default)):
        node_images.load_as(tarball, local, name)

    stack = yaml.safe_load(with_images(SEED_YAML, images))
    del stack["task_server"]["image"]  # each release's own default
    kube = cluster.kube
    with new_project(cluster, engine_bin, tmp_path, tmp_path_factory.getbasetemp() / "pulumi-home",
                     source=previous) as project:
        project.write_stack("dev", yaml.safe_dump(stack, sort_keys=False))
        project.init("dev")
        project.up("dev")
        before = wait_ready(kube, WORKERS, 4, timeout=120)
        assert {p["spec"]["containers"][0]["image"] for p in before} == {old_default}
        [redis] = wait_ready(kube, REDIS, 1, timeout=60)
        claim = (kube.get("PersistentVolumeClaim", "data-redis-0", NAMESPACE) or {})["metadata"]["uid"]

        with WorkerLogs(kube, WORKERS) as logs:
            # Every worker busy with a long task (the rollout must let each finish), more waiting.
            running = enqueue(kube, images, "redis", CLIENT_LABEL, count=4, seconds=20)
            wait_for("every worker to run a long task", lambda: all(logs.pods_with(
                f"Task gru.sleep[{task}] received") for task in running), 90)
            waiting = enqueue(kube, images, "redis", CLIENT_LABEL, count=20, seconds=0.5)
            result: dict[str, str] = {}
            agent = threading.Thread(target=lambda: result.update(log=run_job(
                kube, images.worker, STEADY_AGENT.format(seconds=60, interval=0.2, retry_policy=RETRY_POLICY),
                [secret_env("CELERY_BROKER_URL", SECRET, "broker-url")], labels={CLIENT_LABEL: "true"}, timeout=300)))
            agent.start()

            copy_program(ROOT, project.root)
            project.up("dev")
            agent.join(300)
            log = result["log"]
            sent = json.loads(next(line for line in log.splitlines() if line.startswith("SENT "))[5:])
            failures = json.loads(next(line for line in log.splitlines() if line.startswith("FAILURES "))[9:])
            accepted = [*running, *waiting, *sent]
            counts = logs.wait_all_ran(accepted, timeout=240)
            old_pods = {p["metadata"]["name"] for p in before}
            finished_on_old = [task for task in running
                               if any(f"Task gru.sleep[{task}] succeeded" in logs.pod_text(p) for p in old_pods)]

        after = wait_ready(kube, WORKERS, 4, timeout=120)
        assert {p["spec"]["containers"][0]["image"] for p in after} == {new_default}
        assert not old_pods & {p["metadata"]["name"] for p in after}, "the workers did not roll"
        assert failures == []
        assert len(sent) > 100
        assert {task: counts[task] for task in accepted if counts[task] != 1} == {}
        # The running tasks finished where they ran, in the old pods' warm shutdown.
        assert sorted(finished_on_old) == sorted(running)
        [still] = wait_ready(kube, REDIS, 1, timeout=30)
        assert still["metadata"]["uid"] == redis["metadata"]["uid"], "the upgrade restarted Redis"
        assert (kube.get("PersistentVolumeClaim", "data-redis-0", NAMESPACE) or {})["metadata"]["uid"] == claim
        print(f"\n[upgrade in flight] {PREVIOUS[:8]} -> HEAD: {len(accepted)} tasks accepted "
              f"({len(running)} running, {len(waiting)} waiting, {len(sent)} during the up), 0 lost, 0 twice")
        project.destroy("dev")
