#!/usr/bin/env python3
"""``make scale-demo``: the orchestrator example, run for real against the sandbox.

1. makes orchestrator/.venv (Meltano 4.4.1 with psycopg, Dagster 1.9.13, dagster-meltano;
   stamped, see install_venv.py) and a private PostgreSQL server (scripts/pgserver.py) with one
   database, ``sage_scale``, that every worker shares: Meltano's system database and state
   (schema ``meltano``), the token store (table ``tap_sage_token_store``), target-sage's
   ledger, and the warehouse (schemas ``sage_p1``, ``sage_p2``);
2. seeds the sandbox with 4 businesses and serves it with access tokens that live
   ``--token-ttl`` seconds (so the partitions refresh the one connection while running side by
   side), grants a connection and puts it in the database token store (``sage-auth refresh``
   with the grant's refresh token: the one time a refresh token is in a config);
3. ``meltano install``, then Dagster runs the job ``sage_partitions`` (two partitions of two
   businesses each, in parallel: ``dagster job execute``, multiprocess executor,
   ``max_concurrent`` 2);
4. checks: both partitions ran at the same time (Meltano's run records in PostgreSQL), the
   warehouse holds every live record of every business, once, in its partition's schema; the
   state backend has one state per partition with a bookmark per business and stream; no
   invalid_grant (or any lost-connection error) in any log; every refresh Sage made is the one
   in the store; no token or secret in any log;
5. changes a few records in two businesses (another Sage client), runs the job again and
   checks that the incremental run wrote exactly the changed records (plus, at most, the
   records at the bookmark itself: Sage's ``updated_or_created_since`` is inclusive).

Knobs (environment): SCALE_DEMO_SCALE (data volume, default 1), SCALE_DEMO_LATENCY_MS
(default 5), SCALE_DEMO_TOKEN_TTL (seconds, default 2), SCALE_DEMO_KEEP=1 keeps the database
server and the sandbox's files (orchestrator/.work) after the run.
Run with the project's .venv python (psycopg, requests): ``.venv/bin/python orchestrator/scale_demo.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import requests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(HERE))

import install_venv  # noqa: E402 (orchestrator/install_venv.py)
from pgserver import PostgresServer  # noqa: E402 (scripts/pgserver.py)

WORK = HERE / ".work"
LOGS = WORK / "logs"
PROJECT_BIN = ROOT / ".venv" / "bin"
SCALE = os.environ.get("SCALE_DEMO_SCALE", "1")
LATENCY_MS = os.environ.get("SCALE_DEMO_LATENCY_MS", "5")
TOKEN_TTL = os.environ.get("SCALE_DEMO_TOKEN_TTL", "2")
PARTITIONS = {"p1": 0, "p2": 1}  # partition -> index of its half of the businesses
STREAMS = ("contacts", "products", "sales_invoices", "purchase_invoices", "ledger_accounts")
ENVIRONMENT = "scale"
#: errors that mean a connection lost, or close to it (tap_sage/sage/errors.py's codes)
LOST = ("invalid_grant", "refresh_interrupted", "refresh_unsaved", "refresh_unconfirmed")

START = time.monotonic()


def say(text: str) -> None:
    print(f"\n==> {text}  [{time.monotonic() - START:5.1f}s]", flush=True)


def fail(text: str) -> None:
    print(f"\nFAILED: {text}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def run(name: str, args: list[str], env: dict[str, str], cwd: Path = HERE) -> float:
    """Run a logged step; its output goes to .work/logs/NAME.log. Returns its wall time."""
    log = LOGS / f"{name}.log"
    began = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                              check=False)  # fmt: skip
    took = time.monotonic() - began
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        fail(f"{' '.join(args[:4])} ... exited {proc.returncode}\n--- {log} ---\n{tail}")
    print(f"    done in {took:.1f}s (log: {log.relative_to(ROOT)})", flush=True)
    return took


# -- set-up ---------------------------------------------------------------------------------
def start_sandbox(db: Path) -> tuple[subprocess.Popen[bytes], str]:
    log = (LOGS / "sandbox.log").open("w")
    proc = subprocess.Popen(
        [str(PROJECT_BIN / "sage-sandbox"), "serve", "--port", "0", "--db", str(db),
         "--latency-ms", LATENCY_MS, "--token-ttl", TOKEN_TTL],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    for _ in range(200):
        found = re.search(r"http://[0-9.]+:[0-9]+", (LOGS / "sandbox.log").read_text())
        if found:
            return proc, found.group(0)
        if proc.poll() is not None:
            fail("the sandbox did not start:\n" + (LOGS / "sandbox.log").read_text())
        time.sleep(0.1)
    fail("the sandbox did not print its address")
    raise AssertionError


def businesses(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return [str(r[0]) for r in con.execute("SELECT id FROM businesses ORDER BY position")]


def grant(db: Path, client_id: str) -> dict[str, Any]:
    out = subprocess.run([str(PROJECT_BIN / "sage-sandbox"), "grant", "--db", str(db),
                          "--client-id", client_id], capture_output=True, text=True, check=True)  # fmt: skip
    granted: dict[str, Any] = json.loads(out.stdout)
    return granted


def seed_token_store(granted: dict[str, Any], env: dict[str, str]) -> None:
    """Put the grant's tokens in the database store, the one time a config holds a refresh token.

    (With a real Sage app this is ``sage-auth login`` once, or ``sage-auth move`` of an
    existing file store.) The config file lives only for this command, mode 0600.
    """
    secrets = WORK / "secrets"
    secrets.mkdir(mode=0o700, exist_ok=True)
    path = secrets / "seed-config.json"
    config = {
        "connection_name": "scale",
        "initiate_oauth": "REFRESH",
        "client_id": granted["client_id"],
        "client_secret": granted["client_secret"],
        "refresh_token": granted["refresh_token"],
        "oauth_settings_location": env["SAGE_SCALE_DB_URL"],
        "oauth_settings_key": "env:SAGE_TOKEN_STORE_KEY",
        "advanced_config": {"api_url": env["SAGE_SCALE_API_URL"] + "/v3.1",
                            "token_url": env["SAGE_SCALE_TOKEN_URL"]},
    }  # fmt: skip
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)
    try:
        run("seed-token-store", [str(PROJECT_BIN / "sage-auth"), "--config", str(path), "refresh"],
            env)  # fmt: skip
    finally:
        path.unlink()


# -- what the runs left ---------------------------------------------------------------------
def meltano_runs(db: str, since: dt.datetime) -> dict[str, tuple[dt.datetime, dt.datetime, str]]:
    """state ID -> (started_at, ended_at, state) of the partitions' runs since ``since``."""
    with psycopg.connect(db) as con:
        rows = con.execute(
            "SELECT job_name, started_at, ended_at, state FROM meltano.runs"
            " WHERE started_at >= %s ORDER BY started_at", (since,)
        ).fetchall()  # fmt: skip
    return {str(r[0]): (r[1], r[2], str(r[3])) for r in rows}


