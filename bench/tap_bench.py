"""tap-sage benchmark (issues 4, 11 and 15): side by side, in one run, against the same sandbox.

    .venv/bin/python bench/tap_bench.py            # scale 50: about 50,000 sales invoices
    .venv/bin/python bench/tap_bench.py --quick    # scale 5 (a smoke test of the script)
    .venv/bin/python bench/tap_bench.py --json out.json   # the figures, for the README

One seeded sandbox database (one business; ``--db`` keeps and reuses it), served by two sandbox
processes: one plain, one with ``--latency-ms 50``. Four programs read it:

- ``tap-sage`` (``python -m tap_sage.tap``, a Meltano-like catalog: every stream listed, one
  selected), also with its wire conversion turned off (``TAP_SAGE_BENCH_NO_WIRE=1``: records go
  out as Sage sent them) to show what decimal and date handling costs;
- the stock-SDK peer (``bench/peer_tap.py``: a small idiomatic singer-sdk ``RESTStream`` tap);
- a bare ``requests`` loop that fetches the same pages and writes each item as a JSON line.

Each runs under ``bench/measure.py``, which reads the process's OWN CPU seconds and memory
high-water mark (``VmHWM``) at its first HTTP request and at exit. Measured:

1. start-up (one stream selected): CPU and peak memory before the first request;
2. marginal CPU per record: CPU from the first request to exit over ``sales_invoices``,
   divided by its records; the ratio to the bare loop (tap-sage with the wire on and off and
   the loop run in turn ``--repeat`` times, the least CPU of each kept);
3. list requests per 200 records (the sandbox's request log);
4. peak memory at 10x the records (all the invoices vs their last tenth, ``start_date``);
5. share of the latency limit at 50 ms (``contact_payments``): records per second from the first
   request to exit, over ``max_concurrency x 200 / 50 ms``, at concurrency 1, 4 and 8; the
   peer reads one page at a time (the SDK's way).
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
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tap_sage.sandbox.runner import SandboxProcess, seed_db  # noqa: E402
from tests.tap_helpers import catalog_for  # noqa: E402

STREAM = "sales_invoices"
LATENCY_STREAM = "contact_payments"
STARTUP_STREAM = "bank_accounts"
LATENCY_MS = 50
MEASURE = str(ROOT / "bench" / "measure.py")
PEER = str(ROOT / "bench" / "peer_tap.py")

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


class Measured:
    """One measured run: ``bench/measure.py``'s report and what the program wrote."""

    def __init__(self, report: dict[str, Any], stdout: Path, stderr: str, wall: float) -> None:
        self.report = report
        self.stdout = stdout  # what it wrote (a file: a sync's output is large)
        self.stderr = stderr
        self.wall = wall

    @property
    def startup_cpu(self) -> float:
        return float(self.report["first_request"]["cpu"])

    @property
    def startup_mib(self) -> float:
        return float(self.report["first_request"]["hwm_mib"])

    @property
    def peak_mib(self) -> float:
        return float(self.report["exit"]["hwm_mib"])

    @property
    def work_cpu(self) -> float:
        return float(self.report["exit"]["cpu"] - self.report["first_request"]["cpu"])

    @property
    def work_wall(self) -> float:
        return float(self.report["exit"]["wall"] - self.report["first_request"]["wall"])

    def records(self) -> int:
        count = 0
        with self.stdout.open("rb") as lines:
            for line in lines:
                count += line.startswith((b'{"type":"RECORD"', b'{"type": "RECORD"'))
        return count


def measured(work: Path, tag: str, program: list[str], env: dict[str, str] | None = None) -> Measured:  # fmt: skip
    report = work / f"{tag}.measure.json"
    out = work / f"{tag}.out"
    started = time.perf_counter()
    with out.open("wb") as stdout:
        proc = subprocess.run(
            [sys.executable, MEASURE, str(report), *program],
            stdout=stdout,
            stderr=subprocess.PIPE,
            check=False,
            env={**os.environ, **(env or {})},
            cwd=str(work),
        )
    wall = time.perf_counter() - started
    stderr = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{tag} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return Measured(json.loads(report.read_text()), out, stderr, wall)


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


