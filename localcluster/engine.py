"""Where the engine's and control plane's binaries are: the one lookup every user of them shares."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "tools" / "engine" / "build"
NODE_BUILD = ROOT / "tools" / "node" / "build"
IMAGES_BUILD = ROOT / "tools" / "images" / "build"
ADDONS_BUILD = ROOT / "tools" / "addons" / "build"


def engine_bin(build: bool = True) -> Path:
    """$GRU_ENGINE_BIN (.ci/run sets it after building); else tools/engine/build's cache directory,
    built first when `build` (instant once cached), or only named when not."""
    return _built("GRU_ENGINE_BIN", BUILD, build)


def node_bin(build: bool = True) -> Path:
    """The real node's binaries: $GRU_NODE_BIN, else tools/node/build's cache (built if asked)."""
    return _built("GRU_NODE_BIN", NODE_BUILD, build)


def images_dir(build: bool = True) -> Path:
    """The images built for the real node: $GRU_IMAGES_DIR, else tools/images/build's cache."""
    return _built("GRU_IMAGES_DIR", IMAGES_BUILD, build)


def addons_dir(build: bool = True) -> Path:
    """The cluster add-ons (KEDA's binaries and release manifests): $GRU_ADDONS_DIR, else
    tools/addons/build's cache."""
    return _built("GRU_ADDONS_DIR", ADDONS_BUILD, build)


def _built(variable: str, script: Path, build: bool) -> Path:
    if os.environ.get(variable):
        return Path(os.environ[variable])
    argv = [str(script)] if build else [str(script), "--print-dir"]
    out = subprocess.run(argv, check=True, text=True, stdout=subprocess.PIPE)
    return Path(out.stdout.strip().splitlines()[-1])
