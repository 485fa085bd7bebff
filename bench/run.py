"""Run every benchmark, one after the other, and print their tables.

Usage: ``python bench/run.py [--quick]`` (``make bench``). Each script starts its own sandbox;
figures are ratios measured side by side within one run, so machine noise affects both sides.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: the scripts, in turn; ``pipeline_bench.py`` (the tap's pipeline, many businesses) where it is
SCRIPTS = tuple(
    s
    for s in ("sandbox_bench.py", "tap_bench.py", "pipeline_bench.py", "target_bench.py")
    if (HERE / s).exists()
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs (smoke test only)")
    parser.add_argument("--only", choices=[s.split("_")[0] for s in SCRIPTS], action="append")
    args = parser.parse_args()
    cpus = len(__import__("os").sched_getaffinity(0))
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total_kib = int(meminfo.read_text().split()[1])
        memory = f", {total_kib / 1024 / 1024:.0f} GiB"
    print(
        f"machine: {platform.machine()}, {cpus} cores{memory}, Python "
        f"{platform.python_version()}, {platform.platform(terse=True)}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    failed = []
    for script in SCRIPTS:
        if args.only and script.split("_")[0] not in args.only:
            continue
        cmd = [sys.executable, str(HERE / script)]
        if args.quick and script != "sandbox_bench.py":
            cmd.append("--quick")
        print(f"\n=== {script} ===", flush=True)
        started = time.monotonic()
        code = subprocess.run(cmd, check=False).returncode
        print(f"({script}: exit {code}, {time.monotonic() - started:.0f} s)", flush=True)
        if code:
            failed.append(script)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
