"""A shared ledger taken over while the run that held it is still alive.

With the database form of ``ledger_path``, a run's lock lives in its database session. When the
database restarts, the session dies and another machine's run may take the lock while the first
run is still alive with a POST in flight, to a resource Sage cannot deduplicate. If the second
run looked for that create in Sage at once, before the late POST landed, it would not find it
and would create the record a second time. ``Ledger.settle`` makes it wait until every request
the first run may still have in flight has ended (``fence`` keeps the first run from starting a
new one once its session is gone). Here the late POST lands 0.3 s after the second run took the
lock: without the wait the record is in Sage twice.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from target_sage.exactly_once import lookup_fields
from target_sage.ledger_db import LOCK_NAMESPACE, DatabaseLedger, ledger_database_url
from tests.checkpoint_support import TARGET_CLI
from tests.connection_helpers import sandbox_config
from tests.test_target_helpers import SageAPI, record_msg, run_cli, schema_msg, singer

SCHEMA = {
    "type": "object",
    "properties": {"key": {"type": "string"}, "code": {"type": "string"},
                   "name": {"type": "string"}, "analysis_type_id": {"type": "string"}},
}  # fmt: skip
#: one of the few resources whose creates Sage cannot deduplicate (no idempotency_id)
RESOURCE = "analysis_type_categories"
WRAPPER = "analysis_type_category"
STREAM = "categories"


def _lock_holders(url: str) -> int:
    """Sessions holding one of the ledger's run locks (advisory, in its namespace)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(str(ledger_database_url(url)), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            sql = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                   " AND classid = (:ns)::oid")  # fmt: skip
            ns = LOCK_NAMESPACE & 0xFFFFFFFF  # pg_locks shows the int4 key as an unsigned oid
            return int(conn.execute(text(sql), {"ns": ns}).scalar() or 0)
    finally:
        engine.dispose()


def test_a_late_post_of_a_run_that_lost_its_lock_is_found_not_repeated(
    sandbox: Any, pg_database: str, tmp_path: Path
) -> None:
    api = SageAPI(sandbox)
    name = f"Late {time.monotonic_ns() % 10**8}"
    kind = api.all("/analysis_types")[0]["id"]
    inner = {"code": name[-6:], "name": name, "analysis_type_id": kind}
    # Run A: its intent is committed, then its session dies (as in a database restart) while
    # its POST is still on the way; the POST lands once run B holds the lock.
    first = DatabaseLedger(pg_database)
    first.record_intent(api.business_id, STREAM, '["K"]', RESOURCE, "a-hash",
                        at=time.time() - 2, body=lookup_fields(inner))  # fmt: skip
    first.close()
    landed: list[Any] = []

    def late_post() -> None:
        deadline = time.monotonic() + 60
        while _lock_holders(pg_database) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        landed.append(api.post(f"/{RESOURCE}", {WRAPPER: inner}))

    poster = threading.Thread(target=late_post)
    poster.start()
    config = sandbox_config(sandbox, tmp_path / "tokens.json")
    config["advanced_config"].update(timeout=2)  # the wait: 2 x 2 s + 1 s after the lock
    config.update(business_id=api.business_id, ledger_path=pg_database,
                  results_path=str(tmp_path / "results.jsonl"),
                  stream_resources={STREAM: RESOURCE})  # fmt: skip
    text = singer([schema_msg(STREAM, SCHEMA, ["key"]),
                   record_msg(STREAM, {"key": "K", **inner})])  # fmt: skip
    second = run_cli(config, text, tmp_path, code=TARGET_CLI)
    poster.join(90)
    assert second.returncode == 0, second.stderr[-3000:]
    assert landed, "the late POST did not land"
    same = [p for p in api.all(f"/{RESOURCE}") if p.get("name") == name]
    assert len(same) == 1, f"{len(same)} categories named {name!r}: {second.stderr[-2000:]}"
    results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r.get("sage_id") or r.get("id") for r in results if r.get("stream") == STREAM]
    assert "pending; waiting" in second.stderr


def test_a_run_whose_session_died_starts_no_post(pg_database: str) -> None:
    """``fence``: once the database ended a run's session (its lock may now be another
    machine's), the run stops before its next POST instead of sending it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from target_sage.ledger import LedgerError

    ledger = DatabaseLedger(pg_database)
    ledger.fence("b1")  # alive: nothing to say
    engine = create_engine(str(ledger_database_url(pg_database)), poolclass=NullPool,
                           isolation_level="AUTOCOMMIT")  # fmt: skip
    try:
        with engine.connect() as conn:
            ended = conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )).scalar()  # fmt: skip
    finally:
        engine.dispose()
    assert ended == 1
    try:
        with pytest.raises(LedgerError, match="ledger_path"):
            ledger.fence("b1")
    finally:
        ledger.close()
