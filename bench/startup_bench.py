"""Start-up only, tap-sage beside the stock-SDK peer: ``bench/tap_bench.py``'s step 1, repeated.

    python bench/startup_bench.py [--runs 10] [--db PATH] [--installed] [--other TREE]

Each round runs tap-sage (one stream selected, the file token store, a Meltano-like catalog of
every stream) and then the peer (``bench/peer_tap.py``), both under ``bench/measure.py`` exactly
as ``tap_bench.py`` runs them; start-up is the CPU seconds and ``VmHWM`` at the first HTTP
request. Prints the least and the median of each over the rounds, and the ratios to the peer.

``--other TREE`` also runs the tap-sage of another checkout (``git worktree add TREE main``) in
each round, in turn with the two others: before and after, side by side on the same load.

``--installed`` runs every program as an installed package runs: with its modules' bytecode
cached (``PYTHONPYCACHEPREFIX`` in the work folder, one run of each first to fill it). Without
it, under ``PYTHONDONTWRITEBYTECODE=1`` (as on the team's machines), an editable checkout of
tap-sage compiles every module it imports from source on every run, while the SDK and the
peer's other dependencies are installed with their bytecode: that is a cost of the checkout,
not of the tap.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tap_bench import STARTUP_STREAM, Measured, business_of, prepare_db, run_peer, run_tap

from tap_sage.sandbox.runner import SandboxProcess


def _run_other(box: SandboxProcess, work: Path, tag: str, tree: Path) -> Measured:
    """tap-sage from ``tree`` (first on the path), measured like this checkout's."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(tree)
    try:
        return run_tap(box, work, tag, STARTUP_STREAM)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def _report(cpu: dict[str, list[float]], mib: dict[str, list[float]]) -> None:
    for name, table, unit in (("CPU", cpu, "s"), ("VmHWM", mib, "MiB")):
        for how, pick in (("least", min), ("median", statistics.median)):
            peer = pick(table["peer"])
            figures = [
                f"{who} {pick(values):.3f} {unit} ({pick(values) / peer:.2f}x)"
                for who, values in table.items()
                if who != "peer"
            ]
            print(f"start-up {name}, {how}: peer {peer:.3f} {unit}; " + "; ".join(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="rounds (one run of each)")
    parser.add_argument("--db", type=Path, help="sandbox database to seed (or reuse)")
    parser.add_argument("--installed", action="store_true", help="with bytecode cached")
    parser.add_argument("--other", type=Path, help="another checkout's tap-sage, in turn")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="startup-bench-"))
    db = args.db or work / "bench.db"
    prepare_db(db, 1)
    if args.installed:
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    who = ["tap-sage", *([f"tap-sage ({args.other})"] if args.other else [])]
    cpu: dict[str, list[float]] = {w: [] for w in [*who, "peer"]}
    mib: dict[str, list[float]] = {w: [] for w in [*who, "peer"]}
    with SandboxProcess(db, extra_args=["--quiet"]) as box:
        business = business_of(box)
        for i in range(args.runs + (1 if args.installed else 0)):
            runs = [run_tap(box, work, f"tap{i}", STARTUP_STREAM)]
            if args.other:
                runs.append(_run_other(box, work, f"other{i}", args.other))
            runs.append(run_peer(box, work, f"peer{i}", STARTUP_STREAM, business))
            if args.installed and i == 0:
                continue  # the round that filled the bytecode cache
            for name, run in zip([*who, "peer"], runs, strict=True):
                cpu[name].append(run.startup_cpu)
                mib[name].append(run.startup_mib)
    print(f"{args.runs} rounds, {'bytecode cached' if args.installed else 'as run here'}:")
    _report(cpu, mib)


if __name__ == "__main__":
    main()
