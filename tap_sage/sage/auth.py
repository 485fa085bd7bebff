"""OAuth token sources of a connection: what ``SageClient`` asks for an access token.

A token source gives a usable access token (``token()``) and is told when Sage refused one
(``invalidate(token)``). ``token_source_for(settings, new_session)`` returns the one source of
a connection in this process (shared by every stream, sink and thread):

- ``StaticToken`` (``initiate_oauth`` OFF): the configured access token; a 401 is final and
  says what to do.
- ``RotatingTokenSource`` (REFRESH and GETANDREFRESH): tokens live in the connection's token
  store (``tap_sage.sage.tokens``). The access token and its expiry are kept, so a short run
  does not refresh at all; a refresh happens ahead of expiry (``refresh_margin``) or after a
  401, under the store's exclusive lock, after re-reading the store, with one token POST and
  the new pair written to disk before it is used.

The refresh protocol, and what happens when a process dies in the middle of it:

1. lock; re-read the store; if another process already rotated the token, use its pair;
2. write an in-flight marker (fingerprint of the refresh token about to be spent);
3. POST the refresh (once);
4. write the new pair and clear the marker (atomic rename), then use the new access token.

Killed during 1-2, or during 3 before Sage processed the POST: the next run finds the marker,
spends the same refresh token, and connects. Killed after step 4: the next run uses the new
pair. Killed after Sage answered 3 but before 4 was on disk (a window of a few milliseconds),
or the answer to 3 was lost on the network: Sage has consumed the token and the new one exists
only in the lost answer; no client can recover it. The next run finds the marker, tries the
stored token once, and on ``invalid_grant`` says exactly that (``refresh_interrupted``) and
what to do (``sage-auth login``; in GETANDREFRESH at a terminal it starts the login itself).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Generator
from typing import Any, ClassVar, NoReturn, Protocol

import backoff
import requests

from tap_sage.checkpoints import checkpoint
from tap_sage.sage.errors import (
    SageAuthError,
    SageConfigError,
    SageNetworkError,
)
from tap_sage.sage.oauth import OAuthEndpoints, TokenAnswerLost, TokenRequestNotSent
from tap_sage.sage.settings import ConnectionSettings, OAuthMode
from tap_sage.sage.stores import Store, apply_config, open_store
from tap_sage.sage.tokens import fingerprint

LOGGER = logging.getLogger("sage.auth")


class TokenSource(Protocol):
    """What ``SageClient`` needs from the OAuth layer."""

    def token(self) -> str:
        """A usable access token, refreshed first when it is (nearly) expired."""
        ...

    def invalidate(self, token: str) -> None:
        """Sage answered 401 to ``token``: the next ``token()`` must not return it."""
        ...


def login_command() -> str:
    """The command a person runs to authorise this connection, as precisely as we know it."""
    if os.environ.get("MELTANO_PROJECT_ROOT"):
        plugin = (
            os.environ.get("MELTANO_EXTRACTOR_NAME")
            or os.environ.get("MELTANO_LOADER_NAME")
            or "tap-sage"
        )
        return f"meltano invoke {plugin}:login"
    configs: list[str] = []
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            configs.append(argv[i + 1])
        elif arg.startswith("--config="):
            configs.append(arg.split("=", 1)[1])
    if configs:
        return "sage-auth login " + " ".join(f"--config {c}" for c in configs)
    return "sage-auth login --config <the config file of this run>"


def interactive() -> bool:
    """Whether a person is at a terminal (stdin and stderr are TTYs)."""
    try:
        return sys.stdin.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class StaticToken:
    """OFF mode: the access token as given; a 401 is final."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self._token = settings.access_token or ""
        self._dead = False

    def token(self) -> str:
        """The configured access token, unless Sage has refused it."""
        if self._dead:
            raise SageAuthError(
                "token_expired",
                f"Sage refused the access token of connection {self.settings.connection_name!r} "
                "(401) and initiate_oauth is OFF, so it is never refreshed (Sage access tokens "
                "live 5 minutes)",
                "set initiate_oauth to REFRESH with client_id, client_secret and a "
                "refresh_token (or run `sage-auth login`), so tokens renew on their own; or put "
                "a fresh access_token in the config",
            )
        return self._token

    def invalidate(self, token: str) -> None:
        """Sage refused the token: every later ``token()`` fails with the fix."""
        self._dead = True


