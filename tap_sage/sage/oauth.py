"""Sage's OAuth endpoints: the token POST (refresh and code exchange), revoke, PKCE, the URL.

Every token POST is sent exactly once by this module: no adapter retry, no replay. Callers
decide what a failure means, knowing which of three things happened:

- ``TokenRequestNotSent``: the connection was never made (refused, DNS, connect timeout,
  proxy refusal): the refresh token is untouched and trying again is safe;
- ``TokenAnswerLost``: the request may have reached Sage but no answer came back (read
  timeout, connection reset, or a 5xx): Sage may have consumed the token;
- ``SageAuthError``: Sage answered with an OAuth error (``invalid_grant``, ...).

Bodies are form-encoded (never a query string, which ``urllib3`` logs at DEBUG). Nothing here
logs or raises a token, a secret or a code.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from tap_sage.sage.errors import (
    TLS_FIX,
    SageAuthError,
    SageNetworkError,
    SageProxyError,
    scrub,
)
from tap_sage.sage.settings import ConnectionSettings

LOGGER = logging.getLogger("sage.auth")


class _FormOnly(requests.auth.AuthBase):
    """No ``Authorization`` header: the client's credentials go in the form. Given as the
    request's auth so that requests does not put the ``~/.netrc`` (``$NETRC``) entry of the
    token host there instead, as it does for a request without auth."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


NO_NETRC = _FormOnly()


class TokenRequestNotSent(Exception):
    """The token request never reached the server: trying again is safe."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        self.reason = reason
        self.retry_after = retry_after
        super().__init__(reason)


class TokenAnswerLost(Exception):
    """The token request may have been processed, but its answer was not received."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def pkce_pair() -> tuple[str, str]:
    """A PKCE ``(code_verifier, code_challenge)`` with the S256 method (RFC 7636)."""
    verifier = secrets.token_urlsafe(64)  # 86 characters of the unreserved alphabet
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return verifier, challenge


def new_state() -> str:
    """An unguessable ``state`` for one authorization request."""
    return secrets.token_urlsafe(24)


