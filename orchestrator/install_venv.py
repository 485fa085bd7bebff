#!/usr/bin/env python3
"""The orchestrator example's virtual environment: Meltano 4.4.1 and Dagster with dagster-meltano.

Their pins clash with the project's own (Meltano brings its own SQLAlchemy, click and rich;
dagster-meltano holds Dagster at 1.9.13, see requirements.txt), so they live in
``orchestrator/.venv`` (git-ignored), made once and made again only when requirements.txt
changes (the stamp holds its text). pip's cache is shared, so a rebuild downloads nothing.

    python orchestrator/install_venv.py      # make sure it is there; prints its bin folder
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"
REQUIREMENTS = HERE / "requirements.txt"


def ensure() -> Path:
    """The venv's bin folder, installing the venv first if it is missing or out of date."""
    wanted = REQUIREMENTS.read_text()
    stamp = VENV / ".installed"
    with open(HERE / ".venv.lock", "w") as lock:  # one installer at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (stamp.exists() and stamp.read_text() == wanted):
            print(f"orchestrator venv: installing {REQUIREMENTS.name} into {VENV} (about 2 minutes)",
                  file=sys.stderr)  # fmt: skip
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
            env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
            pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
            subprocess.run([*pip, "--upgrade", "pip"], check=True, env=env)
            subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True, env=env)
            stamp.write_text(wanted)
    return VENV / "bin"


if __name__ == "__main__":
    print(ensure())
