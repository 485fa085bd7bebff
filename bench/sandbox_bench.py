"""Latency of 200-item ``attributes=all`` pages served by the sandbox (scale 10 by default).

Usage: ``python bench/sandbox_bench.py [--scale 10] [--requests 200] [--resource sales_invoices]
[--db PATH]``. Seeds a temporary database (unless ``--db`` names an already seeded one), starts
``sage-sandbox serve`` as a subprocess, and prints the median and p95 wall-clock latency of
full pages, measured from the client (connection set-up included).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import requests

from tap_sage.sandbox.runner import SandboxProcess, seed_db


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--resource", default="sales_invoices")
    parser.add_argument("--db", type=Path, default=None, help="an already seeded database")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        db = args.db
        if db is None:
            db = Path(tmp) / "bench.db"
            started = time.perf_counter()
            seed_db(db, scale=args.scale)
            print(f"seeded scale {args.scale} in {time.perf_counter() - started:.1f} s")
        with SandboxProcess(db, extra_args=["--quiet"]) as sandbox:
            token = sandbox.grant()["access_token"]
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
            url = f"{sandbox.api_url}/{args.resource}"
            first = requests.get(url, headers=headers, timeout=30).json()
            pages = max(1, -(-first["$total"] // 200))
            timings: list[float] = []
            sizes: list[int] = []
            for i in range(args.requests + 5):
                params = {"items_per_page": 200, "attributes": "all", "page": i % pages + 1}
                started = time.perf_counter()
                response = requests.get(url, params=params, headers=headers, timeout=30)
                elapsed = time.perf_counter() - started
                response.raise_for_status()
                if i >= 5:  # warm-up
                    timings.append(elapsed * 1000)
                    sizes.append(len(response.content))
            timings.sort()
            p95 = timings[min(len(timings) - 1, int(len(timings) * 0.95))]
            print(
                f"{args.resource}: {first['$total']} records, {len(timings)} pages of 200 "
                f"(attributes=all, ~{statistics.mean(sizes) / 1024:.0f} KiB each): "
                f"median {statistics.median(timings):.1f} ms, p95 {p95:.1f} ms, "
                f"max {timings[-1]:.1f} ms"
            )


if __name__ == "__main__":
    main()