def authorization_url(settings: ConnectionSettings, state: str, code_challenge: str) -> str:
    """The URL a person opens to authorise this connection (no secret in it)."""
    parts = urlsplit(settings.authorize_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [
        ("response_type", "code"),
        ("client_id", settings.client_id or ""),
        ("redirect_uri", settings.callback_url),
        ("scope", settings.scope),
        ("state", state),
        ("code_challenge", code_challenge),
        ("code_challenge_method", "S256"),
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class OAuthEndpoints:
    """Sends the token and revoke POSTs of one connection (one try each)."""

    def __init__(
        self, settings: ConnectionSettings, new_session: Callable[[], requests.Session]
    ) -> None:
        self.settings = settings
        self._new_session = new_session
        self._session: requests.Session | None = None

    @property
    def session(self) -> requests.Session:
        """A session of its own (proxy, CA bundle, User-Agent), with no adapter retries."""
        if self._session is None:
            self._session = self._new_session()
        return self._session

    def _secrets(self, extra: tuple[str | None, ...]) -> tuple[str | None, ...]:
        return (*self.settings.secrets, *extra)

    def _post(self, url: str, form: dict[str, str], what: str) -> requests.Response:
        try:
            return self.session.post(
                url,
                data=form,
                auth=NO_NETRC,
                headers={"Accept": "application/json"},
                timeout=self.settings.timeout,
                allow_redirects=False,
                verify=self.settings.ca_bundle or True,
            )
        except requests.exceptions.ProxyError as exc:
            proxy = self.settings.proxy_display or "from the environment"
            problem = "refused the connection"
            if "407 Proxy Authentication Required" in str(exc):
                problem = "asked for credentials (407 Proxy Authentication Required)"
            raise SageProxyError(proxy, f"{problem} while sending the {what}") from None
        except requests.exceptions.SSLError:
            raise SageNetworkError(
                f"TLS certificate verification failed on the {what} ({urlsplit(url).netloc})",
                TLS_FIX,
            ) from None
        except requests.exceptions.ConnectTimeout as exc:
            raise TokenRequestNotSent(f"{type(exc).__name__} on the {what}") from None
        except requests.exceptions.ConnectionError as exc:
            if _never_connected(exc):
                where = urlsplit(url).netloc
                raise TokenRequestNotSent(
                    f"could not connect to {where} for the {what} ({_reason_name(exc)})"
                ) from None
            raise TokenAnswerLost(f"the connection broke during the {what}") from None
        except requests.exceptions.Timeout:
            raise TokenAnswerLost(
                f"no answer to the {what} within {self.settings.timeout:.0f}s"
            ) from None

    def token_request(self, form: dict[str, str], what: str) -> dict[str, Any]:
        """POST ``form`` to the token endpoint once and return the token answer.

        ``form`` gets ``client_id`` and ``client_secret`` added.
        """
        form = {
            **form,
            "client_id": self.settings.client_id or "",
            "client_secret": self.settings.client_secret or "",
        }
        started = time.monotonic()
        response = self._post(self.settings.token_url, form, what)
        LOGGER.debug(
            "POST %s (%s) -> %s in %.0f ms",
            urlsplit(self.settings.token_url).path,
            what,
            response.status_code,
            (time.monotonic() - started) * 1000,
        )
        if response.status_code == 407:
            raise SageProxyError(
                self.settings.proxy_display or "from the environment",
                "asked for credentials (407 Proxy Authentication Required)",
            )
        if response.status_code in (429, 503):
            raise TokenRequestNotSent(
                f"{response.status_code} from the token endpoint",
                _retry_after(response.headers.get("Retry-After")),
            )
        if response.status_code >= 500:
            raise TokenAnswerLost(f"the token endpoint answered {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 200 and isinstance(body, dict) and body.get("access_token"):
            return body
        raise self._error(response.status_code, body, what, tuple(form.values()))

    def _error(self, status: int, body: Any, what: str, sent: tuple[str, ...]) -> SageAuthError:
        code = "token_error"
        description = ""
        if isinstance(body, dict):
            code = str(body.get("error") or code)
            description = str(body.get("error_description") or "")
        description = scrub(description, self._secrets(sent))[:300]
        said = f" ({description})" if description else ""
        name = self.settings.connection_name
        if code == "invalid_grant":
            if "authorization" in what:
                return SageAuthError(
                    code,
                    f"Sage refused the authorization code of connection {name!r}{said}: a code "
                    "is single-use and expires 60 seconds after the browser returns, and the "
                    "redirect URI must match the registered one exactly",
                    "run `sage-auth login` again (or `sage-auth url` then `sage-auth exchange` "
                    "within a minute); check callback_url matches your app's redirect URI",
                )
            return SageAuthError(
                code,
                f"Sage refused the refresh token of connection {name!r}{said}: it was already "
                "used, has expired (31 days without a refresh) or was revoked",
                "authorise the connection again with `sage-auth login` (same config as this run); "
                "later runs then refresh on their own",
            )
        if code == "invalid_client":
            return SageAuthError(
                code,
                f"Sage does not accept the app credentials of connection {name!r}{said}",
                "check client_id and client_secret against your app at developer.sage.com "
                "(copy both again; a regenerated secret invalidates the old one)",
            )
        if code == "unauthorized_client":
            return SageAuthError(
                code,
                f"Sage does not allow this app to use the {what}{said}",
                "check the app's settings at developer.sage.com",
            )
        return SageAuthError(
            code,
            f"Sage answered {status} to the {what} of connection {name!r}{said}",
            "check client_id, client_secret, callback_url and advanced_config.token_url; if it "
            "persists, run `sage-auth login`",
        )

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        """One refresh-token grant."""
        return self.token_request(
            {"grant_type": "refresh_token", "refresh_token": refresh_token}, "token refresh"
        )

    def exchange_code(
        self, code: str, code_verifier: str | None, redirect_uri: str
    ) -> dict[str, Any]:
        """One authorization-code grant."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier:
            form["code_verifier"] = code_verifier
        return self.token_request(form, "authorization code exchange")

    def revoke(self, token: str) -> int:
        """Revoke ``token`` (a refresh token); returns the HTTP status."""
        form = {
            "client_id": self.settings.client_id or "",
            "client_secret": self.settings.client_secret or "",
            "token": token,
        }
        try:
            response = self._post(self.settings.revoke_url, form, "token revocation")
        except (TokenRequestNotSent, TokenAnswerLost) as exc:
            raise SageAuthError(
                "revoke_failed",
                f"Could not revoke the token: {exc.reason}",
                "try `sage-auth revoke` again later, or remove the app's access in Sage",
            ) from None
        return response.status_code


def _reason_name(exc: requests.exceptions.ConnectionError) -> str:
    reason: Any = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)
    return type(reason).__name__ if reason is not None else type(exc).__name__


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """Whether a ConnectionError happened before the request could be sent."""
    import urllib3.exceptions as u3

    reason: Any = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)
    return isinstance(
        reason, (u3.NewConnectionError, u3.NameResolutionError, u3.ConnectTimeoutError)
    )