def check_overlap(runs: dict[str, tuple[dt.datetime, dt.datetime, str]],
                  wanted: set[str] | None = None) -> float:  # fmt: skip
    wanted = wanted or {state_id(p) for p in PARTITIONS}
    runs = {k: v for k, v in runs.items() if k in wanted}
    if set(runs) != wanted:
        fail(f"Meltano's run records name {sorted(runs)}, expected {sorted(wanted)}")
    for sid, (began, ended, state) in runs.items():
        print(f"    {sid}: {began:%H:%M:%S.%f}"[:-3] + f" -> {ended:%H:%M:%S.%f}"[:-3]
              + f" ({(ended - began).total_seconds():.1f}s, {state})")  # fmt: skip
        if state != "SUCCESS":
            fail(f"{sid} ended {state}")
    overlap = (
        min(e for _, e, _ in runs.values()) - max(b for b, _, _ in runs.values())
    ).total_seconds()
    if overlap <= 0:
        fail(f"the partitions did not run at the same time (overlap {overlap:.1f}s)")
    print(f"    the {len(runs)} units ran side by side for {overlap:.1f}s")
    return overlap


def write_ids(writers: dict[str, str]) -> set[str]:
    return {f"{ENVIRONMENT}:tap-jsonl--{u}-to-target-sage--{u}" for u in writers}


