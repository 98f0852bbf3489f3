"""Where the engine's and control plane's binaries are: the one lookup every user of them shares."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "tools" / "engine" / "build"


def engine_bin(build: bool = True) -> Path:
    """$GRU_ENGINE_BIN (.ci/run sets it after building); else tools/engine/build's cache directory,
    built first when `build` (instant once cached), or only named when not."""
    if os.environ.get("GRU_ENGINE_BIN"):
        return Path(os.environ["GRU_ENGINE_BIN"])
    argv = [str(BUILD)] if build else [str(BUILD), "--print-dir"]
    out = subprocess.run(argv, check=True, text=True, stdout=subprocess.PIPE)
    return Path(out.stdout.strip().splitlines()[-1])
