"""tap-sage's pipeline (issue 15): the share of the latency limit, before and after, in one run.

    .venv/bin/python bench/pipeline_bench.py                  # against `main`
    .venv/bin/python bench/pipeline_bench.py --before 983c053 --quick

Two seeded sandbox databases (``--work`` keeps and reuses them): one business with a big list
(``--invoices`` sales invoices, 50,000 by default, the size issue 15 measured with) and 12 businesses at scale 1 (most lists one
page). Each is served with ``--latency-ms`` (50) of latency per request. The tap of the
``--before`` revision (a git worktree of it) and the tap of this tree sync, one after the
other, at ``max_concurrency`` 1, 4 and 8:

* one big list: ``sales_invoices``; limit = ``concurrency x 200 / latency`` records a second;
* the many-businesses sync: every stream selected by default, for 12 businesses; limit =
  ``requests x latency / concurrency`` seconds for the requests it made (from the sandbox's
  request log), most of them one-page lists that no records/s figure describes.

The last column: the STATE messages the sync wrote and their bytes (beside the RECORD messages'
bytes), issue 15.

Share of the limit = limit / measured, for the sync itself: from the tap's first message on
stdout (start-up is over, no request made yet) to the end of its output; the table shows the
share of the whole wall time (start-up included) too. Goals: >= 85% at concurrency 4, >= 90% at 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.tap_bench import count_live, count_requests, log_size, tap_config  # noqa: E402
from tap_sage.sandbox.runner import SandboxProcess, seed_db  # noqa: E402
from tests.tap_helpers import catalog_for  # noqa: E402

BIG = "sales_invoices"
CONCURRENCY = (1, 4, 8)


def _seed(db: Path, businesses: int, scale: int) -> None:
    marker = db.with_suffix(".seeded")
    wanted = f"{businesses}x{scale}"
    if db.exists() and marker.exists() and marker.read_text() == wanted:
        return
    print(f"seeding {db.name}: {businesses} business(es) at scale {scale}...", flush=True)
    started = time.perf_counter()
    seed_db(db, businesses=businesses, scale=scale, seed=1)
    marker.write_text(wanted)
    print(f"  seeded in {time.perf_counter() - started:.0f} s", flush=True)


def _worktree(ref: str, work: Path) -> Path:
    """A checkout of ``ref`` (the tap before) beside this one."""
    target = work / f"before-{ref.replace('/', '_')}"
    if not target.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(target), ref],
                       check=True, capture_output=True)  # fmt: skip
    return target


def _tap(code: Path, box: SandboxProcess, work: Path, tag: str, streams: list[str] | None,
         **settings: Any) -> dict[str, Any]:  # fmt: skip
    """One sync by the tap of ``code``: wall time, requests, records."""
    config = tap_config(box, work, tag, **settings)
    (work / f"{tag}.config.json").write_text(json.dumps(config))
    cmd = [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(code)!r}); "
           "from tap_sage.tap import TapSage; TapSage.cli()",
           "--config", str(work / f"{tag}.config.json")]  # fmt: skip
    if streams is not None:
        (work / f"{tag}.catalog.json").write_text(json.dumps(catalog_for(config, streams)))
        cmd += ["--catalog", str(work / f"{tag}.catalog.json")]
    offset = log_size(box)
    started = time.perf_counter()
    errors = (work / f"{tag}.err").open("w+b")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors)
    assert proc.stdout is not None
    first: float | None = None
    records = record_bytes = states = state_bytes = 0
    for line in proc.stdout:
        if first is None:
            first = time.perf_counter()  # the first SCHEMA: start-up is over
        if line.startswith(b'{"type":"RECORD"'):
            records += 1
            record_bytes += len(line)
        elif line.startswith(b'{"type":"STATE"'):
            states += 1
            state_bytes += len(line)
    ended = time.perf_counter()
    code = proc.wait()
    errors.seek(0)
    stderr = errors.read().decode(errors="replace")
    errors.close()
    if code != 0:
        raise SystemExit(f"{tag} failed:\n{stderr[-3000:]}")
    counts = count_requests(Path(box.log_path), offset)
    result = {
        "wall": ended - started,
        "sync": ended - (first or started),
        "records": records,
        "record_bytes": record_bytes,
        "states": states,
        "state_bytes": state_bytes,
        "requests": sum(v for k, v in counts.items() if k != "token"),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="main", help="git revision of the tap before")
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--invoices", type=int, default=50_000,
                        help="sales invoices of the big list (1,000 per scale step)")  # fmt: skip
    parser.add_argument("--businesses", type=int, default=12)
    parser.add_argument("--quick", action="store_true", help="5,000 invoices, 4 businesses")
    parser.add_argument("--work", type=Path, help="folder for the databases (kept, reused)")
    args = parser.parse_args()
    if args.quick:
        args.invoices, args.businesses = 5_000, 4
    work = args.work or Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    latency = args.latency_ms / 1000
    big_db, many_db = work / f"big-{args.invoices}.db", work / f"many-{args.businesses}.db"
    _seed(big_db, 1, max(1, args.invoices // 1000))
    _seed(many_db, args.businesses, 1)
    codes = {"before": _worktree(args.before, work), "after": ROOT}
    rows: list[tuple[str, ...]] = []
    with SandboxProcess(big_db, latency_ms=args.latency_ms, extra_args=[]) as box:
        n_big = count_live(big_db, BIG)
        for side, code in codes.items():
            for workers in CONCURRENCY:
                run = _tap(code, box, work, f"{side}-big{workers}", [BIG], max_concurrency=workers)
                limit = n_big / (workers * 200 / latency)  # seconds at the latency limit
                rows.append(_row(f"big list ({n_big:,} {BIG})", side, workers, run, limit))
                print("  " + "  ".join(rows[-1]), flush=True)
    with SandboxProcess(many_db, latency_ms=args.latency_ms, extra_args=[]) as box:
        for side, code in codes.items():
            for workers in CONCURRENCY:
                run = _tap(code, box, work, f"{side}-many{workers}", None, max_concurrency=workers)
                limit = run["requests"] * latency / workers
                rows.append(_row(f"{args.businesses} businesses, scale 1", side, workers, run,
                                 limit))  # fmt: skip
                print("  " + "  ".join(rows[-1]), flush=True)
    header = ("sync", "tap", "concurrency", "records", "requests", "sync time", "wall", "limit",
              "share (sync)", "share (with start-up)", "STATE (records)")  # fmt: skip
    table = [header, *rows]
    width = [max(len(r[i]) for r in table) for i in range(len(header))]
    print(f"\ntap-sage pipeline bench: {args.latency_ms} ms latency, before = {args.before}")
    for row in table:
        print("  ".join(cell.ljust(width[i]) for i, cell in enumerate(row)))


def _row(sync: str, side: str, workers: int, run: dict[str, Any], limit: float) -> tuple[str, ...]:  # fmt: skip
    wall, synced = run["wall"], run["sync"]
    return (sync, side, str(workers), f"{run['records']:,}", f"{run['requests']:,}",
            f"{synced:.1f} s", f"{wall:.1f} s", f"{limit:.1f} s", f"{limit / synced:.0%}",
            f"{limit / wall:.0%}",
            f"{run['states']} = {run['state_bytes'] / 1e6:.2f} MB ({run['record_bytes'] / 1e6:.1f} MB)")  # fmt: skip


if __name__ == "__main__":
    main()
