"""The token store: one JSON file per connection, shared by every process of that connection.

Sage refresh tokens are single-use and rotate on every refresh, so whoever refreshes must keep
the new pair before anything else can fail. The store makes that safe:

- an exclusive lock across processes (``filelock``, an ``fcntl`` lock the system releases when
  a process dies) and, inside a process, a lock across threads;
- the file is re-read under the lock before every refresh (another process may have rotated
  the token meanwhile);
- every write is atomic: a temp file in the same folder, ``fsync``, ``chmod 0600``, rename,
  ``fsync`` of the folder (created 0700);
- a refresh first writes an *in-flight marker* (the fingerprint of the refresh token it is
  about to spend), so a run that finds the marker knows an earlier refresh did not finish.

The file (``version`` 1)::

    {"version": 1, "connection_name": "default", "client_id": "...",
     "access_token": "...", "access_token_expires_at": 1764300000.0,   # epoch seconds or null
     "access_token_lifetime": 300,
     "refresh_token": "...", "refresh_token_expires_at": 1766900000.0,
     "scope": "full_access",
     "seed_fingerprint": "sha256:0123abcd...",           # the config token applied last
     "seed_fingerprints": ["sha256:...", ...],           # every config token applied (20 last)
     "access_seed_fingerprints": ["sha256:..."], "in_flight": null | {...},
     "pending_login": null | {...}, "generation": 12, "refresh_count": 11,
     "refreshed_at": ..., "login_at": ..., "updated_at": ..., "last_error": null | {...}}

Fingerprints are a prefix of the SHA-256 of a token: enough to tell a new config token from
an old one, useless to an attacker. A refresh token in the config replaces the stored one only
if its fingerprint was never applied to this store before (so a config that still holds an old
seed, or a second plugin holding another grant, defers to the rotated stored token). The file
itself holds live tokens, hence mode 0600.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import filelock

from tap_sage.sage.errors import SageAuthError

LOGGER = logging.getLogger("sage.auth")

STORE_VERSION = 1


def fingerprint(token: str) -> str:
    """A short, one-way fingerprint of a token (never the token itself)."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]


#: A token store is a few kB; anything far larger is not one.
MAX_STORE_BYTES = 1 << 20

_TEXT = (str, type(None))
_NUMBER = (int, float, type(None))
_OBJECT = (dict, type(None))
_LIST = (list, type(None))
#: The types of the store's known keys (unknown keys are left alone).
STORE_TYPES: dict[str, tuple[type, ...]] = {
    "access_token": _TEXT,
    "refresh_token": _TEXT,
    "client_id": _TEXT,
    "scope": _TEXT,
    "seed_fingerprint": _TEXT,
    "access_token_expires_at": _NUMBER,
    "access_token_lifetime": _NUMBER,
    "refresh_token_expires_at": _NUMBER,
    "refresh_count": _NUMBER,
    "refreshed_at": _NUMBER,
    "revoked_at": _NUMBER,
    "login_at": _NUMBER,
    "updated_at": _NUMBER,
    "generation": _NUMBER,
    "in_flight": _OBJECT,
    "last_error": _OBJECT,
    "pending_login": _OBJECT,
    "seed_fingerprints": _LIST,
    "access_seed_fingerprints": _LIST,
}


def _wrong_types(data: dict[str, Any]) -> str | None:
    """The first known key whose value has the wrong type (booleans are no numbers)."""
    for key, types in STORE_TYPES.items():
        value = data.get(key)
        if not isinstance(value, types) or (isinstance(value, bool) and types is _NUMBER):
            return key
    pending = data.get("pending_login") or {}
    for key in ("state", "code_verifier", "redirect_uri"):
        if not isinstance(pending.get(key), _TEXT):
            return f"pending_login.{key}"
    return None


