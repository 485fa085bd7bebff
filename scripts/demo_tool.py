"""Small helpers of ``scripts/demo.sh`` (standard library only, except ``store-report``).

    env-set ENV_FILE --url URL      read a ``sage-sandbox grant`` JSON on stdin and write the
                                    SAGE_SANDBOX_* keys of the sandbox environment (mode 0600)
    env-clear ENV_FILE              remove those keys again
    render SRC DST --url URL        copy the demo's JSON-lines inputs, filling in ids that only
                                    the running sandbox knows; a grant JSON on stdin
    store-report DUCKDB [--since T] rows per table of the local store (run it with the python
                                    of the target-duckdb plugin, which has duckdb)
    results-report RESULTS [--from N]
                                    outcomes per stream and operation in target-sage's results
                                    file, from line N on

No token or secret is ever printed: grants are read from stdin and written only to ENV_FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ENV_KEYS = (
    "SAGE_SANDBOX_URL",
    "SAGE_SANDBOX_CLIENT_ID",
    "SAGE_SANDBOX_CLIENT_SECRET",
    "SAGE_SANDBOX_REFRESH_TOKEN",
)


# --------------------------------------------------------------------------------------------
# .env


def _write_env(path: Path, values: Mapping[str, str]) -> None:
    """Replace the SAGE_SANDBOX_* lines of a dotenv file, keeping every other line."""
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [line for line in lines if line.split("=", 1)[0].strip() not in ENV_KEYS]
    kept += [f"{key}={json.dumps(value)}" for key, value in values.items()]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".env.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(kept) + ("\n" if kept else ""))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def env_set(path: Path, url: str) -> None:
    grant = json.load(sys.stdin)
    _write_env(
        path,
        {
            "SAGE_SANDBOX_URL": url.rstrip("/"),
            "SAGE_SANDBOX_CLIENT_ID": str(grant["client_id"]),
            "SAGE_SANDBOX_CLIENT_SECRET": str(grant["client_secret"]),
            "SAGE_SANDBOX_REFRESH_TOKEN": str(grant["refresh_token"]),
        },
    )


def env_clear(path: Path) -> None:
    if path.exists():
        _write_env(path, {})
        if not path.read_text().strip():
            path.unlink()


# --------------------------------------------------------------------------------------------
# Inputs


class Sandbox:
    """A tiny read-only client of the running sandbox, for the ids the inputs refer to."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.business: str | None = None
        self.business = str(self.get("/businesses/lead")["id"])

    def get(self, path: str) -> Any:
        request = urllib.request.Request(  # noqa: S310 (the sandbox on localhost)
            f"{self.url}/v3.1{path}",
            headers={
                "Authorization": f"Bearer {self._token}",
                "Accept": "application/json",
                **({"X-Business": self.business} if self.business else {}),
            },
        )
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            return json.load(answer)

    def items(self, resource: str) -> Iterator[dict[str, Any]]:
        path: str | None = f"/{resource}?attributes=all&items_per_page=200"
        while path:
            page = self.get(path)
            yield from page["$items"]
            path = page.get("$next")


_PLACEHOLDER = re.compile(r"\{\{(\w+):([^}]+)\}\}")


