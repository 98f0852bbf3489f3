"""`python -m gru_worker.probe alive|ready [--max-age=S]`: exit 0 when the file is fresh.

Standard library only, so a probe costs a Python start-up and a stat.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

DEFAULT_HEALTH_DIR = "/var/run/gru-health"


def check(name: str, max_age: float, directory: Path) -> tuple[bool, str]:
    if name == "alive" and (directory / "reconnecting").exists():
        # Its loop waits on the broker: alive, not ready (see gru_worker.health).
        return True, f"{directory / 'reconnecting'} exists: reconnecting to the broker"
    path = directory / name
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False, f"{path} does not exist"
    if age > max_age:
        return False, f"{path} is {age:.0f}s old (limit {max_age:.0f}s)"
    return True, f"{path} is {age:.0f}s old"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gru_worker.probe")
    parser.add_argument("check", choices=["alive", "ready"])
    parser.add_argument("--max-age", type=float, default=60.0)
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("GRU_HEALTH_DIR", DEFAULT_HEALTH_DIR)))
    args = parser.parse_args(argv)
    ok, message = check(args.check, args.max_age, args.dir)
    print(("ok: " if ok else "failing: ") + message)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
