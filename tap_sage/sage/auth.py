"""OAuth token sources for a connection.

A token source gives a valid access token (``token()``) and is told when Sage refused one
(``invalidate(token)``). PLACEHOLDER: the rotating token store (file lock, atomic writes,
GETANDREFRESH login) replaces this module's REFRESH logic; the interface stays.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

import requests

from tap_sage.sage.errors import SageAuthError
from tap_sage.sage.settings import ConnectionSettings


class TokenSource(Protocol):
    """What ``SageClient`` needs from the OAuth layer."""

    def token(self) -> str:
        """A usable access token, refreshed first when it is (nearly) expired."""
        ...

    def invalidate(self, token: str) -> None:
        """Sage answered 401 to ``token``: the next ``token()`` must not return it."""
        ...


class StaticToken:
    """OFF mode: the access token as given; a 401 is final."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self._token = settings.access_token or ""
        self._dead = False

    def token(self) -> str:
        if self._dead:
            raise SageAuthError(
                "token_expired",
                "Sage refused the access token and initiate_oauth is OFF, so it is not refreshed",
                "give a fresh access_token, or set initiate_oauth to REFRESH with a refresh_token",
            )
        return self._token

    def invalidate(self, token: str) -> None:
        self._dead = True


class RefreshingToken:
    """REFRESH mode without a store (placeholder)."""

    def __init__(
        self, settings: ConnectionSettings, new_session: Callable[[], requests.Session]
    ) -> None:
        self.settings = settings
        self._session = new_session()
        self._lock = threading.Lock()
        self._access = settings.access_token
        self._refresh = settings.refresh_token
        self._expires = time.time() + 60 if settings.access_token else 0.0

    def token(self) -> str:
        with self._lock:
            if not self._access or time.time() >= self._expires - self.settings.refresh_margin:
                self._do_refresh()
            assert self._access
            return self._access

    def invalidate(self, token: str) -> None:
        with self._lock:
            if token == self._access:
                self._access = None

    def _do_refresh(self) -> None:
        if not self._refresh:
            raise SageAuthError("login_required", "No refresh token", "run `sage-auth login`")
        resp = self._session.post(
            self.settings.token_url,
            data={
                "grant_type": "refresh_token",
                "refresh_token": self._refresh,
                "client_id": self.settings.client_id,
                "client_secret": self.settings.client_secret,
            },
            headers={"Accept": "application/json"},
            timeout=self.settings.timeout,
        )
        if resp.status_code != 200:
            code = resp.json().get("error", "unknown") if resp.content else "unknown"
            raise SageAuthError(code, "Sage refused the refresh token", "run `sage-auth login`")
        body = resp.json()
        self._access = body["access_token"]
        self._refresh = body.get("refresh_token", self._refresh)
        self._expires = time.time() + float(body.get("expires_in", 300))


def token_source_for(
    settings: ConnectionSettings, new_session: Callable[[], requests.Session]
) -> TokenSource:
    """The token source for a connection's OAuth mode."""
    if settings.initiate_oauth == "OFF":
        return StaticToken(settings)
    return RefreshingToken(settings, new_session)
