"""Stress the consistent list reader: thousands of seeded reads under concurrent writes.

Each seed builds an in-memory Sage list, a writer and a scheduler that decides in which order and
at which server time the concurrent page requests are answered (``tests/reader_fake.py``), then
checks that no record was lost (``check_seed``). Every failure names its seed and replays with
``--seed N``. ``make stress`` runs it; ``STRESS_SEEDS`` / ``STRESS_SECONDS`` set its size.

    python scripts/stress_reader.py --seeds 3000 --seconds 240
    python scripts/stress_reader.py --seed 11 --workers 4 --sortable yes --deletions yes
    python scripts/stress_reader.py --workers 1 --lost-answers 0.3   # answers lost after they began
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.reader_fake import check_seed

WORKERS = (1, 2, 4, 8)


def _flag(value: str) -> list[bool]:
    return {"yes": [True], "no": [False], "both": [True, False]}[value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3000, help="seeds per case (default 3000)")
    parser.add_argument("--first", type=int, default=1000, help="first seed (default 1000)")
    parser.add_argument("--seconds", type=float, default=0.0,
                        help="stop starting new seeds after this long (0: no limit)")  # fmt: skip
    parser.add_argument("--seed", type=int, help="replay this one seed")
    parser.add_argument("--workers", type=int, choices=WORKERS, action="append")
    parser.add_argument("--sortable", choices=("yes", "no", "both"), default="both")
    parser.add_argument("--deletions", choices=("yes", "no", "both"), default="both")
    parser.add_argument("--heavy", action="store_true",
                        help="pages above 20 records fail: every read falls back to smaller ones")  # fmt: skip
    parser.add_argument("--no-stamps", action="store_true",
                        help="deleted items come without deleted_at")  # fmt: skip
    parser.add_argument("--lost-answers", type=float, default=0.0,
                        help="share of answers lost after they began and asked again (the "
                        "scan at concurrency 1 has asked for the next page by then)")  # fmt: skip
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # an unproven read warns; counted below instead
    cases = list(itertools.product(_flag(args.sortable), _flag(args.deletions),
                                   args.workers or WORKERS))  # fmt: skip
    seeds = [args.seed] if args.seed is not None else range(args.first, args.first + args.seeds)
    started = time.monotonic()
    ran = unproven = requests = 0
    failures: list[str] = []
    for seed in seeds:
        if args.seconds and time.monotonic() - started > args.seconds:
            break
        for sortable, deletions, workers in cases:
            try:
                outcome = check_seed(seed, sortable=sortable, deletions=deletions, workers=workers,
                                     heavy=args.heavy, stamps=not args.no_stamps,
                                     lost_answers=args.lost_answers)  # fmt: skip
            except AssertionError as exc:
                failures.append(str(exc))
                print(f"FAIL {exc}", flush=True)
                continue
            ran += 1
            unproven += not outcome.verified
            requests += outcome.requests
    elapsed = time.monotonic() - started
    total = ran + len(failures)
    print(
        f"{total} reads ({total // max(1, len(cases))} seeds x {len(cases)} cases) in "
        f"{elapsed:.0f} s: {len(failures)} lost or wrong, {unproven} unproven (bookmark kept), "
        f"{requests / max(1, ran):.0f} requests a read (both runs)"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
