"""The connection settings shared by tap-sage and target-sage, and their validation.

``CONNECTION_PROPERTIES`` is the JSON schema of the settings (merged into each executable's
``config_jsonschema``); ``ConnectionSettings.from_config`` validates a config mapping and
raises ``SageConfigError`` naming the setting, before any network call.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import msgspec
from typing_extensions import override

from tap_sage.sage.errors import SageConfigError

SAGE_API_URL = "https://api.accounting.sage.com/v3.1"
SAGE_TOKEN_URL = "https://oauth.accounting.sage.com/token"
SAGE_REVOKE_URL = "https://oauth.accounting.sage.com/revoke"
SAGE_AUTHORIZE_URL = "https://www.sageone.com/oauth2/auth/central?filter=apiv3.1"
DEFAULT_CALLBACK_URL = "http://localhost:8765/callback"
#: Where the key of a database token store is by default (``oauth_settings_key``).
DEFAULT_STORE_KEY = "env:SAGE_TOKEN_STORE_KEY"


class OAuthMode(str, Enum):
    """``initiate_oauth``: how a connection gets its access tokens."""

    OFF = "OFF"  # the configured access_token, as given; a 401 is final
    REFRESH = "REFRESH"  # rotated from the token store; a missing grant is an error
    GETANDREFRESH = "GETANDREFRESH"  # the same, and the login starts itself at a terminal

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def rotates(self) -> bool:
        """Whether tokens come from the token store and are refreshed (not OFF)."""
        return self is not OAuthMode.OFF


OAUTH_MODES = tuple(mode.value for mode in OAuthMode)
SCOPES = ("full_access", "readonly")

_NAME = re.compile(r"^[^/:\x00-\x1f]{1,100}$")


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@`` (for messages and logs)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"***@{host}").geturl()


def _check_url(setting: str, value: Any) -> str:
    text = str(value).strip()
    parts = urlsplit(text)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise SageConfigError(setting, f"{redact_url(text)!r} is not an http(s) URL")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise SageConfigError(setting, f"{redact_url(text)!r} has an invalid port") from None
    return text


def _url(key: str, value: Any) -> str:
    text = _check_url(f"advanced_config.{key}", value)
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
    "refresh_margin": (
        _int_in(0, 3600),
        30,
        "Refresh the access token this many seconds before it expires (at most a third of its "
        "lifetime).",
    ),
    "lock_timeout": (
        _positive_float,
        120.0,
        "Seconds to wait for another process holding the token store's lock.",
    ),
    "login_timeout": (
        _positive_float,
        300.0,
        "Seconds the login flow waits for the browser to come back to callback_url.",
    ),
    "check_concurrency": (
        _int_in(1, 32),
        8,
        "Parallel requests of the connection test's resource probes.",
    ),
    "user_agent": (_text, "tap-sage (+https://github.com/; singer-sdk)", "User-Agent header."),
}


def _default_store(connection_name: str) -> Path:
    """``$XDG_STATE_HOME/sage-singer/connections/<name>.tokens.json`` (one file per connection).

    Names that had to be made file-safe get a short hash of the exact name, so two different
    connection names never share a store.
    """
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", connection_name)
    if safe != connection_name or safe.startswith("."):
        digest = hashlib.sha256(connection_name.encode()).hexdigest()[:8]
        safe = f"{safe.lstrip('.')}-{digest}"
    return base / "sage-singer" / "connections" / f"{safe}.tokens.json"


#: A value of oauth_settings_location that is a URL (``scheme://...``), not a path.
_URL_FORM = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_PG_SCHEMES = ("postgresql", "postgres")


def database_url(value: str) -> str:
    """The SQLAlchemy URL of a database token store (``postgresql://`` and ``postgres://``
    use the psycopg 3 driver). Raises ``SageConfigError`` for another database or a bad URL."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise SageConfigError(
            "oauth_settings_location", f"{display_url(value)!r} is not a valid database URL"
        ) from None
    backend = url.get_backend_name()
    if backend not in _PG_SCHEMES:
        raise SageConfigError(
            "oauth_settings_location",
            f"{display_url(value)!r}: a database token store must be PostgreSQL "
            "(postgresql://user:password@host:5432/database), or give a file path",
        )
    if url.drivername in _PG_SCHEMES:
        url = url.set(drivername="postgresql+psycopg")
    if not url.database:
        raise SageConfigError(
            "oauth_settings_location", f"{display_url(value)!r} names no database (/NAME)"
        )
    return url.render_as_string(hide_password=False)


