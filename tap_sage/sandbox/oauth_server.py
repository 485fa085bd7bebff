"""The OAuth server: ``/oauth/authorize``, ``/oauth/token``, ``/oauth/revoke``, and the bearer
check of every ``/v3.1`` request (the tokens themselves are kept by ``oauth``)."""

from __future__ import annotations

import base64
import hmac
import sqlite3
import time
from hashlib import sha256
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Request, Response

from tap_sage.sandbox import oauth, store
from tap_sage.sandbox.answers import Answer, OAuthError, SageError, json_response
from tap_sage.sandbox.faults import Faults
from tap_sage.sandbox.settings import Settings


class OAuthServer:
    """Sage's OAuth endpoints over the tokens of one database."""

    def __init__(self, settings: Settings, pool: store.Pool, faults: Faults) -> None:
        self.settings = settings
        self.pool = pool
        self.faults = faults

    def handle(self, request: Request, path: str) -> Response:
        """Answer one ``/oauth/...`` request (faults drawn at ``--oauth-fault-rate``)."""
        kind = self.faults.draw(self.settings.oauth_fault_rate, request.method)
        if kind in ("commit500", "commitdrop") and request.method == "GET":
            kind = "500"
        try:
            if kind is not None and not kind.startswith("commit"):
                self.faults.before(kind)
            if path == "/oauth/authorize" and request.method == "GET":
                return self.authorize(request)
            if path == "/oauth/token" and request.method == "POST":
                response = self.token(request)
            elif path == "/oauth/revoke" and request.method == "POST":
                response = self.revoke(request)
            else:
                raise OAuthError(404, "invalid_request", "Unknown OAuth endpoint or method")
            self.faults.after(kind)
            return response
        except Answer as answer:
            return answer.response
        except OAuthError as exc:
            headers = {"Cache-Control": "no-store"}
            if exc.status == 401:
                headers["WWW-Authenticate"] = 'Basic realm="sage-sandbox"'
            return json_response(
                exc.status, {"error": exc.error, "error_description": exc.description}, headers
            )

    def authorize(self, request: Request) -> Response:
        """Approve at once: 302 to ``redirect_uri`` with a code (or an error)."""
        args = request.args
        client_id = args.get("client_id", "")
        redirect_uri = args.get("redirect_uri", "")
        if not redirect_uri:
            raise OAuthError(400, "invalid_request", "redirect_uri is required")
        with self.pool.connection() as conn:
            if oauth.client_secret(conn, client_id) is None:
                raise OAuthError(400, "invalid_client", "Unknown client_id")
            row = conn.execute(
                "SELECT redirect_uri FROM clients WHERE client_id = ?", (client_id,)
            ).fetchone()
            if row[0] and row[0] != redirect_uri:
                raise OAuthError(400, "invalid_request", "redirect_uri does not match")
            if args.get("response_type", "code") != "code":
                return _redirect(
                    redirect_uri, error="unsupported_response_type", state=args.get("state")
                )
            scope = args.get("scope") or "full_access"
            if scope not in oauth.SCOPES:
                return _redirect(redirect_uri, error="invalid_scope", state=args.get("state"))
            lead = conn.execute(
                "SELECT country FROM businesses ORDER BY position LIMIT 1"
            ).fetchone()
            country = str(lead[0]) if lead else "GB"
            method = args.get("code_challenge_method") or (
                "plain" if args.get("code_challenge") else None
            )
            code = oauth.issue_code(
                conn,
                client_id=client_id,
                scope=scope,
                country=country,
                redirect_uri=redirect_uri,
                code_challenge=args.get("code_challenge"),
                code_challenge_method=method,
            )
        return _redirect(redirect_uri, code=code, country=country, state=args.get("state"))

    def _client(self, request: Request, conn: sqlite3.Connection) -> str:
        auth = request.authorization
        if auth is not None and auth.type == "basic":
            client_id, secret, status = auth.username or "", auth.password, 401
        else:
            client_id = request.form.get("client_id", "")
            secret, status = request.form.get("client_secret"), 400
        if not oauth.check_client(conn, client_id, secret):
            raise OAuthError(status, "invalid_client", "Client authentication failed")
        return client_id

    def token(self, request: Request) -> Response:
        """``POST /oauth/token``: a code or a refresh token for new tokens."""
        if request.mimetype != "application/x-www-form-urlencoded":
            raise OAuthError(400, "invalid_request", "Body must be form-encoded")
        form = request.form
        grant_type = form.get("grant_type", "")
        with self.pool.connection() as conn, store.transaction(conn):
            client_id = self._client(request, conn)
            if grant_type == "authorization_code":
                body = self._exchange_code(conn, client_id, form)
            elif grant_type == "refresh_token":
                body = self._refresh(conn, client_id, form)
            else:
                raise OAuthError(400, "unsupported_grant_type", f"Unsupported grant {grant_type!r}")
        return json_response(200, body, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _exchange_code(
        self, conn: sqlite3.Connection, client_id: str, form: MultiDict[str, str]
    ) -> dict[str, Any]:
        code = form.get("code", "")
        row = oauth.find(conn, code)
        if row is None or row["kind"] != "code" or row["client_id"] != client_id:
            raise OAuthError(400, "invalid_grant", "Unknown authorization code")
        if row["revoked"] or row["expires_at"] < time.time():
            raise OAuthError(400, "invalid_grant", "Authorization code expired")
        if not oauth.consume(conn, code):
            raise OAuthError(400, "invalid_grant", "Authorization code already used")
        if form.get("redirect_uri") and form.get("redirect_uri") != row["redirect_uri"]:
            raise OAuthError(400, "invalid_grant", "redirect_uri does not match")
        challenge = row.get("code_challenge")
        if challenge:
            verifier = form.get("code_verifier", "")
            if row.get("code_challenge_method") == "S256":
                digest = base64.urlsafe_b64encode(sha256(verifier.encode()).digest())
                computed = digest.decode().rstrip("=")
            else:
                computed = verifier
            if not hmac.compare_digest(computed, challenge):
                raise OAuthError(400, "invalid_grant", "PKCE verification failed")
        return oauth.issue_tokens(
            conn,
            client_id=client_id,
            scope=row["scope"],
            business_ids=None,
            ttl=self.settings.token_ttl,
        )

    def _refresh(
        self, conn: sqlite3.Connection, client_id: str, form: MultiDict[str, str]
    ) -> dict[str, Any]:
        token = form.get("refresh_token", "")
        row = oauth.find(conn, token)
        if row is None or row["kind"] != "refresh" or row["client_id"] != client_id:
            raise OAuthError(400, "invalid_grant", "Unknown refresh token")
        if row["revoked"]:
            raise OAuthError(400, "invalid_grant", "Refresh token revoked")
        if row["expires_at"] < time.time():
            raise OAuthError(400, "invalid_grant", "Refresh token expired")
        if not oauth.consume(conn, token):
            raise OAuthError(400, "invalid_grant", "Refresh token already used")
        return oauth.issue_tokens(
            conn,
            client_id=client_id,
            scope=row["scope"],
            business_ids=oauth.business_ids_of(row),
            ttl=self.settings.token_ttl,
            family=row["family"],
        )

    def revoke(self, request: Request) -> Response:
        """``POST /oauth/revoke``: end the whole grant of the token."""
        with self.pool.connection() as conn, store.transaction(conn):
            client_id = self._client(request, conn)
            token = request.form.get("token", "")
            row = oauth.find(conn, token) if token else None
            if row is not None and row["client_id"] == client_id:
                oauth.revoke_family(conn, row["family"])
        # recorded/revoke_response.json (Sage's authentication guide)
        return json_response(200, {"success": "ok"})

    def access(self, request: Request, conn: sqlite3.Connection) -> oauth.AccessGrant:
        """The grant of the request's bearer token (401 ``AuthorizationFailure`` if none)."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise SageError(401, "AuthorizationFailure", "Missing bearer token")
        row = oauth.find(conn, token.strip())
        if row is None or row["kind"] != "access" or row["revoked"]:
            raise SageError(401, "AuthorizationFailure", "The access token is invalid")
        expires = row["expires_at"]
        if expires is None:
            expires = max(row["issued_at"], self.settings.started_at) + self.settings.token_ttl
        if time.time() >= expires:
            raise SageError(401, "AuthorizationFailure", "The access token has expired")
        return oauth.AccessGrant(row["client_id"], row["scope"], oauth.business_ids_of(row))


def _redirect(uri: str, **params: str | None) -> Response:
    parts = urlsplit(uri)
    query = urlencode({k: v for k, v in params.items() if v is not None})
    new_query = f"{parts.query}&{query}" if parts.query else query
    location = urlunsplit((parts.scheme, parts.netloc, parts.path, new_query, parts.fragment))
    return Response("", status=302, headers={"Location": location})