def state_id(partition: str) -> str:
    return f"{ENVIRONMENT}:tap-sage--{partition}-to-target-postgres--{partition}"


def sandbox_counts(db: Path) -> dict[tuple[str, str], int]:
    """(business, stream) -> live records in the sandbox."""
    marks = ",".join("?" * len(STREAMS))
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute(
            f"SELECT business, resource, count(*) FROM records WHERE deleted_at IS NULL"  # noqa: S608
            f" AND resource IN ({marks}) GROUP BY business, resource", STREAMS
        ).fetchall()  # fmt: skip
    return {(str(b), str(r)): int(n) for b, r, n in rows}


def warehouse_rows(db: str) -> dict[tuple[str, str, str], dict[str, tuple[Any, bool]]]:
    """(schema, stream, business) -> {id: (_sdc_batched_at, deleted)} of the warehouse's rows.

    A row with ``_sdc_deleted_at`` is a tombstone: the tap's deletion pass reported the record
    deleted (target-postgres keeps such rows, flagged, unless ``hard_delete`` is on).
    """
    out: dict[tuple[str, str, str], dict[str, tuple[Any, bool]]] = {}
    with psycopg.connect(db) as con:
        tables = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema LIKE 'sage_p%%'"
        ).fetchall()
        for schema, table in tables:
            for business, rid, batched, deleted in con.execute(
                f"SELECT business_id, id, _sdc_batched_at, _sdc_deleted_at IS NOT NULL"  # noqa: S608
                f' FROM "{schema}"."{table}"'
            ):
                out.setdefault((schema, table, business), {})[rid] = (batched, bool(deleted))
    return out


def sandbox_records(db: Path) -> dict[tuple[str, str, str], tuple[str, str | None]]:
    """(business, stream, id) -> (updated_at, deleted_at) of the sandbox's records."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return {(str(b), str(r), str(i)): (str(u), d) for b, r, i, u, d in con.execute(
            "SELECT business, resource, id, updated_at, deleted_at FROM records")}  # fmt: skip


def check_warehouse(db: str, sandbox_db: Path, parts: dict[str, list[str]]) -> int:
    """Every live record of every business once, in its partition's schema; tombstones only
    for records the sandbox holds as deleted."""
    rows = warehouse_rows(db)
    expected = sandbox_counts(sandbox_db)
    records = sandbox_records(sandbox_db)
    where = {b: p for p, bs in parts.items() for b in bs}
    print(f"    {'business':<38} {'partition':<9} " + " ".join(f"{s[:16]:>16}" for s in STREAMS))
    problems = []
    for business, partition in where.items():
        counts = []
        for stream in STREAMS:
            here = rows.get((f"sage_{partition}", stream, business), {})
            got = sum(1 for _, deleted in here.values() if not deleted)
            for rid, (_, deleted) in here.items():
                gone = records.get((business, stream, rid), ("", "gone"))[1] is not None
                if deleted != gone:
                    problems.append(f"{stream} {rid} of {business}: deleted in the warehouse "
                                    f"{deleted}, in the sandbox {gone}")  # fmt: skip
            want = expected.get((business, stream), 0)
            counts.append(f"{got:>16}" if got == want else f"{got:>9} (of {want})")
            if got != want:
                problems.append(f"{stream} of {business}: {got} rows, the sandbox has {want}")
            for other in PARTITIONS:
                if other != partition and rows.get((f"sage_{other}", stream, business)):
                    problems.append(f"{stream} of {business} also in sage_{other}")
        print(f"    {business:<38} {partition:<9} " + " ".join(counts))
    if problems:
        fail("the warehouse does not match the sandbox: " + "; ".join(problems))
    total = sum(len(v) for v in rows.values())
    tombstones = sum(1 for v in rows.values() for _, deleted in v.values() if deleted)
    print(f"    {total - tombstones} rows: every live record of the {len(where)} businesses, each once,"
          f" in its partition's schema (and {tombstones} tombstones of deleted records)")  # fmt: skip
    return total


def states(db: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(db) as con:
        rows = con.execute("SELECT state_id, completed_state FROM meltano.state").fetchall()
    return {str(sid): (s if isinstance(s, dict) else json.loads(s or "{}")) for sid, s in rows}


def bookmarks(state: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(stream, business) -> replication_key_value of a Meltano state."""
    out = {}
    for stream, mark in state.get("singer_state", {}).get("bookmarks", {}).items():
        for part in mark.get("partitions", []):
            business = part.get("context", {}).get("business_id")
            if business and "replication_key_value" in part:
                out[(stream, business)] = str(part["replication_key_value"])
    return out