def display_url(value: str) -> str:
    """A database URL without its password (for messages and logs)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(value).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return redact_url(value)


def _parse_store(name: str, raw: str | None) -> tuple[Path, str | None]:
    """``(file path, database URL or None)`` of an ``oauth_settings_location`` value."""
    store_url = database_url(raw) if raw and _URL_FORM.match(raw) else None
    store = Path(raw).expanduser() if raw and not store_url else _default_store(name)
    if not store_url and store.is_dir():
        raise SageConfigError(
            "oauth_settings_location", f"{str(store)!r} is a folder; give a file path"
        )
    return store, store_url


def _store_key(value: Any) -> str:
    text = str(value or "").strip() or DEFAULT_STORE_KEY
    kind, _, where = text.partition(":")
    if kind not in {"env", "file"} or not where.strip():
        raise SageConfigError(
            "oauth_settings_key",
            "must be env:NAME (an environment variable) or file:PATH (a file) holding the "
            "key, never the key itself (the value given is not repeated here)",
        )
    return f"{kind}:{where.strip()}"


def _bool(setting: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes", "on"}:
        return True
    if text in {"false", "0", "no", "off", ""}:
        return False
    raise SageConfigError(setting, f"{value!r} is not true or false")


def _optional_text(config: Mapping[str, Any], key: str) -> str | None:
    value = config.get(key)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


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
        "description": "Name of this Sage connection (1-100 characters, no `/` or `:`). It names "
        "the connection in logs and picks its default token store, so two connections with "
        "different names never share or overwrite each other's tokens.",
    },
    "initiate_oauth": {
        "type": "string",
        "enum": list(OAUTH_MODES),
        "default": OAuthMode.REFRESH.value,
        "description": "OFF: use access_token as given (it lives 5 minutes; a refused token "
        "fails the run). REFRESH: start from refresh_token (or the token store) and refresh "
        "automatically; needs client_id and client_secret. GETANDREFRESH: like REFRESH, and "
        "when no usable token exists, run the browser login (`sage-auth login`) when a person "
        "is at the terminal, otherwise fail at once naming the command to run.",
    },
    "access_token": _secret(
        "OAuth access token. Required when initiate_oauth is OFF; optional otherwise (used "
        "until Sage refuses it)."
    ),
    "refresh_token": _secret(
        "OAuth refresh token, used once to seed the token store. Sage rotates it on every "
        "refresh: the current one lives in the token store, not here. Putting a different "
        "refresh token here makes it replace the stored one on the next run."
    ),
    "client_id": {
        "type": ["string", "null"],
        "description": "Client ID of your Sage developer app. Required unless initiate_oauth "
        "is OFF.",
    },
    "client_secret": _secret(
        "Client secret of your Sage developer app. Required unless initiate_oauth is OFF."
    ),
    "scope": {
        "type": "string",
        "enum": list(SCOPES),
        "default": "full_access",
        "description": "OAuth scope asked for by the login flow: full_access (read and write; "
        "needed by target-sage) or readonly.",
    },
    "callback_url": {
        "type": "string",
        "default": DEFAULT_CALLBACK_URL,
        "description": "Redirect URI registered for your Sage app (it must match exactly). When "
        "it is a localhost URL, `sage-auth login` listens on its port for the browser's return.",
    },
    "oauth_settings_location": {
        "type": ["string", "null"],
        "description": "Token store of this connection, where rotated tokens are kept between "
        "runs and shared by every process of the connection. A file path: a JSON file (mode "
        "0600, in a 0700 folder) for the processes of one machine. A PostgreSQL URL "
        "(`postgresql://user:password@host:5432/db`; needs `tap-sage[postgres]`): one row per "
        "connection_name in table tap_sage_token_store, tokens encrypted with the key "
        "oauth_settings_key names, shared by the runs of every machine. Default: "
        "$XDG_STATE_HOME (else ~/.local/state)/sage-singer/connections/"
        "<connection_name>.tokens.json.",
    },
    "oauth_settings_key": {
        "type": ["string", "null"],
        "default": DEFAULT_STORE_KEY,
        "description": "Where the key that encrypts the tokens of a database token store is "
        "(unused by a file store): `env:NAME` (environment variable NAME) or `file:PATH` (a "
        "file), holding a Fernet key (`sage-auth keygen` prints a new one); several keys "
        "separated by commas or new lines rotate: the first encrypts, any of them decrypts. "
        "Every machine of the connection needs the same key.",
    },
    "use_proxy": {
        "type": "boolean",
        "default": False,
        "description": "Send every request (API and OAuth) through proxy_url. When false, the "
        "usual HTTPS_PROXY / HTTP_PROXY / NO_PROXY environment variables are honoured.",
    },
    "proxy_url": {
        "type": ["string", "null"],
        "description": "Forward proxy URL, e.g. http://proxy.example.com:3128 (credentials may "
        "be given inline as http://user:password@host:port, or in proxy_username / "
        "proxy_password). Required when use_proxy is true.",
    },
    "proxy_username": {"type": ["string", "null"], "description": "Proxy user name, if any."},
    "proxy_password": _secret("Proxy password, if any."),
    "ca_bundle": {
        "type": ["string", "null"],
        "description": "Path of a PEM CA bundle to trust, e.g. a TLS-inspecting corporate "
        "proxy's. TLS certificates are always verified; this cannot be turned off.",
    },
    "advanced_config": {
        # An object, or its JSON text (as an environment variable carries it). ``anyOf`` keeps
        # the SDK from decoding the text itself (with a traceback when it is not JSON): every
        # executable (tap, target, sage-auth) reads it through ConnectionSettings.from_config.
        "anyOf": [{"type": "object"}, {"type": "string"}, {"type": "null"}],
        "description": "Further settings as key-value pairs (an unknown key or a bad value is "
        "an error naming it): "
        + "; ".join(f"`{k}` ({d} Default {v!r}.)" for k, (_, v, d) in ADVANCED_KEYS.items()),
        "additionalProperties": True,
    },
}

_SECRET_FIELDS = ("access_token", "refresh_token", "client_secret", "proxy_password")
#: Fields ``repr`` leaves out: the secrets, and the URLs that may hold a password.
_NOT_SHOWN = frozenset({*_SECRET_FIELDS, "token_store_url", "proxy_url"})


class ConnectionSettings(msgspec.Struct, frozen=True):
    """A validated connection. Secrets are held, never printed (see ``__repr__``).

    A frozen ``msgspec`` struct, not a dataclass: generating a frozen dataclass of these
    fields cost every start-up 2.6 ms (issue 15)."""

    connection_name: str = "default"
    initiate_oauth: OAuthMode = OAuthMode.REFRESH
    access_token: str | None = None
    refresh_token: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    scope: str = "full_access"
    callback_url: str = DEFAULT_CALLBACK_URL
    #: The file store's path. With a database store: the connection's default file path,
    #: never used for tokens (only as the folder of other default files, e.g. target-sage's
    #: ledger); the store is then ``token_store_url``.
    oauth_settings_location: Path = msgspec.field(default_factory=lambda: _default_store("default"))
    #: The SQLAlchemy URL of a database token store (may hold a password: never printed).
    token_store_url: str | None = None
    oauth_settings_key: str = DEFAULT_STORE_KEY
    use_proxy: bool = False
    proxy_url: str | None = None
    proxy_username: str | None = None
    proxy_password: str | None = None
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
    lock_timeout: float = 120.0
    login_timeout: float = 300.0
    check_concurrency: int = 8
    user_agent: str = ADVANCED_KEYS["user_agent"][1]

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in self.__struct_fields__
            if name not in _NOT_SHOWN
        )
        return f"{type(self).__name__}({shown})"

    @override
    def __rich_repr__(self) -> list[tuple[str, Any]]:
        """What ``rich`` shows (msgspec's own gives every field, secrets included): the fields
        ``__repr__`` shows."""
        return [(name, getattr(self, name)) for name in self.__struct_fields__
                if name not in _NOT_SHOWN]  # fmt: skip

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ConnectionSettings:
        """Validate the connection part of a tap or target config (no I/O beyond ``stat``).

        Raises ``SageConfigError`` naming the first bad or missing setting.
        """
        name = _connection_name(config.get("connection_name"))
        mode = str(config.get("initiate_oauth") or OAuthMode.REFRESH).strip().upper()
        if mode not in OAUTH_MODES:
            raise SageConfigError(
                "initiate_oauth", f"{mode!r} is not one of {', '.join(OAUTH_MODES)}"
            )
        scope = str(config.get("scope") or "full_access").strip()
        if scope not in SCOPES:
            raise SageConfigError("scope", f"{scope!r} is not one of {', '.join(SCOPES)}")
        advanced = _advanced(config.get("advanced_config") or {})
        callback_url = _check_url(
            "callback_url", config.get("callback_url") or DEFAULT_CALLBACK_URL
        )
        store, store_url = _parse_store(name, _optional_text(config, "oauth_settings_location"))
        store_key = _store_key(config.get("oauth_settings_key"))
        use_proxy = _bool("use_proxy", config.get("use_proxy", False))
        proxy_url = _optional_text(config, "proxy_url")
        if use_proxy and not proxy_url:
            raise SageConfigError("proxy_url", "is required when use_proxy is true")
        if proxy_url:
            _check_url("proxy_url", proxy_url)
        ca_bundle = _optional_text(config, "ca_bundle")
        if ca_bundle and not Path(ca_bundle).expanduser().is_file():
            raise SageConfigError("ca_bundle", f"file {ca_bundle!r} does not exist")
        settings = cls(
            connection_name=name,
            initiate_oauth=OAuthMode(mode),
            access_token=_optional_text(config, "access_token"),
            refresh_token=_optional_text(config, "refresh_token"),
            client_id=_optional_text(config, "client_id"),
            client_secret=_optional_text(config, "client_secret"),
            scope=scope,
            callback_url=callback_url,
            oauth_settings_location=store,
            token_store_url=store_url,
            oauth_settings_key=store_key,
            use_proxy=use_proxy,
            proxy_url=proxy_url,
            proxy_username=_optional_text(config, "proxy_username"),
            proxy_password=_optional_text(config, "proxy_password"),
            ca_bundle=str(Path(ca_bundle).expanduser()) if ca_bundle else None,
            **advanced,
        )
        settings.check_mode()
        return settings

    def check_mode(self) -> None:
        """Raise ``SageConfigError`` when a setting the chosen OAuth mode needs is missing.

        Whether REFRESH has a refresh token is known only with the token store (an earlier
        run or ``sage-auth login`` may have filled it): the token source checks that before
        its first request.
        """
        needs = ("client_id", "client_secret") if self.initiate_oauth.rotates else ("access_token",)
        for key in needs:
            if not getattr(self, key):
                hint = {
                    "access_token": " (or choose REFRESH with client_id, client_secret and "
                    "refresh_token)",
                    "client_id": " (the Client ID of your app at developer.sage.com)",
                    "client_secret": " (the Client Secret of your app at developer.sage.com)",
                }[key]
                raise SageConfigError(
                    key, f"is required when initiate_oauth is {self.initiate_oauth}{hint}"
                )

    def with_store(self, location: str) -> ConnectionSettings:
        """These settings with another ``oauth_settings_location`` (``sage-auth move``)."""
        store, store_url = _parse_store(self.connection_name, location.strip() or None)
        return msgspec.structs.replace(
            self, oauth_settings_location=store, token_store_url=store_url
        )

    @property
    def token_store(self) -> str:
        """The token store's identity: its database URL or its file path (may hold a password:
        for keys, never for messages)."""
        return self.token_store_url or str(self.oauth_settings_location)

    @property
    def token_store_display(self) -> str:
        """The token store for messages: its path, or its URL without the password."""
        if self.token_store_url:
            return display_url(self.token_store_url)
        return str(self.oauth_settings_location)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret value of these settings (to scrub from messages)."""
        values = [getattr(self, k) for k in _SECRET_FIELDS]
        if self.proxy_url and "@" in urlsplit(self.proxy_url).netloc:
            values.append(urlsplit(self.proxy_url).password)
        if self.token_store_url:
            from sqlalchemy.engine import make_url

            values.append(make_url(self.token_store_url).password)
        return tuple(v for v in values if v)

    @property
    def proxy_display(self) -> str | None:
        """The proxy URL without credentials, for messages."""
        return redact_url(self.proxy_url) if self.proxy_url else None

    @property
    def proxies(self) -> dict[str, str] | None:
        """``requests`` proxies mapping, or None to let the environment decide."""
        if not self.use_proxy or not self.proxy_url:
            return None
        url = self.proxy_url
        if self.proxy_username:
            parts = urlsplit(url)
            cred = quote(self.proxy_username, safe="")
            if self.proxy_password:
                cred += ":" + quote(self.proxy_password, safe="")
            host = parts.netloc.rsplit("@", 1)[-1]
            url = parts._replace(netloc=f"{cred}@{host}").geturl()
        return {"http": url, "https": url}


