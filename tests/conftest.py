"""Shared fixtures: a seeded sandbox database and sandbox servers over real HTTP.

Stable fixtures (other test modules rely on these names and shapes):

``seeded_db`` (session)
    Path of a database seeded once per session: 2 businesses (GB Accounting Plus, US
    Accounting Start), scale 1, seed 1. Never write to it: copy it (``sandbox_db``).
``sandbox_db`` (function)
    A private copy of ``seeded_db`` in ``tmp_path``, free to write.
``sandbox`` (function)
    A started ``tap_sage.sandbox.runner.SandboxProcess`` on its own copy of the seeded db
    (default knobs: no latency, no faults, token TTL 300 s). Stopped at teardown.
``sandbox_factory`` (function)
    ``sandbox_factory(db=None, **knobs) -> SandboxProcess``: start more sandboxes with other
    knobs (``latency_ms``, ``fault_rate``, ``token_ttl``, ``extra_args``); ``db`` defaults to
    a fresh copy of the seeded db. Every one is stopped at teardown.
``connection_config`` (function)
    The connection settings the tap and the target accept, in REFRESH mode with a fresh grant
    on ``sandbox``: ``{"connection_name", "initiate_oauth": "REFRESH", "client_id",
    "client_secret", "access_token", "refresh_token", "oauth_settings_location",
    "advanced_config": {"api_url", "token_url", "authorize_url", "revoke_url"}}``.
``pg_server`` (session)
    A private PostgreSQL server (``scripts/pgserver.py``'s ``PostgresServer``), started on first
    use on a free port of 127.0.0.1, stopped and removed at the end of the session. ``.url`` is
    its SQLAlchemy URL (``postgresql+psycopg://postgres@127.0.0.1:PORT/postgres``, no password);
    ``.create_database(name)`` gives a test its own database and returns that one's URL. A test
    that takes a server away (``.stop()``, then ``.start()``: same port, same data) makes its own
    with ``PostgresServer.create()`` and ``.close()``s it, as tests/test_pgserver.py does.
``pg_database`` (function)
    The SQLAlchemy URL of a new, empty database on ``pg_server``, for this test alone.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.pgserver import PostgresServer
from tap_sage.sandbox.runner import SandboxProcess, seed_db


def _copy_db(source: Path, target: Path) -> Path:
    shutil.copyfile(source, target)
    return target


@pytest.fixture(scope="session")
def seeded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database seeded once per session (2 businesses, scale 1, seed 1). Read-only."""
    db = tmp_path_factory.mktemp("sandbox-seed") / "seeded.db"
    seed_db(db, businesses=2, scale=1, seed=1)
    return db


@pytest.fixture
def sandbox_db(seeded_db: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the seeded database."""
    return _copy_db(seeded_db, tmp_path / "sandbox.db")


@pytest.fixture
def sandbox_factory(seeded_db: Path, tmp_path: Path) -> Iterator[Callable[..., SandboxProcess]]:
    """Start sandboxes with any knobs; all are stopped at teardown."""
    started: list[SandboxProcess] = []

    def start(db: Path | None = None, **knobs: Any) -> SandboxProcess:
        if db is None:
            db = _copy_db(seeded_db, tmp_path / f"sandbox-{len(started) + 1}.db")
        process = SandboxProcess(db, **knobs)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def sandbox(sandbox_db: Path) -> Iterator[SandboxProcess]:
    """A started sandbox on its own copy of the seeded database."""
    with SandboxProcess(sandbox_db) as process:
        yield process


@pytest.fixture
def connection_config(sandbox: SandboxProcess, tmp_path: Path) -> dict[str, Any]:
    """The tap/target connection config (REFRESH mode) for ``sandbox`` with a fresh grant."""
    granted = sandbox.grant()
    return {
        "connection_name": "test",
        "initiate_oauth": "REFRESH",
        "client_id": granted["client_id"],
        "client_secret": granted["client_secret"],
        "access_token": granted["access_token"],
        "refresh_token": granted["refresh_token"],
        "oauth_settings_location": str(tmp_path / "tokens.json"),
        "advanced_config": {
            "api_url": sandbox.api_url,
            "token_url": sandbox.token_url,
            "authorize_url": sandbox.authorize_url,
            "revoke_url": sandbox.revoke_url,
        },
    }


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL server for the session (installed first when missing)."""
    server = PostgresServer.create()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_database(pg_server: PostgresServer) -> str:
    """The URL of a new, empty database on ``pg_server`` for this test."""
    name = "t_" + uuid.uuid4().hex[:12]
    return pg_server.create_database(name)