class TokenStore:
    """The token file of one connection, with its cross-process and cross-thread locks."""

    _thread_locks: ClassVar[dict[str, threading.RLock]] = {}
    _registry_lock = threading.Lock()

    def __init__(self, path: Path, lock_timeout: float = 120.0) -> None:
        self.path = Path(path).expanduser().absolute()
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout = lock_timeout
        key = str(self.path)
        with self._registry_lock:
            self._thread_lock = self._thread_locks.setdefault(key, threading.RLock())
        self._file_lock: filelock.BaseFileLock | None = None

    def __repr__(self) -> str:
        return f"TokenStore({str(self.path)!r})"

    @property
    def location(self) -> str:
        """Where the store is, for messages (``tap_sage.sage.stores.Store``)."""
        return str(self.path)

    # -- folder and locks ------------------------------------------------------------------------

    def ensure_folder(self) -> None:
        """Create the store's folder (mode 0700) if it does not exist."""
        folder = self.path.parent
        if not folder.exists():
            try:
                folder.mkdir(parents=True, mode=0o700, exist_ok=True)
                folder.chmod(0o700)
            except OSError as exc:
                raise SageAuthError(
                    "store_unwritable",
                    f"Cannot create the token store folder {folder} ({exc.strerror})",
                    "set oauth_settings_location to a path the user running the sync can write",
                ) from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold this store's thread lock and its exclusive file lock (re-entrant)."""
        acquired = self._thread_lock.acquire(timeout=self.lock_timeout)
        if not acquired:
            raise self._lock_timeout_error()
        try:
            if self._file_lock is None:
                self.ensure_folder()
                self._file_lock = filelock.FileLock(
                    str(self.lock_path),
                    timeout=self.lock_timeout,
                    mode=0o600,
                    thread_local=False,
                    preserve_lock_file=True,
                )
            started = time.monotonic()
            try:
                self._file_lock.acquire()
            except filelock.Timeout:
                raise self._lock_timeout_error() from None
            except OSError as exc:
                raise SageAuthError(
                    "store_unwritable",
                    f"Cannot create the token store lock {self.lock_path} ({exc.strerror}); no "
                    "token was spent",
                    "set oauth_settings_location to a file path in a folder the user running "
                    "the sync can write",
                ) from None
            waited = time.monotonic() - started
            if waited > 1:
                LOGGER.debug("Waited %.1fs for the token store lock %s", waited, self.lock_path)
            try:
                yield
            finally:
                self._file_lock.release()
        finally:
            self._thread_lock.release()

    def _lock_timeout_error(self) -> SageAuthError:
        return SageAuthError(
            "lock_timeout",
            f"Another run has held the token store lock {self.lock_path} for more than "
            f"{self.lock_timeout:.0f}s",
            "wait for the other run (or `sage-auth login`) of this connection to finish; a lock "
            "of a process that died is released by the system, so a stuck lock means a live "
            "process holds it (raise advanced_config.lock_timeout if it is just slow)",
        )

    # -- reading and writing ---------------------------------------------------------------------

    def unfinished_elsewhere(self, marker: Any) -> bool:
        """Never: the file lock is free only once its holder ended, so an in-flight marker found
        under the lock is an interrupted refresh (``stores.Store``)."""
        return False

    def exists(self) -> bool:
        """Whether the store file exists."""
        return self.path.exists()

    def read(self) -> dict[str, Any]:
        """The stored data (``{}`` when there is no store yet)."""
        try:
            raw = self._read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise SageAuthError(
                "store_unreadable",
                f"Cannot read the token store {self.path} ({exc.strerror})",
                "make the file readable by the user running the sync (it should be mode 0600 "
                "and owned by that user), or set oauth_settings_location to another path",
            ) from None
        if raw is None:
            raise SageAuthError(
                "store_unreadable",
                f"The token store {self.path} is not a regular file (a FIFO, a device or a "
                "folder is there)",
                "remove what is at that path, or set oauth_settings_location to a file path",
            )
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            raise SageAuthError(
                "store_unreadable",
                f"The token store {self.path} is not a JSON object (it was edited or damaged)",
                "move the file away and run `sage-auth login` to authorise the connection again",
            )
        wrong = _wrong_types(data)
        if wrong:
            raise SageAuthError(
                "store_unreadable",
                f"The token store {self.path} has a value of the wrong type in `{wrong}` (it was "
                "edited or damaged)",
                "move the file away and run `sage-auth login` to authorise the connection again",
            )
        version = data.get("version", STORE_VERSION)
        if version != STORE_VERSION:
            raise SageAuthError(
                "store_unreadable",
                f"The token store {self.path} has format version {version!r}; this version of "
                f"tap-sage knows version {STORE_VERSION}",
                "use the same tap-sage version for every run of this connection",
            )
        return data

    def _read_bytes(self) -> bytes | None:
        """The file's bytes; None when the path holds no regular file. Opened without blocking
        and checked before reading, so a FIFO put at the path cannot hang a command."""
        fd = os.open(str(self.path), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
                if sum(map(len, chunks)) > MAX_STORE_BYTES:
                    return b"\xff"  # far beyond any token store: not one
            return b"".join(chunks)
        finally:
            os.close(fd)

    def write(self, data: dict[str, Any]) -> None:
        """Replace the store atomically with ``data`` (mode 0600). Call under ``locked()``."""
        self.ensure_folder()
        self._remove_stale_temp_files()
        data = dict(data)
        data["version"] = STORE_VERSION
        data["generation"] = int(data.get("generation") or 0) + 1
        data["updated_at"] = time.time()
        text = json.dumps(data, indent=2, sort_keys=True) + "\n"
        try:
            fd, tmp = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=".tmp", dir=str(self.path.parent)
            )
        except OSError as exc:
            raise SageAuthError(
                "store_unwritable",
                f"Cannot write the token store {self.path} ({exc.strerror}); no token was spent",
                "make its folder writable by the user running the sync, or set "
                "oauth_settings_location to a writable path",
            ) from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), 0o600)
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._fsync_folder()
        data_generation = data["generation"]
        LOGGER.debug("Wrote token store %s (generation %s)", self.path, data_generation)

    def _fsync_folder(self) -> None:
        try:
            fd = os.open(str(self.path.parent), os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _remove_stale_temp_files(self) -> None:
        """Temp files left by a process killed while writing (we hold the lock: none is live)."""
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()

    def mode(self) -> int:
        """The file's permission bits (e.g. ``0o600``)."""
        return self.path.stat().st_mode & 0o777
