"""The sandbox WSGI application: Sage's OAuth endpoints and the ``/v3.1`` API, driven by the
resource catalogue (no per-resource routes). See ``tap_sage/sandbox/__init__.py`` for the
behaviour it promises."""

from __future__ import annotations

import base64
import binascii
import copy
import hmac
import json
import logging
import math
import random
import re
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from hashlib import sha256
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Request, Response

from tap_sage.sage import catalogue, wire
from tap_sage.sage.catalogue import Resource
from tap_sage.sandbox import oauth, store
from tap_sage.sandbox.model import (
    complete,
    display_of,
    filter_to_schema,
    lines_field,
    link,
    now_ts,
    number_field,
    parse_when,
    ref_resource,
    schema_props,
    search_text,
    utc_ts,
    wire_shape,
)

log = logging.getLogger("sage_sandbox")

API_PREFIX = "/v3.1"
MAX_ITEMS_PER_PAGE = 200
DEFAULT_ITEMS_PER_PAGE = 20
FAULT_KINDS = ("500", "503", "429", "drop", "commit500", "commitdrop")
#: Faults drawn only when named (``--fault-kinds``): ``html``, an HTML error page (not JSON) with
#: 502, 503, 504 or 520-525 as a gateway or CDN in front of Sage answers; ``429bare``, a 429
#: without ``Retry-After``.
EXTRA_FAULT_KINDS = ("html", "429bare")
ALL_FAULT_KINDS = FAULT_KINDS + EXTRA_FAULT_KINDS
HTML_STATUSES = (502, 503, 504, 520, 521, 522, 523, 524, 525)
#: Sage's default ``items_per_page`` (a list request without it)
DEFAULT_ITEMS_PER_PAGE = 20
WRITE_METHODS = frozenset({"POST", "PUT", "DELETE"})
BASE_FIELDS = ("id", "displayed_as", "$path")
INVOICE_LIKE_DRAFTABLE = "DRAFT"
QUOTE_RESOURCES = frozenset({"sales_quotes", "sales_estimates"})
#: ``$items_per_page`` of ``/businesses``: one page holds them all (recorded).
BUSINESSES_PER_PAGE = 2147483647
#: Sage's answer when the user may not use a business (recorded/error_403_...json).
MULTI_USER_DENIED = "The current user is not allowed to access that resource with that method."


class DropConnection(Exception):
    """Close the client's connection without any HTTP answer."""


class SageError(Exception):
    """An error answered in Sage's format."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        source: str = "",
        extra: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.items = [
            {"$severity": "error", "$dataCode": code, "$message": message, "$source": source}
        ] + (extra or [])


class OAuthError(Exception):
    """An OAuth error (``{"error": ..., "error_description": ...}``)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


@dataclass
class Settings:
    """Knobs of one server (the ``serve`` flags)."""

    db: Path
    latency_ms: int = 0
    fault_rate: float = 0.0
    oauth_fault_rate: float = 0.0
    fault_seed: int | None = None
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    #: Heavy pages: a GET with ``attributes=all`` asking for more than this many items per page
    #: fails (500 or an HTML 504) with probability ``heavy_fault_rate`` (0: never).
    heavy_page_size: int = 0
    heavy_fault_rate: float = 1.0
    token_ttl: int = oauth.DEFAULT_TOKEN_TTL
    max_concurrent: int = 150
    idempotency_ttl: float = 0.0  # 0: Sage's 7 days (IDEMPOTENCY_TTL)
    started_at: float = field(default_factory=time.time)


#: How long an ``idempotency_id`` is remembered: "For the next 7 days, a repetition of this very
#: same request will return the exact same result as the first request" (Sage's idempotency
#: guide, developer.sage.com/accounting/guides/concepts/idempotency/). ``--idempotency-ttl``
#: shortens it for tests.
IDEMPOTENCY_TTL = 7 * 86400.0


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(store.dumps(body), status=status, mimetype="application/json", headers=headers)


HTML_TITLES = {
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
    520: "Web server is returning an unknown error",
    521: "Web server is down",
    522: "Connection timed out",
    523: "Origin is unreachable",
    524: "A timeout occurred",
    525: "SSL handshake failed",
}


def _html(status: int, title: str) -> Response:
    """An error page as a gateway or CDN in front of Sage sends it: HTML, not Sage's JSON."""
    page = (
        f"<!DOCTYPE html>\n<html><head><title>{status} {title}</title></head>"
        f"<body><h1>{status} {title}</h1><p>The origin did not answer.</p></body></html>\n"
    )
    return Response(page, status=status, mimetype="text/html")


def _raw_json(status: int, text: str) -> Response:
    return Response(text, status=status, mimetype="application/json")