def check_states(db: str, parts: dict[str, list[str]]) -> dict[tuple[str, str], str]:
    found = {k: v for k, v in states(db).items() if k.startswith(f"{ENVIRONMENT}:tap-sage")}
    wanted = {state_id(p) for p in parts}
    if set(found) != wanted:
        fail(f"the state backend holds {sorted(found)}, expected {sorted(wanted)}")
    everything = {}
    for partition, bs in parts.items():
        marks = bookmarks(found[state_id(partition)])
        want = {(s, b) for s in STREAMS for b in bs}
        if set(marks) != want:
            fail(
                f"state {state_id(partition)}: bookmarks for {sorted(marks)}, expected {sorted(want)}"
            )
        print(f"    {state_id(partition)}: {len(marks)} bookmarks ({len(STREAMS)} streams x "
              f"{len(bs)} businesses), e.g. contacts of {bs[0][:8]}...: {marks[('contacts', bs[0])]}")  # fmt: skip
        everything.update(marks)
    return everything


def check_logs(paths: list[Path]) -> None:
    files = [
        f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*"))) if f.is_file()
    ]
    hits = []
    for path in files:
        text = path.read_text(errors="replace")
        hits += [f"{path}: {code}" for code in LOST if code in text]
    if hits:
        fail("a connection error in the logs: " + "; ".join(hits))
    print(f"    no {', '.join(LOST)} in {len(files)} log files")


def check_refreshes(sandbox_db: Path, db: str) -> int:
    """Every refresh Sage made is accounted for by the one store (no second chain of tokens)."""
    with sqlite3.connect(f"file:{sandbox_db}?mode=ro", uri=True) as con:
        used, live = con.execute(
            "SELECT sum(used), sum(NOT used AND NOT revoked) FROM tokens"
            " WHERE kind = 'refresh' AND client_id = 'scale-demo'"
        ).fetchone()
    with psycopg.connect(db) as con:
        stored = con.execute("SELECT count(*) FROM tap_sage_token_store").fetchone()
    print(f"    {used} refreshes of the one connection so far (access tokens live {TOKEN_TTL}s); "
          f"{live} refresh token alive, {stored[0] if stored else 0} row in tap_sage_token_store")  # fmt: skip
    if live != 1:
        fail(f"the connection has {live} live refresh tokens at Sage, expected exactly 1")
    return int(used)


