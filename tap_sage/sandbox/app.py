"""The WSGI application and its routing: Sage's OAuth endpoints and the ``/v3.1`` API, driven by
the resource catalogue (no per-resource routes). See ``tap_sage/sandbox/__init__.py`` for the
behaviour it promises; each concern lives in its own module (``faults``, ``oauth_server``,
``lists``, ``writes``, ``actions``, ``businesses``, ``validation``)."""

from __future__ import annotations

import logging
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

from werkzeug.wrappers import Request, Response

from tap_sage.sage import catalogue
from tap_sage.sage.catalogue import Resource
from tap_sage.sandbox import oauth, records, store
from tap_sage.sandbox.actions import action
from tap_sage.sandbox.answers import (
    Answer,
    DropConnection,
    SageError,
    json_response,
    not_allowed,
    raw_json,
)
from tap_sage.sandbox.businesses import MULTI_USER_DENIED, businesses, user
from tap_sage.sandbox.faults import WRITE_METHODS, Faults
from tap_sage.sandbox.lists import ListQueries
from tap_sage.sandbox.oauth_server import OAuthServer
from tap_sage.sandbox.server import ARRIVED, CUT_BODY
from tap_sage.sandbox.settings import (
    ALL_FAULT_KINDS,
    FAULT_KINDS,
    HTML_STATUSES,
    Settings,
)
from tap_sage.sandbox.validation import Validators
from tap_sage.sandbox.writes import Writes

__all__ = [
    "ALL_FAULT_KINDS",
    "API_PREFIX",
    "FAULT_KINDS",
    "HTML_STATUSES",
    "SandboxApp",
    "Settings",
]

log = logging.getLogger("sage_sandbox")

API_PREFIX = "/v3.1"