class RotatingTokenSource:
    """REFRESH and GETANDREFRESH: tokens from the connection's store, rotated safely."""

    def __init__(
        self,
        settings: ConnectionSettings,
        new_session: Callable[[], requests.Session],
        *,
        is_interactive: Callable[[], bool] = interactive,
    ) -> None:
        self.settings = settings
        self.new_session = new_session
        self.store: Store = open_store(settings)
        self.oauth = OAuthEndpoints(settings, new_session)
        self.is_interactive = is_interactive
        self._lock = threading.RLock()
        self._access: str | None = None
        self._expires_at: float | None = None
        self._lifetime: float | None = None
        self._refused: str | None = None
        self.refreshes = 0  # refreshes done by this process

    def __repr__(self) -> str:
        return f"RotatingTokenSource({self.settings.connection_name!r}, {self.store!r})"

    # -- the TokenSource protocol ---------------------------------------------------------------

    def token(self) -> str:
        """A usable access token: the cached one, the store's, or a fresh one."""
        with self._lock:
            if (
                self._access
                and self._access != self._refused
                and self._usable(self._expires_at, self._lifetime)
            ):
                return self._access
            try:
                return self._from_store(force=False)
            except _LoginNeeded as need:
                return self._login_or_fail(need)

    def invalidate(self, token: str) -> None:
        """Sage answered 401 to ``token``: never hand it out again."""
        with self._lock:
            self._refused = token
            if self._access == token:
                self._access = None

    # -- more for sage-auth ----------------------------------------------------------------------

    def refresh_now(self) -> dict[str, Any]:
        """Refresh at once (whatever the expiry); returns the store's data."""
        with self._lock:
            try:
                self._from_store(force=True)
            except _LoginNeeded as need:
                self._login_or_fail(need)
            return self.store.read()

    def read_store(self) -> dict[str, Any]:
        """The store's data, reconciled with the config, without refreshing."""
        with self._lock, self.store.locked():
            return self._reconcile(self.store.read())

    # -- internals -------------------------------------------------------------------------------

    def _margin(self, lifetime: float | None) -> float:
        margin = float(self.settings.refresh_margin)
        if lifetime:
            margin = min(margin, lifetime / 3)
        return margin

    def _usable(self, expires_at: float | None, lifetime: float | None) -> bool:
        if expires_at is None:  # a configured access token of unknown age: use until refused
            return True
        return time.time() < float(expires_at) - self._margin(lifetime)

    def _adopt(self, data: dict[str, Any]) -> str:
        token = str(data["access_token"])
        self._access = token
        self._expires_at = data.get("access_token_expires_at")
        self._lifetime = data.get("access_token_lifetime")
        return token

    def _from_store(self, *, force: bool) -> str:
        while True:
            with self.store.locked():
                data = self._reconcile(self.store.read())
                access = data.get("access_token")
                if (
                    not force
                    and access
                    and access != self._refused
                    and self._usable(
                        data.get("access_token_expires_at"), data.get("access_token_lifetime")
                    )
                ):
                    return self._adopt(data)
                if not data.get("refresh_token"):
                    last = data.get("last_error") or {}
                    if last.get("message"):
                        raise _LoginNeeded(f"the last refresh failed: {last['message']}")
                    raise _LoginNeeded(
                        "Sage refused the access token and there is no refresh token"
                        if access
                        else "there is no token yet"
                    )
                if not self.store.unfinished_elsewhere(data.get("in_flight")):
                    data = self._refresh_locked(data)
                    return self._adopt(data)
            time.sleep(0.25)  # outside the lock, so that the other refresh can finish

    def _reconcile(self, data: dict[str, Any]) -> dict[str, Any]:
        """Check the store's owner and apply tokens newly put into the config (under the lock)."""
        return apply_config(self.store, data, self.settings)

    def _refresh_locked(self, data: dict[str, Any]) -> dict[str, Any]:
        """Spend the stored refresh token once and store the new pair (the lock is held)."""
        refresh_token = str(data["refresh_token"])
        spent = fingerprint(refresh_token)
        earlier = data.get("in_flight")
        interrupted = isinstance(earlier, dict) and earlier.get("fingerprint") == spent
        data["in_flight"] = {
            "fingerprint": spent,
            "started_at": time.time(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
        self.store.write(data)
        checkpoint("after_marker")
        try:
            answer = self._post_refresh(refresh_token)
        except TokenAnswerLost as lost:
            return self._answer_lost(refresh_token, lost)
        except (TokenRequestNotSent, SageNetworkError) as not_sent:
            self._not_sent(data, earlier, not_sent)
        except SageAuthError as refused:
            self._refresh_refused(data, earlier if interrupted else None, refused)
        checkpoint("after_answer")
        return self._keep(data, answer, refresh_token)

    def _answer_lost(self, refresh_token: str, lost: TokenAnswerLost) -> dict[str, Any]:
        """Never replay blindly: re-read the store first."""
        current = self.store.read()
        if current.get("refresh_token") != refresh_token and current.get("access_token"):
            LOGGER.warning("Connection %r: %s; the store meanwhile holds a newer token",
                           self.settings.connection_name, lost.reason)  # fmt: skip
            return current
        raise SageAuthError(
            "refresh_unconfirmed",
            f"Connection {self.settings.connection_name!r}: {lost.reason}. Sage may have "
            "consumed the refresh token, and its replacement exists only in the lost "
            "answer; the token store is unchanged, so the refresh is not replayed",
            "run the sync (or `sage-auth refresh`) again: it tries the stored token once "
            "more and connects if Sage had not consumed it; if Sage then answers "
            f"invalid_grant, authorise again with `{login_command()}`",
        ) from None

    def _not_sent(
        self,
        data: dict[str, Any],
        earlier: Any,
        not_sent: TokenRequestNotSent | SageNetworkError,
    ) -> NoReturn:
        """The refresh never reached Sage: the marker goes back to what it was."""
        data["in_flight"] = earlier
        self.store.write(data)
        if isinstance(not_sent, SageNetworkError):  # proxy or TLS: not retried
            raise not_sent
        raise SageNetworkError(
            f"Could not reach Sage's token endpoint for connection "
            f"{self.settings.connection_name!r} ({not_sent.reason}); the refresh token "
            "is untouched",
            "check the network, advanced_config.token_url and the proxy settings; the "
            "next run refreshes normally",
        ) from None

    def _refresh_refused(
        self, data: dict[str, Any], interrupted: Any, refused: SageAuthError
    ) -> NoReturn:
        """Sage refused the refresh; ``interrupted``: the marker of an earlier refresh that
        spent the same token (so ``invalid_grant`` means that refresh did not finish)."""
        data["in_flight"] = None
        failure = refused
        if refused.code == "invalid_grant" and isinstance(interrupted, dict):
            failure = self._interrupted_error(interrupted)
        data["last_error"] = {
            "code": failure.code,
            "message": failure.message,
            "at": time.time(),
        }
        if refused.code == "invalid_grant":
            data["refresh_token"] = None
            data["access_token"] = None
        self.store.write(data)
        if refused.code == "invalid_grant":
            # REFRESH: the error with the login command; GETANDREFRESH: the login itself
            # at a terminal, else the same explanation and command.
            raise _LoginNeeded(failure.message, failure) from None
        raise refused

    def _keep(
        self, data: dict[str, Any], answer: dict[str, Any], refresh_token: str
    ) -> dict[str, Any]:
        """Store the new pair before it is used; returns the store's data."""
        now = time.time()
        lifetime = float(answer.get("expires_in") or 300)
        data.update(
            access_token=answer["access_token"],
            access_token_expires_at=now + lifetime,
            access_token_lifetime=lifetime,
            refresh_token=answer.get("refresh_token") or refresh_token,
            refresh_token_expires_at=(
                now + float(answer["refresh_token_expires_in"])
                if answer.get("refresh_token_expires_in")
                else data.get("refresh_token_expires_at")
            ),
            scope=answer.get("scope") or data.get("scope"),
            in_flight=None,
            last_error=None,
            refreshed_at=now,
            refresh_count=int(data.get("refresh_count") or 0) + 1,
        )
        try:
            self.store.write(data)
        except SageAuthError as unsaved:
            if unsaved.code not in {"store_unreachable", "store_unwritable", "store_changed"}:
                raise
            raise SageAuthError(
                "refresh_unsaved",
                f"Connection {self.settings.connection_name!r}: Sage rotated the tokens, but the "
                f"new pair could not be kept ({unsaved.message}); Sage has consumed the stored "
                "refresh token",
                f"once the token store is back, authorise the connection again: "
                f"`{login_command()}`",
            ) from None
        checkpoint("after_write")
        self.refreshes += 1
        LOGGER.info(
            "Connection %r: refreshed the access token (valid for %.0fs; refresh #%d of this "
            "store)",
            self.settings.connection_name,
            lifetime,
            data["refresh_count"],
        )
        return self.store.read()

    def _post_refresh(self, refresh_token: str) -> dict[str, Any]:
        answer = post_refresh(self.settings, self.oauth, refresh_token)
        checkpoint("refresh_answered")
        return answer

    def _interrupted_error(self, marker: dict[str, Any]) -> SageAuthError:
        return interrupted_error(self.settings, marker)

    def _login_or_fail(self, need: _LoginNeeded) -> str:
        settings = self.settings
        if settings.initiate_oauth is not OAuthMode.GETANDREFRESH:
            if need.cause is not None:
                raise SageAuthError(
                    need.cause.code,
                    need.cause.message,
                    f"authorise the connection again: `{login_command()}` (with the same "
                    "config as this run); later runs then refresh on their own",
                ) from None
            raise SageConfigError(
                "refresh_token",
                f"is required when initiate_oauth is REFRESH and the token store "
                f"{self.store.location} holds no usable token ({need.reason}). Set refresh_token, "
                f"or run `{login_command()}` once, or set initiate_oauth to GETANDREFRESH",
            )
        if not self.is_interactive():
            raise SageAuthError(
                "login_required",
                f"Connection {settings.connection_name!r} has no usable OAuth token "
                f"({need.reason}) and initiate_oauth is GETANDREFRESH, but no one is at a "
                "terminal to log in",
                f"run `{login_command()}` once in a terminal, then run this again",
            )
        from tap_sage.sage.login import run_login

        LOGGER.warning(
            "Connection %r has no usable OAuth token (%s): starting the login",
            settings.connection_name,
            need.reason,
        )
        run_login(settings, self.new_session, out=sys.stderr, open_browser=True)
        self._refused = None
        return self._from_store(force=False)


def post_refresh(
    settings: ConnectionSettings, oauth: OAuthEndpoints, refresh_token: str
) -> dict[str, Any]:
    """One refresh POST; repeated only when it provably never reached Sage."""

    def waits() -> Generator[float, Any, None]:
        # python-backoff primes the generator, then sends each exception into it.
        exc = yield 0.0
        attempt = 0
        while True:
            retry_after = getattr(exc, "retry_after", None)
            wait = (
                min(float(retry_after), settings.max_backoff)
                if retry_after is not None
                else min(0.5 * 2**attempt, 8.0, settings.max_backoff)
            )
            attempt += 1
            exc = yield wait

    send = backoff.on_exception(
        waits,
        TokenRequestNotSent,
        max_tries=1 + settings.max_retries,
        max_time=max(60.0, settings.max_backoff * 2),
        jitter=None,
        logger=None,
        on_backoff=lambda d: LOGGER.warning(
            "Token refresh of connection %r not sent (%s); trying again in %.1fs",
            settings.connection_name,
            d.get("exception"),
            d["wait"],
        ),
    )(oauth.refresh)
    answer: dict[str, Any] = send(refresh_token)
    return answer


def interrupted_error(settings: ConnectionSettings, marker: dict[str, Any]) -> SageAuthError:
    """``refresh_interrupted``: the refresh of ``marker`` spent the token and never finished."""
    started = time.strftime(
        "%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(marker.get("started_at") or 0))
    )
    return SageAuthError(
        "refresh_interrupted",
        f"Connection {settings.connection_name!r}: a refresh started at {started} by "
        f"process {marker.get('pid')} on {marker.get('host')} did not finish (the process "
        "died, or its answer was lost, after the request was sent). Sage consumed that "
        "refresh token, and the new one it issued never reached the token store, so Sage "
        "now refuses the stored token (invalid_grant)",
        f"authorise the connection again once: `{login_command()}`",
    )


class _LoginNeeded(Exception):
    def __init__(self, reason: str, cause: SageAuthError | None = None) -> None:
        self.reason = reason
        self.cause = cause
        super().__init__(reason)


class _SourceCache:
    sources: ClassVar[dict[tuple[Any, ...], TokenSource]] = {}
    lock = threading.Lock()


def token_source_for(
    settings: ConnectionSettings, new_session: Callable[[], requests.Session]
) -> TokenSource:
    """The one token source of a connection in this process (created on first use)."""
    if not settings.initiate_oauth.rotates:
        key: tuple[Any, ...] = (OAuthMode.OFF, settings.connection_name, settings.access_token)
    else:
        key = (
            settings.token_store,
            settings.oauth_settings_key,
            settings.initiate_oauth,
            settings.client_id,
            settings.client_secret,
            settings.refresh_token,
            settings.access_token,
            settings.token_url,
            settings.proxies and tuple(sorted(settings.proxies.items())),
            settings.ca_bundle,
        )
    with _SourceCache.lock:
        source = _SourceCache.sources.get(key)
        if source is None:
            source = (
                StaticToken(settings)
                if not settings.initiate_oauth.rotates
                else RotatingTokenSource(settings, new_session)
            )
            _SourceCache.sources[key] = source
        return source