# -- between the runs: another Sage client changes a few records -----------------------------
def change_records(
    api_url: str, sandbox_db: Path, bs: list[str]
) -> dict[tuple[str, str], set[str]]:
    """Update two contacts and one product, and create one contact, in each of ``bs``."""
    token = grant(sandbox_db, "scale-demo-editor")["access_token"]
    changed: dict[tuple[str, str], set[str]] = {}
    with sqlite3.connect(f"file:{sandbox_db}?mode=ro", uri=True) as con:
        ids = {(b, r): [str(x[0]) for x in con.execute(
            "SELECT id FROM records WHERE business = ? AND resource = ? AND deleted_at IS NULL"
            " ORDER BY seq LIMIT 2", (b, r))] for b in bs for r in ("contacts", "products")}  # fmt: skip
    for business in bs:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                   "Accept": "application/json", "X-Business": business}  # fmt: skip

        def send(method: str, path: str, body: dict[str, Any], business: str = business,
                 headers: dict[str, str] = headers) -> str:  # fmt: skip
            answer = requests.request(method, f"{api_url}/v3.1{path}", json=body, headers=headers,
                                      timeout=30)  # fmt: skip
            if answer.status_code not in (200, 201):
                fail(f"{method} {path} for {business}: {answer.status_code} {answer.text[:200]}")
            return str(answer.json()["id"])

        for rid in ids[(business, "contacts")]:
            send("PUT", f"/contacts/{rid}", {"contact": {"notes": "changed by scale_demo"}})
            changed.setdefault((business, "contacts"), set()).add(rid)
        created = send("POST", "/contacts", {"contact": {"name": "Scale Demo Ltd",
                                                          "contact_type_ids": ["CUSTOMER"]}})  # fmt: skip
        changed[(business, "contacts")].add(created)
        rid = ids[(business, "products")][0]
        send("PUT", f"/products/{rid}", {"product": {"cost_price": 12.34}})
        changed[(business, "products")] = {rid}
    return changed


def check_incremental(before: dict[tuple[str, str, str], dict[str, tuple[Any, bool]]], db: str,
                      sandbox_db: Path, changed: dict[tuple[str, str], set[str]],
                      marks: dict[tuple[str, str], str]) -> int:  # fmt: skip
    """The second run wrote every changed record, and besides them only records at or after a
    bookmark: updated at the bookmark's second (Sage's updated_or_created_since is inclusive)
    or deleted since it (the deletion pass)."""
    after = warehouse_rows(db)
    records = sandbox_records(sandbox_db)
    written: dict[tuple[str, str], set[str]] = {}
    for (schema, stream, business), ids in after.items():
        old = before.get((schema, stream, business), {})
        for rid, row in ids.items():
            if old.get(rid) != row:
                written.setdefault((business, stream), set()).add(rid)
    problems = []
    at_mark = deletions = 0
    for key in sorted(set(written) | set(changed)):
        got, want = written.get(key, set()), changed.get(key, set())
        if want - got:
            problems.append(f"{key}: changed records not written: {sorted(want - got)}")
        mark = marks.get((key[1], key[0]))
        for rid in got - want:
            updated, deleted = records.get((key[0], key[1], rid), ("", None))
            if mark is not None and deleted is not None and _instant(deleted) >= _instant(mark):
                deletions += 1
            elif mark is not None and updated and _instant(updated) >= _instant(mark):
                at_mark += 1
            else:
                problems.append(f"{key}: {rid} (updated {updated}, deleted {deleted}, bookmark"
                                f" {mark}) read again")  # fmt: skip
    if problems:
        fail("the incremental run read more (or less) than what changed: " + "; ".join(problems))
    total = sum(len(v) for v in written.values())
    print(f"    the incremental run wrote {total} rows: the {sum(len(v) for v in changed.values())}"
          f" changed records, {deletions} tombstones of records deleted since the bookmark and"
          f" {at_mark} records updated at the bookmark itself (Sage's updated_or_created_since is"
          f" inclusive); the first run wrote {sum(len(v) for v in before.values())}")  # fmt: skip
    return total


