"""The authorization-code login (with ``state`` and PKCE S256) and storing its tokens.

``run_login`` starts a local HTTP server on ``callback_url``'s host and port, shows the
authorization URL (and opens a browser when asked), waits for the browser to come back with
``?code=...&state=...``, checks ``state``, exchanges the code at once (Sage's codes die after
60 s) and writes the tokens to the connection's store.

``start_authorization`` / ``exchange`` do the same in two steps for when the callback cannot
reach this machine: the state and PKCE verifier wait in the store (mode 0600) in between.

The callback server never logs a request line: the query string carries the code.
"""

from __future__ import annotations

import contextlib
import hmac
import html
import http.server
import logging
import threading
import time
import webbrowser
from collections.abc import Callable
from typing import IO, Any
from urllib.parse import parse_qs, unquote, urlsplit

import requests
from typing_extensions import override

from tap_sage.sage.errors import SageAuthError
from tap_sage.sage.oauth import OAuthEndpoints, authorization_url, new_state, pkce_pair
from tap_sage.sage.settings import ConnectionSettings
from tap_sage.sage.stores import SEEN_KEEP, Store, check_owner, open_store, seen_fingerprints
from tap_sage.sage.tokens import fingerprint

LOGGER = logging.getLogger("sage.auth")

#: How long a pending authorization (``sage-auth url``) waits for ``sage-auth exchange``.
PENDING_TTL = 1800.0


def store_grant(
    settings: ConnectionSettings, store: Store, answer: dict[str, Any], how: str
) -> dict[str, Any]:
    """Write the tokens of a new grant (login or exchange) to the store, under its lock."""
    with store.locked():
        data = store.read()
        check_owner(store, data, settings)
        now = time.time()
        lifetime = float(answer.get("expires_in") or 300)
        data.update(
            connection_name=settings.connection_name,
            client_id=settings.client_id,
            access_token=answer["access_token"],
            access_token_expires_at=now + lifetime,
            access_token_lifetime=lifetime,
            refresh_token=answer.get("refresh_token"),
            refresh_token_expires_at=(
                now + float(answer["refresh_token_expires_in"])
                if answer.get("refresh_token_expires_in")
                else None
            ),
            scope=answer.get("scope") or settings.scope,
            in_flight=None,
            last_error=None,
            pending_login=None,
            moved_to=None,
            login_at=now,
            login_how=how,
        )
        # The config's tokens (if any) are older than this grant: remember their fingerprints
        # so they do not replace it on the next run; a token put in the config later will.
        for token, key, legacy in (
            (settings.refresh_token, "seed_fingerprints", "seed_fingerprint"),
            (settings.access_token, "access_seed_fingerprints", "access_seed_fingerprint"),
        ):
            if token:
                seen = seen_fingerprints(data, key, legacy)
                if fingerprint(token) not in seen:
                    data[key] = [*seen, fingerprint(token)][-SEEN_KEEP:]
        data.setdefault("created_at", now)
        store.write(data)
        return store.read()


def _store_for(settings: ConnectionSettings) -> Store:
    return open_store(settings)


def start_authorization(settings: ConnectionSettings) -> str:
    """Make and keep a new ``state`` and PKCE verifier; return the authorization URL."""
    state = new_state()
    verifier, challenge = pkce_pair()
    store = _store_for(settings)
    with store.locked():
        data = store.read()
        check_owner(store, data, settings)
        data["pending_login"] = {
            "state": state,
            "code_verifier": verifier,
            "redirect_uri": settings.callback_url,
            "created_at": time.time(),
        }
        if settings.client_id:
            data.setdefault("client_id", settings.client_id)
        data.setdefault("connection_name", settings.connection_name)
        store.write(data)
    return authorization_url(settings, state, challenge)


def parse_callback(text: str) -> tuple[str, str | None]:
    """``(code, state)`` from a code (``GB/abc...`` or ``GB%2Fabc...``) or a callback URL."""
    text = text.strip()
    if "?" in text or text.startswith(("http://", "https://")):
        query = parse_qs(urlsplit(text).query)
        if "error" in query:
            raise SageAuthError(
                "access_denied",
                f"The authorization was not granted: {query['error'][0]}"
                + (f" ({query['error_description'][0]})" if "error_description" in query else ""),
                "run `sage-auth login` (or `sage-auth url`) again and approve the access",
            )
        if "code" not in query:
            raise SageAuthError(
                "login_failed",
                "The URL given has no `code` parameter",
                "paste the whole address the browser was sent back to after approving",
            )
        states = query.get("state") or []
        return query["code"][0], (states[0] if states else None)
    return (unquote(text) if "%" in text else text), None