class SandboxApp:
    """The WSGI callable."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = store.Pool(settings.db)
        self._fault_rng = random.Random(settings.fault_seed)
        self._fault_lock = threading.Lock()
        self._validators: dict[int, Any] = {}
        self._validators_lock = threading.Lock()
        self._counts: dict[tuple[str, tuple[Any, ...]], tuple[str | None, int]] = {}
        self._count_lock = threading.Lock()
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        with self.pool.connection() as conn:
            store.create_schema(conn)
            store.set_meta(conn, "token_ttl", str(settings.token_ttl))
            store.set_meta(conn, "server_started_at", str(settings.started_at))

    # -- WSGI ------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        request_id = str(uuid.uuid4())
        try:
            response = self.handle(request)
        except DropConnection:
            sock = environ.get("werkzeug.socket")
            if isinstance(sock, socket.socket):
                # Drain the body so the server does not parse it as a next request, then
                # shut the socket: the client sees the connection close without an answer.
                try:
                    request.get_data()
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                raise ConnectionAbortedError("sandbox fault: dropped connection") from None
            response = _json(500, SageError(500, "UnexpectedError", "Dropped").items)
        except SageError as exc:
            response = _json(exc.status, exc.items)
        except Exception:
            log.exception("unexpected error")
            response = _json(
                500, SageError(500, "UnexpectedError", "An unexpected error occurred").items
            )
        response.headers["x_request_id"] = request_id
        return response(environ, start_response)

    def handle(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        api = path == API_PREFIX or path.startswith(API_PREFIX + "/")
        limit = self.settings.max_concurrent
        if api and limit:
            with self._inflight_lock:
                if self._inflight >= limit:
                    return _json(
                        429,
                        SageError(
                            429, "TooManyRequests", f"More than {limit} concurrent requests"
                        ).items,
                        {"Retry-After": "1"},
                    )
                self._inflight += 1
        try:
            if self.settings.latency_ms:
                time.sleep(self.settings.latency_ms / 1000)
            if path.startswith("/oauth/"):
                return self.handle_oauth(request, path)
            if api:
                return self.handle_api(request, path[len(API_PREFIX) :])
            raise SageError(404, "RecordNotFound", f"No route for {request.method} {request.path}")
        finally:
            if api and limit:
                with self._inflight_lock:
                    self._inflight -= 1

    # -- faults ----------------------------------------------------------------------------
    def _fault(self, rate: float, method: str) -> str | None:
        if rate <= 0:
            return None
        with self._fault_lock:
            if self._fault_rng.random() >= rate:
                return None
            kind = self._fault_rng.choice(self.settings.fault_kinds)
        if kind.startswith("commit") and method not in WRITE_METHODS:
            kind = "500" if kind == "commit500" else "drop"
        return kind

    def _heavy_fault(self, request: Request) -> None:
        """Fail a heavy list page (``attributes=all`` above ``heavy_page_size`` items)."""
        limit = self.settings.heavy_page_size
        if limit <= 0 or request.method != "GET" or request.args.get("attributes") != "all":
            return
        try:
            size = int(request.args.get("items_per_page", DEFAULT_ITEMS_PER_PAGE))
        except ValueError:
            return
        if size <= limit:
            return
        with self._fault_lock:
            if self._fault_rng.random() >= self.settings.heavy_fault_rate:
                return
            gateway = self._fault_rng.random() < 0.5
        if gateway:
            raise _Answer(_html(504, "Gateway Time-out"))
        raise SageError(500, "UnexpectedError", "Sandbox fault injected: page too heavy")

    def _pre_fault(self, kind: str | None) -> None:
        if kind == "html":
            with self._fault_lock:
                status = self._fault_rng.choice(HTML_STATUSES)
            raise _Answer(_html(status, HTML_TITLES.get(status, "Error")))
        if kind == "429bare":
            raise _Answer(_json(429, SageError(429, "TooManyRequests", "Rate limit").items))
        if kind == "drop":
            raise DropConnection
        if kind == "429":
            raise _Answer(
                _json(
                    429,
                    SageError(429, "TooManyRequests", "Rate limit exceeded").items,
                    {"Retry-After": "1"},
                )
            )
        if kind in ("500", "503"):
            status = int(kind)
            code = "UnexpectedError" if status == 500 else "ServiceUnavailable"
            raise SageError(status, code, "Sandbox fault injected")

    @staticmethod
    def _post_fault(kind: str | None) -> None:
        if kind == "commitdrop":
            raise DropConnection
        if kind == "commit500":
            raise SageError(500, "UnexpectedError", "Sandbox fault injected after commit")

    # -- OAuth -----------------------------------------------------------------------------
    def handle_oauth(self, request: Request, path: str) -> Response:
        kind = self._fault(self.settings.oauth_fault_rate, request.method)
        if kind in ("commit500", "commitdrop") and request.method == "GET":
            kind = "500"
        try:
            if kind is not None and not kind.startswith("commit"):
                self._pre_fault(kind)
            if path == "/oauth/authorize" and request.method == "GET":
                return self.authorize(request)
            if path == "/oauth/token" and request.method == "POST":
                response = self.token(request)
            elif path == "/oauth/revoke" and request.method == "POST":
                response = self.revoke(request)
            else:
                raise OAuthError(404, "invalid_request", "Unknown OAuth endpoint or method")
            self._post_fault(kind)
            return response
        except _Answer as answer:
            return answer.response
        except OAuthError as exc:
            headers = {"Cache-Control": "no-store"}
            if exc.status == 401:
                headers["WWW-Authenticate"] = 'Basic realm="sage-sandbox"'
            return _json(
                exc.status, {"error": exc.error, "error_description": exc.description}, headers
            )

    def authorize(self, request: Request) -> Response:
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
                return self._redirect(
                    redirect_uri, error="unsupported_response_type", state=args.get("state")
                )
            scope = args.get("scope") or "full_access"
            if scope not in oauth.SCOPES:
                return self._redirect(redirect_uri, error="invalid_scope", state=args.get("state"))
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
        return self._redirect(redirect_uri, code=code, country=country, state=args.get("state"))

    @staticmethod
    def _redirect(uri: str, **params: str | None) -> Response:
        parts = urlsplit(uri)
        query = urlencode({k: v for k, v in params.items() if v is not None})
        new_query = f"{parts.query}&{query}" if parts.query else query
        location = urlunsplit((parts.scheme, parts.netloc, parts.path, new_query, parts.fragment))
        return Response("", status=302, headers={"Location": location})

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
        return _json(200, body, {"Cache-Control": "no-store", "Pragma": "no-cache"})

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
        with self.pool.connection() as conn, store.transaction(conn):
            client_id = self._client(request, conn)
            token = request.form.get("token", "")
            row = oauth.find(conn, token) if token else None
            if row is not None and row["client_id"] == client_id:
                oauth.revoke_family(conn, row["family"])
        # recorded/revoke_response.json (Sage's authentication guide)
        return _json(200, {"success": "ok"})

    def _access(self, request: Request, conn: sqlite3.Connection) -> oauth.AccessGrant:
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

    # -- API -------------------------------------------------------------------------------
    def handle_api(self, request: Request, path: str) -> Response:
        kind = self._fault(self.settings.fault_rate, request.method)
        try:
            if kind is not None and not kind.startswith("commit"):
                self._pre_fault(kind)
            self._heavy_fault(request)
            with self.pool.connection() as conn:
                grant = self._access(request, conn)
                if request.method in WRITE_METHODS and grant.scope != "full_access":
                    raise SageError(
                        403, "AccessDenied", "The token's scope (readonly) does not allow writes"
                    )
                try:
                    response = self.route(request, conn, grant, path)
                finally:
                    if request.method in WRITE_METHODS:
                        store.bump_generation(conn)
            self._post_fault(kind)
            return response
        except _Answer as answer:
            return answer.response

    def route(
        self, request: Request, conn: sqlite3.Connection, grant: oauth.AccessGrant, path: str
    ) -> Response:
        parts = [p for p in path.split("/") if p]
        if not parts:
            raise SageError(404, "RecordNotFound", "No resource given")
        if parts[0] == "businesses":
            return self.businesses(request, conn, grant, parts[1:])
        if parts[0] == "user":
            return self.user(request, conn, parts[1:])
        res = catalogue.resources().get(parts[0])
        if res is None or len(parts) > 3:
            raise SageError(404, "RecordNotFound", f"Unknown resource {path}")
        business = self._business(request, conn, grant)
        response = self._route_resource(request, conn, res, business, parts, path)
        # Sage names the business in every answer but those of /businesses and /user (NOTES.md)
        response.headers["X-Business"] = str(business["id"])
        return response

    def _route_resource(
        self,
        request: Request,
        conn: sqlite3.Connection,
        res: Resource,
        business: dict[str, Any],
        parts: list[str],
        path: str,
    ) -> Response:
        method = request.method
        if not res.available_in(business["country"], business["edition"]):
            raise SageError(
                403,
                "FeatureUnavailable",
                f"{res.name} is not available for businesses in {business['country']} on "
                f"Sage Accounting {business['edition']}",
                res.name,
            )
        biz = str(business["id"])
        if len(parts) == 1:
            if res.singleton:
                if method == "GET":
                    return self.get_singleton(conn, biz, res)
                if method == "PUT" and res.update:
                    return self.put(request, conn, biz, res, None)
                raise self._not_allowed(method, path)
            if method == "GET" and res.list:
                return self.list_records(request, conn, biz, res)
            if method == "POST" and res.create:
                return self.post(request, conn, biz, res)
            raise self._not_allowed(method, path)
        key = parts[1]
        if len(parts) == 3:
            return self.action(request, conn, biz, res, key, parts[2])
        if res.singleton:
            raise SageError(404, "RecordNotFound", f"Unknown resource {path}")
        if method == "GET" and res.get:
            return _raw_json(200, self._load(conn, biz, res, key)[1])
        if method == "PUT" and res.update:
            return self.put(request, conn, biz, res, key)
        if method == "DELETE" and (res.delete or res.void):
            return self.delete(request, conn, biz, res, key)
        raise self._not_allowed(method, path)

    @staticmethod
    def _not_allowed(method: str, path: str) -> SageError:
        return SageError(405, "MethodNotAllowed", f"{method} is not allowed on {path}")

    def _business(
        self, request: Request, conn: sqlite3.Connection, grant: oauth.AccessGrant
    ) -> dict[str, Any]:
        wanted = request.headers.get("X-Business", "").strip()
        if wanted:
            row = conn.execute(
                "SELECT id, country, edition FROM businesses WHERE id = ?", (wanted,)
            ).fetchone()
            if row is None or not grant.reaches(wanted):
                raise SageError(403, "MultiUserAccessDenied", MULTI_USER_DENIED)
            return {"id": row[0], "country": row[1], "edition": row[2]}
        for row in conn.execute("SELECT id, country, edition FROM businesses ORDER BY position"):
            if grant.reaches(row[0]):
                return {"id": row[0], "country": row[1], "edition": row[2]}
        raise SageError(403, "MultiUserAccessDenied", MULTI_USER_DENIED)

    # -- businesses and user ---------------------------------------------------------------
    def businesses(
        self, request: Request, conn: sqlite3.Connection, grant: oauth.AccessGrant, rest: list[str]
    ) -> Response:
        rows = [
            (str(r[0]), json.loads(r[1]))
            for r in conn.execute("SELECT id, data FROM businesses ORDER BY position")
            if grant.reaches(r[0])
        ]
        if not rest:
            if request.method != "GET":
                raise self._not_allowed(request.method, "/businesses")
            # recorded/businesses_list.json: no parameters (the spec declares none; any given
            # is ignored), every business in one page, the three base fields only.
            return _json(
                200,
                {
                    "$total": len(rows),
                    "$page": 1,
                    "$next": None,
                    "$back": None,
                    "$items_per_page": BUSINESSES_PER_PAGE,
                    "$items": [
                        {k: data.get(k) for k in ("displayed_as", "id", "$path")}
                        for _, data in rows
                    ],
                },
            )
        if len(rest) > 1:
            raise SageError(404, "RecordNotFound", "Unknown path")
        key = rest[0]
        if key == "lead":
            if request.method != "GET":
                raise self._not_allowed(request.method, "/businesses/lead")
            if not rows:
                raise SageError(403, "MultiUserAccessDenied", MULTI_USER_DENIED)
            return _json(200, rows[0][1])
        exists = conn.execute("SELECT data FROM businesses WHERE id = ?", (key,)).fetchone()
        if exists is None:
            raise SageError(404, "RecordNotFound", f"Business {key} not found")
        if not grant.reaches(key):
            raise SageError(403, "MultiUserAccessDenied", MULTI_USER_DENIED)
        data = json.loads(exists[0])
        if request.method == "GET":
            return _json(200, data)
        if request.method == "PUT":
            changes = self._wrapped_body(request, "business")
            with store.transaction(conn):
                data.update({k: v for k, v in changes.items() if k in data})
                data["updated_at"] = now_ts()
                data["displayed_as"] = data.get("name") or data["displayed_as"]
                conn.execute(
                    "UPDATE businesses SET data = ? WHERE id = ?", (store.dumps(data), key)
                )
            return _json(200, data)
        raise self._not_allowed(request.method, f"/businesses/{key}")

    def user(self, request: Request, conn: sqlite3.Connection, rest: list[str]) -> Response:
        if rest:
            raise SageError(404, "RecordNotFound", "Unknown path")
        data = oauth.user(conn)
        if request.method == "GET":
            return _json(200, data)
        if request.method == "PUT":
            changes = self._wrapped_body(request, "user")
            allowed = ("first_name", "last_name", "initials", "locale")
            with store.transaction(conn):
                data.update({k: v for k, v in changes.items() if k in allowed})
                data["updated_at"] = now_ts()
                store.set_meta(conn, "user", store.dumps(data))
            return _json(200, data)
        raise self._not_allowed(request.method, "/user")

    # -- lists -----------------------------------------------------------------------------
    @staticmethod
    def _paging(args: MultiDict[str, str]) -> tuple[int, int]:
        def number(name: str, default: int) -> int:
            raw = args.get(name)
            if raw is None or raw == "":
                return default
            try:
                return int(raw)
            except ValueError:
                raise SageError(
                    400, "InvalidParameter", f"{name} must be an integer", name
                ) from None

        page = max(1, number("page", 1))
        ipp = min(MAX_ITEMS_PER_PAGE, max(1, number("items_per_page", DEFAULT_ITEMS_PER_PAGE)))
        return page, ipp

    @staticmethod
    def _link(request: Request, path: str, page: int, ipp: int) -> str:
        params: list[tuple[str, str]] = [("page", str(page)), ("items_per_page", str(ipp))]
        params += [
            (k, v) for k, v in request.args.items(multi=True) if k not in ("page", "items_per_page")
        ]
        return f"{path}?{urlencode(params)}"

    def _envelope(
        self,
        request: Request,
        path: str,
        items: list[dict[str, Any]],
        total: int,
        page: int,
        ipp: int,
        attributes: str | None,
    ) -> dict[str, Any]:
        last = max(1, math.ceil(total / ipp))
        page = min(page, last)
        chosen = items[(page - 1) * ipp : page * ipp]
        return {
            "$total": total,
            "$page": page,
            "$next": self._link(request, path, page + 1, ipp) if page < last else None,
            "$back": self._link(request, path, page - 1, ipp) if page > 1 else None,
            "$itemsPerPage": ipp,
            "$items": [_select(item, attributes) for item in chosen],
        }

    def list_records(
        self, request: Request, conn: sqlite3.Connection, biz: str, res: Resource
    ) -> Response:
        args = request.args
        names = res.param_names
        for param in res.params:
            if param.required and not args.get(param.name):
                # the spec marks it required (tax_determinations' ``usage``): Sage refuses the list
                raise SageError(
                    400, "InvalidParameter", f"{param.name} is missing or empty", param.name
                )
        page, ipp = self._paging(args)
        order = "seq"
        sort_field = "seq"
        sort = args.get("sort")
        props = catalogue.list_schema(res.name).get("properties", {})
        if sort:
            if not res.sortable:
                raise SageError(
                    400, "InvalidParameter", f"sort is not a parameter of {res.path}", "sort"
                )
            field_name, _, direction = sort.partition(":")
            column = _sort_column(field_name, props)
            if column is None or direction not in ("", "asc", "desc"):
                raise SageError(400, "InvalidParameter", f"Cannot sort by {sort!r}", "sort")
            desc = " DESC" if direction == "desc" else ""
            order = f"{column}{desc}, seq{desc}"
            sort_field = field_name
        where = ["business = ?", "resource = ?"]
        params: list[Any] = [biz, res.name]
        tombstones = "deleted_since" in names and bool(args.get("deleted_since"))
        if tombstones:
            since = _when(args["deleted_since"], "deleted_since")
            # exclusive: deleted_at > since (timestamps are whole seconds)
            where.append("deleted_at IS NOT NULL AND deleted_at > ?")
            params.append(utc_ts(math.floor(since.timestamp())))
        else:
            where.append("deleted_at IS NULL")
        if "updated_or_created_since" in names and args.get("updated_or_created_since"):
            since = _when(args["updated_or_created_since"], "updated_or_created_since")
            # inclusive; "+" keeps the planner on the creation-order index unless sorting
            column = "updated_at" if sort_field == "updated_at" else "+updated_at"
            where.append(f"{column} >= ?")
            params.append(utc_ts(math.ceil(since.timestamp())))
        if "date" in props:
            if "from_date" in names and args.get("from_date"):
                where.append("doc_date >= ?")
                params.append(_day(args["from_date"], "from_date"))
            if "to_date" in names and args.get("to_date"):
                where.append("doc_date <= ?")
                params.append(_day(args["to_date"], "to_date"))
        if "updated_from_date" in names and args.get("updated_from_date"):
            where.append("updated_at >= ?")
            params.append(_day(args["updated_from_date"], "updated_from_date") + "T00:00:00Z")
        if "updated_to_date" in names and args.get("updated_to_date"):
            where.append("updated_at <= ?")
            params.append(_day(args["updated_to_date"], "updated_to_date") + "T23:59:59Z")
        if "search" in names and args.get("search"):
            term = args["search"].lower().replace("\\", "\\\\").replace("%", "\\%")
            where.append("search LIKE ? ESCAPE '\\'")
            params.append("%" + term.replace("_", "\\_") + "%")
        for name, param in res.filter_params.items():
            value = args.get(name)
            if value is None or value == "" or name in ("search", "from_date", "to_date"):
                continue
            clause = _filter_clause(name, param.type, value, props)
            if clause is not None:
                where.append(clause[0])
                params.extend(clause[1])
        sql_where = " AND ".join(where)
        total = self._count(conn, sql_where.replace("+updated_at", "updated_at"), params)
        last = max(1, math.ceil(total / ipp))
        page = min(page, last)
        attributes = args.get("attributes")
        # Two steps: the page's row numbers from the (covering) indexes, then their data.
        seqs = [
            r[0]
            for r in conn.execute(
                f"SELECT seq FROM records WHERE {sql_where} ORDER BY {order} "  # noqa: S608
                "LIMIT ? OFFSET ?",
                [*params, ipp, (page - 1) * ipp],
            )
        ]
        by_seq = {
            r[0]: (r[1], r[2])
            for r in conn.execute(
                "SELECT seq, id, data FROM records WHERE seq IN "  # noqa: S608
                f"({','.join('?' * len(seqs))})",
                seqs,
            )
        }
        rows = [by_seq[seq] for seq in seqs]
        head: dict[str, Any] = {
            "$total": total,
            "$page": page,
            "$next": self._link(request, res.path, page + 1, ipp) if page < last else None,
            "$back": self._link(request, res.path, page - 1, ipp) if page > 1 else None,
            "$itemsPerPage": ipp,
        }
        if attributes == "all" and not tombstones:
            text = store.dumps(head)[:-1] + ',"$items":[' + ",".join(r[1] for r in rows) + "]}"
            return _raw_json(200, text)
        items: list[dict[str, Any]] = []
        for _, data in rows:
            record = store.loads(data)
            if tombstones:
                items.append(
                    {
                        "id": record.get("id"),
                        "displayed_as": record.get("displayed_as"),
                        "$path": record.get("$path"),
                        "deleted_at": record.get("deleted_at"),
                    }
                )
            else:
                items.append(_select(record, attributes))
        head["$items"] = items
        return _json(200, head)

    def _count(self, conn: sqlite3.Connection, where: str, params: list[Any]) -> int:
        """``count(*)`` of a list, cached until the next write (from any process)."""
        generation = store.get_meta(conn, "generation", "0")
        key = (where, tuple(params))
        with self._count_lock:
            cached = self._counts.get(key)
            if cached is not None and cached[0] == generation:
                return cached[1]
        total = int(
            conn.execute(
                f"SELECT count(*) FROM records WHERE {where}",  # noqa: S608
                params,
            ).fetchone()[0]
        )
        with self._count_lock:
            if len(self._counts) > 2000:
                self._counts.clear()
            self._counts[key] = (generation, total)
        return total

    # -- single records --------------------------------------------------------------------
    def _load(
        self, conn: sqlite3.Connection, biz: str, res: Resource, key: str
    ) -> tuple[dict[str, Any], str]:
        row = conn.execute(
            "SELECT data FROM records WHERE business = ? AND resource = ? AND id = ? "
            "AND deleted_at IS NULL",
            (biz, res.name, key),
        ).fetchone()
        if row is None:
            raise SageError(404, "RecordNotFound", f"{res.title} {key} was not found", "id")
        return store.loads(row[0]), str(row[0])

    def get_singleton(self, conn: sqlite3.Connection, biz: str, res: Resource) -> Response:
        row = conn.execute(
            "SELECT data FROM records WHERE business = ? AND resource = ? ORDER BY seq LIMIT 1",
            (biz, res.name),
        ).fetchone()
        if row is None:
            empty = {"$path": res.path}
            return _json(200, empty)
        return _raw_json(200, str(row[0]))

    def _wrapped_body(
        self, request: Request, wrapper: str, schema: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        if request.mimetype != "application/json":
            raise SageError(415, "UnsupportedMediaType", "Content-Type must be application/json")
        try:
            body = _parse_body(request)
        except ValueError:
            raise SageError(400, "InvalidJSON", "The body is not valid JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get(wrapper), dict):
            raise SageError(
                422, "RecordInvalid", f"param is missing or the value is empty: {wrapper}", wrapper
            )
        if schema is not None:
            self._validate(schema, body, wrapper)
        return dict(body[wrapper])

    def _validator(self, schema: dict[str, Any]) -> Any:
        """A cached Draft 7 validator (``jsonschema`` is imported on the first write)."""
        with self._validators_lock:
            found = self._validators.get(id(schema))
            if found is None:
                import jsonschema  # slow import kept off the start-up path

                checker = jsonschema.FormatChecker(formats=["date"])
                found = jsonschema.Draft7Validator(schema, format_checker=checker)
                self._validators[id(schema)] = found
            return found

    def _validate(self, schema: dict[str, Any], body: dict[str, Any], wrapper: str) -> None:
        validator = self._validator(schema)
        errors = sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.path)))
        if not errors:
            return
        items: list[dict[str, str]] = []
        for error in errors:
            path = [str(p) for p in error.absolute_path]
            if path and path[0] == wrapper:
                path = path[1:]
            if error.validator == "required":
                match = re.match(r"'(.+)' is a required property", error.message)
                if match:
                    path.append(match.group(1))
                message = f"{'.'.join(path)} is required"
            else:
                message = f"{'.'.join(path) or wrapper}: {error.message}"
            items.append(
                {
                    "$severity": "error",
                    "$dataCode": "RecordInvalid",
                    "$message": message,
                    "$source": ".".join(path) or wrapper,
                }
            )
        exc = SageError(422, "RecordInvalid", "")
        exc.items = items
        raise exc

    def _resolve(
        self, conn: sqlite3.Connection, biz: str, key: str, value: Any
    ) -> tuple[str, Any] | None:
        """``contact_id: X`` -> ``("contact", link)``; ``contact_type_ids`` -> list of links."""
        if key.endswith("_ids") and isinstance(value, list):
            target = ref_resource(key)
            if target is None:
                return None
            return key[:-4] + "s", [self._ref_link(conn, biz, target, str(v)) for v in value]
        if key.endswith("_id") and (isinstance(value, str) or value is None):
            target = ref_resource(key)
            if target is None:
                return None
            name = key[:-3]
            if value is None or value == "":
                return name, None
            if name == "contact":
                found = self._ref_link(conn, biz, target, value, required=True)
            else:
                found = self._ref_link(conn, biz, target, value)
            return name, found
        return None

    def _ref_link(
        self, conn: sqlite3.Connection, biz: str, target: str, value: str, *, required: bool = False
    ) -> dict[str, Any]:
        row = conn.execute(
            "SELECT json_extract(data, '$.displayed_as') FROM records "
            "WHERE business = ? AND resource = ? AND id = ? AND deleted_at IS NULL",
            (biz, target, value),
        ).fetchone()
        if row is None and required:
            raise SageError(
                422,
                "RecordInvalid",
                f"{target} {value} was not found",
                f"{target.removesuffix('s')}_id",
            )
        return link(target, value, row[0] if row else value)

    def _convert(
        self, conn: sqlite3.Connection, biz: str, body: dict[str, Any], *, nested: bool = False
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in body.items():
            resolved = self._resolve(conn, biz, key, value)
            if resolved is not None:
                out[resolved[0]] = resolved[1]
                continue
            if isinstance(value, dict):
                out[key] = self._convert(conn, biz, value, nested=True)
            elif isinstance(value, list):
                out[key] = [
                    self._convert(conn, biz, v, nested=True) if isinstance(v, dict) else v
                    for v in value
                ]
            else:
                out[key] = value
        return out

    def _finish_lines(
        self, conn: sqlite3.Connection, biz: str, res: Resource, record: dict[str, Any]
    ) -> None:
        key = lines_field(res.name)
        if key is None or not isinstance(record.get(key), list):
            return
        # Decimal arithmetic throughout: money never passes through a binary float.
        net_total = tax_total = qty_total = Decimal(0)
        for line in record[key]:
            if not isinstance(line, dict):
                continue
            line.setdefault("id", uuid.uuid4().hex)
            line.setdefault("displayed_as", line.get("description") or line.get("details"))
            if "unit_price" in line or "quantity" in line:
                qty = _amount(line.get("quantity"), "quantity", Decimal(1))
                unit = _amount(line.get("unit_price"), "unit_price")
                net = round(qty * unit - _amount(line.get("discount_amount"), "discount_amount"), 2)
                line["quantity"] = qty
                line["net_amount"] = net
                qty_total += qty
            else:
                net = _amount(line.get("net_amount") or line.get("debit"), "net_amount")
            if line.get("tax_amount") is None and isinstance(line.get("tax_rate"), dict):
                pct_row = conn.execute(
                    "SELECT json_extract(data, '$.percentage') FROM records WHERE business = ? "
                    "AND resource = 'tax_rates' AND id = ?",
                    (biz, line["tax_rate"]["id"]),
                ).fetchone()
                pct = _amount(pct_row[0] if pct_row else None, "percentage")
                line["tax_amount"] = round(net * pct / 100, 2)
            tax = _amount(line.get("tax_amount"), "tax_amount")
            if "unit_price" in line:
                line["total_amount"] = round(net + tax, 2)
            net_total += net
            tax_total += tax
        if "total_amount" in schema_props(res.name) and key != "journal_lines":
            record["net_amount"] = round(net_total, 2)
            record["tax_amount"] = round(tax_total, 2)
            record["total_amount"] = round(net_total + tax_total, 2)
            record["total_quantity"] = qty_total
            paid = _amount(record.get("total_paid"), "total_paid")
            record["total_paid"] = paid
            record["outstanding_amount"] = round(net_total + tax_total - paid, 2)
            record["base_currency_net_amount"] = record["net_amount"]
            record["base_currency_tax_amount"] = record["tax_amount"]
            record["base_currency_total_amount"] = record["total_amount"]

    def _status_link(self, status: str) -> dict[str, Any]:
        return link("artefact_statuses", status, status.replace("_", " ").title())

    def post(self, request: Request, conn: sqlite3.Connection, biz: str, res: Resource) -> Response:
        wrapper = res.wrapper or ""
        schema = catalogue.write_schema(res.name, "post")
        if request.mimetype != "application/json":
            raise SageError(415, "UnsupportedMediaType", "Content-Type must be application/json")
        raw = self._peek(request, wrapper)
        original = raw.get("original_quote_estimate_id") if res.name == "sales_invoices" else None
        idem = raw.get("idempotency_id") if res.idempotency else None
        with store.transaction(conn):
            if idem:  # a repeat gets the first answer, before anything else is looked at
                again = self._idempotent_answer(conn, biz, res, str(idem), 201)
                if again is not None:
                    return again
            quote = self._fill_from_quote(conn, biz, raw, str(original)) if original else None
            if schema is not None:
                self._validate(schema, {wrapper: raw}, wrapper)
            if res.name == "contacts":  # a replay (answered above) comes before this check
                _check_contact_reference(conn, biz, raw, None)
            record = self._create(conn, biz, res, raw, quote)
            if idem:
                self._remember(conn, biz, res, str(idem), str(record["id"]), record)
        return _json(201, record)

    # -- idempotency (Sage's guide: POST and PUT, 7 days, one resource per id) ----------------
    def _idempotent_answer(
        self, conn: sqlite3.Connection, biz: str, res: Resource, idem: str, status: int
    ) -> Response | None:
        """The first answer again for a repeat of ``idem`` within the memory, else None.

        The answer is the same as the first (status and body, no extra header: the guide
        names none). An id used before on another resource is ``IdempotencyResourceMismatch``
        (the guide gives the error body, not the status; 422 as for Sage's other refusals)."""
        ttl = self.settings.idempotency_ttl or IDEMPOTENCY_TTL
        cutoff = time.time() - ttl
        conn.execute(
            "DELETE FROM idempotency WHERE business = ? AND idempotency_id = ? "
            "AND created_at IS NOT NULL AND created_at < ?",
            (biz, idem, cutoff),
        )
        row = conn.execute(
            "SELECT resource, record_id, response FROM idempotency WHERE business = ? "
            "AND idempotency_id = ?",
            (biz, idem),
        ).fetchone()
        if row is None:
            return None
        if row[0] != res.name:
            raise SageError(422, "IdempotencyResourceMismatch", "Entity type mismatch", "")
        if row[2] is None:  # remembered by an earlier version: the record as it is now
            found = conn.execute(
                "SELECT data FROM records WHERE business = ? AND resource = ? AND id = ?",
                (biz, res.name, row[1]),
            ).fetchone()
            if found is None:
                return None
            return _raw_json(status, str(found[0]))
        return _raw_json(status, str(row[2]))

    @staticmethod
    def _remember(
        conn: sqlite3.Connection,
        biz: str,
        res: Resource,
        idem: str,
        record_id: str,
        answer: Any,
    ) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO idempotency (business, resource, idempotency_id, record_id, "
            "created_at, response) VALUES (?, ?, ?, ?, ?, ?)",
            (biz, res.name, idem, record_id, time.time(), store.dumps(answer)),
        )

    def _peek(self, request: Request, wrapper: str) -> dict[str, Any]:
        try:
            body = _parse_body(request)
        except ValueError:
            raise SageError(400, "InvalidJSON", "The body is not valid JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get(wrapper), dict):
            raise SageError(
                422, "RecordInvalid", f"param is missing or the value is empty: {wrapper}", wrapper
            )
        return dict(body[wrapper])

    def _fill_from_quote(
        self, conn: sqlite3.Connection, biz: str, raw: dict[str, Any], original: str
    ) -> tuple[str, dict[str, Any]]:
        found = None
        for name in QUOTE_RESOURCES:
            row = conn.execute(
                "SELECT data FROM records WHERE business = ? AND resource = ? AND id = ? "
                "AND deleted_at IS NULL",
                (biz, name, original),
            ).fetchone()
            if row is not None:
                found = (name, json.loads(row[0]))
                break
        if found is None:
            raise SageError(
                422,
                "RecordInvalid",
                f"Quote or estimate {original} was not found",
                "original_quote_estimate_id",
            )
        name, quote = found
        if quote.get("status", {}).get("id") == "INVOICED":
            raise SageError(
                422,
                "RecordInvalid",
                "The quote or estimate is already invoiced",
                "original_quote_estimate_id",
            )
        if not raw.get("contact_id") and quote.get("contact"):
            raw["contact_id"] = quote["contact"]["id"]
        raw.setdefault("date", now_ts()[:10])
        if not raw.get("invoice_lines"):
            key = lines_field(name) or ""
            # the stored lines are on the wire (decimal strings): read them back as decimals
            lines = wire_shape(name).to_decimals({key: copy.deepcopy(quote.get(key) or [])})[key]
            raw["invoice_lines"] = [_line_to_write(line) for line in lines]
        quote["status"] = self._status_link("INVOICED")
        quote["updated_at"] = now_ts()
        return name, quote

    def _create(
        self,
        conn: sqlite3.Connection,
        biz: str,
        res: Resource,
        raw: dict[str, Any],
        quote: tuple[str, dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        raw.pop("idempotency_id", None)
        file_bytes: bytes | None = None
        if res.name == "attachments":
            try:
                file_bytes = base64.b64decode(str(raw.pop("file", "")), validate=True)
            except (binascii.Error, ValueError):
                raise SageError(422, "RecordInvalid", "file is not valid base64", "file") from None
        status_id = raw.pop("status_id", None) if "status" in schema_props(res.name) else None
        record = self._convert(conn, biz, raw)
        now = now_ts()
        rid = uuid.uuid4().hex
        record["id"] = rid
        record["created_at"] = now
        record["updated_at"] = now
        if "status" in schema_props(res.name):
            if res.name in QUOTE_RESOURCES:
                status = str(status_id or "PENDING")
            else:
                status = "DRAFT" if str(status_id or "").upper() == "DRAFT" else "UNPAID"
            record["status"] = self._status_link(status)
        number = number_field(res.name)
        if number and not record.get(number):
            count = conn.execute(
                "SELECT count(*) FROM records WHERE business = ? AND resource = ?",
                (biz, res.name),
            ).fetchone()[0]
            prefix = record.get(f"{number}_prefix") or ""
            record[number] = f"{prefix}{count + 1}"
        if record.get("contact") and "contact_name" in schema_props(res.name):
            record.setdefault("contact_name", str(record["contact"].get("displayed_as") or ""))
        if quote is not None:
            qname, qrec = quote
            record["original_quote_estimate"] = link(qname, qrec["id"], qrec.get("displayed_as"))
        self._finish_lines(conn, biz, res, record)
        if file_bytes is not None:
            record["file_size"] = len(file_bytes)
            record["$file_path"] = f"/attachments/{rid}/file"
            conn.execute(
                "INSERT INTO files (business, id, content) VALUES (?, ?, ?)", (biz, rid, file_bytes)
            )
        record["displayed_as"] = display_of(res.name, record)
        record["$path"] = f"{res.path}/{rid}"
        record = filter_to_schema(res.name, record)
        complete(res.name, record)
        wire_shape(res.name).to_wire(record)
        conn.execute(
            "INSERT INTO records (business, resource, id, created_at, updated_at, deleted_at, "
            "doc_date, search, data) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?)",
            (
                biz,
                res.name,
                rid,
                now,
                now,
                record.get("date") if isinstance(record.get("date"), str) else None,
                search_text(record),
                store.dumps(record),
            ),
        )
        if quote is not None:
            qname, qrec = quote
            qrec["invoice"] = link("sales_invoices", rid, record.get("displayed_as"))
            self._save(conn, biz, qname, qrec)
        return record

    def _save(
        self,
        conn: sqlite3.Connection,
        biz: str,
        resource: str,
        record: dict[str, Any],
        *,
        deleted_at: str | None = None,
        record_id: str | None = None,
    ) -> None:
        res = catalogue.resources().get(resource)
        wire_shape(resource).to_wire(record, singleton=bool(res and res.singleton))
        conn.execute(
            "UPDATE records SET updated_at = ?, deleted_at = ?, doc_date = ?, search = ?, "
            "data = ? WHERE business = ? AND resource = ? AND id = ?",
            (
                record.get("updated_at"),
                deleted_at,
                record.get("date") if isinstance(record.get("date"), str) else None,
                search_text(record),
                store.dumps(record),
                biz,
                resource,
                record_id or record.get("id"),
            ),
        )

    def put(
        self, request: Request, conn: sqlite3.Connection, biz: str, res: Resource, key: str | None
    ) -> Response:
        wrapper = res.wrapper or ""
        raw = self._wrapped_body(request, wrapper, catalogue.write_schema(res.name, "put"))
        idem = raw.get("idempotency_id") if res.idempotency else None
        with store.transaction(conn):
            if idem:
                again = self._idempotent_answer(conn, biz, res, str(idem), 200)
                if again is not None:
                    return again
            row_id = key
            if key is None:
                row = conn.execute(
                    "SELECT id, data FROM records WHERE business = ? AND resource = ? "
                    "ORDER BY seq LIMIT 1",
                    (biz, res.name),
                ).fetchone()
                if row is None:
                    raise SageError(404, "RecordNotFound", f"{res.title} not found")
                current = json.loads(row[1])
                row_id = str(row[0])
            else:
                current, _ = self._load(conn, biz, res, key)
            if res.name == "contacts":
                _check_contact_reference(conn, biz, raw, key)
            status_id = raw.pop("status_id", None)
            raw.pop("idempotency_id", None)
            if res.name == "attachments":
                raw.pop("file", None)
            changes = self._convert(conn, biz, raw)
            for field_name, value in changes.items():
                if isinstance(value, dict) and isinstance(current.get(field_name), dict):
                    current[field_name] = {**current[field_name], **value}
                else:
                    current[field_name] = value
            if status_id and "status" in current:
                current["status"] = self._status_link(str(status_id))
            if lines_field(res.name) in changes:
                self._finish_lines(conn, biz, res, current)
            if "updated_at" in schema_props(res.name):
                current["updated_at"] = now_ts()
            if key is not None:
                current["displayed_as"] = display_of(res.name, current)
                current = filter_to_schema(res.name, current)
            self._save(conn, biz, res.name, current, record_id=row_id)
            if idem:
                self._remember(conn, biz, res, str(idem), str(row_id), current)
        return _json(200, current)

    def delete(
        self, request: Request, conn: sqlite3.Connection, biz: str, res: Resource, key: str
    ) -> Response:
        with store.transaction(conn):
            record, _ = self._load(conn, biz, res, key)
            now = now_ts()
            status = (record.get("status") or {}).get("id")
            if res.void and status != "DRAFT":
                reason = request.args.get("void_reason", "").strip()
                if not reason:
                    raise SageError(
                        422,
                        "RecordInvalid",
                        "void_reason is required to void this document",
                        "void_reason",
                    )
                if status == "VOID":
                    raise SageError(422, "RecordInvalid", "The document is already void", "status")
                record["status"] = self._status_link("VOID")
                record["void_reason"] = reason
                record["outstanding_amount"] = Decimal(0)
                record["editable"] = False
                record["updated_at"] = now
                self._save(conn, biz, res.name, record)
                return _json(200, record)
            record["deleted_at"] = now
            record["updated_at"] = now
            self._save(conn, biz, res.name, record, deleted_at=now)
        return Response(status=204)

    def action(
        self,
        request: Request,
        conn: sqlite3.Connection,
        biz: str,
        res: Resource,
        key: str,
        name: str,
    ) -> Response:
        act = res.action(name)
        if act is None:
            raise SageError(404, "RecordNotFound", f"{res.path}/{{key}}/{name} does not exist")
        if request.method != act.method:
            raise self._not_allowed(request.method, f"{res.path}/{key}/{name}")
        if act.method == "POST" and request.get_data() and request.mimetype != "application/json":
            raise SageError(415, "UnsupportedMediaType", "Content-Type must be application/json")
        if name == "file":
            self._load(conn, biz, res, key)
            row = conn.execute(
                "SELECT content FROM files WHERE business = ? AND id = ?", (biz, key)
            ).fetchone()
            content = bytes(row[0]) if row else b""
            return Response(content, status=200, mimetype="application/octet-stream")
        if name == "bank_feed":
            record, _ = self._load(conn, biz, res, key)
            return _json(200, {k: record.get(k) for k in BASE_FIELDS})
        with store.transaction(conn):
            record, _ = self._load(conn, biz, res, key)
            now = now_ts()
            if name == "release":
                if (record.get("status") or {}).get("id") != "DRAFT":
                    raise SageError(422, "RecordInvalid", "Only a draft can be released", "status")
                record["status"] = self._status_link("UNPAID")
                record["updated_at"] = now
                self._save(conn, biz, res.name, record)
                return _json(act.success_status, record)
            if name == "reissue":
                record["deleted_at"] = now
                record["updated_at"] = now
                self._save(conn, biz, res.name, record, deleted_at=now)
                copy = {
                    k: v
                    for k, v in record.items()
                    if k
                    not in ("id", "$path", "deleted_at", "created_at", "updated_at", "transaction")
                }
                rid = uuid.uuid4().hex
                for line in copy.get("journal_lines") or []:
                    if isinstance(line, dict):
                        line["id"] = uuid.uuid4().hex
                copy.update(
                    {"id": rid, "$path": f"{res.path}/{rid}", "created_at": now, "updated_at": now}
                )
                conn.execute(
                    "INSERT INTO records (business, resource, id, created_at, updated_at, "
                    "deleted_at, doc_date, search, data) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?)",
                    (
                        biz,
                        res.name,
                        rid,
                        now,
                        now,
                        copy.get("date"),
                        search_text(copy),
                        store.dumps(copy),
                    ),
                )
                return _json(act.success_status, copy)
        raise SageError(404, "RecordNotFound", f"Unknown action {name}")


class _Answer(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__("answer")
        self.response = response


def _parse_body(request: Request) -> Any:
    """A JSON body with its decimals as ``Decimal`` (never a float); ``ValueError`` if bad."""
    return json.loads(request.get_data(as_text=True) or "null", parse_float=Decimal)


def _amount(value: Any, name: str, default: Decimal | None = None) -> Decimal:
    """A body or stored amount as ``Decimal`` (``default``, else 0, when unset); a value that
    is no decimal answers 422 naming the field."""
    try:
        number = wire.as_decimal(value, name)
    except wire.WireValueError as exc:
        raise SageError(422, "RecordInvalid", str(exc), name) from None
    if number is None:
        return default if default is not None else Decimal(0)
    return number


def _select(record: dict[str, Any], attributes: str | None) -> dict[str, Any]:
    if attributes == "all":
        return record
    out = {k: record.get(k) for k in BASE_FIELDS}
    if attributes:
        for name in attributes.split(","):
            name = name.strip()
            if name and name in record:
                out[name] = record[name]
    return out


#: Longest contact reference Sage takes (integrators' notes, v3.1; NOTES.md "Validation quirks").
CONTACT_REFERENCE_MAX = 10


def _check_contact_reference(
    conn: sqlite3.Connection, biz: str, raw: dict[str, Any], own_id: str | None
) -> None:
    """A contact's ``reference``: at most 10 characters, and unique among the business's
    contacts, deleted ones included (a deleted contact's reference stays taken)."""
    reference = raw.get("reference")
    if not isinstance(reference, str) or not reference:
        return
    if len(reference) > CONTACT_REFERENCE_MAX:
        raise SageError(
            422,
            "RecordInvalid",
            f"Reference is too long (maximum is {CONTACT_REFERENCE_MAX} characters)",
            "reference",
        )
    taken = conn.execute(
        "SELECT 1 FROM records WHERE business = ? AND resource = 'contacts' AND id != ? "
        "AND json_extract(data, '$.reference') = ? LIMIT 1",
        (biz, own_id or "", reference),
    ).fetchone()
    if taken is not None:
        raise SageError(422, "RecordInvalid", "Reference has already been taken", "reference")


def _sort_column(field_name: str, props: dict[str, Any]) -> str | None:
    """The SQL of a ``sort`` field: ``created_at``, ``updated_at``, and where the item has them
    ``date``, ``due_date``, ``expiry_date`` (NOTES.md, "sort"); ``None`` for anything else."""
    if field_name in ("updated_at", "created_at"):
        return field_name
    if field_name == "date" and "date" in props:
        return "doc_date"
    if field_name in ("due_date", "expiry_date") and field_name in props:
        return f"json_extract(data, '$.{field_name}')"
    return None


def _when(value: str, name: str) -> Any:
    try:
        return parse_when(value)
    except ValueError:
        raise SageError(
            400, "InvalidParameter", f"{name} is not a valid date or date-time", name
        ) from None


def _day(value: str, name: str) -> str:
    parsed = _when(value, name)
    if len(value.strip()) > 10:
        parsed = parsed + timedelta(0)
    return str(parsed.strftime("%Y-%m-%d"))


def _filter_clause(
    name: str, kind: str, value: str, props: dict[str, Any]
) -> tuple[str, list[Any]] | None:
    """SQL for an id-valued or boolean filter parameter, if the record has the field."""
    if name.endswith("_id"):
        base = name[:-3]
        if base in props:
            return f"json_extract(data, '$.{base}.id') = ?", [value]
        if base + "s" in props:
            return (
                f"EXISTS (SELECT 1 FROM json_each(data, '$.{base}s') "  # noqa: S608
                "WHERE json_extract(value, '$.id') = ?)",
                [value],
            )
        return None
    if kind == "boolean" and name in props:
        flag = value.strip().lower() in ("true", "1", "yes")
        return f"json_extract(data, '$.{name}') = ?", [1 if flag else 0]
    if name == "email" and "email" in props:
        return "lower(json_extract(data, '$.email')) = ?", [value.lower()]
    return None


def _line_to_write(line: dict[str, Any]) -> dict[str, Any]:
    """A read line (with link objects) as a write line (with ``*_id`` fields)."""
    out: dict[str, Any] = {}
    for key, value in line.items():
        if key in ("id", "displayed_as", "$path"):
            continue
        if isinstance(value, dict) and "id" in value and ref_resource(key):
            out[f"{key}_id"] = value["id"]
        elif not isinstance(value, (dict, list)):
            out[key] = value
    return out
