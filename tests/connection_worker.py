"""A worker process for the connection tests: uses one connection from a separate process.

    python tests/connection_worker.py CONFIG.json MODE [--seconds S] [--threads T] [--out F]

MODE ``loop``: T threads send GET /businesses and GET /contacts?items_per_page=1 for S seconds
through ``SageClient.for_config`` (one client and token source per process), counting successes
and errors; ``once``: list the businesses once; ``refresh``: refresh now. The result (counts,
error codes, refreshes done by this process; never a token) is printed as one JSON line on
stdout, or written to ``--out``. Exit status 0 when there was no error.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for tests.*

from tap_sage.sage.auth import RotatingTokenSource
from tap_sage.sage.client import SageClient
from tap_sage.sage.errors import SageAuthError, SageError
from tests.checkpoint_support import install_from_environment


def _code(exc: BaseException) -> str:
    if isinstance(exc, SageAuthError):
        return exc.code
    return type(exc).__name__


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("mode", choices=["loop", "once", "refresh"])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    install_from_environment()  # the kill tests' pause points
    config = json.loads(Path(args.config).read_text())
    result: dict[str, Any] = {"ok": 0, "errors": {}, "messages": []}
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    try:
        client = SageClient.for_config(config)
    except SageError as exc:
        result["errors"] = {_code(exc): 1}
        result["messages"] = [str(exc)]
        print(json.dumps(result))
        return 1

    def record_error(exc: BaseException) -> None:
        with lock:
            errors[_code(exc)] += 1
            if len(result["messages"]) < 5:
                result["messages"].append(str(exc))

    if args.mode == "once":
        try:
            result["businesses"] = len(client.businesses())
            result["ok"] = 1
        except SageError as exc:
            record_error(exc)
    elif args.mode == "refresh":
        try:
            assert isinstance(client.tokens, RotatingTokenSource)
            client.tokens.refresh_now()
            result["ok"] = 1
        except SageError as exc:
            record_error(exc)
    else:
        deadline = time.monotonic() + args.seconds
        business = client.businesses()[0]["id"]

        def run() -> None:
            n = 0
            while time.monotonic() < deadline:
                try:
                    if n % 2:
                        client.businesses()
                    else:
                        client.request(
                            "GET", "/contacts", business_id=business, params={"items_per_page": 1}
                        )
                    with lock:
                        result["ok"] += 1
                except SageError as exc:
                    record_error(exc)
                    if isinstance(exc, SageAuthError):
                        return  # the connection is lost: nothing more can work
                n += 1
                time.sleep(0.01)

        threads = [threading.Thread(target=run) for _ in range(args.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    result["errors"] = dict(errors)
    result["refreshes"] = getattr(client.tokens, "refreshes", 0)
    text = json.dumps(result)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    return 0 if not errors and result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