def _connection_name(raw_name: Any) -> str:
    """``connection_name``: ``default`` when unset; 1-100 characters without ``/`` or ``:``."""
    name = "default" if raw_name is None else str(raw_name)
    if not name.strip():
        raise SageConfigError(
            "connection_name",
            "is empty; give a name (1-100 characters without `/` or `:`), or leave the "
            "setting out for `default`",
        )
    if not _NAME.match(name):
        raise SageConfigError(
            "connection_name", f"{name!r} must be 1-100 characters without `/` or `:`"
        )
    return name


def _advanced(advanced_raw: Any) -> dict[str, Any]:
    """``advanced_config`` (an object, or its JSON text): each known key checked."""
    if isinstance(advanced_raw, str):
        try:
            advanced_raw = json.loads(advanced_raw)
        except ValueError:
            raise SageConfigError(
                "advanced_config", "is not a JSON object of key-value pairs"
            ) from None
    if not isinstance(advanced_raw, Mapping):
        raise SageConfigError("advanced_config", "must be an object of key-value pairs")
    advanced: dict[str, Any] = {}
    for key, value in advanced_raw.items():
        if key not in ADVANCED_KEYS:
            known = ", ".join(ADVANCED_KEYS)
            raise SageConfigError(f"advanced_config.{key}", f"unknown key (known: {known})")
        advanced[key] = ADVANCED_KEYS[key][0](key, value)
    return advanced