def render(src: Path, dst: Path, url: str) -> None:
    """Copy ``src/*.jsonl`` to ``dst``, replacing ``{{ledger_account:4000}}`` placeholders.

    ``{{ledger_account:N}}`` becomes the id of the ledger account with nominal code N in the
    lead business (the one target-sage writes to by default): ids differ between sandboxes.
    """
    grant = json.load(sys.stdin)
    sandbox = Sandbox(url, grant["access_token"])
    ledger_accounts: dict[str, str] = {}

    def lookup(kind: str, key: str) -> str:
        if kind != "ledger_account":
            raise SystemExit(f"unknown placeholder {{{{{kind}:{key}}}}}")
        if not ledger_accounts:
            for item in sandbox.items("ledger_accounts"):
                ledger_accounts[str(item.get("nominal_code"))] = str(item["id"])
        if key not in ledger_accounts:
            raise SystemExit(f"the sandbox has no ledger account with nominal code {key}")
        return ledger_accounts[key]

    dst.mkdir(parents=True, exist_ok=True)
    for old in dst.glob("*.jsonl"):
        old.unlink()
    for path in sorted(src.glob("*.jsonl")):
        text = _PLACEHOLDER.sub(lambda m: lookup(m.group(1), m.group(2)), path.read_text())
        for number, line in enumerate(text.splitlines(), 1):
            try:
                if line.strip():
                    json.loads(line)
            except json.JSONDecodeError as exc:
                raise SystemExit(f"{path}:{number}: {exc}") from None
        (dst / path.name).write_text(text)
    print(f"business {sandbox.business}")


# --------------------------------------------------------------------------------------------
# Reports


def store_report(db: Path, since: str | None) -> None:
    """Rows per table; with ``since``, only the rows loaded at or after it (one run)."""
    import duckdb  # the target-duckdb plugin's environment has it

    con = duckdb.connect(str(db), read_only=True)
    tables = [
        row[0]
        for row in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'sage' "
            "ORDER BY table_name"
        ).fetchall()
    ]
    where = "WHERE _sdc_batched_at >= CAST(? AS TIMESTAMP)" if since else ""
    params = [since] if since else []
    rows: list[tuple[str, int, int]] = []
    for table in tables:
        total, deleted = con.execute(
            f'SELECT count(*), count(_sdc_deleted_at) FROM sage."{table}" {where}',  # noqa: S608
            params,
        ).fetchone() or (0, 0)
        if total:
            rows.append((table, int(total), int(deleted)))
    _print_table(
        ["stream", "rows", "of which deletions"],
        [(name, str(total), str(deleted) if deleted else "") for name, total, deleted in rows],
    )
    print(
        f"{sum(r[1] for r in rows)} rows in {len(rows)} tables"
        + (f", {sum(r[2] for r in rows)} deletions" if since else "")
    )


def results_report(path: Path, start: int) -> None:
    counts: Counter[tuple[str, str, str]] = Counter()
    failures: list[str] = []
    with path.open() as handle:
        for number, line in enumerate(handle, 1):
            if number < start or not line.strip():
                continue
            result = json.loads(line)
            key = (
                str(result.get("stream", "")),
                str(result.get("operation", "")),
                str(result.get("outcome", "")),
            )
            counts[key] += 1
            if result.get("outcome") == "failed":
                failures.append(
                    f"  {result.get('stream')} {result.get('source_key')}: "
                    f"{result.get('data_code') or ''} {result.get('message') or ''}".rstrip()
                )
    _print_table(
        ["stream", "operation", "outcome", "records"],
        [(*key, str(n)) for key, n in sorted(counts.items())],
    )
    for failure in failures:
        print(failure)


def _print_table(header: list[str], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    for row in [tuple(header), *rows]:
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="helpers of scripts/demo.sh")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("env-set")
    p.add_argument("env_file", type=Path)
    p.add_argument("--url", required=True)
    p = sub.add_parser("env-clear")
    p.add_argument("env_file", type=Path)
    p = sub.add_parser("render")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--url", required=True)
    p = sub.add_parser("store-report")
    p.add_argument("db", type=Path)
    p.add_argument("--since")
    p = sub.add_parser("results-report")
    p.add_argument("results", type=Path)
    p.add_argument("--from", dest="start", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "env-set":
        env_set(args.env_file, args.url)
    elif args.command == "env-clear":
        env_clear(args.env_file)
    elif args.command == "render":
        render(args.src, args.dst, args.url)
    elif args.command == "store-report":
        store_report(args.db, args.since)
    else:
        results_report(args.results, args.start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
