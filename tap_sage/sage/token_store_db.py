"""The database token store: one row per connection in PostgreSQL, shared by many machines.

It keeps every promise of the file store (``tap_sage.sage.tokens``), across machines:

- one process at a time (on any machine) holds a connection's lock: a PostgreSQL *session
  advisory lock* taken on a connection of its own, held across the whole refresh (marker,
  token POST, new pair). The server releases it when that session ends, so a process that
  dies (or loses its network) holds nobody up, as the kernel does for a file lock; waiting is
  bounded by ``advanced_config.lock_timeout`` (PostgreSQL's ``lock_timeout``), and the
  timeout error names the session that holds the lock;
- the row is re-read under the lock before every refresh;
- every write is one committed ``UPDATE`` that is also a compare-and-swap: it changes the row
  only if its ``generation`` is the one this process last read or wrote under the lock, so a
  writer that lost its lock can never overwrite a newer token pair;
- the in-flight marker and ``refresh_interrupted``, the fingerprints of applied config tokens
  and the owner client id live in the record exactly as in the file (``auth.py`` does not
  know which store it talks to).

The record is encrypted at rest with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``)
under the key that ``oauth_settings_key`` names (``env:NAME`` or ``file:PATH``; several keys:
the first encrypts, any decrypts). A key that does not open the row is an error that names
the setting, before any token is spent. Only the connection name, the format version, the
generation, the key's id (a hash prefix) and the time of the last write are in clear.

The table (created on first use when missing; the user then needs CREATE on the schema)::

    CREATE TABLE tap_sage_token_store (
        connection_name text PRIMARY KEY, format_version integer NOT NULL,
        generation bigint NOT NULL, key_id text NOT NULL, payload text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now())

A write under the lock that finds the database gone (server restarted, network cut) retries
for up to ``lock_timeout`` seconds: it takes the lock again on a new session and writes only
if no one wrote meanwhile. Reading and locking do not wait: a database that is down is at
once a ``store_unreachable`` error, and nothing was spent.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tap_sage.sage.errors import SageAuthError, SageConfigError
from tap_sage.sage.settings import display_url
from tap_sage.sage.tokens import STORE_VERSION

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet
    from sqlalchemy.engine import Connection, Engine

LOGGER = logging.getLogger("sage.auth")

TABLE = "tap_sage_token_store"
#: First key of the two-int advisory locks of this store (``pg_advisory_lock(int, int)``).
LOCK_NAMESPACE = int.from_bytes(hashlib.sha256(b"tap-sage token store").digest()[:4], "big", signed=True)  # fmt: skip
#: Second key of the lock that serialises the creation of the table.
SCHEMA_LOCK = 0
#: SQLSTATE of "lock_not_available" (PostgreSQL's lock_timeout expired).
LOCK_NOT_AVAILABLE = "55P03"

_CREATE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    connection_name text PRIMARY KEY,
    format_version integer NOT NULL,
    generation bigint NOT NULL,
    key_id text NOT NULL,
    payload text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
)"""


def key_id(key: str) -> str:
    """A short, one-way id of a Fernet key (to say which key a row needs; never the key)."""
    return "fernet:" + hashlib.sha256(key.encode()).hexdigest()[:12]


