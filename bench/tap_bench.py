"""tap-sage benchmark: issue 4's four measurements, side by side, in one run.

    .venv/bin/python bench/tap_bench.py            # scale 100: 100,000 sales invoices
    .venv/bin/python bench/tap_bench.py --quick    # scale 10: 10,000 sales invoices

One seeded sandbox database (one business; ``--db`` keeps and reuses it), served by two
sandbox processes: one plain and one with ``--latency-ms 100``. Measured:

1. Client CPU per record: ``tap-sage`` syncing ``sales_invoices`` to /dev/null, against a
   minimal loop with ``requests`` that fetches the same pages and writes each record as a JSON
   line to /dev/null (user + system CPU of each process, start-up included).
2. Latency-bound initial sync of ``contact_payments`` (40,000 records at scale 100) through
   the 100 ms sandbox: wall time with ``max_concurrency`` 4 and 8 against 1.
3. Requests the tap made for run 1, counted in the sandbox's request log: list requests,
   deletion pass, /businesses and token requests, against one list request per 200 records.
4. Peak memory (max RSS) of the tap syncing all the invoices against syncing the last tenth
   (the same stream, from a ``start_date``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tap_sage.sandbox.runner import SandboxProcess, seed_db  # noqa: E402
from tests.tap_helpers import catalog_for  # noqa: E402

STREAM = "sales_invoices"
LATENCY_STREAM = "contact_payments"

MINIMAL_LOOP = r"""
import json, sys, requests
api, token, business, stream = sys.argv[1:5]
session = requests.Session()
session.headers.update({"Authorization": "Bearer " + token, "Accept": "application/json",
                        "X-Business": business})
params = {"items_per_page": 200, "attributes": "all", "sort": "updated_at"}
url, count = api + "/" + stream, 0
with open("/dev/null", "w") as out:
    while url:
        body = session.get(url, params=params, timeout=60).json()
        for item in body["$items"]:
            out.write(json.dumps(item) + "\n")
            count += 1
        url, params = (api + body["$next"]) if body["$next"] else None, None
