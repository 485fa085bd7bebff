"""The token store interface, and the choice of a store from ``oauth_settings_location``.

Two implementations keep the same promises (see ``tap_sage.sage.tokens`` for the protocol of
a refresh): ``TokenStore``, a locked JSON file for the processes of one machine, and
``DatabaseTokenStore`` (``tap_sage.sage.token_store_db``), a row of a PostgreSQL table, locked
with an advisory lock and encrypted with the user's key, for the processes of many machines.
``oauth_settings_location`` picks one by its form: a path, or a ``postgresql://`` URL.

The rules of a store's record live here too, for every store and every caller (the token
sources, the login, ``sage-auth``): who owns it (``check_owner``), which config tokens were
already applied to it (``seen_fingerprints``, ``SEEN_KEEP``, ``apply_config``). Whether an
in-flight marker may still be finished elsewhere is the store's to say
(``Store.unfinished_elsewhere``).
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager
from typing import Any, Protocol

from tap_sage.sage.errors import SageAuthError
from tap_sage.sage.settings import ConnectionSettings
from tap_sage.sage.tokens import TokenStore, fingerprint

LOGGER = logging.getLogger("sage.auth")

#: How many fingerprints of applied config tokens a store remembers.
SEEN_KEEP = 20


class Store(Protocol):
    """What the token sources, the login and ``sage-auth`` need from a token store.

    ``locked()`` is re-entrant and excludes every other process of the connection (on any
    machine that shares the store) and every other thread; ``read()`` under it sees the last
    ``write()`` of anyone; ``write()`` replaces the whole record atomically (and, under the
    lock, only if no one else wrote since this process last read or wrote it).
    """

    lock_timeout: float

    @property
    def location(self) -> str:
        """Where the store is, for messages (never a password)."""
        ...

    def exists(self) -> bool:
        """Whether the store holds a record for this connection."""
        ...

    def read(self) -> dict[str, Any]:
        """The stored record (``{}`` when there is none yet)."""
        ...

    def write(self, data: dict[str, Any]) -> None:
        """Replace the record with ``data``. Call under ``locked()``."""
        ...

    def unfinished_elsewhere(self, marker: Any) -> bool:
        """Whether the in-flight marker found under the lock (``in_flight``, or None) is a
        refresh another live process may still finish, so the caller should let go of the
        lock, wait a moment and read again rather than spend the same refresh token. Bounded:
        a store answers True only for a limited time per marker."""
        ...

    def locked(self) -> AbstractContextManager[None]:
        """Hold the store's exclusive lock (raises ``lock_timeout`` after ``lock_timeout`` s)."""
        ...


def open_store(settings: ConnectionSettings) -> Store:
    """The token store of a connection: a database row when ``oauth_settings_location`` is a
    database URL, else the JSON file."""
    if settings.token_store_url:
        from tap_sage.sage.token_store_db import DatabaseTokenStore

        return DatabaseTokenStore(
            settings.token_store_url,
            settings.connection_name,
            key_source=settings.oauth_settings_key,
            lock_timeout=settings.lock_timeout,
        )
    return TokenStore(settings.oauth_settings_location, settings.lock_timeout)


def check_owner(store: Store, data: dict[str, Any], settings: ConnectionSettings) -> None:
    """Raise ``store_conflict`` when the store belongs to another client id (never overwrite)."""
    owner = data.get("client_id")
    if owner and settings.client_id and owner != settings.client_id:
        raise SageAuthError(
            "store_conflict",
            f"The token store {store.location} belongs to another Sage app (client id "
            f"{_short(owner)}), not to client_id {_short(settings.client_id)} of connection "
            f"{settings.connection_name!r}; it is left untouched",
            "give this connection its own store: a connection_name no other app uses, or "
            "another oauth_settings_location",
        )


def seen_fingerprints(data: dict[str, Any], key: str, legacy: str) -> list[str]:
    """Fingerprints of config tokens already applied to a store (oldest first)."""
    seen = [str(f) for f in data.get(key) or []]
    if not seen and data.get(legacy):
        seen = [str(data[legacy])]
    return seen


def _short(client_id: str) -> str:
    return client_id if len(client_id) <= 12 else client_id[:8] + "..."


def apply_config(
    store: Store, data: dict[str, Any], settings: ConnectionSettings
) -> dict[str, Any]:
    """Check the store's owner and apply tokens newly put into the config (call under the
    lock); returns the record as stored."""
    check_owner(store, data, settings)
    owner = data.get("client_id")
    changed = not data
    if not data:
        data = {"connection_name": settings.connection_name, "created_at": time.time()}
    changed = _apply_refresh_seed(data, settings) or changed
    if settings.access_token:
        seed = fingerprint(settings.access_token)
        seen = seen_fingerprints(data, "access_seed_fingerprints", "access_seed_fingerprint")
        if seed not in seen:
            if not data.get("access_token"):
                data["access_token"] = settings.access_token
                data["access_token_expires_at"] = None
                data["access_token_lifetime"] = None
            data["access_seed_fingerprints"] = [*seen, seed][-SEEN_KEEP:]
            changed = True
    if settings.client_id and not owner:
        data["client_id"] = settings.client_id
        changed = True
    if changed:
        store.write(data)
        data = store.read()
    moved = data.get("moved_to")
    if moved and not data.get("refresh_token"):
        raise SageAuthError(
            "store_moved",
            f"The tokens of connection {settings.connection_name!r} were moved from "
            f"{store.location} to {moved} (`sage-auth move`); this store no longer "
            "holds them",
            f"set oauth_settings_location to {moved} in every config of this connection",
        )
    return data


def _apply_refresh_seed(data: dict[str, Any], settings: ConnectionSettings) -> bool:
    """Apply the config's refresh token to the record when it is new there; whether it was."""
    if not settings.refresh_token:
        return False
    # A refresh token is "new" when its fingerprint was never applied to this store:
    # a config still holding an older seed (or a second plugin holding another grant)
    # defers to the rotated stored token instead of flip-flopping the store.
    seed = fingerprint(settings.refresh_token)
    seen = seen_fingerprints(data, "seed_fingerprints", "seed_fingerprint")
    if seed not in seen:
        if data.get("refresh_token") != settings.refresh_token:
            if data.get("refresh_token"):
                LOGGER.info(
                    "Connection %r: the config holds a new refresh token; it replaces "
                    "the stored one",
                    settings.connection_name,
                )
            data["refresh_token"] = settings.refresh_token
            data["refresh_token_expires_at"] = None
            data["in_flight"] = None
            data["last_error"] = None
            data["access_token"] = settings.access_token
            data["access_token_expires_at"] = None
            data["access_token_lifetime"] = None
            if settings.access_token:
                data["access_seed_fingerprints"] = [
                    *seen_fingerprints(data, "access_seed_fingerprints", "access_seed_fingerprint"),
                    fingerprint(settings.access_token),
                ][-SEEN_KEEP:]
        data["seed_fingerprint"] = seed
        data["seed_fingerprints"] = [*seen, seed][-SEEN_KEEP:]
        return True
    return False
