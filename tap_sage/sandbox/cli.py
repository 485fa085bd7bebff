"""``sage-sandbox``: serve, seed and grant (see ``tap_sage/sandbox/__init__.py``)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tap_sage.sandbox import oauth, store
from tap_sage.sandbox.seed import DEFAULT_CLIENT_ID, seed
from tap_sage.sandbox.settings import ALL_FAULT_KINDS, FAULT_KINDS, PAGING_MODES, Settings

DEFAULT_DB = "./sage-sandbox.db"
#: What ``serve`` says when the web toolkit is missing (seed and grant need none).
MISSING_EXTRA = (
    "sage-sandbox serve: the sandbox's web toolkit (Werkzeug) is not installed. It comes with "
    "the sandbox extra: pip install 'tap-sage[sandbox]' (in this repository, `make venv` "
    "installs it)."
)


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in ALL_FAULT_KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"choose among {','.join(ALL_FAULT_KINDS)}")
    return kinds


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sage-sandbox``."""
    parser = argparse.ArgumentParser(
        prog="sage-sandbox",
        description="A local HTTP server that behaves like the Sage Accounting v3.1 API.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub.add_parser("serve", help="serve /v3.1 and /oauth over HTTP"))
    _add_seed(sub.add_parser("seed", help="reset the database and fill it with data"))
    _add_grant(sub.add_parser("grant", help="print a fresh token grant as one JSON object"))
    return parser


def _add_serve(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, default=8080, help="port (default 8080; 0 picks a free port)"
    )
    serve.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file (default {DEFAULT_DB})")
    serve.add_argument(
        "--latency-ms",
        type=int,
        default=0,
        help="milliseconds from a request's arrival to its answer, the sandbox's own work "
        "included (it sleeps what is left after handling, never less than 0; a 429 of "
        "--max-concurrent answers at once; default 0)",
    )
    _add_fault_flags(serve)
    serve.add_argument(
        "--token-ttl",
        type=int,
        default=oauth.DEFAULT_TOKEN_TTL,
        help="access token lifetime in seconds (default 300)",
    )
    serve.add_argument(
        "--max-concurrent",
        type=int,
        default=150,
        help="concurrent /v3.1 requests above which the server answers 429 with "
        "Retry-After: 1, as Sage does per app (default 150; 0 = no limit)",
    )
    serve.add_argument(
        "--idempotency-ttl",
        type=float,
        default=0.0,
        help="seconds an idempotency_id is remembered (default: 7 days, as Sage's guide says)",
    )
    serve.add_argument("--quiet", action="store_true", help="do not log request lines")
    serve.add_argument(
        "--paging",
        choices=PAGING_MODES,
        default="seek",
        help="seek (default): a list page seeks from where the pages before it ended while no "
        "write came since, in time independent of the page number; offset: LIMIT/OFFSET every "
        "time (the same answers)",
    )
    serve.add_argument(
        "--log-paging", action="store_true", help="log how each list page was read (seek/offset)"
    )
    serve.add_argument(
        "--log-connections",
        action="store_true",
        help="log a line for each new client connection (connections are kept alive)",
    )


def _add_fault_flags(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--fault-rate",
        type=_rate,
        default=0.0,
        help="share of /v3.1 requests answered with a fault (default 0)",
    )
    serve.add_argument(
        "--oauth-fault-rate",
        type=_rate,
        default=0.0,
        help="share of /oauth requests answered with a fault (default 0)",
    )
    serve.add_argument(
        "--fault-seed",
        type=int,
        default=None,
        help="seed of the fault dice, for repeatable fault sequences",
    )
    serve.add_argument(
        "--fault-kinds",
        type=_kinds,
        default=FAULT_KINDS,
        help="comma-separated faults to draw from: 500 (answered before any work), 503, "
        "429 (with Retry-After: 1), drop (socket closed, no answer), commit500 (a write is "
        "committed, then answered 500), commitdrop (committed, then dropped), html (an HTML "
        "error page, not JSON, with 502/503/504/520-525), 429bare (429 without Retry-After), "
        "cutbody (served in full, then the connection closes halfway through the body); "
        f"default: {','.join(FAULT_KINDS)}",
    )
    serve.add_argument(
        "--heavy-page-size",
        type=int,
        default=0,
        help="heavy pages: a GET with attributes=all asking for more items per page than this "
        "fails with 500 or an HTML 504 (default 0: never)",
    )
    serve.add_argument(
        "--heavy-fault-rate",
        type=float,
        default=1.0,
        help="share of heavy pages that fail (default 1: every one)",
    )


def _add_seed(seed_cmd: argparse.ArgumentParser) -> None:
    seed_cmd.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file (default {DEFAULT_DB})")
    seed_cmd.add_argument(
        "--businesses",
        type=int,
        default=2,
        help="number of businesses (default 2: GB Plus, US Start; then IE "
        "Standard, CA Plus, ES Plus, FR Start, DE Plus)",
    )
    seed_cmd.add_argument(
        "--scale", type=int, default=1, help="volume multiplier (default 1: a small business)"
    )
    seed_cmd.add_argument(
        "--seed",
        type=int,
        default=1,
        help="random seed; same arguments give the same data (default 1)",
    )


def _add_grant(grant: argparse.ArgumentParser) -> None:
    grant.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file (default {DEFAULT_DB})")
    grant.add_argument(
        "--client-id",
        default=DEFAULT_CLIENT_ID,
        help=f"OAuth client (default {DEFAULT_CLIENT_ID}; registered with a "
        "fresh secret if unknown)",
    )
    grant.add_argument(
        "--scope",
        choices=oauth.SCOPES,
        default="full_access",
        help="scope of the grant (default full_access)",
    )
    grant.add_argument(
        "--business-ids",
        default=None,
        help="comma-separated business ids the grant reaches (default all)",
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server until interrupted."""
    try:
        from tap_sage.sandbox import server as server_module
        from tap_sage.sandbox.app import SandboxApp
    except ImportError as exc:
        if exc.name is None or exc.name.split(".")[0] != "werkzeug":
            raise
        print(MISSING_EXTRA, file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    settings = Settings(
        db=Path(args.db),
        latency_ms=args.latency_ms,
        fault_rate=args.fault_rate,
        oauth_fault_rate=args.oauth_fault_rate,
        fault_seed=args.fault_seed,
        fault_kinds=args.fault_kinds,
        heavy_page_size=args.heavy_page_size,
        heavy_fault_rate=args.heavy_fault_rate,
        token_ttl=args.token_ttl,
        max_concurrent=args.max_concurrent,
        idempotency_ttl=args.idempotency_ttl,
        paging=args.paging,
        log_paging=args.log_paging,
        started_at=time.time(),
    )
    app = SandboxApp(settings)
    handler = server_module.SilentHandler if args.quiet else server_module.QuietHandler
    server = server_module.serve(
        args.host, args.port, app, handler, log_connections=args.log_connections
    )

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM stops cleanly too: closing the connections checkpoints the WAL into the file,
    # so the database can be copied as one file once the server is gone.
    signal.signal(signal.SIGTERM, _stop)
    host = args.host if ":" not in args.host else f"[{args.host}]"
    print(f"sage-sandbox listening on http://{host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.pool.close()
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    """Reset and seed the database."""
    started = time.monotonic()
    counts = seed(Path(args.db), businesses=args.businesses, scale=args.scale, seed=args.seed)
    elapsed = time.monotonic() - started
    print(
        f"seeded {args.db}: {sum(counts.values())} records in {len(counts)} resources, "
        f"{args.businesses} businesses, scale {args.scale}, seed {args.seed} ({elapsed:.1f} s)",
        flush=True,
    )
    return 0


def issue_grant(
    db: Path,
    *,
    client_id: str = DEFAULT_CLIENT_ID,
    scope: str = "full_access",
    business_ids: Sequence[str] | None = None,
) -> dict[str, object]:
    """A fresh grant straight from the database (no server needed)."""
    conn = store.connect(db)
    try:
        store.create_schema(conn)
        with store.transaction(conn):
            if business_ids is not None:
                known = {r[0] for r in conn.execute("SELECT id FROM businesses")}
                unknown = [b for b in business_ids if b not in known]
                if unknown:
                    raise ValueError(f"unknown business ids: {', '.join(unknown)}")
            secret = oauth.ensure_client(conn, client_id)
            body = oauth.issue_tokens(
                conn,
                client_id=client_id,
                scope=scope,
                business_ids=None if business_ids is None else tuple(business_ids),
                ttl=None,
            )
    finally:
        conn.close()
    return {
        "access_token": body["access_token"],
        "refresh_token": body["refresh_token"],
        "expires_in": body["expires_in"],
        "client_id": client_id,
        "client_secret": secret,
        "token_type": body["token_type"],
        "scope": scope,
    }


def cmd_grant(args: argparse.Namespace) -> int:
    """Print one JSON grant."""
    ids = None
    if args.business_ids:
        ids = [b.strip() for b in args.business_ids.split(",") if b.strip()]
    try:
        grant = issue_grant(
            Path(args.db), client_id=args.client_id, scope=args.scope, business_ids=ids
        )
    except ValueError as exc:
        print(f"sage-sandbox grant: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(grant), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sage-sandbox``."""
    args = build_parser().parse_args(argv)
    commands = {"serve": cmd_serve, "seed": cmd_seed, "grant": cmd_grant}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