def _instant(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- the write-back units: files -> target-sage, one business each, side by side ----------------
def ledger_location(db: str) -> str:
    """The database (target-sage's DatabaseLedger) where this checkout has it, else a file."""
    import importlib.util

    if importlib.util.find_spec("target_sage.ledger_db") is not None:
        return db
    return str(WORK / "ledger.sqlite")


def render_inbox(writers: dict[str, str]) -> dict[str, int]:
    """Three new contacts per write-back unit (a source key each, for the ledger)."""
    out = {}
    for unit, business in writers.items():
        folder = WORK / "inbox" / unit
        folder.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"source_id": f"SCALE-{unit}-{n}", "name": f"Scale Demo {unit} {n} Ltd",
                             "contact_type_ids": ["CUSTOMER"], "reference": f"SCL{unit.upper()}{n}"})
                 for n in range(1, 4)]  # fmt: skip
        (folder / "contacts.jsonl").write_text("\n".join(lines) + "\n")
        out[business] = len(lines)
    return out


def results(writers: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """business -> the result lines target-sage appended (one per record written)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for unit, business in writers.items():
        path = WORK / "inbox" / unit / "results.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        out[business] = [json.loads(line) for line in lines if line.strip()]
    return out


def check_writes(writers: dict[str, str], sandbox_db: Path, db: str, ledger: str,
                 rerun: bool) -> dict[tuple[str, str], set[str]]:  # fmt: skip
    """Each unit created its three contacts once (a rerun creates none: the shared ledger
    knows them); returns the Sage ids written, per (business, stream)."""
    written: dict[tuple[str, str], set[str]] = {}
    with sqlite3.connect(f"file:{sandbox_db}?mode=ro", uri=True) as con:
        named = {(str(b), str(n)) for b, n in con.execute(
            "SELECT business, json_extract(data, '$.name') FROM records WHERE resource = 'contacts'"
            " AND deleted_at IS NULL AND json_extract(data, '$.name') LIKE 'Scale Demo w%'")}  # fmt: skip
    for business, lines in results(writers).items():
        outcomes: dict[str, int] = {}
        for line in lines:
            outcomes[line["outcome"]] = outcomes.get(line["outcome"], 0) + 1
            if line["outcome"] in ("created", "updated") and line.get("sage_id"):
                written.setdefault((business, str(line["stream"])), set()).add(str(line["sage_id"]))
        want_created = 3
        if outcomes.get("created", 0) != want_created or outcomes.get("failed"):
            fail(f"target-sage for {business}: outcomes {outcomes}, expected 3 created in all")
        in_sage = sum(1 for b, _ in named if b == business)
        if in_sage != want_created:
            fail(f"{business} holds {in_sage} 'Scale Demo' contacts, expected {want_created}")
        print(f"    {business}: {outcomes} over {'both runs' if rerun else 'the run'};"
              f" {in_sage} contacts in Sage")  # fmt: skip
    if ledger.startswith("postgresql"):
        with psycopg.connect(db) as con:
            rows = con.execute(
                "SELECT business_id, sage_id FROM target_sage_ledger"
                " WHERE stream = 'contacts' AND state = 'applied'"
            ).fetchall()
        for business in writers.values():
            ids = {str(i) for b, i in rows if b == business}
            if ids != written.get((business, "contacts"), set()):
                fail(f"the database ledger holds {sorted(ids)} for {business}, target-sage wrote"
                     f" {sorted(written.get((business, 'contacts'), set()))}")  # fmt: skip
        print(f"    the ledger: {len(rows)} rows in table target_sage_ledger, the Sage ids of the"
              " contacts written, per business")  # fmt: skip
    else:
        print(f"    the ledger: {ledger} (this checkout's target-sage has no database ledger)")
    return written


# -- main -----------------------------------------------------------------------------------
def main() -> int:
    if not (PROJECT_BIN / "sage-auth").exists():
        fail("run `make venv` first (the project's .venv)")
    subprocess.run(["rm", "-rf", str(WORK)], check=True)
    LOGS.mkdir(parents=True)
    timings: dict[str, float] = {}

    say("orchestrator/.venv: Meltano 4.4.1 [postgres], Dagster 1.9.13, dagster-meltano 1.5.5")
    began = time.monotonic()
    venv_bin = install_venv.ensure()
    timings["venv"] = time.monotonic() - began
    print(f"    {venv_bin} ({timings['venv']:.1f}s)")

    say("PostgreSQL: one database for state, tokens, ledger and warehouse")
    server = PostgresServer.create()
    sandbox: subprocess.Popen[bytes] | None = None
    try:
        server.create_database("sage_scale")
        made = server.psql("CREATE SCHEMA meltano", database="sage_scale")
        if made.returncode != 0:
            fail(made.stderr)
        db = f"postgresql://postgres@127.0.0.1:{server.port}/sage_scale"
        print(f"    {db}")

        say(f"The sandbox: 4 businesses (scale {SCALE}), access tokens live {TOKEN_TTL}s")
        sandbox_db = WORK / "sandbox.db"
        subprocess.run([str(PROJECT_BIN / "sage-sandbox"), "seed", "--db", str(sandbox_db),
                        "--businesses", "4", "--scale", SCALE, "--seed", "7"], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        sandbox, url = start_sandbox(sandbox_db)
        bs = businesses(sandbox_db)
        parts = {p: bs[i * 2 : i * 2 + 2] for p, i in PARTITIONS.items()}
        for p, members in parts.items():
            print(f"    partition {p}: {', '.join(members)}")
        writers = {f"w{i + 1}": m[0] for i, m in enumerate(parts.values())}
        ledger = ledger_location(db)
        key = subprocess.run([str(PROJECT_BIN / "sage-auth"), "keygen"], capture_output=True,
                             text=True, check=True).stdout.strip()  # fmt: skip
        granted = grant(sandbox_db, "scale-demo")
        env = {
            **{k: v for k, v in os.environ.items()
               if not k.startswith(("MELTANO_", "TAP_SAGE", "TARGET_", "SAGE_", "DAGSTER_"))},
            "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "MELTANO_DATABASE_URI": db.replace("postgresql://", "postgresql+psycopg://", 1)
            + "?options=-csearch_path%3Dmeltano",
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            "NO_COLOR": "1",
            "DAGSTER_HOME": str(WORK / "dagster"),
            "SAGE_SCALE_DB_URL": db,
            "SAGE_SCALE_WAREHOUSE_URL": db.replace("postgresql://", "postgresql+psycopg://", 1),
            "SAGE_TOKEN_STORE_KEY": key,
            "SAGE_SCALE_CLIENT_ID": granted["client_id"],
            "SAGE_SCALE_CLIENT_SECRET": granted["client_secret"],
            "SAGE_SCALE_API_URL": url,
            "SAGE_SCALE_TOKEN_URL": f"{url}/oauth/token",
            **{f"SAGE_SCALE_PARTITION_{p[1:]}": json.dumps(m) for p, m in parts.items()},
            "SAGE_SCALE_LEDGER": ledger,
            "SAGE_SCALE_INBOX": str(WORK / "inbox"),
            **{f"SAGE_SCALE_WRITE_BUSINESS_{u[1:]}": b for u, b in writers.items()},
        }  # fmt: skip
        (WORK / "dagster").mkdir()
        (WORK / "dagster" / "dagster.yaml").write_text((HERE / "dagster.yaml").read_text())
        seed_token_store(granted, env)
        print(
            "    connection 'scale' in tap_sage_token_store (encrypted with SAGE_TOKEN_STORE_KEY)"
        )

        say("meltano install (tap-sage, target-postgres; cached in orchestrator/.meltano)")
        timings["install"] = run("meltano-install", ["meltano", "install"], env)
        say("meltano invoke tap-sage:status (sage-auth on the database token store)")
        run("sage-auth-status", ["meltano", "invoke", "tap-sage:status"], env)

        dagster = ["dagster", "job", "execute", "-f", str(HERE / "definitions.py"),
                   "-j", "sage_partitions", "-c", str(HERE / "run_config.yaml")]  # fmt: skip
        say("Dagster: job sage_partitions, both partitions at once (first run: everything)")
        since = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(seconds=5)
        timings["run1"] = run("dagster-run-1", dagster, env)
        timings["overlap1"] = check_overlap(meltano_runs(db, since))

        say("Checks: warehouse, state backend, token store, logs")
        check_warehouse(db, sandbox_db, parts)
        marks = check_states(db, parts)
        check_refreshes(sandbox_db, db)
        check_logs([LOGS, HERE / ".meltano" / "logs"])

        say(
            "Dagster: job sage_write, files -> target-sage, two businesses at once (ledger:"
            f" {'the database' if ledger.startswith('postgresql') else 'a file'})"
        )
        before = warehouse_rows(db)
        render_inbox(writers)
        writer = [*dagster[:-4], "-j", "sage_write", "-c", str(HERE / "run_config.yaml")]
        since = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(seconds=1)
        timings["write1"] = run("dagster-write-1", writer, env)
        timings["overlap_write"] = check_overlap(meltano_runs(db, since), write_ids(writers))
        check_writes(writers, sandbox_db, db, ledger, rerun=False)
        say("Dagster: job sage_write again, same files: the shared ledger knows every record")
        timings["write2"] = run("dagster-write-2", writer, env)
        wrote = check_writes(writers, sandbox_db, db, ledger, rerun=True)

        say("Another Sage client changes records in one business of each partition")
        changed = change_records(url, sandbox_db, [m[0] for m in parts.values()])
        for k, ids in wrote.items():
            changed.setdefault(k, set()).update(ids)
        for (business, stream), ids in sorted(changed.items()):
            print(f"    {business}: {len(ids)} {stream}")

        say("Dagster: job sage_partitions again (incremental, from the state in PostgreSQL)")
        since = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(seconds=1)
        timings["run2"] = run("dagster-run-2", dagster, env)
        timings["overlap2"] = check_overlap(meltano_runs(db, since))
        check_incremental(before, db, sandbox_db, changed, marks)
        check_warehouse(db, sandbox_db, parts)
        check_states(db, parts)
        refreshes = check_refreshes(sandbox_db, db)
        check_logs([LOGS, HERE / ".meltano" / "logs"])
        leak = subprocess.run([str(PROJECT_BIN / "python"), str(ROOT / "scripts" / "demo_tool.py"),
                               "leak-check", str(sandbox_db), str(LOGS), str(HERE / ".meltano" / "logs"),
                               str(WORK / "dagster")], check=False)  # fmt: skip
        if leak.returncode != 0:
            fail("a token or secret reached a log")

        say(f"Passed in {time.monotonic() - START:.0f}s")
        print(
            f"    venv {timings['venv']:.0f}s, meltano install {timings['install']:.0f}s,"
            f" run 1 {timings['run1']:.1f}s (partitions side by side {timings['overlap1']:.1f}s),"
            f" write-back {timings['write1']:.1f}s (side by side {timings['overlap_write']:.1f}s),"
            f" again {timings['write2']:.1f}s,"
            f" run 2 {timings['run2']:.1f}s (side by side {timings['overlap2']:.1f}s),"
            f" {refreshes} token refreshes, 0 invalid_grant"
        )
        (WORK / "timings.json").write_text(json.dumps(timings, indent=2))
        return 0
    finally:
        if sandbox is not None:
            sandbox.terminate()
            sandbox.wait(timeout=10)
        if os.environ.get("SCALE_DEMO_KEEP") == "1":
            print(f"    kept: the database at {server.url_for('sage_scale')} (stop: kill the"
                  f" postmaster of {server.data}), the files in {WORK}")  # fmt: skip
        else:
            server.close()


if __name__ == "__main__":
    sys.exit(main())
