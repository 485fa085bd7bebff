"""SQLite storage of the sandbox: one file, WAL, one connection per thread at a time.

Tables:

``records``
    One row per Sage record of every resource of every business: the record as a JSON blob
    (``data``, exactly what a single GET returns) plus the indexed columns a list page needs
    (``business``, ``resource``, ``seq`` = creation order, ``id``, ``created_at``,
    ``updated_at``, ``deleted_at``, ``doc_date``, ``search``). A page is one indexed query.
``businesses``
    The businesses (id, position, country, edition, the JSON that ``/businesses`` returns).
``clients`` / ``tokens``
    OAuth clients and every code, access and refresh token (stored as SHA-256 hashes only).
``idempotency``
    ``idempotency_id`` of each POST or PUT that carried one: the record it wrote, when
    (``created_at``, epoch seconds) and the answer Sage gave (``response``), returned again for
    a repeat within the memory (7 days, as Sage's idempotency guide says).
``files``
    The bytes of attachments.
``meta``
    Key/value settings: the seed arguments, the user, the token TTL and start time of the
    last ``serve``.
"""

from __future__ import annotations

import hashlib
import json
import queue
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS businesses (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    country TEXT NOT NULL,
    edition TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY,
    client_secret TEXT NOT NULL,
    redirect_uri TEXT
);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    family TEXT NOT NULL,
    client_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    business_ids TEXT,
    issued_at REAL NOT NULL,
    expires_at REAL,
    used INTEGER NOT NULL DEFAULT 0,
    revoked INTEGER NOT NULL DEFAULT 0,
    redirect_uri TEXT,
    code_challenge TEXT,
    code_challenge_method TEXT
);
CREATE INDEX IF NOT EXISTS tokens_family ON tokens (family);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    business TEXT NOT NULL,
    resource TEXT NOT NULL,
    id TEXT NOT NULL,
    created_at TEXT,
    updated_at TEXT,
    deleted_at TEXT,
    doc_date TEXT,
    search TEXT,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    business TEXT NOT NULL,
    resource TEXT NOT NULL,
    idempotency_id TEXT NOT NULL,
    record_id TEXT NOT NULL,
    created_at REAL,
    response TEXT,
    PRIMARY KEY (business, resource, idempotency_id)
);
-- a repeat is looked up by (business, idempotency_id), whatever the resource (a mismatch is 422)
CREATE INDEX IF NOT EXISTS idempotency_by_id ON idempotency (business, idempotency_id);
CREATE TABLE IF NOT EXISTS files (
    business TEXT NOT NULL,
    id TEXT NOT NULL,
    content BLOB NOT NULL,
    PRIMARY KEY (business, id)
);
"""

INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS records_id ON records (business, resource, id);
CREATE INDEX IF NOT EXISTS records_live ON records (business, resource, seq, updated_at, doc_date)
    WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS records_live_updated ON records (business, resource, updated_at)
    WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS records_live_created ON records (business, resource, created_at)
    WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS records_deleted ON records (business, resource, deleted_at, updated_at)
    WHERE deleted_at IS NOT NULL;
"""

DROP_INDEXES = """
DROP INDEX IF EXISTS records_id;
DROP INDEX IF EXISTS records_live;
DROP INDEX IF EXISTS records_live_updated;
DROP INDEX IF EXISTS records_live_created;
DROP INDEX IF EXISTS records_deleted;
DROP INDEX IF EXISTS records_updated;
"""


def token_hash(token: str) -> str:
    """The stored form of a token, code or secret-bearing value."""
    return hashlib.sha256(token.encode()).hexdigest()


def connect(path: Path | str) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, busy timeout."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA foreign_keys=OFF")
    return conn


def create_schema(conn: sqlite3.Connection) -> None:
    """Create every table and index that is missing."""
    conn.executescript(SCHEMA)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(idempotency)")}
    for name, kind in (("created_at", "REAL"), ("response", "TEXT")):
        if name not in columns:  # a database made by an earlier version
            conn.execute(f"ALTER TABLE idempotency ADD COLUMN {name} {kind}")
    conn.executescript(INDEXES)


def get_meta(conn: sqlite3.Connection, key: str, default: str | None = None) -> str | None:
    """One value of the ``meta`` table."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return default if row is None else str(row[0])


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Set one value of the ``meta`` table."""
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def bump_generation(conn: sqlite3.Connection) -> None:
    """Note that records changed: what any server cached of its lists (counts, where pages
    end) is then stale. Called in the transaction that changes them."""
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('generation', '1') "
        "ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
    )


@contextmanager
def transaction(conn: sqlite3.Connection, *, immediate: bool = True) -> Iterator[None]:
    """An explicit transaction; ``BEGIN IMMEDIATE`` serialises writers."""
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class Pool:
    """Connections handed to one thread at a time (the threaded server makes a thread per
    request, so a plain thread-local would open a connection per request)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._free: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """Borrow a connection for the duration of the ``with`` block."""
        try:
            conn = self._free.get_nowait()
        except queue.Empty:
            conn = connect(self.path)
            with self._lock:
                self._all.append(conn)
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._free.put(conn)

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


_encoder = msgspec.json.Encoder()
loads = msgspec.json.decode
#: Compact JSON as UTF-8 bytes (what ``dumps`` gives, not decoded to text).
encode = _encoder.encode


def dumps(obj: Any) -> str:
    """Compact JSON as stored and served (keys in insertion order, UTF-8)."""
    return _encoder.encode(obj).decode()


def dumps_slow(obj: Any) -> str:
    """The same with the standard library (for values msgspec refuses)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