class SandboxApp:
    """The WSGI callable."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = store.Pool(settings.db)
        self.faults = Faults(settings)
        self.oauth = OAuthServer(settings, self.pool, self.faults)
        self.validators = Validators()
        self.lists = ListQueries(settings.paging, settings.log_paging)
        self.writes = Writes(settings, self.validators)
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        with self.pool.connection() as conn:
            store.create_schema(conn)
            store.set_meta(conn, "token_ttl", str(settings.token_ttl))
            store.set_meta(conn, "server_started_at", str(settings.started_at))

    # -- WSGI ------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        arrived = environ.get(ARRIVED) or time.monotonic()
        request = Request(environ)
        request_id = str(uuid.uuid4())
        try:
            response = self.handle(request, arrived)
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
            response = json_response(500, SageError(500, "UnexpectedError", "Dropped").items)
        except SageError as exc:
            response = json_response(exc.status, exc.items)
        except Exception:
            log.exception("unexpected error")
            response = json_response(
                500, SageError(500, "UnexpectedError", "An unexpected error occurred").items
            )
        response.headers["x_request_id"] = request_id
        return response(environ, start_response)

    def handle(self, request: Request, arrived: float) -> Response:
        """The concurrency limit, then ``/oauth`` or ``/v3.1``, then the latency: what is left
        of ``--latency-ms`` since the request ``arrived`` (``time.monotonic()``) is slept
        before the answer (or the fault) goes out, so that the sandbox's own work is part of
        the latency, as the time Sage takes is. A 429 of ``--max-concurrent`` goes at once."""
        path = request.path.rstrip("/") or "/"
        api = path == API_PREFIX or path.startswith(API_PREFIX + "/")
        limit = self.settings.max_concurrent
        if api and limit:
            with self._inflight_lock:
                if self._inflight >= limit:
                    return json_response(
                        429,
                        SageError(
                            429, "TooManyRequests", f"More than {limit} concurrent requests"
                        ).items,
                        {"Retry-After": "1"},
                    )
                self._inflight += 1
        try:
            if path.startswith("/oauth/"):
                return self.oauth.handle(request, path)
            if api:
                return self.handle_api(request, path[len(API_PREFIX) :])
            raise SageError(404, "RecordNotFound", f"No route for {request.method} {request.path}")
        finally:
            if self.settings.latency_ms:  # also before a fault's answer or a dropped connection
                left = arrived + self.settings.latency_ms / 1000 - time.monotonic()
                if left > 0:
                    time.sleep(left)
            if api and limit:
                with self._inflight_lock:
                    self._inflight -= 1

    # -- API -------------------------------------------------------------------------------
    def handle_api(self, request: Request, path: str) -> Response:
        """One ``/v3.1`` request: faults, the bearer token, the scope, then the route."""
        kind = self.faults.draw(self.settings.fault_rate, request.method)
        try:
            if kind is not None and not kind.startswith("commit"):
                self.faults.before(kind)
            self.faults.heavy(request)
            with self.pool.connection() as conn:
                grant = self.oauth.access(request, conn)
                if request.method in WRITE_METHODS and grant.scope != "full_access":
                    raise SageError(
                        403, "AccessDenied", "The token's scope (readonly) does not allow writes"
                    )
                # a write that changes records bumps the generation in its own transaction
                # (records.save / records.insert): nothing to bump here
                response = self.route(request, conn, grant, path)
            self.faults.after(kind)
            if kind == "cutbody":
                request.environ[CUT_BODY] = True  # the server sends half the body (server.py)
            return response
        except Answer as answer:
            return answer.response

    def route(
        self, request: Request, conn: sqlite3.Connection, grant: oauth.AccessGrant, path: str
    ) -> Response:
        """``/businesses``, ``/user``, or a resource of the catalogue."""
        parts = [p for p in path.split("/") if p]
        if not parts:
            raise SageError(404, "RecordNotFound", "No resource given")
        if parts[0] == "businesses":
            return businesses(request, conn, grant, parts[1:], self.validators)
        if parts[0] == "user":
            return user(request, conn, parts[1:], self.validators)
        res = catalogue.resources().get(parts[0])
        if res is None or len(parts) > 3:
            raise SageError(404, "RecordNotFound", f"Unknown resource {path}")
        business = _business(request, conn, grant)
        if not res.available_in(business["country"], business["edition"]):
            raise SageError(
                403,
                "FeatureUnavailable",
                f"{res.name} is not available for businesses in {business['country']} on "
                f"Sage Accounting {business['edition']}",
                res.name,
            )
        response = self._route_resource(request, conn, res, str(business["id"]), parts, path)
        # Sage names the business in every answer but those of /businesses and /user (NOTES.md)
        response.headers["X-Business"] = str(business["id"])
        return response

    def _route_resource(
        self,
        request: Request,
        conn: sqlite3.Connection,
        res: Resource,
        biz: str,
        parts: list[str],
        path: str,
    ) -> Response:
        method = request.method
        if len(parts) == 1:
            if res.singleton:
                if method == "GET":
                    text = records.singleton_text(conn, biz, res)
                    if text is None:
                        return json_response(200, {"$path": res.path})
                    return raw_json(200, text)
                if method == "PUT" and res.update:
                    return self.writes.put(request, conn, biz, res, None)
                raise not_allowed(method, path)
            if method == "GET" and res.list:
                return self.lists.list_records(request, conn, biz, res)
            if method == "POST" and res.create:
                return self.writes.post(request, conn, biz, res)
            raise not_allowed(method, path)
        key = parts[1]
        if len(parts) == 3:
            return action(request, conn, biz, res, key, parts[2])
        if res.singleton:
            raise SageError(404, "RecordNotFound", f"Unknown resource {path}")
        if method == "GET" and res.get:
            return raw_json(200, records.load(conn, biz, res, key)[1])
        if method == "PUT" and res.update:
            return self.writes.put(request, conn, biz, res, key)
        if method == "DELETE" and (res.delete or res.void):
            return self.writes.delete(request, conn, biz, res, key)
        raise not_allowed(method, path)


def _business(
    request: Request, conn: sqlite3.Connection, grant: oauth.AccessGrant
) -> dict[str, Any]:
    """The business of ``X-Business`` (else the lead one the grant reaches)."""
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
