"""The database ledger (``ledger_path: postgresql://...``) against the test PostgreSQL server:
the same answers as the file ledger, its run lock across processes, its errors.

The end-to-end proof (two machines, SIGKILL, a database restart) is in
tests/test_ledger_db_machines.py.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from scripts.pgserver import PostgresServer, free_port
from tap_sage.sage.errors import SageConfigError
from target_sage.ledger import APPLIED, DELETED, PENDING, Ledger, LedgerError
from target_sage.ledger_db import TABLE, DatabaseLedger, open_ledger
from target_sage.settings import TargetSettings

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [int(s) for s in (os.environ.get("LEDGER_DB_SEEDS") or "1 2 3").split()]


def settings(tmp_path: Path, **extra: Any) -> TargetSettings:
    return TargetSettings.from_config(
        {
            "connection_name": "acme",
            "client_id": "id",
            "client_secret": "secret",
            "oauth_settings_location": str(tmp_path / "tokens.json"),
            **extra,
        }
    )


def test_ledger_path_takes_a_postgresql_url(tmp_path: Path) -> None:
    s = settings(tmp_path, ledger_path="postgresql://u:pa55word@db.example:5433/sage")
    assert s.ledger_url == "postgresql+psycopg://u:pa55word@db.example:5433/sage"
    assert "pa55word" not in repr(s)
    ledger = open_ledger(s)
    assert isinstance(ledger, DatabaseLedger) and ledger.shared
    assert ledger.location == f"postgresql+psycopg://u:***@db.example:5433/sage (table {TABLE})"
    # a path stays a file ledger
    s = settings(tmp_path, ledger_path=str(tmp_path / "l.sqlite"))
    assert s.ledger_url is None and s.ledger_path == tmp_path / "l.sqlite"
    assert not open_ledger(s).shared


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("sqlite:///x.db", "must be PostgreSQL"),
        ("mysql://u:pw12345@h/db", "must be PostgreSQL"),
        ("postgresql://u:pw12345@h:5432", "names no database"),
        ("postgresql://u:pw12345@h:notaport/db", "not a valid database URL"),
    ],
)
def test_a_bad_ledger_url_names_the_setting(tmp_path: Path, value: str, problem: str) -> None:
    with pytest.raises(SageConfigError) as caught:
        settings(tmp_path, ledger_path=value)
    assert caught.value.setting == "ledger_path"
    assert problem in str(caught.value)
    assert "pw12345" not in str(caught.value)


def _operations(rng: random.Random, n: int) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """A random sequence of ledger calls on a few records (the engine's vocabulary)."""
    ops: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    for step in range(n):
        bid = rng.choice(["b1", "b2"])
        key = rng.choice(['["A"]', '["B"]', '["C"]', "#h"])
        h = rng.choice(["h1", "h2", "h3", "h4", ""])
        version = rng.choice(
            [None, f"extracted 2025-01-01T00:00:{step:02d}Z", f"changed 2024-{step:02d}"]
        )
        kind = rng.choice(["intent", "clear", "applied", "version", "deleted", "taken"])
        sage_id = rng.choice([None, "id1", "id2"])
        if kind == "intent":
            ops.append(("record_intent", (bid, "s", key, "contacts", h),
                        {"note": rng.choice([None, '{"ref": 1}']), "at": 1000.5 + step,
                         "body": rng.choice([None, '{"name": "x"}'])}))  # fmt: skip
        elif kind == "clear":
            ops.append(("clear_intent", (bid, "s", key), {}))
        elif kind == "applied":
            ops.append(("record_applied", (bid, "s", key, "contacts", sage_id, h, version), {}))
        elif kind == "version":
            ops.append(("record_version", (bid, "s", key, version), {}))
        elif kind == "deleted":
            ops.append(("record_deleted", (bid, "s", key, "contacts", sage_id, version), {}))
        else:
            ops.append(("sage_id_taken", (bid, "contacts", sage_id or "id1"), {}))
    return ops


@pytest.mark.parametrize("seed", SEEDS)
def test_the_database_ledger_answers_as_the_file_ledger(
    tmp_path: Path, pg_database: str, seed: int
) -> None:
    """Random calls to both forms: after each one, every row reads the same."""
    rng = random.Random(seed)
    file_ledger = Ledger(tmp_path / "l.sqlite")
    db_ledger = DatabaseLedger(pg_database)
    try:
        for number, (name, args, kwargs) in enumerate(_operations(rng, 120)):
            a = getattr(file_ledger, name)(*args, **kwargs)
            b = getattr(db_ledger, name)(*args, **kwargs)
            where = f"seed {seed}, call {number}: {name}{args}"
            assert a == b, where
            for bid in ("b1", "b2"):
                for key in ('["A"]', '["B"]', '["C"]', "#h"):
                    fa, fb = file_ledger.get(bid, "s", key), db_ledger.get(bid, "s", key)
                    assert (fa and asdict(fa)) == (fb and asdict(fb)), where
        for bid in (None, "b1"):
            for state in (None, PENDING, APPLIED, DELETED):
                assert file_ledger.count(bid, state) == db_ledger.count(bid, state)
    finally:
        file_ledger.close()
        db_ledger.close()


def test_a_dry_run_reads_a_database_without_the_table(pg_database: str) -> None:
    dry = DatabaseLedger(pg_database, read_only=True)
    try:
        assert dry.get("b", "s", "k") is None and dry.count() == 0
        dry.record_applied("b", "s", "k", "contacts", "1", "h")  # a dry run writes nothing
        assert not dry.sage_id_taken("b", "contacts", "1")
    finally:
        dry.close()
    real = DatabaseLedger(pg_database)
    try:
        assert real.count() == 0  # the dry run created nothing, and the real one can start
        real.record_applied("b", "s", "k", "contacts", "1", "h")
    finally:
        real.close()
    dry = DatabaseLedger(pg_database, read_only=True)
    try:
        entry = dry.get("b", "s", "k")
        assert entry is not None and entry.sage_id == "1"
    finally:
        dry.close()


def test_one_run_per_business_at_a_time(pg_database: str, caplog: pytest.LogCaptureFixture) -> None:
    first = DatabaseLedger(pg_database)
    second = DatabaseLedger(pg_database, lock_timeout=1)
    try:
        first.record_intent("b1", "s", "k", "contacts", "h")  # takes b1's run lock
        assert second.get("b2", "s", "k") is None  # another business goes on
        with pytest.raises(LedgerError) as caught:
            second.get("b1", "s", "k")
        text = str(caught.value)
        assert "Another target-sage run (target-sage " in text and "business b1" in text
        assert "`ledger_path`" in text
        assert "waiting up to 1 s" in caplog.text
        first.close()  # the run ends: its lock goes with its session
        entry = second.get("b1", "s", "k")
        assert entry is not None and entry.state == PENDING
    finally:
        first.close()
        second.close()


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from target_sage.ledger_db import DatabaseLedger
    ledger = DatabaseLedger(sys.argv[1])
    ledger.record_intent("b1", "s", "k", "contacts", "h")
    print("holding", flush=True)
    time.sleep(600)
    """
)


def test_a_killed_run_holds_nobody_up(pg_database: str) -> None:
    """SIGKILL the process holding the lock: the server ends its session, and its lock."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, pg_database],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    waiter = DatabaseLedger(pg_database, lock_timeout=60)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        probe = DatabaseLedger(pg_database, lock_timeout=0.5)
        with pytest.raises(LedgerError, match="Another target-sage run"):
            probe.get("b1", "s", "k")
        probe.close()
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
        entry = waiter.get("b1", "s", "k")  # waits for the server to see the session end
        assert entry is not None and entry.state == PENDING
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(30)
        waiter.close()


def test_an_unreachable_database_names_the_setting() -> None:
    url = f"postgresql+psycopg://u:s3cr3tpw@127.0.0.1:{free_port()}/sage"
    ledger = DatabaseLedger(url)
    with pytest.raises(LedgerError) as caught:
        ledger.get("b", "s", "k")
    text = str(caught.value)
    assert "Cannot reach the ledger database" in text and "`ledger_path`" in text
    assert "s3cr3tpw" not in text and "nothing was written to Sage" in text


def test_a_database_that_goes_away_stops_the_run_and_keeps_what_was_committed() -> None:
    server = PostgresServer.create()
    try:
        url = server.create_database("ledger")
        ledger = DatabaseLedger(url)
        ledger.record_applied("b", "s", "k1", "contacts", "id1", "h1")
        ledger.record_intent("b", "s", "k2", "contacts", "h2", at=5.0, body="{}")
        server.stop()
        with pytest.raises(LedgerError) as caught:
            ledger.record_applied("b", "s", "k2", "contacts", "id2", "h2")
        text = str(caught.value)
        assert "went away during this run" in text and "`ledger_path`" in text
        server.start()
        # the run's lock went with its session: this run never writes again
        with pytest.raises(LedgerError, match="went away during this run"):
            ledger.get("b", "s", "k1")
        ledger.close()
        again = DatabaseLedger(url)
        try:
            k1, k2 = again.get("b", "s", "k1"), again.get("b", "s", "k2")
            assert k1 is not None and (k1.state, k1.sage_id) == (APPLIED, "id1")
            assert k2 is not None and (k2.state, k2.intent_hash, k2.intent_at) == (
                PENDING,
                "h2",
                5.0,
            )
        finally:
            again.close()
    finally:
        server.close()


def test_the_table_is_created_once_by_racing_processes(pg_database: str) -> None:
    code = (
        "import sys; from target_sage.ledger_db import DatabaseLedger; "
        "l = DatabaseLedger(sys.argv[1]); l.record_applied(sys.argv[2], 's', 'k', 'r', '1', 'h');"
        " l.close()"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, pg_database, f"b{i}"],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
    ledger = DatabaseLedger(pg_database)
    try:
        assert ledger.count() == 4
    finally:
        ledger.close()


def test_a_file_ledger_is_copied_into_the_database(tmp_path: Path, pg_database: str) -> None:
    """``python -m target_sage.ledger_db copy``: every row as it was, safe to run again, and a
    row the database already has is kept."""
    path = tmp_path / "l.sqlite"
    file_ledger = Ledger(path)
    for name, args, kwargs in _operations(random.Random(7), 60):
        getattr(file_ledger, name)(*args, **kwargs)
    file_ledger.record_applied("b1", "s", "kept", "contacts", "file-id", "h")
    keys = [(b, k) for b in ("b1", "b2") for k in ('["A"]', '["B"]', '["C"]', "#h", "kept")]
    before = {key: file_ledger.get(key[0], "s", key[1]) for key in keys}
    rows = file_ledger.count()
    file_ledger.close()
    db = DatabaseLedger(pg_database)
    db.record_applied("b1", "s", "kept", "contacts", "db-id", "h2")  # written by a DB-ledger run
    db.close()

    def copy() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "target_sage.ledger_db", "copy", "--from", str(path),
             "--to", pg_database],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    done = copy()
    assert done.returncode == 0, done.stderr
    assert f"Copied {rows - 1} row(s)" in done.stdout and "1 already there" in done.stdout
    db = DatabaseLedger(pg_database)
    try:
        for (bid, key), entry in before.items():
            got = db.get(bid, "s", key)
            if (bid, key) == ("b1", "kept"):
                assert got is not None and got.sage_id == "db-id"
            else:
                assert (got and asdict(got)) == (entry and asdict(entry)), key
        assert db.count() == rows
    finally:
        db.close()
    again = copy()
    assert again.returncode == 0 and "Copied 0 row(s)" in again.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "target_sage.ledger_db", "copy", "--from", str(path),
         "--to", "mysql://u:pw12345@h/db"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 1 and "ledger_path" in bad.stderr and "pw12345" not in bad.stderr


def test_a_file_ledger_beside_a_database_token_store_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = "postgresql://u:pw12345@db.example/sage"
    ledger = open_ledger(settings(tmp_path, oauth_settings_location=store))
    ledger.close()
    assert "would not know what this one wrote" in caplog.text and "pw12345" not in caplog.text
    caplog.clear()
    open_ledger(settings(tmp_path, oauth_settings_location=store, ledger_path=store)).close()
    open_ledger(settings(tmp_path)).close()
    assert "would not know" not in caplog.text
