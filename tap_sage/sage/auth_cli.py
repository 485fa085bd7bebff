"""``sage-auth``: the OAuth procedures of a Sage connection, and its connection test.

The configuration is the same JSON that ``tap-sage`` and ``target-sage`` take: ``--config
FILE`` (several are merged, later ones win) and ``--config ENV`` for environment variables
``TAP_SAGE_<SETTING>`` / ``TARGET_SAGE_<SETTING>`` (``TAP_SAGE_CLIENT_ID``,
``TAP_SAGE_ADVANCED_CONFIG`` as JSON, ...), which is how Meltano hands plugin settings to a
plugin's commands. Without ``--config``, the environment is used.

Nothing this command prints contains a token, a secret or an authorization code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tap_sage.sage.errors import SageAuthError, SageConfigError, SageError, SageProxyError
from tap_sage.sage.settings import CONNECTION_PROPERTIES, ConnectionSettings
from tap_sage.sage.stores import Store, check_owner, open_store
from tap_sage.sage.tokens import TokenStore

ENV_PREFIXES = ("TARGET_SAGE_", "TAP_SAGE_")  # later wins

EPILOG = """\
configuration:
  --config FILE    the tap's or target's config JSON (repeatable; merged in order)
  --config ENV     settings from TAP_SAGE_* / TARGET_SAGE_* environment variables
                   (the default when no --config is given; how Meltano passes settings)

typical use:
  sage-auth login --config config.json     authorise once (opens a local callback server)
  sage-auth test --config config.json      check credentials, businesses and resources
  sage-auth status --config config.json    token expiry and reachable businesses

