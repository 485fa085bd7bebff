"""The database ledger: the rows of ``ledger.py`` in PostgreSQL, shared by many machines.

``ledger_path: postgresql://user:password@host:5432/database`` puts the ledger in table
``target_sage_ledger`` of that database (created on first use), so that targets on several
machines writing to one Sage business share one ledger, and each record is still written
exactly once. The promises of the file ledger, across machines:

* **One run per business at a time.** The file form has one run per ledger file (a file
  lock beside it, taken before the first write). Here a run holds a PostgreSQL *session
  advisory lock* keyed on the business, taken before the run's first read or write of that
  business's rows and held until the run ends; a second run of the same business, on any
  machine, waits for it (up to ``RUN_LOCK_TIMEOUT``, saying who holds it), and runs for other
  businesses go on in parallel. The server drops the lock when the session ends, so a target
  killed with SIGKILL (or cut off from the network) holds nobody up, as the kernel does for
  the file lock.
* **Committed at the same points.** Every ledger write is one statement, committed at once
  (AUTOCOMMIT), where the file form commits its WAL: the ``pending`` intent before a create
  that Sage cannot deduplicate, the outcome as soon as Sage answers. The rows are upserts on
  the primary key (business, stream, source key), so a row exists once whatever happens.
* **A lost database stops the run.** Every statement of a run goes through the one session
  that holds its lock. When that session dies (the server stopped or restarted, the network
  cut), the lock is gone with it: the run does not reconnect (it could no longer know that
  no other machine took over the business), it stops with a ``LedgerError`` naming
  ``ledger_path``. What Sage answered before that is in the ledger; a write Sage answered
  after it is found by the next run as after a SIGKILL (the same ``idempotency_id``, or a
  lookup of the pending intent).

What the table holds: per source record the business id, stream, source key (the record's
key properties as JSON, or a hash of the record when it has none), Sage resource and id,
state, generation, content hashes, version, and, while a create is pending, the scalar fields
of the body sent (``intent_body``, for the lookup; e.g. a contact's name and reference, an
invoice's date and total). No token, password or key: those stay in the token store. It is
business data: grant the table to the target's database user only.

The database plumbing is the token store's (``tap_sage.sage.token_store_db``): the same URL
form and driver (psycopg 3 through SQLAlchemy, ``tap_sage.sage.settings.database_url``), the
same engine options and the same kind of advisory lock, in a namespace of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from typing_extensions import override

from tap_sage.sage.errors import SageConfigError
from tap_sage.sage.settings import database_url, display_url
from tap_sage.sage.token_store_db import LOCK_NOT_AVAILABLE, error_reason
from target_sage.ledger import _COLUMNS, APPLIED, DELETED, PENDING, Entry, Ledger, LedgerError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from target_sage.settings import TargetSettings

LOGGER = logging.getLogger("target_sage.ledger")

TABLE = "target_sage_ledger"
#: First key of this ledger's two-int advisory locks (the token store has another namespace).
LOCK_NAMESPACE = int.from_bytes(hashlib.sha256(b"target-sage ledger").digest()[:4], "big", signed=True)  # fmt: skip
#: Second key of the lock that serialises the creation of the table.
SCHEMA_LOCK = 0
#: Seconds a run waits for another run of the same business (the file form's wait).
RUN_LOCK_TIMEOUT = 900.0
#: A value of ``ledger_path`` that is a URL (``scheme://...``), not a path.
_URL_FORM = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

_CREATE = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    business_id  text NOT NULL,
    stream       text NOT NULL,
    source_key   text NOT NULL,
    resource     text NOT NULL,
    sage_id      text,
    state        text NOT NULL CHECK (state IN ('pending', 'applied', 'deleted')),
    generation   integer NOT NULL DEFAULT 0,
    content_hash text,
    hashes       text NOT NULL DEFAULT '',
    intent_at    double precision,
    note         text,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    intent_hash  text,
    intent_body  text,
    version      text COLLATE "C",
    PRIMARY KEY (business_id, stream, source_key)
)""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_by_sage_id ON {TABLE} (business_id, resource, sage_id)",
)


def ledger_database_url(raw: Any) -> str | None:
    """The SQLAlchemy URL of a ``ledger_path`` that is a database URL, else None (a file).
    ``SageConfigError`` naming ``ledger_path`` for a URL that is not a PostgreSQL database."""
    text = str(raw or "").strip()
    if not _URL_FORM.match(text):
        return None
    try:
        return database_url(text)
    except SageConfigError as exc:  # worded for oauth_settings_location: say it of this one
        problem = exc.problem.replace("database token store", "database ledger")
        raise SageConfigError("ledger_path", problem) from None


def _lock_key(business_id: str) -> int:
    return int.from_bytes(
        hashlib.sha256(f"{TABLE}/{business_id}".encode()).digest()[:4], "big", signed=True
    )


class LedgerSession(Ledger):
    """The database side of ``DatabaseLedger``: the run's one session, the table, the run
    lock per business held by that session (and what a lost session means), ``fence`` and
    ``settle``. The rows themselves are ``DatabaseLedger``'s."""

    shared = True

    def __init__(
        self, url: str, *, read_only: bool = False, lock_timeout: float = RUN_LOCK_TIMEOUT
    ) -> None:
        # Nothing of the file form's state: the database is reached at the first use.
        self.url = url
        self.read_only = read_only
        self.lock_timeout = lock_timeout
        self._mutex = threading.RLock()
        self._engine: Engine | None = None
        self._conn: Connection | None = None
        self._held: set[str] = set()  # businesses whose run lock this ledger holds
        #: when each run lock was taken (monotonic), and the intents this run wrote itself
        self._taken: dict[str, float] = {}
        self._mine: set[tuple[str, str, str]] = set()
        self._lost: str | None = None  # why the run's session is gone (then nothing goes on)
        self._table = False  # whether the table is known to exist

    @override
    def __repr__(self) -> str:
        return f"DatabaseLedger({self.location!r})"

    @property
    @override
    def location(self) -> str:
        """The URL without its password, and the table."""
        return f"{display_url(self.url)} (table {TABLE})"

    # -- the session ---------------------------------------------------------------------------

    def _session(self) -> Connection:
        """The run's one session (opened at the first use; never replaced once lost)."""
        if self._lost is not None:
            raise self._gone(self._lost)
        if self._conn is not None:
            return self._conn
        from sqlalchemy import create_engine
        from sqlalchemy.exc import SQLAlchemyError

        if self._engine is None:
            name = f"target-sage {socket.gethostname()} pid {os.getpid()}"[:63]
            try:
                self._engine = create_engine(
                    self.url,
                    isolation_level="AUTOCOMMIT",  # every write is committed at once
                    hide_parameters=True,  # never log the business data of a row
                    poolclass=_null_pool(),  # one session per run, never handed to another
                    connect_args={
                        "connect_timeout": 10,
                        "application_name": name,
                        # a machine cut off from the database notices within about a minute
                        "keepalives": 1,
                        "keepalives_idle": 30,
                        "keepalives_interval": 10,
                        "keepalives_count": 3,
                    },
                )
            except ImportError:
                raise SageConfigError(
                    "ledger_path",
                    "is a database URL, which needs the `psycopg` package: install tap-sage "
                    "with its PostgreSQL extra (pip install 'tap-sage[postgres]'; in "
                    "meltano.yml, pip_url: tap-sage[postgres]), or give a file path",
                ) from None
        try:
            conn = self._engine.connect()
        except SQLAlchemyError as exc:
            raise LedgerError(
                f"Cannot reach the ledger database {display_url(self.url)} "
                f"({self._reason(exc)}): check that the database is up and that the host, "
                "port, user and password of `ledger_path` are right; nothing was written to "
                "Sage by this run"
            ) from None
        self._conn = conn
        try:
            self._ensure_table(conn)
        except BaseException:
            self._conn = None
            conn.invalidate()
            conn.close()
            raise
        return conn

    def _ensure_table(self, conn: Connection) -> None:
        from sqlalchemy import text

        with self._errors("read"):
            exists = conn.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": TABLE})
            self._table = bool(exists.scalar())
            if self._table or self.read_only:
                return
            lock = {"a": LOCK_NAMESPACE, "b": SCHEMA_LOCK}
            conn.execute(text("SELECT pg_advisory_lock(:a, :b)"), lock)
            try:
                for statement in _CREATE:
                    conn.execute(text(statement))
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"), lock)
            self._table = True
            LOGGER.info("Created the ledger table %s in %s", TABLE, display_url(self.url))

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Database errors as ``LedgerError``s that name ``ledger_path`` and the fix."""
        from sqlalchemy.exc import DBAPIError, SQLAlchemyError

        try:
            yield
        except DBAPIError as exc:
            state = getattr(exc.orig, "sqlstate", None) or ""
            if exc.connection_invalidated or state[:2] in {"08", "57", ""}:
                self._lose(self._reason(exc))
                raise self._gone(self._lost or "") from None
            raise LedgerError(
                f"The database refused to {what} the ledger {self.location} "
                f"({self._reason(exc)}): let the user of `ledger_path` SELECT, INSERT, UPDATE "
                f"and DELETE table {TABLE} (and, for its first use, CREATE in the schema), then "
                "run again (what Sage answered before this is recorded; a rerun finds the rest)"
            ) from None
        except SQLAlchemyError as exc:
            self._lose(self._reason(exc))
            raise self._gone(self._lost or "") from None

    def _lose(self, reason: str) -> None:
        """The run's session died, and the run's locks with it."""
        self._lost = reason or "the connection was closed"
        self._held.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()
                conn.close()

    def _gone(self, reason: str) -> LedgerError:
        return LedgerError(
            f"The ledger database {display_url(self.url)} went away during this run "
            f"({reason}), and with it this run's lock: stopping here. Run again once the "
            "database is back (check the host, port and user of `ledger_path`): what Sage "
            "answered before this is recorded, and the rerun finds the rest in Sage"
        )

    def _reason(self, exc: BaseException) -> str:
        return error_reason(self.url, exc)

    # -- the run lock --------------------------------------------------------------------------

    def _for(self, business_id: str) -> Connection:
        """The run's session, holding the run lock of ``business_id`` (not in a dry run)."""
        conn = self._session()
        if self.read_only or business_id in self._held:
            return conn
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError

        keys = {"a": LOCK_NAMESPACE, "b": _lock_key(business_id)}
        with self._errors("lock"):
            if not conn.execute(text("SELECT pg_try_advisory_lock(:a, :b)"), keys).scalar():
                LOGGER.warning(
                    "Another target-sage run (%s) is writing business %s with the ledger %s; "
                    "waiting up to %d s for it to finish",
                    self._holder(conn, keys["b"]) or "elsewhere",
                    business_id,
                    self.location,
                    self.lock_timeout,
                )
                started = time.monotonic()
                conn.execute(
                    text("SELECT set_config('lock_timeout', :t, false)"),
                    {"t": f"{max(1, int(self.lock_timeout * 1000))}ms"},
                )
                try:
                    conn.execute(text("SELECT pg_advisory_lock(:a, :b)"), keys)
                except DBAPIError as exc:
                    if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                        raise
                    raise LedgerError(
                        f"Another target-sage run ({self._holder(conn, keys['b']) or 'elsewhere'})"
                        f" has written business {business_id} with the ledger {self.location} "
                        f"for more than {self.lock_timeout:.0f} s: let it finish (on whichever "
                        "machine it runs), then run again. The lock of a run that died is "
                        "released by the database when its session ends, so a stuck lock means "
                        "a live session holds it (`ledger_path`)"
                    ) from None
                conn.execute(text("SELECT set_config('lock_timeout', '0', false)"))
                LOGGER.info("Waited %.0f s for the ledger's run lock", time.monotonic() - started)
        self._held.add(business_id)
        self._taken[business_id] = time.monotonic()
        return conn

    @override
    def fence(self, business_id: str) -> None:
        """A query on the run's session: if the database lost it (and the run lock with it,
        which another machine may now hold), this raises ``LedgerError`` before the POST."""
        if self.read_only:
            return
        from sqlalchemy import text

        with self._mutex:
            conn = self._for(business_id)
            with self._errors("read"):
                conn.execute(text("SELECT 1"))

    @override
    def settle(self, business_id: str, stream: str, source_key: str, horizon: float) -> None:
        """A pending intent of another run: that run may still be alive with its POST in
        flight (its database session died, say in a restart, and its lock went to this run),
        and its POST may land after this run's lookup, which would then create the record a
        second time. Every such POST starts only while its run holds the lock (``fence``), so
        it has been answered or abandoned ``horizon`` seconds (the connection's timeouts)
        after this run took the lock: wait until then, once per business and run."""
        if (business_id, stream, source_key) in self._mine:
            return
        self.acquire_run_lock(business_id)
        wait = self._taken.get(business_id, 0.0) + horizon - time.monotonic()
        if wait > 0:
            LOGGER.info(
                "Stream `%s`, source key %s: an earlier run's create is pending; waiting %.0f s "
                "for any request of that run still in flight before looking for it in Sage",
                stream,
                source_key,
                wait,
            )
            time.sleep(wait)

    def _holder(self, conn: Connection, key: int) -> str | None:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        try:
            row = conn.execute(
                text(
                    "SELECT a.application_name, host(a.client_addr) FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                    "AND l.granted AND l.classid::int = :a AND l.objid::int = :b LIMIT 1"
                ),
                {"a": LOCK_NAMESPACE, "b": key},
            ).first()
        except SQLAlchemyError:
            return None
        if row is None:
            return None
        return f"{row[0] or 'a session'} from {row[1] or 'a local socket'}"

    def acquire_run_lock(self, business_id: str) -> None:
        """Take the run lock of ``business_id`` now (it is otherwise taken at the first use)."""
        with self._mutex:
            self._for(business_id)

    @override
    def close(self) -> None:
        """End the run's session: its run locks are released with it."""
        with self._mutex:
            conn, self._conn = self._conn, None
            self._held.clear()
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()  # no pool: the session ends, and its advisory locks
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None


