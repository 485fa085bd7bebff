"""target-sage benchmark (issues 5 and 15): four measurements side by side, in one run.

    .venv/bin/python bench/target_bench.py            # full: 2,000 / 2,000 / 2k vs 20k
    .venv/bin/python bench/target_bench.py --quick    # smaller: 300 / 300 / 1k vs 5k

It seeds a sandbox, starts it with ``--latency-ms 10`` (every answer leaves 10 ms after its
request arrived, the sandbox's own work included, as Sage's latency includes Sage's) and runs
``target-sage`` as a child process for each measurement:

1. N creates on ``contacts``, a resource where Sage forbids parallel POSTs (so they go one at a
   time): wall time against N x 10 ms. Target: at most 1.1x. Beside it, the floor: the same
   number of sequential POSTs sent by a bare ``requests`` loop (no target at all) to the same
   sandbox, and the target's time as a multiple of that floor (the target's own overhead).
2. N updates of those contacts with ``max_parallel_writes`` 1, then 8: target 8 at most 1/4
   of 1.
3. Peak memory writing M and 10 x M records (creates on ``analysis_type_categories``,
   parallel): target within 10%. The peak is the target process's own high-water mark
   (``VmHWM``, read by ``bench/measure.py`` just before it exits), not the ``ru_maxrss`` of a
   child, which starts at the size of the parent that forked it.
4. 500 sequential creates (``contacts``) through a second sandbox with ``--latency-ms 50``:
   wall time against 500 x 50 ms plus the target's start-up (launch to its first request).
   Target: at most 1.1x. Beside it, the same number of POSTs by the bare ``requests`` loop to
   that sandbox: what HTTP and the client cost on top of the latency, which 500 x 50 ms does
   not count.

Prints a table with the ratios. Not a test: timings depend on the machine. Each measurement
includes the target's start-up (~1.5 s of Python and SDK imports), which weighs on the ratios of
the small ``--quick`` run; the full run is the one that answers the issue.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tap_sage.sandbox.runner import SandboxProcess, seed_db  # noqa: E402

LATENCY_MS = 10
#: the latency of measurement 4 (issue 15: 500 creates at 50 ms)
SLOW_MS = 50

CONTACT_SCHEMA = {
    "type": "object",
    "properties": {
        "code": {"type": "string"},
        "name": {"type": "string"},
        "contact_type_ids": {"type": "array", "items": {"type": "string"}},
        "notes": {"type": ["string", "null"]},
    },
}
CATEGORY_SCHEMA = {
    "type": "object",
    "properties": {"code": {"type": "string"}, "name": {"type": "string"}},
}


def write_input(path: Path, stream: str, schema: dict[str, Any], records: Any) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write(
            json.dumps(
                {"type": "SCHEMA", "stream": stream, "schema": schema, "key_properties": ["code"]}
            )
            + "\n"
        )
        for record in records:
            fh.write(json.dumps({"type": "RECORD", "stream": stream, "record": record}) + "\n")
        fh.write(json.dumps({"type": "STATE", "value": {"done": stream}}) + "\n")


def contacts(n: int, version: str, prefix: str = "B") -> Any:
    for i in range(n):
        yield {
            "code": f"{prefix}-{i:06d}",
            "name": f"Bench contact {i}",
            "contact_type_ids": ["CUSTOMER"],
            "notes": f"version {version}",
        }


def categories(n: int, tag: str) -> Any:
    for i in range(n):
        yield {"code": f"{tag}-{i:06d}", "name": f"Bench category {tag} {i}"}


def bare_posts(api_url: str, headers: dict[str, str], business: str, n: int, tag: str) -> float:
    """Seconds a POST of ``n`` sequential contact creates sent by a bare ``requests`` loop
    (one kept-alive session, no target) take, on average."""
    import requests

    session = requests.Session()
    session.headers.update({**headers, "X-Business": business})
    started = time.perf_counter()
    for i in range(n):
        response = session.post(
            api_url + "/contacts",
            timeout=30,
            json={
                "contact": {
                    "name": f"Floor {tag} {i}",
                    "contact_type_ids": ["CUSTOMER"],
                    "idempotency_id": f"{tag}{i:031x}",
                }
            },
        )
        assert response.status_code == 201, response.text
    return (time.perf_counter() - started) / n


MEASURE = str(ROOT / "bench" / "measure.py")
LAST_REPORT: dict[str, Any] = {}


def run_target(config: dict[str, Any], input_path: Path, work: Path) -> tuple[float, float]:
    """Run target-sage on a file; return (seconds, peak memory in MiB). The peak is the
    target process's own high-water mark (``VmHWM`` read by ``bench/measure.py`` just before
    it exits), not ``ru_maxrss``, which a child starts with its parent's size; the whole
    report (CPU and clock at its first request too) is left in ``LAST_REPORT``."""
    config_path = work / "config.json"
    config_path.write_text(json.dumps(config))
    report_path = work / "target.measure.json"
    launched = time.time()
    started = time.perf_counter()
    with input_path.open("rb") as stdin:
        proc = subprocess.run(
            [
                sys.executable,
                MEASURE,
                str(report_path),
                "-c",
                "from target_sage.target import TargetSage; TargetSage.cli()",
                "--config",
                str(config_path),
            ],
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=str(work),
            check=False,
        )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode(errors="replace")[-3000:])
        raise SystemExit(f"target-sage failed on {input_path.name} ({proc.returncode})")
    report = json.loads(report_path.read_text())
    LAST_REPORT.clear()
    LAST_REPORT.update(report, launched=launched)
    return seconds, float(report["exit"]["hwm_mib"])


def outcomes(results_path: Path, run_from: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    with results_path.open(encoding="utf-8") as fh:
        for index, line in enumerate(fh):
            if index >= run_from:
                outcome = json.loads(line)["outcome"]
                counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def line_count(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller run")
    args = parser.parse_args()
    n_writes = 300 if args.quick else 2000
    mem_small = 1000 if args.quick else 2000
    mem_large = 10 * mem_small if not args.quick else 5000
    n_slow = 100 if args.quick else 500

    with tempfile.TemporaryDirectory(prefix="target-bench-") as tmp:
        work = Path(tmp)
        db = work / "sandbox.db"
        print(f"Seeding the sandbox in {db} ...", flush=True)
        seed_db(db, businesses=1, scale=1, seed=1)
        with SandboxProcess(db, latency_ms=LATENCY_MS, extra_args=["--quiet"]) as sandbox:
            grant = sandbox.grant()
            base: dict[str, Any] = {
                "connection_name": "bench",
                "client_id": grant["client_id"],
                "client_secret": grant["client_secret"],
                "access_token": grant["access_token"],
                "refresh_token": grant["refresh_token"],
                "oauth_settings_location": str(work / "tokens.json"),
                "advanced_config": {"api_url": sandbox.api_url, "token_url": sandbox.token_url},
                "ledger_path": str(work / "ledger.sqlite"),
                "results_path": str(work / "results.jsonl"),
                "stream_resources": {
                    "customers": "contacts",
                    "categories": "analysis_type_categories",
                },
            }
            import requests

            headers = {"Authorization": f"Bearer {grant['access_token']}"}
            business = requests.get(
                sandbox.api_url + "/businesses", headers=headers, timeout=30
            ).json()["$items"][0]["id"]
            base["business_id"] = business
            results = Path(base["results_path"])
            rows: list[tuple[str, str, str, str]] = []

            # 0. the floor: bare sequential POSTs, no target
            n_floor = min(n_writes, 500)
            per_post = bare_posts(sandbox.api_url, headers, business, n_floor, "F")
            floor_total = per_post * n_writes

            # 1. sequential creates
            create_in = work / "creates.singer"
            write_input(create_in, "customers", CONTACT_SCHEMA, contacts(n_writes, "1"))
            mark = line_count(results)
            t_create, _ = run_target({**base, "max_parallel_writes": 8}, create_in, work)
            assert outcomes(results, mark) == {"created": n_writes}, outcomes(results, mark)
            floor = n_writes * LATENCY_MS / 1000
            rows.append(
                (
                    f"bare requests loop, sequential POSTs (x{n_writes})",
                    f"{floor_total:.1f} s",
                    f"{per_post * 1000:.1f} ms per POST",
                    "",
                )
            )
            rows.append(
                (
                    f"{n_writes} creates, contacts (sequential POSTs)",
                    f"{t_create:.1f} s",
                    f"{t_create / floor:.2f}x of {floor:.0f} s",
                    "<= 1.10x",
                )
            )
            rows.append(
                (
                    "  the same against the bare loop",
                    "",
                    f"{t_create / floor_total:.2f}x of {floor_total:.1f} s",
                    "",
                )
            )

            # 2. updates, 1 then 8 in parallel
            timings = {}
            for parallel, version in ((1, "2"), (8, "3")):
                update_in = work / f"updates-{parallel}.singer"
                write_input(update_in, "customers", CONTACT_SCHEMA, contacts(n_writes, version))
                mark = line_count(results)
                timings[parallel], _ = run_target(
                    {**base, "max_parallel_writes": parallel}, update_in, work
                )
                assert outcomes(results, mark) == {"updated": n_writes}, outcomes(results, mark)
            rows.append(
                (f"{n_writes} updates, max_parallel_writes 1", f"{timings[1]:.1f} s", "", "")
            )
            rows.append(
                (
                    f"{n_writes} updates, max_parallel_writes 8",
                    f"{timings[8]:.1f} s",
                    f"{timings[8] / timings[1]:.2f} of the above",
                    "<= 0.25",
                )
            )

            # 3. peak memory, M vs 10 M records
            peaks = {}
            for n, tag in ((mem_small, "S"), (mem_large, "L")):
                mem_in = work / f"memory-{n}.singer"
                write_input(mem_in, "categories", CATEGORY_SCHEMA, categories(n, tag))
                mark = line_count(results)
                seconds, peaks[n] = run_target({**base, "max_parallel_writes": 8}, mem_in, work)
                assert outcomes(results, mark) == {"created": n}, outcomes(results, mark)
                rows.append(
                    (
                        f"{n} creates, analysis_type_categories (parallel)",
                        f"{seconds:.1f} s",
                        f"peak VmHWM {peaks[n]:.1f} MiB",
                        "",
                    )
                )
            ratio = peaks[mem_large] / peaks[mem_small]
            rows.append(
                (f"peak memory {mem_large} vs {mem_small} records", "", f"{ratio:.3f}x", "<= 1.10x")
            )

        # 4. 500 sequential creates at 50 ms latency, against 500 x 50 ms plus start-up
        with SandboxProcess(db, latency_ms=SLOW_MS, extra_args=["--quiet"]) as slow:
            grant = slow.grant()
            slow_base = {
                **base,
                "access_token": grant["access_token"],
                "refresh_token": grant["refresh_token"],
                "oauth_settings_location": str(work / "slow-tokens.json"),
                "advanced_config": {"api_url": slow.api_url, "token_url": slow.token_url},
            }
            slow_headers = {"Authorization": f"Bearer {grant['access_token']}"}
            slow_post = bare_posts(slow.api_url, slow_headers, business, n_slow, "G")
            slow_in = work / "slow-creates.singer"
            write_input(slow_in, "customers", CONTACT_SCHEMA, contacts(n_slow, "slow", prefix="S"))
            mark = line_count(results)
            t_slow, _ = run_target({**slow_base, "max_parallel_writes": 8}, slow_in, work)
            assert outcomes(results, mark) == {"created": n_slow}, outcomes(results, mark)
            startup = LAST_REPORT["first_request"]["wall"] - LAST_REPORT["launched"]
            bound = n_slow * SLOW_MS / 1000 + startup
            rows.append(
                (
                    f"{n_slow} creates at {SLOW_MS} ms (sequential POSTs)",
                    f"{t_slow:.1f} s",
                    f"{t_slow / bound:.2f}x of {n_slow} x {SLOW_MS} ms + start-up {startup:.1f} s",
                    "<= 1.10x",
                )
            )
            loop_bound = n_slow * slow_post + startup
            rows.append(
                (
                    f"  bare requests loop at {SLOW_MS} ms (x{n_slow})",
                    f"{n_slow * slow_post:.1f} s",
                    f"{slow_post * 1000:.1f} ms per POST; the target "
                    f"{t_slow / loop_bound:.2f}x of it + start-up",
                    "",
                )
            )

    width = max(len(r[0]) for r in rows)
    print()
    print(
        f"target-sage benchmark, sandbox --latency-ms {LATENCY_MS}"
        + (" (--quick)" if args.quick else "")
    )
    print(f"{'measurement':<{width}}  {'time':>8}  {'ratio / figure':<28}  target")
    for name, seconds, ratio_text, goal in rows:
        print(f"{name:<{width}}  {seconds:>8}  {ratio_text:<28}  {goal}")


if __name__ == "__main__":
    main()