def new_key() -> str:
    """A new random Fernet key (``sage-auth keygen``)."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


@dataclass
class _Session:
    """The lock state of one (database, connection) in this process, shared by its threads."""

    thread_lock: threading.RLock = field(default_factory=threading.RLock)
    depth: int = 0
    conn: Connection | None = None
    #: The generation this process last read or wrote under the lock (the CAS's expectation).
    generation: int | None = None


def load_keys(key_source: str, connection_name: str) -> tuple[MultiFernet, list[str]]:
    """The Fernet keys ``oauth_settings_key`` names (``env:NAME`` or ``file:PATH``; several:
    the first encrypts, all decrypt) and their ids; ``SageConfigError`` names the setting."""
    try:
        from cryptography.fernet import Fernet, MultiFernet
    except ImportError:
        raise _missing_extra("cryptography") from None
    kind, _, where = key_source.partition(":")
    if kind == "env":
        raw = os.environ.get(where, "")
        if not raw.strip():
            raise SageConfigError(
                "oauth_settings_key",
                f"names the environment variable {where} (env:{where}), which is not set or "
                f"empty. Set it to the Fernet key of the token store of connection "
                f"{connection_name!r} on every machine of the connection (a new store: "
                "`sage-auth keygen` prints a new key)",
            )
        origin = f"environment variable {where}"
    else:
        try:
            raw = Path(where).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise SageConfigError(
                "oauth_settings_key", f"cannot read the key file {where} ({exc.strerror})"
            ) from None
        origin = f"file {where}"
    keys = [k for k in re.split(r"[\s,]+", raw) if k]
    fernets = []
    for number, key in enumerate(keys, 1):
        try:
            fernets.append(Fernet(key))
        except ValueError:
            raise SageConfigError(
                "oauth_settings_key",
                f"key #{number} of the {origin} is not a Fernet key (44 characters of "
                "url-safe base64: 32 random bytes); `sage-auth keygen` prints a new one",
            ) from None
    if not fernets:
        raise SageConfigError("oauth_settings_key", f"the {origin} holds no key")
    return MultiFernet(fernets), [key_id(k) for k in keys]


class _StoreDatabase:
    """The database of a token store: its engine (one per URL in a process), the table, the
    advisory lock's holder and release, and database errors turned into the store's errors
    with their fixes."""

    _engines: ClassVar[dict[str, Engine]] = {}
    _schema_ready: ClassVar[set[str]] = set()
    _registry_lock = threading.Lock()

    def __init__(self, url: str, connection_name: str) -> None:
        self.url = url
        self.connection_name = connection_name
        #: The connection's advisory lock (with ``LOCK_NAMESPACE``).
        self.lock_key = int.from_bytes(
            hashlib.sha256(f"{TABLE}/{connection_name}".encode()).digest()[:4], "big", signed=True
        )

    @property
    def location(self) -> str:
        """The URL without its password, and the row: ``URL (table T, connection 'x')``."""
        return f"{display_url(self.url)} (table {TABLE}, connection {self.connection_name!r})"

    def _engine(self) -> Engine:
        with self._registry_lock:
            engine = self._engines.get(self.url)
            if engine is None:
                from sqlalchemy import create_engine

                name = f"tap-sage {socket.gethostname()} pid {os.getpid()}"[:63]
                try:
                    engine = create_engine(
                        self.url,
                        isolation_level="AUTOCOMMIT",  # every write is committed at once
                        pool_pre_ping=True,  # a restarted server: no stale connection
                        hide_parameters=True,  # never log the (encrypted) payload
                        pool_size=2,
                        max_overflow=8,
                        connect_args={"connect_timeout": 10, "application_name": name},
                    )
                except ImportError:
                    raise _missing_extra("psycopg") from None
                if not self._engines:  # the pooled sessions end with the process, closed
                    atexit.register(_dispose_engines, self._engines)
                self._engines[self.url] = engine
            return engine

    def _connect(self) -> Connection:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            conn = self._engine().connect()
        except SQLAlchemyError as exc:
            raise self._unreachable(exc) from None
        try:
            self._ensure_table(conn)
        except BaseException:
            conn.invalidate()
            conn.close()
            raise
        return conn

    def _ensure_table(self, conn: Connection) -> None:
        from sqlalchemy import text

        if self.url in self._schema_ready:
            return
        with self._errors():
            exists = conn.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": TABLE})
            if not exists.scalar():
                lock = {"a": LOCK_NAMESPACE, "b": SCHEMA_LOCK}
                conn.execute(text("SELECT pg_advisory_lock(:a, :b)"), lock)
                try:
                    conn.execute(text(_CREATE))
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"), lock)
                LOGGER.info("Created the token store table %s in %s", TABLE, display_url(self.url))
        self._schema_ready.add(self.url)

    @contextlib.contextmanager
    def _errors(self, what: str = "use") -> Iterator[None]:
        """Database errors as ``store_unreachable`` / ``store_unwritable`` with their fixes."""
        from sqlalchemy.exc import DBAPIError, SQLAlchemyError

        try:
            yield
        except DBAPIError as exc:
            state = getattr(exc.orig, "sqlstate", None) or ""
            if exc.connection_invalidated or state[:2] in {"08", "57", ""}:
                raise self._unreachable(exc) from None
            raise SageAuthError(
                "store_unwritable",
                f"The database refused to {what} the token store {self.location} "
                f"({self._reason(exc)}); no token was spent",
                f"let the user of oauth_settings_location SELECT, INSERT and UPDATE table "
                f"{TABLE} (and, for its first use, CREATE in the schema)",
            ) from None
        except SQLAlchemyError as exc:
            raise self._unreachable(exc) from None

    def _reason(self, exc: BaseException) -> str:
        return error_reason(self.url, exc)

    def _unreachable(self, exc: BaseException) -> SageAuthError:
        return SageAuthError(
            "store_unreachable",
            f"Cannot reach the token store database {display_url(self.url)} "
            f"({self._reason(exc)}); no token was spent",
            "check that the database is up and that the host, port, user and password of "
            "oauth_settings_location are right; the next run goes on from the stored tokens",
        )

    def _holder(self, conn: Connection) -> str | None:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        try:
            row = conn.execute(
                text(
                    "SELECT a.application_name, host(a.client_addr), "
                    "extract(epoch FROM now() - a.backend_start) FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                    "AND l.granted AND l.classid::int = :a AND l.objid::int = :b LIMIT 1"
                ).bindparams(a=LOCK_NAMESPACE, b=self.lock_key)
            ).first()
        except SQLAlchemyError:
            return None
        if row is None:
            return None
        return f"{row[0] or 'a session'} from {row[1] or 'a local socket'}"

    def _unlock(self, conn: Connection) -> None:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        try:
            conn.execute(
                text("SELECT pg_advisory_unlock(:a, :b)"), {"a": LOCK_NAMESPACE, "b": self.lock_key}
            )
        except SQLAlchemyError:
            conn.invalidate()  # the session ends, and the server drops its lock with it
        finally:
            conn.close()


class DatabaseTokenStore(_StoreDatabase):
    """The token record of one connection in a PostgreSQL table (``tap_sage.sage.stores``)."""

    _sessions: ClassVar[dict[tuple[str, str], _Session]] = {}

    def __init__(
        self,
        url: str,
        connection_name: str,
        *,
        key_source: str,
        lock_timeout: float = 120.0,
    ) -> None:
        super().__init__(url, connection_name)
        self.key_source = key_source
        self.lock_timeout = lock_timeout
        with self._registry_lock:
            self._session = self._sessions.setdefault((url, connection_name), _Session())
        self._fernet: MultiFernet | None = None
        self._key_ids: list[str] = []
        self._waiting_logged = False

    def __repr__(self) -> str:
        return f"DatabaseTokenStore({self.location!r})"

    # -- the key -------------------------------------------------------------------------------

    def _keys(self) -> MultiFernet:
        if self._fernet is None:
            self._fernet, self._key_ids = load_keys(self.key_source, self.connection_name)
        return self._fernet

    def _decrypt(self, payload: str, stored_key: str) -> dict[str, Any]:
        from cryptography.fernet import InvalidToken

        fernet = self._keys()
        try:
            text = fernet.decrypt(payload.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise SageAuthError(
                "store_key_wrong",
                f"The token store {self.location} was encrypted with key {stored_key}, and the "
                f"key that oauth_settings_key ({self.key_source}) names "
                f"({', '.join(self._key_ids)}) cannot decrypt it; nothing was changed and no "
                "token was spent",
                "set oauth_settings_key to the key this connection was stored with (every "
                "machine of a connection needs the same key; to change keys, list the new key "
                "first and the old one after it). If that key is lost, so are the tokens: "
                f"{self._remove_row_hint()}",
            ) from None
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise SageAuthError(
                "store_unreadable",
                f"The token store {self.location} decrypts to something that is not a JSON "
                "object (it was written by something else)",
                self._remove_row_hint(),
            )
        return data

    def _remove_row_hint(self) -> str:
        return (
            f"remove the connection's row from table {TABLE} (connection_name = "
            f"'{self.connection_name}'), then run `sage-auth login`"
        )

    # -- the lock --------------------------------------------------------------------------------

    def unfinished_elsewhere(self, marker: Any) -> bool:
        """Whether an unfinished refresh of another process may still finish.

        A database store's lock is lost with its session (database restarted, network cut)
        while the holder lives on and keeps trying to store the new pair; its marker is then
        given twice ``lock_timeout`` (from its start) to clear before the token is tried again.
        A marker of a dead process of this host, or of this process, is not waited for.
        """
        if not isinstance(marker, dict):
            return False
        pid = marker.get("pid")
        here = marker.get("host") == socket.gethostname() and isinstance(pid, int)
        if here and (pid == os.getpid() or not _process_alive(int(str(pid)))):
            return False
        age = time.time() - float(marker.get("started_at") or 0)
        if age >= 2 * self.lock_timeout:
            return False
        if not self._waiting_logged:
            self._waiting_logged = True
            LOGGER.warning(
                "Connection %r: a refresh started %.0fs ago by process %s on %s has not finished; "
                "waiting for it (up to %.0fs in all) rather than spending the same token",
                self.connection_name, age, pid, marker.get("host"), 2 * self.lock_timeout,
            )  # fmt: skip
        return True

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold this connection's advisory lock (on a session of its own) and the thread lock."""
        session = self._session
        if not session.thread_lock.acquire(timeout=self.lock_timeout):
            raise self._lock_timeout_error(None)
        try:
            if session.depth == 0:
                session.conn = self._lock_session(time.monotonic() + self.lock_timeout)
                session.generation = None
            session.depth += 1
            try:
                yield
            finally:
                session.depth -= 1
                if session.depth == 0:
                    conn, session.conn = session.conn, None
                    session.generation = None
                    if conn is not None:
                        self._unlock(conn)
        finally:
            session.thread_lock.release()

    def _lock_session(self, deadline: float) -> Connection:
        """A new session holding the advisory lock (waiting until ``deadline`` at most)."""
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError

        conn = self._connect()
        started = time.monotonic()
        wait_ms = max(1, int((deadline - started) * 1000))
        keys = {"a": LOCK_NAMESPACE, "b": self.lock_key}
        try:
            with self._errors("lock"):
                try:
                    conn.execute(text("SELECT set_config('lock_timeout', :t, false)"),
                                 {"t": f"{wait_ms}ms"})  # fmt: skip
                    conn.execute(text("SELECT pg_advisory_lock(:a, :b)"), keys)
                except DBAPIError as exc:
                    if getattr(exc.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE:
                        holder = self._holder(conn)
                        raise self._lock_timeout_error(holder) from None
                    raise
                conn.execute(text("SELECT set_config('lock_timeout', '0', false)"))
        except BaseException:
            conn.invalidate()
            conn.close()
            raise
        waited = time.monotonic() - started
        if waited > 1:
            LOGGER.debug("Waited %.1fs for the token store lock of %s", waited, self.location)
        return conn

    def _lock_timeout_error(self, holder: str | None) -> SageAuthError:
        who = f" ({holder})" if holder else ""
        return SageAuthError(
            "lock_timeout",
            f"Another run{who} has held the lock of the token store {self.location} for more "
            f"than {self.lock_timeout:.0f}s",
            "wait for the other run (or `sage-auth login`) of this connection to finish, on "
            "whichever machine it runs; the lock of a process that died is released by the "
            "database when its session ends, so a stuck lock means a live session holds it "
            "(raise advanced_config.lock_timeout if it is just slow)",
        )

    # -- reading and writing ---------------------------------------------------------------------

    def _select(self, conn: Connection) -> Any:
        from sqlalchemy import text

        with self._errors("read"):
            return conn.execute(
                text(
                    f"SELECT format_version, generation, key_id, payload FROM {TABLE} "  # noqa: S608 - constant table name
                    "WHERE connection_name = :n"
                ),
                {"n": self.connection_name},
            ).first()

    def exists(self) -> bool:
        """Whether the table holds a row for this connection."""
        return self._row() is not None

    def _row(self) -> Any:
        conn = self._session.conn if self._session.depth else None
        if conn is not None:
            return self._select(conn)
        with contextlib.closing(self._connect()) as fresh:
            return self._select(fresh)

    def read(self) -> dict[str, Any]:
        """The connection's record (``{}`` when there is none), decrypted."""
        row = self._row()
        if row is None:
            if self._session.depth:
                self._session.generation = 0
            return {}
        version, generation, stored_key, payload = row
        if version != STORE_VERSION:
            raise SageAuthError(
                "store_unreadable",
                f"The token store {self.location} has format version {version!r}; this version "
                f"of tap-sage knows version {STORE_VERSION}",
                "use the same tap-sage version for every run of this connection",
            )
        data = self._decrypt(str(payload), str(stored_key))
        data["version"] = STORE_VERSION
        data["generation"] = int(generation)
        data["key_id"] = str(stored_key)
        if self._session.depth:
            self._session.generation = int(generation)
        return data

    def write(self, data: dict[str, Any]) -> None:
        """Replace the record (encrypted), if no one wrote since this process last read it under
        the lock (compare-and-swap on ``generation``). Takes the lock if it is not held."""
        with self.locked():
            record = {k: v for k, v in data.items() if k not in ("generation", "version", "key_id")}
            record["updated_at"] = time.time()
            fernet = self._keys()
            payload = fernet.encrypt(json.dumps(record, sort_keys=True).encode()).decode("ascii")
            deadline = time.monotonic() + self.lock_timeout
            delay = 0.2
            while True:
                try:
                    self._write_locked(payload)
                    return
                except SageAuthError as exc:
                    if exc.code != "store_unreachable" or time.monotonic() >= deadline:
                        raise
                    LOGGER.warning(
                        "The token store database %s went away while this run held its lock; "
                        "trying again to keep the change (for up to %.0fs more)",
                        display_url(self.url),
                        deadline - time.monotonic(),
                    )
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                self._relock(deadline)

    def _relock(self, deadline: float) -> None:
        """The session of the lock died: take the lock again on a new one (the CAS of the
        next write then tells whether someone else wrote meanwhile)."""
        session = self._session
        old, session.conn = session.conn, None
        if old is not None:
            with contextlib.suppress(Exception):
                old.invalidate()
                old.close()
        with contextlib.suppress(SageAuthError):
            session.conn = self._lock_session(deadline)

    def _write_locked(self, payload: str) -> None:
        from sqlalchemy import text

        session = self._session
        conn = session.conn
        if conn is None:
            raise SageAuthError(
                "store_unreachable",
                f"Lost the session holding the lock of the token store {self.location}",
                "check that the database is up; the next run goes on from the stored tokens",
            )
        expected = session.generation
        if expected is None:  # written without reading first: compare with what is there now
            row = self._select(conn)
            expected = 0 if row is None else int(row[1])
        key = self._key_ids[0]
        values = {"n": self.connection_name, "v": STORE_VERSION, "k": key, "p": payload}
        with self._errors("write"):
            if expected == 0:
                result = conn.execute(
                    text(
                        f"INSERT INTO {TABLE} (connection_name, format_version, generation, "  # noqa: S608 - constant table name
                        "key_id, payload) VALUES (:n, :v, 1, :k, :p) "
                        "ON CONFLICT (connection_name) DO NOTHING RETURNING generation"
                    ),
                    values,
                )
            else:
                result = conn.execute(
                    text(
                        f"UPDATE {TABLE} SET generation = generation + 1, format_version = :v, "  # noqa: S608 - constant table name
                        "key_id = :k, payload = :p, updated_at = now() "
                        "WHERE connection_name = :n AND generation = :g RETURNING generation"
                    ),
                    {**values, "g": expected},
                )
            written = result.scalar()
        if written is None:
            row = self._select(conn)
            if row is not None and row[3] == payload:  # ours: committed, its answer was lost
                written = int(row[1])
        if written is None:
            raise SageAuthError(
                "store_changed",
                f"The token store {self.location} was changed by another process while this "
                f"one held its lock (expected generation {expected}); nothing was overwritten",
                "run again: every run re-reads the store. If this repeats, a process that does "
                "not take the lock (an older tap-sage?) writes to the same row",
            )
        session.generation = int(written)
        LOGGER.debug("Wrote token store %s (generation %s)", self.location, written)


def _missing_extra(module: str) -> SageConfigError:
    return SageConfigError(
        "oauth_settings_location",
        f"is a database URL, which needs the `{module}` package: install tap-sage with its "
        "PostgreSQL extra (pip install 'tap-sage[postgres]'; in meltano.yml, pip_url: "
        "tap-sage[postgres]), or give a file path",
    )


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def _dispose_engines(engines: dict[str, Engine]) -> None:
    """At exit: close every pooled database session (no connection left for the garbage
    collector, which would warn of it: `ResourceWarning ... was deleted while still open`)."""
    for engine in list(engines.values()):
        with contextlib.suppress(Exception):
            engine.dispose()
    engines.clear()


def error_reason(url: str, exc: BaseException) -> str:
    """The first line of a database error, for a message: the driver's own error when
    SQLAlchemy wraps one, the URL's password masked, at most 300 characters."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    from sqlalchemy.engine import make_url

    password = make_url(url).password
    if password and len(password) > 3:
        first = first.replace(str(password), "***")
    return first[:300]