def exchange(
    settings: ConnectionSettings,
    new_session: Callable[[], requests.Session],
    code_or_url: str,
) -> dict[str, Any]:
    """Exchange a code given by hand (or the callback URL) for tokens and store them."""
    code, state = parse_callback(code_or_url)
    given = code_or_url.strip()
    is_callback = "?" in given or given.startswith(("http://", "https://"))
    store = _store_for(settings)
    with store.locked():
        pending = store.read().get("pending_login") or {}
    if is_callback and (state is None or not pending):
        # A whole callback address must carry the state that `sage-auth url` issued (and
        # kept in the store): without it, it may come from anyone (RFC 6749 10.12, CSRF).
        raise SageAuthError(
            "state_mismatch",
            "This callback address has no `state`"
            if state is None
            else "This callback address has a `state`, but no authorization was started with "
            "`sage-auth url` for this connection (or it was already used)",
            "run `sage-auth url` again, approve, and exchange the new callback address within "
            "a minute (or give just the code)",
        )
    if state is not None and not hmac.compare_digest(state, pending.get("state", "")):
        raise SageAuthError(
            "state_mismatch",
            "The `state` of this callback does not match the authorization started with "
            "`sage-auth url` (a stale or foreign callback)",
            "run `sage-auth url` again, approve, and exchange the new callback within a minute",
        )
    fresh = pending and time.time() - float(pending.get("created_at") or 0) < PENDING_TTL
    verifier = pending.get("code_verifier") if fresh else None
    redirect_uri = (pending.get("redirect_uri") if fresh else None) or settings.callback_url
    answer = OAuthEndpoints(settings, new_session).exchange_code(code, verifier, redirect_uri)
    return store_grant(settings, store, answer, "exchange")


class _CallbackServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], path: str, on_callback: Callable[[dict[str, str]], tuple[bool, str]], after_reply: Callable[[], None]) -> None:  # fmt: skip
        self.callback_path = path
        self.on_callback = on_callback
        # Called once the browser's answer is written, so the login ends (and the process may
        # exit) only after the browser has its whole page.
        self.after_reply = after_reply
        super().__init__(address, _CallbackHandler)