exit status: 0 success, 1 failure (cause and fix on stderr, or in the --json output),
2 invalid settings.
"""


def env_config(environ: Mapping[str, str]) -> dict[str, Any]:
    """Connection settings from ``TARGET_SAGE_*`` then ``TAP_SAGE_*`` variables."""
    config: dict[str, Any] = {}
    for prefix in ENV_PREFIXES:
        for key in CONNECTION_PROPERTIES:
            value = environ.get(prefix + key.upper())
            if value is None or value == "":
                continue
            config[key] = value
    return config


def load_config(sources: Sequence[str] | None, environ: Mapping[str, str]) -> dict[str, Any]:
    """Merge the ``--config`` sources (files or ``ENV``) in order."""
    merged: dict[str, Any] = {}
    for source in sources or ["ENV"]:
        if source == "ENV":
            merged.update(env_config(environ))
            continue
        path = Path(source).expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SageConfigError("--config", f"file {source!r} does not exist") from None
        except (OSError, ValueError) as exc:
            raise SageConfigError(
                "--config", f"cannot read {source!r} as JSON ({type(exc).__name__})"
            ) from None
        if not isinstance(data, dict):
            raise SageConfigError("--config", f"{source!r} is not a JSON object")
        merged.update(data)
    return merged


def _iso(epoch: Any) -> str | None:
    if not epoch:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(epoch)))


def _left(epoch: Any) -> str:
    if not epoch:
        return "unknown"
    seconds = float(epoch) - time.time()
    if seconds <= 0:
        return f"expired {_iso(epoch)}"
    if seconds < 3600:
        return f"{_iso(epoch)} (in {seconds:.0f}s)"
    return f"{_iso(epoch)} (in {seconds / 86400:.1f} days)"


def store_summary(data: Mapping[str, Any]) -> dict[str, Any]:
    """What the store says, without any token."""
    marker = data.get("in_flight")
    last = data.get("last_error") or None
    return {
        "client_id": data.get("client_id"),
        "has_access_token": bool(data.get("access_token")),
        "access_token_expires_at": _iso(data.get("access_token_expires_at")),
        "has_refresh_token": bool(data.get("refresh_token")),
        "refresh_token_expires_at": _iso(data.get("refresh_token_expires_at")),
        "last_refresh_at": _iso(data.get("refreshed_at")),
        "refreshes": int(data.get("refresh_count") or 0),
        "login_at": _iso(data.get("login_at")),
        "refresh_in_flight_since": _iso(marker.get("started_at"))
        if isinstance(marker, dict)
        else None,
        "last_error": {"code": last.get("code"), "message": last.get("message")}
        if isinstance(last, dict)
        else None,
        "scope": data.get("scope"),
    }


class _Failure(Exception):
    def __init__(
        self,
        code: str,
        message: str,
        fix: str = "",
        status: int = 1,
        payload: tuple[dict[str, Any], list[str]] | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.fix = fix
        self.status = status
        self.payload = payload
        super().__init__(message)


def _rotating(settings: ConnectionSettings) -> Any:
    from tap_sage.sage.auth import RotatingTokenSource
    from tap_sage.sage.client import SageClient

    if not settings.initiate_oauth.rotates:
        raise _Failure(
            "oauth_off",
            "initiate_oauth is OFF: this connection uses access_token as given and keeps no "
            "token store",
            "set initiate_oauth to REFRESH or GETANDREFRESH (with client_id and client_secret)",
        )
    client = SageClient.for_config(settings)
    tokens = client.tokens
    assert isinstance(tokens, RotatingTokenSource)
    return client, tokens


def _businesses(client: Any) -> list[dict[str, Any]]:
    from tap_sage.sage.connection_check import describe_business, detailed_businesses

    return [describe_business(b) for b in detailed_businesses(client)]


def _business_lines(businesses: list[dict[str, Any]]) -> list[str]:
    lines = [f"businesses reachable: {len(businesses)}"]
    for b in businesses:
        active = {True: "active", False: "INACTIVE", None: "subscription unknown"}[b["active"]]
        lines.append(
            f"  {b['name']} [{b['id']}] country {b['country'] or '?'}, "
            f"edition {b['edition'] or '?'} (subscription "
            f"{b.get('subscription_id') or b['subscription'] or 'none listed'}, {active})"
        )
    return lines


def cmd_url(settings: ConnectionSettings, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    from tap_sage.sage.login import start_authorization

    url = start_authorization(settings)
    result = {
        "authorization_url": url,
        "redirect_uri": settings.callback_url,
        "pending_in": settings.token_store_display,
    }
    return result, [
        url,
        "",
        "Open it, approve, then run `sage-auth exchange '<the address the browser was sent "
        "to>'` (or just its code) within 60 seconds of approving.",
    ]


def _after_grant(settings: ConnectionSettings, data: Mapping[str, Any], what: str) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    from tap_sage.sage.client import SageClient

    result: dict[str, Any] = {"connection_name": settings.connection_name, **store_summary(data)}
    lines = [
        f"{what}: connection {settings.connection_name!r} is authorised; tokens are in "
        f"{settings.token_store_display}",
        f"access token valid until {_left(data.get('access_token_expires_at'))}",
        f"refresh token valid until {_left(data.get('refresh_token_expires_at'))}",
    ]
    try:
        businesses = _businesses(SageClient.for_config(settings))
    except SageError as exc:
        lines.append(f"(could not list the businesses: {exc})")
    else:
        result["businesses"] = businesses
        lines += _business_lines(businesses)
    return result, lines


def cmd_login(settings: ConnectionSettings, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    from tap_sage.sage.auth import interactive
    from tap_sage.sage.client import SageClient
    from tap_sage.sage.login import run_login

    if not settings.initiate_oauth.rotates:
        _rotating(settings)
    client = SageClient.for_config(settings)
    data = run_login(
        settings,
        client.new_session,
        out=sys.stderr,
        open_browser=not args.no_browser and interactive(),
        timeout=args.timeout,
    )
    return _after_grant(settings, data, "Logged in")


def cmd_exchange(settings: ConnectionSettings, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    from tap_sage.sage.client import SageClient
    from tap_sage.sage.login import exchange

    if not settings.initiate_oauth.rotates:
        _rotating(settings)
    client = SageClient.for_config(settings)
    data = exchange(settings, client.new_session, args.code)
    return _after_grant(settings, data, "Exchanged")


def cmd_refresh(settings: ConnectionSettings, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    _client, tokens = _rotating(settings)
    data = tokens.refresh_now()
    result = {"connection_name": settings.connection_name, **store_summary(data)}
    return result, [
        f"Refreshed connection {settings.connection_name!r}.",
        f"access token valid until {_left(data.get('access_token_expires_at'))}",
        f"refresh token valid until {_left(data.get('refresh_token_expires_at'))}",
    ]


def cmd_status(settings: ConnectionSettings, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    from tap_sage.sage.client import SageClient

    result: dict[str, Any] = {
        "connection_name": settings.connection_name,
        "initiate_oauth": settings.initiate_oauth.value,
    }
    lines = [f"Connection {settings.connection_name!r} (initiate_oauth {settings.initiate_oauth})"]
    businesses: list[dict[str, Any]] | None = None
    failure: _Failure | None = None
    if not args.offline:  # first, so that the store shows any refresh this needed
        try:
            businesses = _businesses(SageClient.for_config(settings))
        except (SageAuthError, SageProxyError) as exc:
            failure = _Failure(getattr(exc, "code", "proxy"), getattr(exc, "message", str(exc)),
                               exc.fix)  # fmt: skip
    if settings.initiate_oauth.rotates:
        _client, tokens = _rotating(settings)
        store = tokens.store
        exists = store.exists()
        data = store.read() if exists else {}
        summary = store_summary(data)
        mode = oct(store.mode()) if exists and isinstance(store, TokenStore) else None
        result["token_store"] = store.location
        result["token_store_mode"] = mode
        result.update(summary)
        if not exists:
            protection = " (not created yet)"
        elif mode:
            protection = f" (mode {mode})"
        else:
            protection = f" (encrypted, key {data.get('key_id') or '?'})"
        lines += [
            f"token store: {store.location}{protection}",
            f"client id: {summary['client_id'] or '-'}",
            f"access token: valid until {_left(data.get('access_token_expires_at'))}"
            if summary["has_access_token"]
            else "access token: none",
            f"refresh token: valid until {_left(data.get('refresh_token_expires_at'))}"
            if summary["has_refresh_token"]
            else "refresh token: none"
            + (" (the config has one)" if settings.refresh_token else ""),
            f"refreshes so far: {summary['refreshes']} (last {summary['last_refresh_at'] or '-'})",
        ]
        if summary["refresh_in_flight_since"]:
            lines.append(
                f"WARNING: a refresh started {summary['refresh_in_flight_since']} did not finish"
            )
        if summary["last_error"]:
            lines.append(
                f"last error: {summary['last_error']['code']}: {summary['last_error']['message']}"
            )
    if businesses is not None:
        result["businesses"] = businesses
        lines += _business_lines(businesses)
    if failure is not None:
        result["error"] = {"code": failure.code, "message": failure.message, "fix": failure.fix}
        failure.payload = (result, lines)
        raise failure
    return result, lines


def cmd_test(settings: ConnectionSettings, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    from tap_sage.sage.connection_check import check

    report = check(settings, probe=args.probe, business_ids=args.business or None)
    result = report.to_dict()
    if not report.ok:
        err = report.error or {}
        raise _Failure(
            err.get("code", "test_failed"),
            err.get("message", "the connection test failed"),
            err.get("fix", ""),
            payload=(result, report.lines()),
        )
    return result, report.lines()


def cmd_revoke(settings: ConnectionSettings, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    _client, tokens = _rotating(settings)
    store = tokens.store
    with store.locked():
        data = store.read()
        token = data.get("refresh_token")
        if not token:
            raise _Failure(
                "nothing_to_revoke",
                f"the token store {store.location} holds no refresh token",
                "nothing to do; `sage-auth login` authorises the connection again",
            )
        status = tokens.oauth.revoke(str(token))
        if status >= 400:
            raise _Failure(
                "revoke_failed",
                f"Sage answered {status} to the revocation; the tokens are kept",
                "check client_id and client_secret, or remove the app's access in Sage",
            )
        for key in ("access_token", "refresh_token", "access_token_expires_at",
                    "refresh_token_expires_at", "in_flight", "pending_login"):  # fmt: skip
            data[key] = None
        data["revoked_at"] = time.time()
        store.write(data)
    return {"connection_name": settings.connection_name, "revoked": True}, [
        f"Revoked the tokens of connection {settings.connection_name!r} and removed them from "
        f"{store.location}. `sage-auth login` authorises it again."
    ]


#: What a move leaves in the store it leaves (besides ``moved_to``): who owns it, and which
#: config tokens were already applied, so that an old config pointing there never re-seeds it.
_KEPT_BY_A_MOVE = ("connection_name", "client_id", "created_at", "seed_fingerprint",
                   "seed_fingerprints", "access_seed_fingerprints", "refresh_count")  # fmt: skip


def _movable(
    settings: ConnectionSettings,
    source: Store,
    dest: Store,
    data: dict[str, Any],
    there: dict[str, Any],
    *,
    force: bool,
) -> str:
    """The refresh token to move, once the move is known to be safe (``_Failure`` else)."""
    token = data.get("refresh_token")
    if not token:
        moved = data.get("moved_to")
        raise _Failure(
            "nothing_to_move",
            f"the token store {source.location} holds no refresh token"
            + (f" (it was moved to {moved})" if moved else ""),
            f"set oauth_settings_location to {moved}" if moved else
            "authorise the connection first: `sage-auth login`",
        )  # fmt: skip
    check_owner(dest, there, settings)
    if there.get("refresh_token") and there["refresh_token"] != token and not force:
        raise _Failure(
            "store_conflict",
            f"{dest.location} already holds other tokens of connection "
            f"{settings.connection_name!r}; nothing was moved",
            "move to another location, or give --force to replace them (they are then "
            "lost; revoke them first with `sage-auth revoke` on a config pointing there)",
        )
    return str(token)


def cmd_move(settings: ConnectionSettings, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    """Copy the connection's tokens to another store, check them there, clear the source."""
    if not settings.initiate_oauth.rotates:
        _rotating(settings)
    try:
        dest_settings = settings.with_store(args.to)
    except SageConfigError as exc:
        raise SageConfigError("--to", exc.problem) from None
    source, dest = open_store(settings), open_store(dest_settings)
    if settings.token_store == dest_settings.token_store:
        raise _Failure(
            "same_store",
            f"the connection's token store already is {source.location}",
            "give --to another location",
        )
    with source.locked(), dest.locked():
        data, there = source.read(), dest.read()
        token = _movable(settings, source, dest, data, there, force=args.force)
        now = time.time()
        record = {k: v for k, v in data.items()
                  if k not in ("generation", "version", "key_id", "updated_at")}  # fmt: skip
        record.update(moved_from=settings.token_store_display, moved_at=now, moved_to=None)
        if there.get("generation"):
            record["generation"] = there["generation"]
        dest.write(record)
        if dest.read().get("refresh_token") != token:
            raise _Failure(
                "move_failed",
                f"{dest.location} does not hold the tokens after writing them; the source "
                f"{source.location} keeps them",
                "check the destination (its key, its permissions) and run the move again",
            )
        left: dict[str, Any] = {k: data[k] for k in _KEPT_BY_A_MOVE if k in data}
        left.update(generation=data.get("generation"), moved_to=dest_settings.token_store_display,
                    moved_at=now, access_token=None, refresh_token=None, in_flight=None,
                    pending_login=None, last_error=None)  # fmt: skip
        source.write(left)
    summary = store_summary(record)
    return {
        "connection_name": settings.connection_name,
        "moved_from": settings.token_store_display,
        "moved_to": dest_settings.token_store_display,
        **summary,
    }, [
        f"Moved the tokens of connection {settings.connection_name!r} from "
        f"{source.location} to {dest.location} (no token was spent).",
        f"Now set oauth_settings_location to {dest_settings.token_store_display} in every config "
        "of this connection; a run still pointing at the old store stops with `store_moved`.",
    ]


