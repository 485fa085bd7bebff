"""Latency of 200-item ``attributes=all`` pages served by the sandbox (scale 10 by default),
and the cost of a deep page: page 1 against page 250.

Usage: ``python bench/sandbox_bench.py [--scale 10] [--requests 200] [--resource sales_invoices]
[--db PATH] [--deep-page 250] [--deep-requests 40]``. Seeds a temporary database (unless
``--db`` names an already seeded one), starts ``sage-sandbox serve`` as a subprocess, and
prints the median and p95 wall-clock latency of full pages, measured from the client
(connection set-up included).

Deep pages: the list is cut into ``--deep-page`` pages (``items_per_page`` = total / 250),
scanned once in order as the tap does, then page 1 and page 250 are asked in turn, on one
kept-alive connection, of two servers on the same file: one seeking (the default paging) and
one with ``--paging offset`` (LIMIT/OFFSET, the old way), in creation order and in the tap's
order (``sort=updated_at`` from a bookmark). It prints each one's medians and page 250 /
page 1.
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
    parser.add_argument("--deep-page", type=int, default=250)
    parser.add_argument("--deep-requests", type=int, default=40)
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
        for sort in ("", "updated_at"):  # creation order, and the tap's order
            for paging in ("seek", "offset"):
                deep_pages(db, paging, args.resource, sort, args.deep_page, args.deep_requests)


def deep_pages(db: Path, paging: str, resource: str, sort: str, deep: int, repeats: int) -> None:
    """Median latency of page 1 and page ``deep`` after one scan, with ``--paging paging``."""
    with SandboxProcess(db, extra_args=["--quiet", "--paging", paging]) as sandbox:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {sandbox.grant()['access_token']}"
        url = f"{sandbox.api_url}/{resource}"
        total = session.get(url, timeout=30).json()["$total"]
        ipp = max(1, total // deep)
        params = {"items_per_page": ipp, "attributes": "all"}
        if sort:  # as tap-sage asks: sorted, from its bookmark
            params.update(sort=sort, updated_or_created_since="2000-01-01T00:00:00Z")
        for page in range(1, deep + 1):  # one scan, as the tap reads
            session.get(url, params={**params, "page": page}, timeout=30).raise_for_status()
        timings: dict[int, list[float]] = {1: [], deep: []}
        for _ in range(repeats):
            for page in (1, deep):
                started = time.perf_counter()
                response = session.get(url, params={**params, "page": page}, timeout=30)
                timings[page].append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
        first, last = (statistics.median(timings[p]) for p in (1, deep))
        print(
            f"{resource}, {ipp} a page, sort={sort or '(creation)'}, --paging {paging}: "
            f"page 1 median {first:.1f} ms, "
            f"page {deep} median {last:.1f} ms, page {deep} / page 1 = {last / first:.2f}"
        )


if __name__ == "__main__":
    main()
