"""The local ledger: which Sage record each source record became.

One SQLite file per connection (default: beside the connection's token store). A row per
(business, stream, source key) holds the Sage id, the state of the last write and the hash of
the content last applied. It is written in WAL mode with one commit per step, so a target
killed at any point (SIGKILL included) finds on its next run exactly what was applied:

* ``pending``: the write was about to be sent (only recorded for writes Sage cannot
  deduplicate itself: POSTs without ``idempotency_id`` and actions); the next run reconciles.
* ``applied``: Sage answered; ``sage_id`` is the record (or the action's result).
* ``deleted``: the record was deleted or voided; ``generation`` was bumped so that a later
  re-creation of the same source record gets a fresh ``idempotency_id``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PENDING = "pending"
APPLIED = "applied"
DELETED = "deleted"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    business_id  TEXT NOT NULL,
    stream       TEXT NOT NULL,
    source_key   TEXT NOT NULL,
    resource     TEXT NOT NULL,
    sage_id      TEXT,
    state        TEXT NOT NULL,
    generation   INTEGER NOT NULL DEFAULT 0,
    content_hash TEXT,
    hashes       TEXT NOT NULL DEFAULT '',
    intent_at    REAL,
    note         TEXT,
    updated_at   REAL NOT NULL,
    PRIMARY KEY (business_id, stream, source_key)
);
CREATE INDEX IF NOT EXISTS records_by_sage_id ON records (business_id, resource, sage_id);
"""


@dataclass(frozen=True)
class Entry:
    """One ledger row."""

    business_id: str
    stream: str
    source_key: str
    resource: str
    sage_id: str | None
    state: str
    generation: int
    content_hash: str | None
    hashes: str
    intent_at: float | None
    note: str | None

    def applied_before(self, content_hash: str) -> bool:
        """Whether this exact content was applied to this source record at some point."""
        return content_hash in self.hashes.split()


class Ledger:
    """The SQLite ledger of one connection, safe to share between threads."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._lock = threading.Lock()
        if read_only and not path.exists():
            self._db: sqlite3.Connection | None = None
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout = 30000")
        if not read_only:
            self._db.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL: every commit survives the death of this process (SIGKILL);
            # only a power loss may drop the last commits.
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.executescript(_SCHEMA)
            path.chmod(0o600)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def get(self, business_id: str, stream: str, source_key: str) -> Entry | None:
        """The row of one source record, if any."""
        with self._lock:
            if self._db is None:
                return None
            try:
                row = self._db.execute(
                    "SELECT business_id, stream, source_key, resource, sage_id, state, generation,"
                    " content_hash, hashes, intent_at, note FROM records"
                    " WHERE business_id = ? AND stream = ? AND source_key = ?",
                    (business_id, stream, source_key),
                ).fetchone()
            except sqlite3.OperationalError:  # read-only ledger without the table yet
                return None
        return Entry(*row) if row else None

    def sage_id_taken(self, business_id: str, resource: str, sage_id: str) -> bool:
        """Whether some source record already owns ``sage_id``."""
        with self._lock:
            if self._db is None:
                return False
            row = self._db.execute(
                "SELECT 1 FROM records WHERE business_id = ? AND resource = ? AND sage_id = ?"
                " AND state != ?",
                (business_id, resource, sage_id, PENDING),
            ).fetchone()
        return row is not None

    def _write(self, sql: str, args: tuple[object, ...]) -> None:
        if self.read_only:
            return
        with self._lock:
            assert self._db is not None
            self._db.execute(sql, args)

    def record_intent(
        self,
        business_id: str,
        stream: str,
        source_key: str,
        resource: str,
        content_hash: str,
        note: str | None = None,
    ) -> None:
        """Commit ``pending`` before a write Sage cannot deduplicate.

        ``note`` keeps what reconciliation needs later (e.g. a journal's reference).
        """
        now = time.time()
        self._write(
            "INSERT INTO records (business_id, stream, source_key, resource, state, content_hash,"
            " intent_at, note, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (business_id, stream, source_key) DO UPDATE SET state = excluded.state,"
            " resource = excluded.resource, intent_at = excluded.intent_at,"
            " note = excluded.note, updated_at = excluded.updated_at",
            (business_id, stream, source_key, resource, PENDING, content_hash, now, note, now),
        )

    def clear_intent(self, business_id: str, stream: str, source_key: str) -> None:
        """Sage refused the write: forget the intent (a row with a Sage id keeps it)."""
        self._write(
            "DELETE FROM records WHERE business_id = ? AND stream = ? AND source_key = ?"
            " AND state = ? AND sage_id IS NULL",
            (business_id, stream, source_key, PENDING),
        )
        self._write(
            "UPDATE records SET state = ? WHERE business_id = ? AND stream = ? AND source_key = ?"
            " AND state = ? AND sage_id IS NOT NULL",
            (APPLIED, business_id, stream, source_key, PENDING),
        )

    def record_applied(
        self,
        business_id: str,
        stream: str,
        source_key: str,
        resource: str,
        sage_id: str | None,
        content_hash: str,
    ) -> None:
        """Commit the outcome of a create, update or action."""
        self._write(
            "INSERT INTO records (business_id, stream, source_key, resource, sage_id, state,"
            " content_hash, hashes, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (business_id, stream, source_key) DO UPDATE SET"
            " sage_id = excluded.sage_id, state = excluded.state, resource = excluded.resource,"
            " content_hash = excluded.content_hash, updated_at = excluded.updated_at,"
            " hashes = CASE WHEN instr(records.hashes, excluded.content_hash) > 0"
            " THEN records.hashes ELSE substr(records.hashes || ' ' || excluded.content_hash,"
            " -1100) END",
            (
                business_id,
                stream,
                source_key,
                resource,
                sage_id,
                APPLIED,
                content_hash,
                content_hash or "",
                time.time(),
            ),
        )

    def record_deleted(
        self, business_id: str, stream: str, source_key: str, resource: str, sage_id: str
    ) -> None:
        """Commit a delete or void; the next create of this source record is a new one."""
        self._write(
            "INSERT INTO records (business_id, stream, source_key, resource, sage_id, state,"
            " generation, updated_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?)"
            " ON CONFLICT (business_id, stream, source_key) DO UPDATE SET"
            " sage_id = excluded.sage_id, state = excluded.state,"
            " generation = records.generation + 1, updated_at = excluded.updated_at",
            (business_id, stream, source_key, resource, sage_id, DELETED, time.time()),
        )

    def count(self, business_id: str | None = None, state: str | None = None) -> int:
        """Rows, optionally of one business and state (for tests and summaries)."""
        with self._lock:
            if self._db is None:
                return 0
            sql = "SELECT COUNT(*) FROM records WHERE 1 = 1"
            args: list[object] = []
            if business_id is not None:
                sql += " AND business_id = ?"
                args.append(business_id)
            if state is not None:
                sql += " AND state = ?"
                args.append(state)
            return int(self._db.execute(sql, args).fetchone()[0])