class _CallbackHandler(http.server.BaseHTTPRequestHandler):
    server: _CallbackServer

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != self.server.callback_path:
            self._reply(404, "Not the OAuth callback of sage-auth.")
            return
        params = {k: v[0] for k, v in parse_qs(parts.query).items()}
        ok, message = self.server.on_callback(params)
        try:
            self._reply(200 if ok else 400, message)
        finally:
            self.server.after_reply()

    def _reply(self, status: int, message: str) -> None:
        body = (
            "<!doctype html><html><head><meta charset='utf-8'><title>sage-auth</title></head>"
            f"<body><p>{html.escape(message)}</p></body></html>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    @override
    def log_message(self, format: str, *args: Any) -> None:
        """Never log request lines: they carry the authorization code."""


def _listen_address(settings: ConnectionSettings) -> tuple[str, int, str]:
    parts = urlsplit(settings.callback_url)
    host = parts.hostname or ""
    if host not in {"localhost", "127.0.0.1", "::1"}:
        raise SageAuthError(
            "login_failed",
            f"callback_url {settings.callback_url!r} is not on this machine, so `sage-auth "
            "login` cannot receive the browser's return",
            "run `sage-auth url`, approve in the browser, then `sage-auth exchange '<the "
            "address the browser was sent to>'` within a minute; or register a "
            "http://localhost:PORT/... redirect URI and set callback_url to it",
        )
    if parts.scheme != "http":
        raise SageAuthError(
            "login_failed",
            f"callback_url {settings.callback_url!r} is https on localhost; the login's local "
            "server speaks plain http",
            "register http://localhost:PORT/callback as a redirect URI of your Sage app and "
            "set callback_url to it, or use `sage-auth url` and `sage-auth exchange`",
        )
    port = parts.port or 80
    return ("127.0.0.1" if host == "localhost" else host), port, parts.path or "/"


class _LoginCallback:
    """The browser's return to a running login: checks its state, exchanges the code (once)
    and stores the grant; ``done`` once the browser has been answered after the outcome."""

    def __init__(
        self,
        settings: ConnectionSettings,
        store: Store,
        endpoints: OAuthEndpoints,
        state: str,
        verifier: str,
    ) -> None:
        self.settings, self.store, self.endpoints = settings, store, endpoints
        self.state, self.verifier = state, verifier
        self.finished = threading.Event()  # the callback has decided the login's outcome
        self.done = threading.Event()  # ... and the browser has been answered
        self.outcome: dict[str, Any] = {}

    def __call__(self, params: dict[str, str]) -> tuple[bool, str]:
        """Handle one callback; returns (success, the page's text)."""
        if self.finished.is_set():
            return False, "This login is already finished; you can close this window."
        if not hmac.compare_digest(params.get("state", ""), self.state):
            return False, "This callback does not belong to the running login (state mismatch)."
        try:
            if "error" in params:
                raise SageAuthError(
                    "access_denied",
                    f"The authorization was not granted: {params['error']}",
                    "run `sage-auth login` again and approve the access",
                )
            if "code" not in params:
                raise SageAuthError(
                    "login_failed", "The callback has no code", "run `sage-auth login` again"
                )
            answer = self.endpoints.exchange_code(
                params["code"], self.verifier, self.settings.callback_url
            )
            self.outcome["data"] = store_grant(self.settings, self.store, answer, "login")
        except SageAuthError as exc:
            self.outcome["error"] = exc
            self.finished.set()
            return False, f"Login failed: {exc.message}. {exc.fix}"
        except Exception as exc:  # noqa: BLE001 - reported to the waiting thread
            self.outcome["error"] = SageAuthError(
                "login_failed", f"The code exchange failed ({type(exc).__name__})", "try again"
            )
            self.finished.set()
            return False, "Login failed; see the terminal."
        self.finished.set()
        return True, "sage-auth: the connection is authorised. You can close this window."

    def after_reply(self) -> None:
        """The browser has its answer: the login may end."""
        if self.finished.is_set():
            self.done.set()


def run_login(
    settings: ConnectionSettings,
    new_session: Callable[[], requests.Session],
    *,
    out: IO[str],
    open_browser: bool = False,
    timeout: float | None = None,
    on_url: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The whole login: local callback server, URL, wait, check state, exchange, store."""
    host, port, path = _listen_address(settings)
    state = new_state()
    verifier, challenge = pkce_pair()
    url = authorization_url(settings, state, challenge)
    store = _store_for(settings)
    with store.locked():  # fail before the browser step if the store is another app's
        check_owner(store, store.read(), settings)
    callback = _LoginCallback(
        settings, store, OAuthEndpoints(settings, new_session), state, verifier
    )
    try:
        server = _CallbackServer((host, port), path, callback, callback.after_reply)
    except OSError as exc:
        raise SageAuthError(
            "login_failed",
            f"Cannot listen on {host}:{port} for the browser's return ({exc.strerror})",
            "stop whatever uses that port, or register another http://localhost:PORT/ redirect "
            "URI and set callback_url to it",
        ) from None
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.daemon = True
    thread.start()
    wait = timeout if timeout is not None else settings.login_timeout
    try:
        out.write(
            f"Open this address in a browser, log in to Sage and approve access for connection "
            f"{settings.connection_name!r} (waiting {wait:.0f}s on {settings.callback_url}):\n"
            f"{url}\n"
        )
        out.flush()
        if on_url is not None:
            on_url(url)
        if open_browser:
            with contextlib.suppress(Exception):
                webbrowser.open(url)
        if not callback.done.wait(wait):
            raise SageAuthError(
                "login_failed",
                f"No answer came back to {settings.callback_url} within {wait:.0f}s",
                "run `sage-auth login` again and approve in the browser (the redirect URI "
                "registered for your app must be exactly callback_url)",
            )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    if "error" in callback.outcome:
        raise callback.outcome["error"]
    result: dict[str, Any] = callback.outcome["data"]
    return result
