"""OAuth state of the sandbox: clients, authorization codes, access and refresh tokens.

Tokens are stored as SHA-256 hashes only. Tokens issued together (one authorization and every
refresh that follows it) share a ``family``; revoking any token of a family revokes the whole
family (the access token and its refresh token, and their rotated successors).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any

from tap_sage.sandbox import store

DEFAULT_TOKEN_TTL = 300
REFRESH_TOKEN_TTL = 2678400
CODE_TTL = 60
SCOPES = ("full_access", "readonly")


@dataclass(frozen=True)
class AccessGrant:
    """What a valid access token allows."""

    client_id: str
    scope: str
    business_ids: tuple[str, ...] | None  # None: every business

    def reaches(self, business_id: str) -> bool:
        """Whether the token may act on ``business_id``."""
        return self.business_ids is None or business_id in self.business_ids


def new_secret() -> str:
    """A fresh client secret."""
    return secrets.token_hex(20)


def client_secret(conn: sqlite3.Connection, client_id: str) -> str | None:
    """The secret of a registered client, ``None`` when the client is unknown."""
    row = conn.execute(
        "SELECT client_secret FROM clients WHERE client_id = ?", (client_id,)
    ).fetchone()
    return None if row is None else str(row[0])


def ensure_client(conn: sqlite3.Connection, client_id: str) -> str:
    """Register ``client_id`` with a fresh secret unless known; answers its secret."""
    secret = client_secret(conn, client_id)
    if secret is None:
        secret = new_secret()
        conn.execute(
            "INSERT INTO clients (client_id, client_secret) VALUES (?, ?)", (client_id, secret)
        )
    return secret


def check_client(conn: sqlite3.Connection, client_id: str, secret: str | None) -> bool:
    """Whether ``client_id`` is registered and ``secret`` is its secret."""
    known = client_secret(conn, client_id)
    return known is not None and secret is not None and secrets.compare_digest(known, secret)


def user(conn: sqlite3.Connection) -> dict[str, Any]:
    """The one user of the sandbox."""
    raw = store.get_meta(conn, "user")
    return {} if raw is None else dict(json.loads(raw))


def _insert(
    conn: sqlite3.Connection,
    token: str,
    kind: str,
    family: str,
    client_id: str,
    scope: str,
    business_ids: tuple[str, ...] | None,
    expires_at: float | None,
    **extra: str | None,
) -> None:
    conn.execute(
        "INSERT INTO tokens (hash, kind, family, client_id, scope, business_ids, issued_at, "
        "expires_at, redirect_uri, code_challenge, code_challenge_method) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            store.token_hash(token),
            kind,
            family,
            client_id,
            scope,
            None if business_ids is None else json.dumps(list(business_ids)),
            time.time(),
            expires_at,
            extra.get("redirect_uri"),
            extra.get("code_challenge"),
            extra.get("code_challenge_method"),
        ),
    )


def issue_tokens(
    conn: sqlite3.Connection,
    *,
    client_id: str,
    scope: str,
    business_ids: tuple[str, ...] | None,
    ttl: int | None,
    family: str | None = None,
) -> dict[str, Any]:
    """A new access and refresh token pair; ``ttl=None`` leaves the access token's expiry to
    the server (``--token-ttl`` counted from issue or from the server's start, whichever is
    later). Answers the token response body Sage gives."""
    family = family or uuid.uuid4().hex
    access = secrets.token_urlsafe(48)
    refresh = secrets.token_urlsafe(48)
    now = time.time()
    _insert(
        conn,
        access,
        "access",
        family,
        client_id,
        scope,
        business_ids,
        None if ttl is None else now + ttl,
    )
    _insert(
        conn, refresh, "refresh", family, client_id, scope, business_ids, now + REFRESH_TOKEN_TTL
    )
    effective_ttl = (
        ttl
        if ttl is not None
        else int(store.get_meta(conn, "token_ttl", str(DEFAULT_TOKEN_TTL)) or DEFAULT_TOKEN_TTL)
    )
    return {
        "access_token": access,
        "token_type": "bearer",
        "expires_in": effective_ttl,
        "refresh_token": refresh,
        "refresh_token_expires_in": REFRESH_TOKEN_TTL,
        "scope": scope,
        "requested_by_id": user(conn).get("id", ""),
    }


def issue_code(
    conn: sqlite3.Connection,
    *,
    client_id: str,
    scope: str,
    country: str,
    redirect_uri: str,
    code_challenge: str | None,
    code_challenge_method: str | None,
) -> str:
    """A single-use authorization code carrying Sage's country prefix (``GB/...``)."""
    code = f"{country}/{secrets.token_hex(24)}"
    _insert(
        conn,
        code,
        "code",
        uuid.uuid4().hex,
        client_id,
        scope,
        None,
        time.time() + CODE_TTL,
        redirect_uri=redirect_uri,
        code_challenge=code_challenge,
        code_challenge_method=code_challenge_method,
    )
    return code


def find(conn: sqlite3.Connection, token: str) -> dict[str, Any] | None:
    """The stored row of a token, code or refresh token."""
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute(
            "SELECT * FROM tokens WHERE hash = ?", (store.token_hash(token),)
        ).fetchone()
    finally:
        conn.row_factory = None
    return None if row is None else dict(row)


def consume(conn: sqlite3.Connection, token: str) -> bool:
    """Mark a code or refresh token used; ``False`` if it was used already (race-safe)."""
    cur = conn.execute(
        "UPDATE tokens SET used = 1 WHERE hash = ? AND used = 0", (store.token_hash(token),)
    )
    return cur.rowcount == 1


def revoke_family(conn: sqlite3.Connection, family: str) -> None:
    """Revoke the refresh tokens (and codes) issued from one authorization. Access tokens stay
    valid until they expire, as Sage's do: revoking ends the grant, not the short-lived bearer
    tokens already handed out (Sage's authentication guide; NOTES.md, "The wire, as recorded")."""
    conn.execute("UPDATE tokens SET revoked = 1 WHERE family = ? AND kind != 'access'", (family,))


def business_ids_of(row: dict[str, Any]) -> tuple[str, ...] | None:
    """The businesses a stored token reaches (``None``: all)."""
    raw = row.get("business_ids")
    return None if raw is None else tuple(json.loads(raw))