def run_tap(box: SandboxProcess, work: Path, tag: str, stream: str, *, wire: bool = True,
            scanner: bool = True, **settings: Any) -> Measured:  # fmt: skip
    config = tap_config(box, work, tag, **settings)
    (work / f"{tag}.config.json").write_text(json.dumps(config))
    (work / f"{tag}.catalog.json").write_text(json.dumps(catalog_for(config, [stream])))
    program = ["-m", "tap_sage.tap", "--config", str(work / f"{tag}.config.json"),
               "--catalog", str(work / f"{tag}.catalog.json")]  # fmt: skip
    env = {} if wire else {"TAP_SAGE_BENCH_NO_WIRE": "1"}
    if not scanner:  # pages read by msgspec alone, as an install without a C compiler does
        env["TAP_SAGE_PURE_PYTHON"] = "1"
    return measured(work, tag, program, env)


def run_peer(box: SandboxProcess, work: Path, tag: str, stream: str, business: str,
             **settings: Any) -> Measured:  # fmt: skip
    token = box.grant()["access_token"]
    config = {"api_url": box.api_url, "access_token": token, "business_id": business, **settings}
    config_path = work / f"{tag}.config.json"
    config_path.write_text(json.dumps(config))
    discovered = subprocess.run(
        [sys.executable, PEER, "--config", str(config_path), "--discover"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    catalog = json.loads(discovered)
    for entry in catalog["streams"]:
        for meta in entry["metadata"]:
            if meta["breadcrumb"] == []:
                meta["metadata"]["selected"] = entry["tap_stream_id"] == stream
    (work / f"{tag}.catalog.json").write_text(json.dumps(catalog))
    return measured(work, tag, [PEER, "--config", str(config_path),
                                "--catalog", str(work / f"{tag}.catalog.json")])  # fmt: skip


def run_loop(box: SandboxProcess, work: Path, tag: str, stream: str, business: str) -> Measured:
    token = box.grant()["access_token"]
    return measured(work, tag, ["-c", MINIMAL_LOOP, box.api_url, token, business, stream])


def business_of(box: SandboxProcess) -> str:
    import requests

    token = box.grant()["access_token"]
    response = requests.get(
        box.api_url + "/businesses", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    return str(response.json()["$items"][0]["id"])


def count_requests(log: Path, offset: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    with log.open("rb") as handle:
        handle.seek(offset)
        for raw in handle:
            line = raw.decode(errors="replace")
            if '"GET /v3.1/' in line:
                path = line.split('"GET /v3.1/', 1)[1].split(" ", 1)[0].rstrip('"')
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


def count_live(db: Path, stream: str) -> int:
    conn = sqlite3.connect(str(db))
    try:
        sql = "SELECT count(*) FROM records WHERE resource = ? AND deleted_at IS NULL"
        return int(conn.execute(sql, [stream]).fetchone()[0])
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
    parser.add_argument("--quick", action="store_true", help="scale 5 instead of 50")
    parser.add_argument("--scale", type=int, help="sandbox scale (default 50; --quick: 5)")
    parser.add_argument("--db", type=Path, help="sandbox database to seed (or reuse)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--memory-rounds", type=int, default=1,
                        help="pairs of the all / last-tenth syncs for the peak memory")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of tap-sage (wire on, off) and the loop, least CPU kept")  # fmt: skip
    args = parser.parse_args()
    scale = args.scale or (5 if args.quick else 50)
    work = Path(tempfile.mkdtemp(prefix="tap-bench-"))
    db = args.db or work / "bench.db"
    prepare_db(db, scale)
    n_all = count_live(db, STREAM)
    rows: list[tuple[str, str, str, str]] = []
    figures: dict[str, Any] = {"scale": scale, "records": n_all}

    with SandboxProcess(db) as box:  # not --quiet: its request log counts the requests
        business = business_of(box)
        print("start-up, one stream selected ...", flush=True)
        start_tap = run_tap(box, work, "start-tap", STARTUP_STREAM)
        start_peer = run_peer(box, work, "start-peer", STARTUP_STREAM, business)
        rows.append(("1. start-up CPU (one stream)", f"tap-sage {start_tap.startup_cpu:.2f} s",
                     f"SDK peer {start_peer.startup_cpu:.2f} s",
                     f"{start_tap.startup_cpu / start_peer.startup_cpu:.2f}x (goal <= 1x)"))  # fmt: skip
        rows.append(("   start-up memory (VmHWM)", f"tap-sage {start_tap.startup_mib:.1f} MiB",
                     f"SDK peer {start_peer.startup_mib:.1f} MiB",
                     f"{start_tap.startup_mib / start_peer.startup_mib:.2f}x (goal <= 1x)"))  # fmt: skip
        figures["startup"] = {"tap_cpu": start_tap.startup_cpu, "peer_cpu": start_peer.startup_cpu,
                              "tap_mib": start_tap.startup_mib, "peer_mib": start_peer.startup_mib}  # fmt: skip

        print(f"marginal CPU over {n_all:,} {STREAM} ...", flush=True)
        offset = log_size(box)
        tap_all = run_tap(box, work, "all", STREAM)
        requests_made = count_requests(Path(box.log_path), offset)
        peer_all = run_peer(box, work, "peer-all", STREAM, business)
        # tap-sage with the wire on and off and the bare loop, taken in turn ``--repeat``
        # times: the least CPU of each (a shared machine's noise only ever adds)
        taps, bares, loops, pures, pure_bares = [tap_all], [], [], [], []
        for i in range(args.repeat):
            if i:
                taps.append(run_tap(box, work, f"all{i}", STREAM))
            bares.append(run_tap(box, work, f"all-nowire{i}", STREAM, wire=False))
            loops.append(run_loop(box, work, f"loop{i}", STREAM, business))
            pures.append(run_tap(box, work, f"all-pure{i}", STREAM, scanner=False))
            pure_bares.append(run_tap(box, work, f"all-pure-nowire{i}", STREAM, wire=False,
                                      scanner=False))  # fmt: skip
        tap_best = min(taps, key=lambda r: r.work_cpu)
        tap_bare = min(bares, key=lambda r: r.work_cpu)
        loop = min(loops, key=lambda r: r.work_cpu)
        pure = min(pures, key=lambda r: r.work_cpu)
        pure_bare = min(pure_bares, key=lambda r: r.work_cpu)
        assert int(loop.stdout.read_text().strip()) == n_all  # the loop prints its count
        for run, who in ((tap_best, "tap-sage"), (tap_bare, "tap-sage, wire off"),
                         (peer_all, "peer"), (pure, "tap-sage, msgspec reader"),
                         (pure_bare, "tap-sage, msgspec reader, wire off")):  # fmt: skip
            assert run.records() == n_all, (who, run.records(), n_all)
        figures["cpu_us_runs"] = {
            "tap": [r.work_cpu / n_all * 1e6 for r in taps],
            "tap_nowire": [r.work_cpu / n_all * 1e6 for r in bares],
            "loop": [r.work_cpu / n_all * 1e6 for r in loops],
            "tap_msgspec": [r.work_cpu / n_all * 1e6 for r in pures],
            "tap_msgspec_nowire": [r.work_cpu / n_all * 1e6 for r in pure_bares],
        }
        us = {k: r.work_cpu / n_all * 1e6 for k, r in
              (("tap", tap_best), ("tap_nowire", tap_bare), ("peer", peer_all), ("loop", loop),
               ("tap_msgspec", pure), ("tap_msgspec_nowire", pure_bare))}  # fmt: skip
        rows.append(("2. marginal CPU per record", f"tap-sage {us['tap']:.1f} us",
                     f"requests loop {us['loop']:.1f} us",
                     f"{us['tap'] / us['loop']:.2f}x (goal <= 0.5x)"))  # fmt: skip
        rows.append(("   the same, SDK peer", f"peer {us['peer']:.1f} us", f"tap-sage {us['tap']:.1f} us",
                     f"tap-sage {us['tap'] / us['peer']:.2f}x of the peer"))  # fmt: skip
        rows.append(("   wire conversion on vs off", f"on {us['tap']:.1f} us", f"off {us['tap_nowire']:.1f} us",
                     f"{(us['tap'] / us['tap_nowire'] - 1) * 100:+.1f}% (goal: a few %)"))  # fmt: skip
        rows.append(("   without the compiled scanner (msgspec reader)", f"on {us['tap_msgspec']:.1f} us",
                     f"off {us['tap_msgspec_nowire']:.1f} us",
                     f"{(us['tap_msgspec'] / us['tap_msgspec_nowire'] - 1) * 100:+.1f}%; "
                     f"{us['tap_msgspec'] / us['loop']:.2f}x of the loop"))  # fmt: skip
        figures["cpu_us"] = us

        pages = math.ceil(n_all / 200)
        lists = requests_made.get(f"list {STREAM}", 0)
        deletion = requests_made.get(f"deletion pass {STREAM}", 0)
        other = {k: v for k, v in requests_made.items() if not k.endswith(STREAM)}
        rows.append(("3. requests", f"{lists} list + {deletion} deletion pass + " +
                     " + ".join(f"{v} {k}" for k, v in sorted(other.items())),
                     f"ceil({n_all:,}/200) = {pages} list",
                     "exact" if lists == pages else f"{lists - pages:+d} list requests"))  # fmt: skip
        figures["requests"] = {"list": lists, "pages": pages, **other}

        print("memory at a tenth of the records ...", flush=True)
        since = updated_at_of(db, STREAM, n_all - n_all // 10)
        tap_tenth = run_tap(box, work, "tenth", STREAM, start_date=since)
        rows.append(("4. peak memory (VmHWM), 10x", f"{n_all:,}: {tap_all.peak_mib:.1f} MiB",
                     f"{tap_tenth.records():,}: {tap_tenth.peak_mib:.1f} MiB",
                     f"{(tap_all.peak_mib / tap_tenth.peak_mib - 1) * 100:+.1f}% (goal within 10%)"))  # fmt: skip
        rows.append(("   the same, SDK peer (all)", f"{peer_all.peak_mib:.1f} MiB", "", ""))
        figures["memory"] = {"tap_all": tap_all.peak_mib, "tap_tenth": tap_tenth.peak_mib,
                             "tenth_records": tap_tenth.records(), "peer_all": peer_all.peak_mib}  # fmt: skip
        # the peaks move from run to run: more pairs of the two syncs, in turn, on request
        ratios = [tap_all.peak_mib / tap_tenth.peak_mib - 1]
        for i in range(1, args.memory_rounds):
            again_all = run_tap(box, work, f"mem-all{i}", STREAM)
            again_tenth = run_tap(box, work, f"mem-tenth{i}", STREAM, start_date=since)
            ratios.append(again_all.peak_mib / again_tenth.peak_mib - 1)
        if len(ratios) > 1:
            rows.append((f"   the same, {len(ratios)} pairs in turn", "",
                         ", ".join(f"{r * 100:+.1f}%" for r in sorted(ratios)), ""))  # fmt: skip
            figures["memory"]["ratios"] = ratios

    n_lat = count_live(db, LATENCY_STREAM)
    print(f"latency {LATENCY_MS} ms, {n_lat:,} {LATENCY_STREAM} ...", flush=True)
    with SandboxProcess(db, latency_ms=LATENCY_MS, extra_args=["--quiet"]) as slow:
        shares: dict[str, float] = {}
        business = business_of(slow)
        for workers in (1, 4, 8):
            run = run_tap(slow, work, f"lat{workers}", LATENCY_STREAM, max_concurrency=workers)
            limit = workers * 200 / (LATENCY_MS / 1000)
            rate = run.records() / run.work_wall
            shares[f"tap_{workers}"] = rate / limit
            rows.append((f"5. latency {LATENCY_MS} ms, concurrency {workers}",
                         f"tap-sage {run.work_wall:.1f} s, {rate:,.0f} rec/s",
                         f"limit {limit:,.0f} rec/s",
                         f"{rate / limit:.0%} of it (goal >= {'90' if workers == 1 else '85'}%)"))  # fmt: skip
            print(f"  concurrency {workers}: {run.work_wall:.1f} s", flush=True)
        peer = run_peer(slow, work, "peer-lat", LATENCY_STREAM, business)
        rate = peer.records() / peer.work_wall
        shares["peer_1"] = rate / (200 / (LATENCY_MS / 1000))
        rows.append(("   the same, SDK peer (one at a time)", f"peer {peer.work_wall:.1f} s, {rate:,.0f} rec/s",
                     f"limit {200 / (LATENCY_MS / 1000):,.0f} rec/s", f"{shares['peer_1']:.0%} of it"))  # fmt: skip
        figures["latency_share"] = shares
        figures["latency_records"] = n_lat

    width = [max(len(r[i]) for r in rows) for i in range(4)]
    print()
    print(f"tap-sage benchmark, scale {scale} ({n_all:,} {STREAM}, {n_lat:,} {LATENCY_STREAM})")
    for row in rows:
        print("  ".join(cell.ljust(width[i]) for i, cell in enumerate(row)))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