print(count)
"""


def _peak_rss(pid: int, done: threading.Event, out: list[float]) -> None:
    """Poll the kernel's high-water mark of the process's resident memory (VmHWM, per exec'd
    image: unlike ru_maxrss it does not inherit the parent's size at fork)."""
    status = Path(f"/proc/{pid}/status")
    while not done.is_set():
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    out.append(int(line.split()[1]) / 1024)
        except OSError:
            return
        done.wait(0.01)


def run_measured(cmd: list[str], *, stdout: Any = subprocess.DEVNULL) -> dict[str, Any]:
    """Run a process; its wall time, CPU seconds, peak RSS (MiB) and its stderr text."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=err)
        done, peaks = threading.Event(), [0.0]
        poller = threading.Thread(target=_peak_rss, args=(proc.pid, done, peaks), daemon=True)
        poller.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        poller.join()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}):\n{text[-3000:]}")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss": max(peaks),
        "stderr": text,
    }


def tap_config(box: SandboxProcess, work: Path, tag: str, **settings: Any) -> dict[str, Any]:
    granted = box.grant()
    return {
        "connection_name": f"bench-{tag}",
        "initiate_oauth": "REFRESH",
        "client_id": granted["client_id"],
        "client_secret": granted["client_secret"],
        "access_token": granted["access_token"],
        "refresh_token": granted["refresh_token"],
        "oauth_settings_location": str(work / f"{tag}.tokens.json"),
        "advanced_config": {"api_url": box.api_url, "token_url": box.token_url},
        **settings,
    }


def run_tap(box: SandboxProcess, work: Path, tag: str, stream: str, **settings: Any) -> dict[str, Any]:  # fmt: skip
    config = tap_config(box, work, tag, **settings)
    (work / f"{tag}.config.json").write_text(json.dumps(config))
    (work / f"{tag}.catalog.json").write_text(json.dumps(catalog_for(config, [stream])))
    cmd = [sys.executable, "-m", "tap_sage.tap", "--config", str(work / f"{tag}.config.json"),
           "--catalog", str(work / f"{tag}.catalog.json")]  # fmt: skip
    result = run_measured(cmd)
    result["records"] = records_in_log(result["stderr"], stream)
    return result


def records_in_log(stderr: str, stream: str) -> int:
    total = 0
    for line in stderr.splitlines():
        marker = f"Read {stream} for business "
        if marker in line:
            total += int(line.split(marker, 1)[1].split(": ", 1)[1].split(" records", 1)[0])
    return total


def count_requests(log: Path, offset: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    with log.open("rb") as handle:
        handle.seek(offset)
        for raw in handle:
            line = raw.decode(errors="replace")
            if '"GET /v3.1/' in line:
                path = line.split('"GET /v3.1/', 1)[1].split(" ", 1)[0]
                resource = path.split("?", 1)[0]
                kind = "deletion pass" if "deleted_since=" in path else "list"
                key = f"{kind} {resource}" if resource != "businesses" else "businesses"
                counts[key] = counts.get(key, 0) + 1
            elif '"POST /oauth/token' in line:
                counts["token"] = counts.get("token", 0) + 1
    return counts


def log_size(box: SandboxProcess) -> int:
    path = Path(box.log_path)
    return path.stat().st_size if path.exists() else 0


def updated_at_of(db: Path, stream: str, position: int) -> str:
    conn = sqlite3.connect(str(db))
    try:
        row = conn.execute(
            "SELECT updated_at FROM records WHERE resource = ? AND deleted_at IS NULL "
            "ORDER BY updated_at, seq LIMIT 1 OFFSET ?",
            (stream, position),
        ).fetchone()
        return str(row[0])
    finally:
        conn.close()


def count_live(db: Path, stream: str, since: str | None = None) -> int:
    conn = sqlite3.connect(str(db))
    try:
        sql = "SELECT count(*) FROM records WHERE resource = ? AND deleted_at IS NULL"
        args: list[Any] = [stream]
        if since:
            sql += " AND updated_at >= ?"
            args.append(since)
        return int(conn.execute(sql, args).fetchone()[0])
    finally:
        conn.close()


def prepare_db(db: Path, scale: int) -> None:
    marker = db.with_suffix(".seeded")
    if db.exists() and marker.exists() and marker.read_text() == str(scale):
        print(f"reusing {db} (scale {scale})", flush=True)
        return
    print(f"seeding {db} at scale {scale} (one business)...", flush=True)
    started = time.perf_counter()
    seed_db(db, businesses=1, scale=scale, seed=1)
    marker.write_text(str(scale))
    print(f"  seeded in {time.perf_counter() - started:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="scale 10 instead of 100")
    parser.add_argument("--db", type=Path, help="sandbox database to seed (or reuse)")
    args = parser.parse_args()
    scale = 10 if args.quick else 100
    work = Path(tempfile.mkdtemp(prefix="tap-bench-"))
    db = args.db or work / "bench.db"
    prepare_db(db, scale)

    rows: list[tuple[str, str, str, str]] = []
    with SandboxProcess(db) as box:
        # 1 + 3 + 4(big): the whole stream
        offset = log_size(box)
        tap_all = run_tap(box, work, "all", STREAM)
        requests_made = count_requests(Path(box.log_path), offset)
        granted = box.grant()
        business = json.loads(
            subprocess.run(
                [sys.executable, "-c", "import requests,sys;print(requests.get(sys.argv[1]+"
                 "'/businesses',headers={'Authorization':'Bearer '+sys.argv[2]}).text)",
                 box.api_url, granted["access_token"]],
                capture_output=True, text=True, check=True,
            ).stdout
        )["$items"][0]["id"]  # fmt: skip
        loop = run_measured(
            [sys.executable, "-c", MINIMAL_LOOP, box.api_url, granted["access_token"],
             business, STREAM],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        n_all = count_live(db, STREAM)
        # 4(small): the last tenth of the same stream
        since = updated_at_of(db, STREAM, n_all - n_all // 10)
        tap_tenth = run_tap(box, work, "tenth", STREAM, start_date=since)

    per_tap = tap_all["cpu"] / max(1, tap_all["records"]) * 1e6
    per_loop = loop["cpu"] / n_all * 1e6
    rows.append(("1. client CPU per record", f"tap-sage {per_tap:.1f} us ({tap_all['records']:,} records, {tap_all['cpu']:.1f} s)",
                 f"requests loop {per_loop:.1f} us ({loop['cpu']:.1f} s)",
                 f"{per_tap / per_loop:.2f}x (target <= 2x)"))  # fmt: skip

    pages = math.ceil(n_all / 200)
    lists = requests_made.get(f"list {STREAM}", 0)
    deletion = requests_made.get(f"deletion pass {STREAM}", 0)
    other = {k: v for k, v in requests_made.items() if not k.endswith(STREAM)}
    rows.append(("3. requests (run 1)", f"{lists} list + {deletion} deletion pass + " +
                 " + ".join(f"{v} {k}" for k, v in sorted(other.items())),
                 f"ceil({n_all:,}/200) = {pages} list",
                 "exact" if lists == pages else f"{lists - pages:+d} list requests"))  # fmt: skip

    rows.append(("4. peak memory (max RSS)", f"{tap_all['records']:,} records: {tap_all['rss']:.1f} MiB",
                 f"{tap_tenth['records']:,} records: {tap_tenth['rss']:.1f} MiB",
                 f"{(tap_all['rss'] / tap_tenth['rss'] - 1) * 100:+.1f}% (target within 10%)"))  # fmt: skip

    with SandboxProcess(db, latency_ms=100, extra_args=["--quiet"]) as slow:
        timings = {}
        for workers in (1, 4, 8):
            result = run_tap(slow, work, f"lat{workers}", LATENCY_STREAM, max_concurrency=workers)
            timings[workers] = result
            print(f"  latency 100 ms, max_concurrency {workers}: {result['wall']:.1f} s, "
                  f"{result['records']:,} records", flush=True)  # fmt: skip
    base = timings[1]["wall"]
    for workers in (4, 8):
        rows.append((f"2. 100 ms latency, concurrency {workers}",
                     f"{timings[workers]['wall']:.1f} s ({timings[workers]['records']:,} records)",
                     f"concurrency 1: {base:.1f} s",
                     f"{timings[workers]['wall'] / base:.3f} of it (target <= 0.25)"))  # fmt: skip

    width = [max(len(r[i]) for r in rows) for i in range(4)]
    print()
    print(f"tap-sage benchmark, scale {scale} ({n_all:,} {STREAM})")
    for row in rows:
        print("  ".join(cell.ljust(width[i]) for i, cell in enumerate(row)))


if __name__ == "__main__":
    main()
