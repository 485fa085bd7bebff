"""The local ledger: which Sage record each source record became.

One SQLite file per connection (default: beside the connection's token store). A row per
(business, stream, source key) holds the Sage id, the state of the last write and the hash of
the content last applied. It is written in WAL mode with one commit per step, so a target
killed at any point (SIGKILL included) finds on its next run exactly what was applied:

* ``pending``: a create or an action was about to be sent; ``intent_hash`` and
  ``intent_body`` say what was sent, ``intent_at`` when, in Sage's time (its ``Date`` header,
  never the local clock). The next run reconciles: the same ``idempotency_id`` again (within
  Sage's 7 days), else a lookup in Sage of the record as it was sent.
* ``applied``: Sage answered; ``sage_id`` is the record (or the action's result) and
  ``content_hash`` the content Sage holds for it; ``hashes`` the contents applied before it.
* ``deleted``: the record was deleted or voided (or found gone in Sage); ``generation`` was
  bumped so that a later re-creation of the same source record gets a fresh ``idempotency_id``.

``version`` is the ``time_extracted`` of the input message whose content Sage holds (or whose
delete was applied), when the tap gave one: an input older than it is never applied.

``ledger_path`` may also be a PostgreSQL URL: ``target_sage.ledger_db.open_ledger`` then
gives a ``target_sage.ledger_db.DatabaseLedger`` (the same rows in a table shared by several
machines, with the run lock in the database). Both have the interface of ``Ledger``;
``shared`` says which one holds its run lock itself (``run_lock.py``'s file lock is for the
file form only).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tap_sage.sage.errors import SageError

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
    intent_hash  TEXT,
    intent_body  TEXT,
    version      TEXT,
    PRIMARY KEY (business_id, stream, source_key)
);
CREATE INDEX IF NOT EXISTS records_by_sage_id ON records (business_id, resource, sage_id);
"""


#: Columns added after the first release (added to older ledgers on open).
_ADDED_COLUMNS = ("intent_hash", "intent_body", "version")
_COLUMNS = (
    "business_id, stream, source_key, resource, sage_id, state, generation, content_hash,"
    " hashes, intent_at, note, intent_hash, intent_body, version"
)


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
    intent_hash: str | None = None
    intent_body: str | None = None
    version: str | None = None

    def applied_before(self, content_hash: str) -> bool:
        """Whether this exact content was applied to this source record at some point."""
        return content_hash in self.hashes.split()

    def older_than_held(self, content_hash: str) -> bool:
        """Whether ``content_hash`` is a content applied before the one Sage holds now."""
        return content_hash != self.content_hash and self.applied_before(content_hash)


class LedgerError(SageError):
    """The ledger file cannot be used: names the path and the fix."""


