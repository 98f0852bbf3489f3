"""The real engine against a cluster with a real node: pods run in containers.

One cluster for the whole run, started by `tools/cluster up DIR --real-node` with the node's
binaries (tools/node/build), the images built here (tools/images/build) and the add-ons
(tools/addons/build: KEDA runs on the node), all built first when missing. Every pod lands
on the real node (its namespace would have to say otherwise).
With GRU_NODE_KUBECONFIG the suite runs on that cluster instead (kind, for one), which must
have the images of tools/images/build side-loaded under their names.
Each test deploys with `pulumi up` through the engine suite's Project fixture and reads what
a user would: pod status, container logs through the API server, Jobs run as agents.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from localcluster.api import Kube
from localcluster.engine import addons_dir, images_dir, node_bin

from ..conftest import ROOT, SEED_YAML
from ..engine.conftest import Cluster, Project, engine_bin, new_project, project  # noqa: F401 - fixtures used here
from .cluster import Images, with_images

SEED_STACK = "dev"
# The suite runs on the real node tools/cluster starts, or on the cluster this names.
EXTERNAL_KUBECONFIG = "GRU_NODE_KUBECONFIG"


@pytest.fixture(scope="session")
def images() -> Images:
    directory = images_dir()
    return Images(directory, json.loads((directory / "images.json").read_text()))


# Package-scoped: the node and its pods stop once this suite is done, not at the end of the run.
@pytest.fixture(scope="package")
def cluster(engine_bin: Path, images: Images, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:  # noqa: F811
    if os.environ.get(EXTERNAL_KUBECONFIG):
        # Another cluster (kind, say) that has the images side-loaded: the same suite, on its nodes.
        kubeconfig = Path(os.environ[EXTERNAL_KUBECONFIG])
        yield Cluster(kubeconfig, Kube(kubeconfig))
        return
    # Short: containerd's socket lives under it, and a unix socket path has 108 bytes at most.
    directory = tmp_path_factory.mktemp("rn") / "c"
    env = {**os.environ, "GRU_ENGINE_BIN": str(engine_bin), "GRU_PYTHON": sys.executable,
           "GRU_NODE_BIN": str(node_bin()), "GRU_IMAGES_DIR": str(images.directory), "GRU_ADDONS_DIR": str(addons_dir())}
    tool = str(ROOT / "tools" / "cluster")
    try:
        started = subprocess.run([tool, "up", str(directory), "--real-node"], env=env, timeout=600,
                                 capture_output=True, text=True)
        if started.returncode != 0:
            # `down` below removes the logs: the error carries what `up` said of them.
            pytest.fail(f"tools/cluster up --real-node failed (exit {started.returncode}):\n{started.stderr[-6000:]}")
        kubeconfig = directory / "kubeconfig"
        yield Cluster(kubeconfig, Kube(kubeconfig))
    finally:
        down = subprocess.run([tool, "down", str(directory)], check=False, env=env, timeout=300,
                              capture_output=True, text=True)
        # A down that could not put the host back is a failure of this suite, not a footnote.
        assert down.returncode == 0, f"tools/cluster down left the host changed:\n{down.stderr}"


@contextmanager
def stack_up(cluster: Cluster, engine_bin: Path, tmp_path_factory: pytest.TempPathFactory,  # noqa: F811
             stack: str, text: str) -> Iterator[Project]:
    """Stack file `text` up as `stack` in a project of its own, for a module's tests; destroyed
    (and its namespace removed) after them."""
    with new_project(cluster, engine_bin, tmp_path_factory.mktemp(stack),
                     tmp_path_factory.getbasetemp() / "pulumi-home") as made:
        made.write_stack(stack, text)
        made.init(stack)
        made.up(stack)
        yield made
        made.destroy(stack)


@pytest.fixture(scope="module")
def deployed_seed(cluster: Cluster, engine_bin: Path, images: Images,  # noqa: F811
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """The seed stack, verbatim but for its image names, up on the real node."""
    with stack_up(cluster, engine_bin, tmp_path_factory, SEED_STACK, with_images(SEED_YAML, images)) as seed:
        yield seed
