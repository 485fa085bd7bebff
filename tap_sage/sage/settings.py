"""The connection settings shared by tap-sage and target-sage, and their validation.

``CONNECTION_PROPERTIES`` is the JSON schema of the settings (merged into each executable's
``config_jsonschema``); ``ConnectionSettings.from_config`` validates a config mapping and
raises ``SageConfigError`` naming the setting, before any network call.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tap_sage.sage.errors import SageConfigError

SAGE_API_URL = "https://api.accounting.sage.com/v3.1"
SAGE_TOKEN_URL = "https://oauth.accounting.sage.com/token"
SAGE_REVOKE_URL = "https://oauth.accounting.sage.com/revoke"
SAGE_AUTHORIZE_URL = "https://www.sageone.com/oauth2/auth/central?filter=apiv3.1"
DEFAULT_CALLBACK_URL = "http://localhost:8765/callback"

OAUTH_MODES = ("OFF", "REFRESH", "GETANDREFRESH")
SCOPES = ("full_access", "readonly")

_NAME = re.compile(r"^[^/:\x00-\x1f]{1,100}$")


def _url(key: str, value: Any) -> str:
    text = str(value)
    parts = urlsplit(text)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise SageConfigError(f"advanced_config.{key}", f"{text!r} is not an http(s) URL")
    return text.rstrip("/") if key == "api_url" else text


def _positive_float(key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if number <= 0:
        raise SageConfigError(f"advanced_config.{key}", f"{value!r} is not a positive number")
    return number


def _int_in(low: int, high: int) -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        try:
            number = int(str(value))
        except ValueError:
            number = low - 1
        if not low <= number <= high:
            raise SageConfigError(
                f"advanced_config.{key}", f"{value!r} is not a whole number from {low} to {high}"
            )
        return number

    return check


def _text(key: str, value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise SageConfigError(f"advanced_config.{key}", "must not be empty")
    return text


#: advanced_config keys: name -> (validator, default, description)
ADVANCED_KEYS: dict[str, tuple[Callable[[str, Any], Any], Any, str]] = {
    "api_url": (_url, SAGE_API_URL, "Base URL of the Sage API, with /v3.1."),
    "token_url": (_url, SAGE_TOKEN_URL, "OAuth token endpoint."),
    "authorize_url": (_url, SAGE_AUTHORIZE_URL, "OAuth authorization endpoint."),
    "revoke_url": (_url, SAGE_REVOKE_URL, "OAuth revoke endpoint."),
    "timeout": (_positive_float, 60.0, "Seconds to wait for one HTTP answer."),
    "max_retries": (_int_in(0, 20), 8, "Tries after the first for 429, 5xx and network errors."),
    "max_backoff": (_positive_float, 60.0, "Longest wait in seconds between two tries."),
    "page_size": (_int_in(1, 200), 200, "items_per_page of list requests (Sage's maximum 200)."),
    "refresh_margin": (_int_in(0, 3600), 30, "Refresh this many seconds before expiry."),
    "user_agent": (_text, "tap-sage (+https://github.com/; singer-sdk)", "User-Agent header."),
}


def _default_store(connection_name: str) -> Path:
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", connection_name)
    return base / "sage-singer" / "connections" / f"{safe}.tokens.json"


def _secret(description: str) -> dict[str, Any]:
    return {
        "type": ["string", "null"],
        "secret": True,
        "writeOnly": True,
        "description": description,
    }


#: JSON schema properties of the connection settings, shared by both executables.
CONNECTION_PROPERTIES: dict[str, Any] = {
    "connection_name": {
        "type": "string",
        "default": "default",
        "description": "Unique name of this Sage connection (no `/` or `:`); names the connection "
        "in logs and in the default token-store path.",
    },
    "initiate_oauth": {
        "type": "string",
        "enum": list(OAUTH_MODES),
        "default": "REFRESH",
        "description": "OFF: use access_token as given. REFRESH: use access_token and "
        "refresh_token and refresh automatically. GETANDREFRESH: obtain tokens with the "
        "authorization-code flow when none are usable, then refresh.",
    },
    "access_token": _secret("OAuth access token (lives 5 minutes at Sage)."),
    "refresh_token": _secret("OAuth refresh token (single-use; rotated on every refresh)."),
    "client_id": {"type": ["string", "null"], "description": "Client ID of your Sage app."},
    "client_secret": _secret("Client secret of your Sage app."),
    "scope": {
        "type": "string",
        "enum": list(SCOPES),
        "default": "full_access",
        "description": "OAuth scope asked for in the login flow.",
    },
    "callback_url": {
        "type": "string",
        "default": DEFAULT_CALLBACK_URL,
        "description": "Redirect URI registered for your Sage app; the login flow listens on it "
        "when it is a localhost URL.",
    },
    "oauth_settings_location": {
        "type": ["string", "null"],
        "description": "Token store file of this connection (rotated tokens are kept here, "
        "mode 0600). Default: $XDG_STATE_HOME/sage-singer/connections/<connection_name>"
        ".tokens.json.",
    },
    "use_proxy": {
        "type": "boolean",
        "default": False,
        "description": "Send requests via proxy_url.",
    },
    "proxy_url": {
        "type": ["string", "null"],
        "description": "Proxy URL, e.g. http://proxy:3128. HTTPS_PROXY/NO_PROXY from the "
        "environment are honoured when use_proxy is off.",
    },
    "proxy_username": {"type": ["string", "null"], "description": "Proxy user name."},
    "proxy_password": _secret("Proxy password."),
    "ca_bundle": {
        "type": ["string", "null"],
        "description": "Path of a CA bundle to trust (e.g. a corporate proxy's). TLS is always "
        "verified.",
    },
    "advanced_config": {
        "type": ["object", "null"],
        "description": "Further settings as key-value pairs: "
        + "; ".join(f"`{k}` ({d})" for k, (_, _, d) in ADVANCED_KEYS.items()),
        "additionalProperties": True,
    },
}


@dataclass(frozen=True)
class ConnectionSettings:
    """A validated connection. Secrets are held, never printed (see ``__repr__``)."""

    connection_name: str = "default"
    initiate_oauth: str = "REFRESH"
    access_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    scope: str = "full_access"
    callback_url: str = DEFAULT_CALLBACK_URL
    oauth_settings_location: Path = field(default_factory=lambda: _default_store("default"))
    use_proxy: bool = False
    proxy_url: str | None = None
    proxy_username: str | None = None
    proxy_password: str | None = field(default=None, repr=False)
    ca_bundle: str | None = None
    api_url: str = SAGE_API_URL
    token_url: str = SAGE_TOKEN_URL
    authorize_url: str = SAGE_AUTHORIZE_URL
    revoke_url: str = SAGE_REVOKE_URL
    timeout: float = 60.0
    max_retries: int = 8
    max_backoff: float = 60.0
    page_size: int = 200
    refresh_margin: int = 30
    user_agent: str = ADVANCED_KEYS["user_agent"][1]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ConnectionSettings:
        """Validate the connection part of a tap or target config."""
        name = str(config.get("connection_name") or "default")
        if not _NAME.match(name):
            raise SageConfigError(
                "connection_name", f"{name!r} must be 1-100 characters without `/` or `:`"
            )
        mode = str(config.get("initiate_oauth") or "REFRESH").upper()
        if mode not in OAUTH_MODES:
            raise SageConfigError(
                "initiate_oauth", f"{mode!r} is not one of {', '.join(OAUTH_MODES)}"
            )
        scope = str(config.get("scope") or "full_access")
        if scope not in SCOPES:
            raise SageConfigError("scope", f"{scope!r} is not one of {', '.join(SCOPES)}")
        advanced_raw = config.get("advanced_config") or {}
        if not isinstance(advanced_raw, Mapping):
            raise SageConfigError("advanced_config", "must be an object of key-value pairs")
        advanced: dict[str, Any] = {}
        for key, value in advanced_raw.items():
            if key not in ADVANCED_KEYS:
                known = ", ".join(ADVANCED_KEYS)
                raise SageConfigError(f"advanced_config.{key}", f"unknown key (known: {known})")
            advanced[key] = ADVANCED_KEYS[key][0](key, value)
        store = config.get("oauth_settings_location")
        use_proxy = bool(config.get("use_proxy", False))
        proxy_url = config.get("proxy_url") or None
        if use_proxy and not proxy_url:
            raise SageConfigError("proxy_url", "is required when use_proxy is true")
        if proxy_url:
            _url("proxy_url", proxy_url)
        ca_bundle = config.get("ca_bundle") or None
        if ca_bundle and not Path(ca_bundle).exists():
            raise SageConfigError("ca_bundle", f"file {ca_bundle!r} does not exist")
        settings = cls(
            connection_name=name,
            initiate_oauth=mode,
            access_token=config.get("access_token") or None,
            refresh_token=config.get("refresh_token") or None,
            client_id=config.get("client_id") or None,
            client_secret=config.get("client_secret") or None,
            scope=scope,
            callback_url=str(config.get("callback_url") or DEFAULT_CALLBACK_URL),
            oauth_settings_location=Path(store).expanduser() if store else _default_store(name),
            use_proxy=use_proxy,
            proxy_url=proxy_url,
            proxy_username=config.get("proxy_username") or None,
            proxy_password=config.get("proxy_password") or None,
            ca_bundle=ca_bundle,
            **advanced,
        )
        settings.check_mode()
        return settings

    def check_mode(self) -> None:
        """Raise ``SageConfigError`` when a setting the chosen OAuth mode needs is missing."""
        needs: dict[str, tuple[str, ...]] = {
            "OFF": ("access_token",),
            "REFRESH": ("client_id", "client_secret"),
            "GETANDREFRESH": ("client_id", "client_secret"),
        }
        for key in needs[self.initiate_oauth]:
            if not getattr(self, key):
                raise SageConfigError(
                    key, f"is required when initiate_oauth is {self.initiate_oauth}"
                )
        if self.initiate_oauth == "REFRESH" and not (self.refresh_token or self.access_token):
            # A store may still hold tokens from an earlier run; the token layer checks that.
            pass

    @property
    def proxies(self) -> dict[str, str] | None:
        """``requests`` proxies mapping, or None to let the environment decide."""
        if not self.use_proxy or not self.proxy_url:
            return None
        url = self.proxy_url
        if self.proxy_username:
            from urllib.parse import quote

            parts = urlsplit(url)
            cred = quote(self.proxy_username, safe="")
            if self.proxy_password:
                cred += ":" + quote(self.proxy_password, safe="")
            url = f"{parts.scheme}://{cred}@{parts.netloc}{parts.path}"
        return {"http": url, "https": url}