def _private_files(path: Path) -> None:
    """The ledger and its WAL/SHM files are 0600 (they hold business data)."""
    for name in (str(path), f"{path}-wal", f"{path}-shm", f"{path}-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(name, 0o600)


class Ledger:
    """The SQLite ledger of one connection, safe to share between threads."""

    #: Whether the ledger holds the run lock itself, across machines (the database form);
    #: the file form's run lock is the engine's file lock beside it.
    shared = False

    def fence(self, business_id: str) -> None:
        """Before a POST Sage cannot deduplicate: this run still holds the run lock of
        ``business_id``. The file form's lock lives exactly as long as this process, so there
        is nothing to check; the database form checks that its session (and lock) is alive."""

    def settle(self, business_id: str, stream: str, source_key: str, horizon: float) -> None:
        """Before looking in Sage for what another run's pending intent made. The file form's
        lock is this run's only once the run that left the intent has ended, so whatever that
        run sent has been answered; the database form waits (see ``DatabaseLedger.settle``)."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._lock = threading.Lock()
        if read_only and not path.exists():
            self._db: sqlite3.Connection | None = None
            return
        try:
            self._db = self._open(path, read_only)
        except sqlite3.DatabaseError as exc:
            raw = str(exc)
            if "not a database" in raw or "malformed" in raw:
                problem = "it is damaged, or not a ledger"
                fix = (
                    "move it away (the target then starts a new ledger and no longer knows "
                    "what it wrote before) or set `ledger_path` to the right file"
                )
            elif "locked" in raw or "busy" in raw:
                problem = "another process holds it"
                fix = "let the other run finish, or give this one a ledger of its own"
            else:
                problem = "it cannot be opened for writing"
                fix = "set `ledger_path` to a file in a folder this user can write"
            raise LedgerError(f"The ledger {path} cannot be used ({problem}): {fix}") from None
        except OSError as exc:
            raise LedgerError(
                f"The ledger {path} cannot be used ({exc.strerror or exc}): set `ledger_path` "
                "to a file in a folder this user can write"
            ) from None

    @staticmethod
    def _open(path: Path, read_only: bool) -> sqlite3.Connection:
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Created 0600 before SQLite opens it: its -wal and -shm files take its mode.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout = 30000")
            if read_only:
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
                return db
            db.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL: every commit survives the death of this process (SIGKILL);
            # only a power loss may drop the last commits.
            db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(records)")}
            for name in _ADDED_COLUMNS:
                if name not in columns:  # a ledger written by an earlier version
                    db.execute(f"ALTER TABLE records ADD COLUMN {name} TEXT")
            _private_files(path)
        except BaseException:
            db.close()
            raise
        return db

    @property
    def location(self) -> str:
        """Where the ledger is, for messages (a file path, or a URL without its password)."""
        return str(self.path)

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
                    f"SELECT {_COLUMNS} FROM records"  # noqa: S608 - a constant column list
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
            try:
                self._db.execute(sql, args)
            except sqlite3.OperationalError as exc:  # disk full, file removed or read-only
                raise LedgerError(
                    f"The ledger {self.path} cannot be written any more ({exc}): free space or "
                    "fix its permissions, then run again (what Sage answered before this is "
                    "recorded; a rerun finds the rest)"
                ) from None

    def record_intent(
        self,
        business_id: str,
        stream: str,
        source_key: str,
        resource: str,
        content_hash: str,
        note: str | None = None,
        *,
        at: float | None = None,
        body: str | None = None,
    ) -> None:
        """Commit ``pending`` before a create or an action.

        ``content_hash`` and ``body`` are what is about to be sent (the content Sage holds, if
        any, stays as it is); ``at`` is Sage's time (see ``Engine.sage_now``); ``note`` keeps
        what reconciliation needs later (e.g. a journal's reference).
        """
        now = time.time()
        self._write(
            "INSERT INTO records (business_id, stream, source_key, resource, state, intent_hash,"
            " intent_body, intent_at, note, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (business_id, stream, source_key) DO UPDATE SET state = excluded.state,"
            " resource = excluded.resource, intent_at = excluded.intent_at,"
            " intent_hash = excluded.intent_hash, intent_body = excluded.intent_body,"
            " note = excluded.note, updated_at = excluded.updated_at",
            (
                business_id,
                stream,
                source_key,
                resource,
                PENDING,
                content_hash,
                body,
                now if at is None else at,
                note,
                now,
            ),
        )

    def clear_intent(self, business_id: str, stream: str, source_key: str) -> None:
        """Sage refused the write: forget the intent (a row with a Sage id keeps it)."""
        self._write(
            "DELETE FROM records WHERE business_id = ? AND stream = ? AND source_key = ?"
            " AND state = ? AND sage_id IS NULL",
            (business_id, stream, source_key, PENDING),
        )
        self._write(
            "UPDATE records SET state = CASE WHEN content_hash IS NULL THEN ? ELSE ? END"
            " WHERE business_id = ? AND stream = ? AND source_key = ?"
            " AND state = ? AND sage_id IS NOT NULL",
            (DELETED, APPLIED, business_id, stream, source_key, PENDING),
        )

    def record_applied(
        self,
        business_id: str,
        stream: str,
        source_key: str,
        resource: str,
        sage_id: str | None,
        content_hash: str,
        version: str | None = None,
    ) -> None:
        """Commit the outcome of a create, update or action: Sage holds ``content_hash``."""
        self._write(
            "INSERT INTO records (business_id, stream, source_key, resource, sage_id, state,"
            " content_hash, hashes, version, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (business_id, stream, source_key) DO UPDATE SET"
            " sage_id = excluded.sage_id, state = excluded.state, resource = excluded.resource,"
            " content_hash = excluded.content_hash, updated_at = excluded.updated_at,"
            " intent_hash = NULL, intent_body = NULL,"
            " version = COALESCE(excluded.version, records.version),"
            " hashes = CASE WHEN instr(records.hashes, excluded.content_hash) > 0"
            " THEN substr(replace(records.hashes, excluded.content_hash, '') || ' ' ||"
            " excluded.content_hash, -1100)"
            " ELSE substr(records.hashes || ' ' || excluded.content_hash, -1100) END",
            (
                business_id,
                stream,
                source_key,
                resource,
                sage_id,
                APPLIED,
                content_hash,
                content_hash or "",
                version,
                time.time(),
            ),
        )

    def record_version(
        self, business_id: str, stream: str, source_key: str, version: str | None
    ) -> None:
        """A newer message with the content Sage already holds: remember its version."""
        if version is None:
            return
        kind = version.split(" ", 1)[0] + " %"
        self._write(
            "UPDATE records SET version = ? WHERE business_id = ? AND stream = ?"
            " AND source_key = ? AND (version IS NULL OR version NOT LIKE ? OR version < ?)",
            (version, business_id, stream, source_key, kind, version),
        )

    def record_deleted(
        self,
        business_id: str,
        stream: str,
        source_key: str,
        resource: str,
        sage_id: str | None,
        version: str | None = None,
    ) -> None:
        """Commit a delete or void (or a record found gone in Sage); the next create of this
        source record is a new one. Sage holds no content for it any more."""
        self._write(
            "INSERT INTO records (business_id, stream, source_key, resource, sage_id, state,"
            " generation, version, updated_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)"
            " ON CONFLICT (business_id, stream, source_key) DO UPDATE SET"
            " sage_id = excluded.sage_id, state = excluded.state, content_hash = NULL,"
            " intent_hash = NULL, intent_body = NULL,"
            " version = COALESCE(excluded.version, records.version),"
            " generation = records.generation + 1, updated_at = excluded.updated_at",
            (business_id, stream, source_key, resource, sage_id, DELETED, version, time.time()),
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