def cmd_keygen(settings: ConnectionSettings | None, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    """A new Fernet key for a database token store (on stdout, or in --out with mode 0600)."""
    try:
        from tap_sage.sage.token_store_db import new_key
    except ImportError:  # pragma: no cover - cryptography is in the postgres extra
        raise _Failure("missing_extra", "cryptography is not installed",
                       "pip install 'tap-sage[postgres]'") from None  # fmt: skip
    key = new_key()
    if args.out:
        path = Path(args.out).expanduser()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise _Failure("key_exists", f"{path} exists; it is not overwritten",
                           "give --out a new file name") from None  # fmt: skip
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(key + "\n")
        return {"key_file": str(path)}, [
            f"Wrote a new key to {path} (mode 0600). Set oauth_settings_key to file:{path} on "
            "every machine of the connection (copy the file there), and keep a copy safe: "
            "without it the tokens of the store cannot be read."
        ]
    return {"key": key}, [key]


COMMANDS = {
    "url": (
        cmd_url,
        "print the authorization URL (with state and PKCE S256) for a login done by hand",
        "Print the address to open in a browser to authorise this connection. Its state and "
        "PKCE verifier wait in the token store; after approving, give the address the browser "
        "was sent to (or its code) to `sage-auth exchange` within 60 seconds.",
    ),
    "login": (
        cmd_login,
        "authorise the connection: local callback server, browser, code exchange",
        "Start a local HTTP server on callback_url's host and port, show (and, at a terminal, "
        "open) the authorization URL, wait for the browser to come back, check state, exchange "
        "the code at once and store the tokens (mode 0600). callback_url must be an "
        "http://localhost:PORT/... redirect URI registered for your Sage app.",
    ),
    "exchange": (
        cmd_exchange,
        "exchange an authorization code given by hand (or the whole callback URL)",
        "Exchange CODE (e.g. GB/12abc..., as found in the callback address; or the whole "
        "address, whose state is then checked) for tokens and store them. Codes are "
        "single-use and expire 60 seconds after approval.",
    ),
    "refresh": (
        cmd_refresh,
        "refresh the access token now (rotating the refresh token)",
        "Refresh now, under the token store's lock, and store the new pair.",
    ),
    "status": (
        cmd_status,
        "token expiry times and the businesses reachable (never a token)",
        "Show the token store (path, mode, expiry of both tokens, refreshes, an unfinished "
        "refresh or the last error) and, unless --offline, the businesses the connection "
        "reaches with their country and subscription.",
    ),
    "test": (
        cmd_test,
        "connection test: credentials, businesses, resources each one can reach",
        "Check the credentials, list the businesses, and for each say which resources Sage "
        "offers in its country and edition and which of those the user's role can read "
        "(one GET items_per_page=1 each). Exits 1 when the connection cannot be used.",
    ),
    "move": (
        cmd_move,
        "move the connection's tokens to another store (file <-> database), spending none",
        "Copy the tokens of this connection from its token store (oauth_settings_location) to "
        "the store given by --to (a file path or a postgresql:// URL), under both stores' "
        "locks, without refreshing; check them there; then clear them from the old store, "
        "which keeps a note of where they went. Then point oauth_settings_location at the new "
        "store in every config of the connection.",
    ),
    "keygen": (
        cmd_keygen,
        "print a new encryption key for a database token store (oauth_settings_key)",
        "Print a new random Fernet key (or write it to --out FILE, mode 0600), for the "
        "oauth_settings_key of a database token store. Needs no config.",
    ),
    "revoke": (
        cmd_revoke,
        "revoke the refresh token at Sage and remove the tokens from the store",
        "Revoke the stored refresh token at Sage and clear the store's tokens. The "
        "connection then needs `sage-auth login` again.",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``sage-auth`` argument parser."""

    def common(suppress: bool) -> argparse.ArgumentParser:
        # The options work before and after the command; a subcommand's defaults must not
        # overwrite values given before it, hence SUPPRESS there.
        parent = argparse.ArgumentParser(add_help=False)
        dflt: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
        parent.add_argument(
            "--config",
            action="append",
            metavar="FILE|ENV",
            help="config JSON file, or ENV for TAP_SAGE_*/TARGET_SAGE_* variables (repeatable)",
            **dflt,
        )
        parent.add_argument(
            "--json",
            action="store_true",
            help="print one JSON object on stdout",
            default=argparse.SUPPRESS if suppress else False,
        )
        parent.add_argument(
            "--log-level",
            type=str.lower,  # any case: DEBUG, Info, ...
            choices=["debug", "info", "warning", "error"],
            help="log level on stderr (default warning); no level ever logs a token",
            default=argparse.SUPPRESS if suppress else "warning",
        )
        return parent

    parser = argparse.ArgumentParser(
        prog="sage-auth",
        description="OAuth procedures and connection test of a Sage Business Cloud Accounting "
        "connection of tap-sage / target-sage.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common(False)],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_func, summary, description) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=description, parents=[common(True)])
        if name == "login":
            p.add_argument(
                "--no-browser", action="store_true", help="do not open a browser; just print"
            )
            p.add_argument(
                "--timeout",
                type=float,
                default=None,
                help="seconds to wait for the browser (default advanced_config.login_timeout)",
            )
        elif name == "exchange":
            p.add_argument("code", metavar="CODE", help="the code, or the whole callback URL")
        elif name == "move":
            p.add_argument(
                "--to",
                required=True,
                metavar="LOCATION",
                help="the new token store: a file path or a postgresql:// URL",
            )
            p.add_argument("--force", action="store_true", help="replace other tokens held there")
        elif name == "keygen":
            p.add_argument("--out", metavar="FILE", help="write the key to FILE (mode 0600)")
        elif name == "status":
            p.add_argument("--offline", action="store_true", help="do not list the businesses")
        elif name == "test":
            p.add_argument(
                "--probe",
                choices=["all", "sample", "none"],
                default="all",
                help="probe every documented resource (default), a sample, or none",
            )
            p.add_argument(
                "--business",
                action="append",
                metavar="ID",
                help="check only this business (repeatable)",
            )
    return parser


def _emit(as_json: bool, ok: bool, result: dict[str, Any], lines: list[str]) -> None:
    if as_json:
        sys.stdout.write(json.dumps({"ok": ok, **result}, indent=2, default=str) + "\n")
    else:
        sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sage-auth``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func = COMMANDS[args.command][0]
    try:
        if args.command == "keygen":
            result, lines = cmd_keygen(None, args)
        else:
            config = load_config(args.config, os.environ)
            settings = ConnectionSettings.from_config(config)
            result, lines = func(settings, args)
    except SageConfigError as exc:
        return _fail(args.json, "config", str(exc), "correct the setting named above", 2)
    except _Failure as exc:
        if exc.payload is not None:
            result, lines = exc.payload
            _emit(args.json, False, result, lines)
            if args.json:
                return exc.status
        return _fail(args.json, exc.code, exc.message, exc.fix, exc.status, printed=exc.payload is not None)  # fmt: skip
    except SageAuthError as exc:
        return _fail(args.json, exc.code, exc.message, exc.fix, 1)
    except SageProxyError as exc:
        return _fail(args.json, "proxy", f"The proxy {exc.proxy} {exc.problem}", exc.fix, 1)
    except SageError as exc:
        return _fail(args.json, "error", str(exc), getattr(exc, "fix", ""), 1)
    except KeyboardInterrupt:
        return _fail(args.json, "interrupted", "interrupted", "", 130)
    _emit(args.json, True, result, lines)
    return 0


def _fail(as_json: bool, code: str, message: str, fix: str, status: int, *, printed: bool = False) -> int:  # fmt: skip
    if as_json and not printed:
        payload = {"ok": False, "error": {"code": code, "message": message, "fix": fix}}
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    sys.stderr.write(f"sage-auth: {message} ({code})\n")
    if fix:
        sys.stderr.write(f"Fix: {fix}\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
