#!/usr/bin/env python3
"""The real loaders the warehouse tests feed, each in its own virtual environment.

Their pins clash with ours (target-postgres brings its own singer-sdk and SQLAlchemy; target-duckdb
an old jsonschema), so each lives in ``.venv-loaders/<name>`` (git-ignored), made once and made
again only when its pins below change. pip's cache is shared, so a rebuild downloads nothing.

    python scripts/loader_venvs.py                  # all of them (`make loaders`)
    python scripts/loader_venvs.py target-postgres  # one; prints the executable's path

The tests call ``ensure()`` themselves, so ``pytest tests/test_warehouse.py`` works without make.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".venv-loaders"
# name -> (pip requirements, executable). target-duckdb is pinned with the duckdb of meltano.yml:
# target-duckdb 0.8.0 loses one row per batch with duckdb >= 1.3 (see meltano.yml).
LOADERS: dict[str, tuple[tuple[str, ...], str]] = {
    "target-postgres": (("meltanolabs-target-postgres==0.8.1",), "target-postgres"),
    "target-duckdb": (("target-duckdb==0.8.0", "duckdb==1.2.2"), "target-duckdb"),
    # not a loader: the SQL source of tests/test_meltano_source.py (a table of another system
    # into Sage through target-sage)
    "tap-postgres": (("meltanolabs-tap-postgres==0.10.0",), "tap-postgres"),
}


def venv_dir(name: str) -> Path:
    return HOME / name


def python(name: str) -> Path:
    return venv_dir(name) / "bin" / "python"


def ensure(name: str) -> Path:
    """The loader's executable, installing its virtual environment first if needed."""
    requirements, executable = LOADERS[name]
    venv = venv_dir(name)
    stamp = venv / ".installed"
    wanted = "\n".join(requirements) + "\n"
    HOME.mkdir(exist_ok=True)
    with open(HOME / f".{name}.lock", "w") as lock:  # one installer at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (stamp.exists() and stamp.read_text() == wanted):
            print(f"loader_venvs: installing {' '.join(requirements)} in {venv}", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
            subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *requirements],
                check=True,
                env=env,
            )
            stamp.write_text(wanted)
    return venv / "bin" / executable


def main(argv: list[str]) -> int:
    names = argv or list(LOADERS)
    unknown = [n for n in names if n not in LOADERS]
    if unknown:
        print(f"loader_venvs: unknown loader {unknown}; known: {sorted(LOADERS)}", file=sys.stderr)
        return 2
    for name in names:
        print(ensure(name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
