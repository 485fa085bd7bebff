"""Small helpers of ``scripts/demo.sh`` (standard library only, except ``store-report``).

    env-set ENV_FILE --url URL      read a ``sage-sandbox grant`` JSON on stdin and write the
                                    SAGE_SANDBOX_* keys of the sandbox environment (mode 0600)
    env-clear ENV_FILE              remove those keys again
    render SRC DST --url URL        copy the demo's JSON-lines inputs, filling in ids that only
                                    the running sandbox knows; a grant JSON on stdin
    store-snapshot DUCKDB OUT       key, updated_at and deletion flag of every row of the store
    store-report DUCKDB [--before SNAPSHOT]
                                    rows per table; with a snapshot taken before a run, the
                                    rows that run loaded: new, updated, deleted or unchanged
                                    (both run with the python of the target-duckdb plugin,
                                    which has duckdb)
    leak-check SANDBOX_DB PATH... [--skip PATH]
                                    fail if a file holds a token or client secret the sandbox
                                    issued (tokens are found by their hash)
    results-report RESULTS [--from N]
                                    outcomes per stream and operation in target-sage's results
                                    file, from line N on
    count-report SANDBOX_DB DUCKDB  after a full sync: why the seed's "records in resources"
                                    and the store's "rows in tables" differ (duckdb's python)
    loader-test LOG --rc N          the verdict on a `meltano config test <loader>` run (its
                                    output in LOG, its exit status N): passed, passed but
                                    Meltano 4.4.1 crashed afterwards, or failed (exit 1)

No token or secret is ever printed: grants are read from stdin and written only to ENV_FILE.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sys
import tempfile
import textwrap
import time
import urllib.error
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

    def get(self, path: str, tries: int = 8) -> Any:
        """GET with retries: the sandbox may be running with ``--fault-rate``."""
        request = urllib.request.Request(  # noqa: S310 (the sandbox on localhost)
            f"{self.url}/v3.1{path}",
            headers={
                "Authorization": f"Bearer {self._token}",
                "Accept": "application/json",
                **({"X-Business": self.business} if self.business else {}),
            },
        )
        for attempt in range(1, tries + 1):
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
                    return json.load(answer)
            except urllib.error.HTTPError as exc:
                if exc.code not in (429, 500, 502, 503, 504) or attempt == tries:
                    raise
            except (urllib.error.URLError, http.client.HTTPException, OSError):
                if attempt == tries:
                    raise
            time.sleep(min(0.2 * 2**attempt, 5.0))
        raise AssertionError("unreachable")

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


def _store_tables(con: Any) -> list[tuple[str, set[str]]]:
    """The tables of schema ``sage`` with their column names."""
    columns: dict[str, set[str]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'sage' ORDER BY table_name"
    ).fetchall():
        columns.setdefault(str(table), set()).add(str(column))
    return sorted(columns.items())


def _store_rows(con: Any, after: str | None = None) -> dict[str, dict[str, tuple[str, bool]]]:
    """table -> key -> (updated_at, deleted), for every row (or those loaded after ``after``)."""
    out: dict[str, dict[str, tuple[str, bool]]] = {}
    for table, cols in _store_tables(con):
        # tax_determinations: one row per usage a record was listed for (its key has `usage`)
        key = ", ".join(
            f'CAST("{c}" AS VARCHAR)' for c in ("business_id", "usage", "id") if c in cols
        )
        updated = 'CAST("updated_at" AS VARCHAR)' if "updated_at" in cols else "''"
        where = "WHERE _sdc_batched_at > CAST(? AS TIMESTAMP)" if after else ""
        # Table and column names come from the database's own catalog.
        query = (
            f"SELECT concat_ws('/', {key or 'NULL'}), {updated}, _sdc_deleted_at IS NOT NULL "  # noqa: S608
            f'FROM sage."{table}" {where}'
        )
        rows = con.execute(query, [after] if after else []).fetchall()
        out[table] = {str(k): (str(u or ""), bool(d)) for k, u, d in rows}
    return out


def _last_load(con: Any) -> str:
    """The latest ``_sdc_batched_at`` in the store (target-duckdb's clock, local time)."""
    latest = ""
    for table, _cols in _store_tables(con):
        value = con.execute(f'SELECT max(_sdc_batched_at) FROM sage."{table}"').fetchone()  # noqa: S608
        if value and value[0] is not None:
            latest = max(latest, value[0].isoformat())
    return latest


def store_snapshot(db: Path, out: Path) -> None:
    """Write the key, ``updated_at`` and deletion flag of every row, to compare a run with."""
    import duckdb  # the target-duckdb plugin's environment has it

    with duckdb.connect(str(db), read_only=True) as con:
        rows = _store_rows(con)
        last = _last_load(con)
    snapshot = {t: {k: list(v) for k, v in r.items()} for t, r in rows.items()}
    out.write_text(json.dumps({"last_load": last, "tables": snapshot}))


def store_report(db: Path, before: Path | None, top: int) -> None:
    """Every row of the store; with a snapshot taken before a run, what that run loaded."""
    import duckdb

    snapshot: dict[str, Any] = json.loads(before.read_text()) if before else {}
    with duckdb.connect(str(db), read_only=True) as con:
        loaded = _store_rows(con, snapshot.get("last_load") or None)
    if before is None:
        sizes = sorted(((len(r), t) for t, r in loaded.items() if r), reverse=True)
        total = sum(n for n, _ in sizes)
        print(f"    {total} rows in {len(sizes)} tables; the largest:")
        _print_table(["table", "rows"], [(t, str(n)) for n, t in sizes[:top]])
        return
    old: dict[str, dict[str, list[Any]]] = snapshot["tables"]
    table_rows: list[tuple[str, ...]] = []
    unchanged = 0
    unchanged_tables = 0
    for table, rows in loaded.items():
        prior = old.get(table, {})
        new = updated = deleted = same = 0
        for key, (stamp, gone) in rows.items():
            was = prior.get(key)
            if gone and not (was and was[1]):
                deleted += 1
            elif was is None:
                new += 1
            elif was[0] != stamp or bool(was[1]) != gone:
                updated += 1
            else:
                same += 1
        if new or updated or deleted:
            table_rows.append(
                (table, *(str(n) if n else "" for n in (new, updated, deleted)), str(same or ""))
            )
        elif same:
            unchanged += same
            unchanged_tables += 1
    _print_table(["table", "new", "updated", "deleted", "read again, unchanged"], table_rows)
    print(
        f"    and {unchanged} unchanged rows in {unchanged_tables} more tables: lookups and settings"
        "\n    are read in full every run, and an incremental stream reads the records at its"
        "\n    bookmark again (Sage's updated_or_created_since is inclusive); the store upserts"
        "\n    by key."
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
                    f"{result.get('$dataCode') or ''} {result.get('$message') or ''}".rstrip()
                )
    _print_table(
        ["stream", "operation", "outcome", "records"],
        [(*key, str(n)) for key, n in sorted(counts.items())],
    )
    for failure in failures:
        print(failure)


def leak_check(sandbox_db: Path, paths: list[Path], skip: list[Path]) -> int:
    """Fail if any file under ``paths`` holds a token or client secret the sandbox issued.

    The sandbox keeps client secrets as they are and tokens as SHA-256 hashes, so every
    token-like word of every file is hashed and looked up.
    """
    import hashlib
    import sqlite3

    with sqlite3.connect(f"file:{sandbox_db}?mode=ro", uri=True) as con:
        secrets = [str(r[0]) for r in con.execute("SELECT client_secret FROM clients")]
        hashes = {str(r[0]) for r in con.execute("SELECT hash FROM tokens")}
    word = re.compile(r"[A-Za-z0-9._~+/=-]{16,}")
    files = [
        f
        for p in paths
        for f in ([p] if p.is_file() else sorted(p.rglob("*")))
        if f.is_file() and not any(f.is_relative_to(s) for s in skip)
    ]
    found: list[str] = []
    for path in files:
        text = path.read_bytes().decode("utf-8", errors="replace")
        if any(secret in text for secret in secrets):
            found.append(f"{path}: a client secret")
        for match in set(word.findall(text)):
            if hashlib.sha256(match.encode()).hexdigest() in hashes:
                found.append(f"{path}: a token")
                break
    for line in found:
        print(f"    LEAK: {line}")
    if not found:
        print(f"    no token or client secret in {len(files)} log, state and result files")
    return 1 if found else 0


def count_report(sandbox_db: Path, db: Path) -> int:
    """Reconcile the sandbox's records with the store's rows, resource by resource."""
    import sqlite3

    import duckdb

    with sqlite3.connect(f"file:{sandbox_db}?mode=ro", uri=True) as sage:
        per_resource = {
            str(r): (int(total), int(live))
            for r, total, live in sage.execute(
                "SELECT resource, count(*), sum(deleted_at IS NULL) FROM records GROUP BY resource"
            )
        }
    with duckdb.connect(str(db), read_only=True) as con:
        rows = {t: len(r) for t, r in _store_rows(con).items()}
        # a record listed for several usages is one row per usage (tax_determinations)
        per_usage: dict[str, int] = {}
        for table, cols in _store_tables(con):
            if "usage" in cols:
                query = f'SELECT count(DISTINCT (business_id, id)) FROM sage."{table}"'  # noqa: S608
                distinct = con.execute(query).fetchone()
                if distinct and rows[table] > int(distinct[0]):
                    per_usage[table] = rows[table] - int(distinct[0])
    stored = sum(rows.values())
    records = {t: n - per_usage.get(t, 0) for t, n in rows.items()}
    total = sum(t for t, _ in per_resource.values())
    deleted = sum(t - live for t, live in per_resource.values())
    unread = {r: live - records.get(r, 0) for r, (_, live) in per_resource.items()}
    unread = {r: n for r, n in unread.items() if n > 0}
    extra = sum(max(0, n - per_resource.get(t, (0, 0))[1]) for t, n in records.items())
    filled = [t for t, n in rows.items() if n]
    empty = sorted(t for t, n in rows.items() if not n)
    wrap = textwrap.TextWrapper(width=92, initial_indent="      ", subsequent_indent="      ")
    print("    The seed counts records per resource, the store rows per table (a stream):")
    print(
        f"      {total:6d} records in the sandbox's {len(per_resource)} resources (both businesses,"
    )
    print("             the seeded ones and what the demo wrote to Sage so far)")
    print(f"    - {deleted:6d} of them held as deleted: a full sync reads only live records")
    if unread:
        names = ", ".join(f"{r} {n}" for r, n in sorted(unread.items()))
        print(f"    - {sum(unread.values()):6d} live records that no stream read: {names}")
    if extra:
        print(f"    + {extra:6d} rows whose record is deleted or gone in the sandbox by now")
    if per_usage:
        names = ", ".join(f"{t} {n}" for t, n in sorted(per_usage.items()))
        print(f"    + {sum(per_usage.values()):6d} rows more than records, read once per usage "
              f"(sales, purchases): {names}")  # fmt: skip
    print(f"    = {stored:6d} rows in the store")
    print(
        wrap.fill(
            f"{len(filled)} tables have rows, one per resource read; {len(empty)} more are "
            f"empty: {', '.join(empty) or 'none'} (resources that the seeded businesses' "
            "countries and editions do not offer, or that a stream read nothing from)."
        )
    )
    return 0


# --------------------------------------------------------------------------------------------
# Meltano's loader test

#: Meltano 4.4.1 (meltano/core/plugin_test_service.py, LoaderTestService.validate) logs this
#: only when the loader exited 0 and printed no line with "error" or "exception" in it, i.e.
#: when the test passed ...
LOADER_TEST_PASSED = "Test data was written to your target system."
#: ... and then, in its `finally:`, calls `process.terminate()` on the process that has
#: already ended, which often raises ProcessLookupError out of the command (exit 1).
LOADER_TEST_CRASH = re.compile(r"^ProcessLookupError\s*$", re.MULTILINE)


def loader_test_verdict(output: str, returncode: int) -> str:
    """``passed``, ``passed-then-meltano-crashed`` or ``failed``."""
    if returncode == 0 and "Plugin configuration is valid" in output:
        return "passed"
    if (
        returncode != 0
        and LOADER_TEST_PASSED in output
        and "Plugin configuration is invalid" not in output
        and LOADER_TEST_CRASH.search(output)
        and output.count("Traceback") <= 1
    ):
        return "passed-then-meltano-crashed"
    return "failed"


def loader_test(log: Path, returncode: int) -> int:
    verdict = loader_test_verdict(log.read_text(encoding="utf-8", errors="replace"), returncode)
    if verdict == "passed":
        print("    Plugin configuration is valid")
    elif verdict == "passed-then-meltano-crashed":
        print(
            "    passed: Meltano logged its success line, then crashed with ProcessLookupError\n"
            "    (a Meltano 4.4.1 bug after any loader exits; see the README's Troubleshooting)"
        )
    else:
        print("    FAILED (see the log)")
    return 1 if verdict == "failed" else 0


def _print_table(header: list[str], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    for row in [tuple(header), *rows]:
        print(
            "    " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        )


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
    p = sub.add_parser("store-snapshot")
    p.add_argument("db", type=Path)
    p.add_argument("out", type=Path)
    p = sub.add_parser("store-report")
    p.add_argument("db", type=Path)
    p.add_argument("--before", type=Path)
    p.add_argument("--top", type=int, default=8)
    p = sub.add_parser("leak-check")
    p.add_argument("sandbox_db", type=Path)
    p.add_argument("paths", type=Path, nargs="+")
    p.add_argument("--skip", type=Path, action="append", default=[])
    p = sub.add_parser("results-report")
    p.add_argument("results", type=Path)
    p.add_argument("--from", dest="start", type=int, default=1)
    p = sub.add_parser("count-report")
    p.add_argument("sandbox_db", type=Path)
    p.add_argument("db", type=Path)
    p = sub.add_parser("loader-test")
    p.add_argument("log", type=Path)
    p.add_argument("--rc", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "env-set":
        env_set(args.env_file, args.url)
    elif args.command == "env-clear":
        env_clear(args.env_file)
    elif args.command == "render":
        render(args.src, args.dst, args.url)
    elif args.command == "store-snapshot":
        store_snapshot(args.db, args.out)
    elif args.command == "store-report":
        store_report(args.db, args.before, args.top)
    elif args.command == "leak-check":
        return leak_check(args.sandbox_db, args.paths, args.skip)
    elif args.command == "count-report":
        return count_report(args.sandbox_db, args.db)
    elif args.command == "loader-test":
        return loader_test(args.log, args.rc)
    else:
        results_report(args.results, args.start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
