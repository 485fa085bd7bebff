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

    if settings.initiate_oauth == "OFF":
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
        "pending_in": str(settings.oauth_settings_location),
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
        f"{settings.oauth_settings_location}",
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

    if settings.initiate_oauth == "OFF":
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

    if settings.initiate_oauth == "OFF":
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
        "initiate_oauth": settings.initiate_oauth,
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
    if settings.initiate_oauth != "OFF":
        _client, tokens = _rotating(settings)
        store = tokens.store
        data = store.read() if store.exists() else {}
        summary = store_summary(data)
        result["token_store"] = str(store.path)
        result["token_store_mode"] = oct(store.mode()) if store.exists() else None
        result.update(summary)
        lines += [
            f"token store: {store.path}"
            + (f" (mode {oct(store.mode())})" if store.exists() else " (not created yet)"),
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
                f"the token store {store.path} holds no refresh token",
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
        f"{store.path}. `sage-auth login` authorises it again."
    ]


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