class DatabaseLedger(LedgerSession):
    """The ledger in a PostgreSQL table; the interface of ``Ledger``, safe between threads."""

    # -- reading -------------------------------------------------------------------------------

    def _query(self, business_id: str | None, sql: str, args: dict[str, Any]) -> Any:
        from sqlalchemy import text

        with self._mutex:
            conn = self._session() if business_id is None else self._for(business_id)
            if not self._table:  # a dry run before the first real one
                return None
            with self._errors("read"):
                return conn.execute(text(sql), args).first()

    @override
    def get(self, business_id: str, stream: str, source_key: str) -> Entry | None:
        """The row of one source record, if any."""
        row = self._query(
            business_id,
            f"SELECT {_COLUMNS} FROM {TABLE}"  # noqa: S608 - constant names
            " WHERE business_id = :b AND stream = :s AND source_key = :k",
            {"b": business_id, "s": stream, "k": source_key},
        )
        if row is None:
            return None
        return Entry(*row)

    @override
    def sage_id_taken(self, business_id: str, resource: str, sage_id: str) -> bool:
        """Whether some source record already owns ``sage_id``."""
        row = self._query(
            business_id,
            f"SELECT 1 FROM {TABLE} WHERE business_id = :b AND resource = :r"  # noqa: S608
            " AND sage_id = :i AND state != :p",
            {"b": business_id, "r": resource, "i": sage_id, "p": PENDING},
        )
        return row is not None

    @override
    def count(self, business_id: str | None = None, state: str | None = None) -> int:
        """Rows, optionally of one business and state (for tests and summaries)."""
        sql = f"SELECT COUNT(*) FROM {TABLE} WHERE 1 = 1"  # noqa: S608 - constant names
        args: dict[str, Any] = {}
        if business_id is not None:
            sql += " AND business_id = :b"
            args["b"] = business_id
        if state is not None:
            sql += " AND state = :st"
            args["st"] = state
        row = self._query(None, sql, args)
        return 0 if row is None else int(row[0])

    # -- writing -------------------------------------------------------------------------------

    def _exec(self, business_id: str, sql: str, args: dict[str, Any]) -> None:
        if self.read_only:
            return
        from sqlalchemy import text

        with self._mutex:
            conn = self._for(business_id)
            with self._errors("write"):
                conn.execute(text(sql), args)

    @staticmethod
    def _row(business_id: str, stream: str, source_key: str, **more: Any) -> dict[str, Any]:
        return {"b": business_id, "s": stream, "k": source_key, **more}

    @override
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
        """Commit ``pending`` before a create or an action (see ``Ledger.record_intent``)."""
        self._mine.add((business_id, stream, source_key))
        self._exec(
            business_id,
            f"INSERT INTO {TABLE} AS t (business_id, stream, source_key, resource, state,"  # noqa: S608
            " intent_hash, intent_body, intent_at, note)"
            " VALUES (:b, :s, :k, :r, :st, :h, :body, :at, :note)"
            " ON CONFLICT (business_id, stream, source_key) DO UPDATE SET state = excluded.state,"
            " resource = excluded.resource, intent_at = excluded.intent_at,"
            " intent_hash = excluded.intent_hash, intent_body = excluded.intent_body,"
            " note = excluded.note, updated_at = now()",
            self._row(
                business_id,
                stream,
                source_key,
                r=resource,
                st=PENDING,
                h=content_hash,
                body=body,
                at=time.time() if at is None else at,
                note=note,
            ),
        )

    @override
    def clear_intent(self, business_id: str, stream: str, source_key: str) -> None:
        """Sage refused the write: forget the intent (a row with a Sage id keeps it)."""
        self._exec(
            business_id,
            f"DELETE FROM {TABLE} WHERE business_id = :b AND stream = :s"  # noqa: S608
            " AND source_key = :k AND state = :p AND sage_id IS NULL",
            self._row(business_id, stream, source_key, p=PENDING),
        )
        self._exec(
            business_id,
            f"UPDATE {TABLE} SET state = CASE WHEN content_hash IS NULL THEN :d ELSE :a END,"  # noqa: S608
            " updated_at = now() WHERE business_id = :b AND stream = :s AND source_key = :k"
            " AND state = :p AND sage_id IS NOT NULL",
            self._row(business_id, stream, source_key, d=DELETED, a=APPLIED, p=PENDING),
        )

    @override
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
        self._exec(
            business_id,
            f"INSERT INTO {TABLE} AS t (business_id, stream, source_key, resource, sage_id,"  # noqa: S608
            " state, content_hash, hashes, version)"
            " VALUES (:b, :s, :k, :r, :id, :st, :h, :hs, :v)"
            " ON CONFLICT (business_id, stream, source_key) DO UPDATE SET"
            " sage_id = excluded.sage_id, state = excluded.state, resource = excluded.resource,"
            " content_hash = excluded.content_hash, updated_at = now(),"
            " intent_hash = NULL, intent_body = NULL,"
            " version = COALESCE(excluded.version, t.version),"
            # the last 1100 characters (the file form's substr(..., -1100)): 16 hashes or so
            " hashes = CASE WHEN strpos(t.hashes, excluded.content_hash) > 0"
            " THEN right(replace(t.hashes, excluded.content_hash, '') || ' ' ||"
            " excluded.content_hash, 1100)"
            " ELSE right(t.hashes || ' ' || excluded.content_hash, 1100) END",
            self._row(
                business_id,
                stream,
                source_key,
                r=resource,
                id=sage_id,
                st=APPLIED,
                h=content_hash,
                hs=content_hash or "",
                v=version,
            ),
        )

    @override
    def record_version(
        self, business_id: str, stream: str, source_key: str, version: str | None
    ) -> None:
        """A newer message with the content Sage already holds: remember its version."""
        if version is None:
            return
        self._exec(
            business_id,
            f"UPDATE {TABLE} SET version = :v, updated_at = now() WHERE business_id = :b"  # noqa: S608
            " AND stream = :s AND source_key = :k"
            " AND (version IS NULL OR version NOT LIKE :kind OR version < :v)",
            self._row(
                business_id, stream, source_key, v=version, kind=version.split(" ", 1)[0] + " %"
            ),
        )

    @override
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
        source record is a new one (a new generation)."""
        self._exec(
            business_id,
            f"INSERT INTO {TABLE} AS t (business_id, stream, source_key, resource, sage_id,"  # noqa: S608
            " state, generation, version) VALUES (:b, :s, :k, :r, :id, :st, 1, :v)"
            " ON CONFLICT (business_id, stream, source_key) DO UPDATE SET"
            " sage_id = excluded.sage_id, state = excluded.state, content_hash = NULL,"
            " intent_hash = NULL, intent_body = NULL,"
            " version = COALESCE(excluded.version, t.version),"
            " generation = t.generation + 1, updated_at = now()",
            self._row(
                business_id, stream, source_key, r=resource, id=sage_id, st=DELETED, v=version
            ),
        )


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool


def open_ledger(settings: TargetSettings) -> Ledger:
    """The ledger that ``ledger_path`` names: a SQLite file, or a PostgreSQL database."""
    if settings.ledger_url:
        return DatabaseLedger(settings.ledger_url, read_only=settings.dry_run)
    if settings.connection.token_store_url:
        LOGGER.warning(
            "The token store is a database that machines share, but the ledger is the file %s "
            "of this machine: a target of this connection on another machine would not know "
            "what this one wrote. Set `ledger_path` to a postgresql:// URL to share it "
            "(`python -m target_sage.ledger_db copy` moves this file there)",
            settings.ledger_path,
        )
    return Ledger(settings.ledger_path, read_only=settings.dry_run)


def copy_file_ledger(path: Path, url: str) -> tuple[int, int]:
    """Copy the rows of a file ledger into a database ledger: ``(copied, already there)``.

    Holds the run lock of every business in the file meanwhile (no target of those businesses
    writes during the copy); a row the database already holds (a run with the database ledger
    wrote it) is kept. Safe to run again. The file keeps its rows (a ledger of an earlier
    version gets its newer columns, as a target run would give them)."""
    if not path.is_file():
        raise LedgerError(f"The ledger {path} does not exist: give the file to copy")
    Ledger(path).close()  # an earlier version's file: its added columns
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = source.execute(
            f"SELECT {_COLUMNS}, updated_at FROM records"  # noqa: S608 - constant column list
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise LedgerError(f"The ledger {path} cannot be read ({exc}): is it a ledger?") from None
    finally:
        source.close()
    from sqlalchemy import text

    target = DatabaseLedger(url)
    names = [c.strip() for c in _COLUMNS.split(",")]
    insert = text(
        f"INSERT INTO {TABLE} ({', '.join(names)}, updated_at) VALUES ("  # noqa: S608
        + ", ".join(f":{n}" for n in names)
        + ", to_timestamp(:updated_at)) ON CONFLICT (business_id, stream, source_key)"
        " DO NOTHING RETURNING 1"
    )
    copied = 0
    try:
        with target._mutex:
            for business in sorted({str(row[0]) for row in rows}):
                target.acquire_run_lock(business)
            conn = target._session()
            for row in rows:
                with target._errors("write"):
                    if conn.execute(
                        insert, dict(zip([*names, "updated_at"], row, strict=True))
                    ).first():
                        copied += 1
    finally:
        target.close()
    return copied, len(rows) - copied


def main(argv: list[str] | None = None) -> int:
    """``python -m target_sage.ledger_db copy --from FILE --to URL``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m target_sage.ledger_db",
        description="Copy a file ledger into a database ledger (then set ledger_path to the URL "
        "in every config of the connection).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    copy = sub.add_parser("copy", help="copy the rows of a ledger file into a database")
    copy.add_argument("--from", dest="source", required=True, help="the ledger file")
    copy.add_argument("--to", dest="url", required=True, help="postgresql://... (ledger_path)")
    args = parser.parse_args(argv)
    try:
        url = ledger_database_url(args.url)
        if url is None:
            raise SageConfigError("ledger_path", "--to must be a postgresql:// URL")
        copied, kept = copy_file_ledger(Path(args.source).expanduser(), url)
    except (SageConfigError, LedgerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"Copied {copied} row(s) of {args.source} to {display_url(url)} (table {TABLE}); "
        f"{kept} already there were kept. Now set ledger_path to that URL in every config of "
        "the connection."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
