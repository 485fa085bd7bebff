"""The test PostgreSQL server (scripts/pgserver.py): what later tests and the demos rely on."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from scripts.pgserver import PostgresServer, _alive

ROOT = Path(__file__).resolve().parent.parent


def _owner_uid(server: PostgresServer) -> int:
    pid = server.postmaster_pid()
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def test_the_session_server_takes_sqlalchemy_urls(pg_server: PostgresServer, pg_database: str) -> None:  # fmt: skip
    assert pg_server.url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    engine = sa.create_engine(pg_database)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (amount numeric)"))
            conn.execute(sa.text("INSERT INTO t VALUES ('-430035.84')"))
            assert conn.execute(sa.text("SELECT amount::text FROM t")).scalar_one() == "-430035.84"
            assert conn.execute(sa.text("SHOW listen_addresses")).scalar_one() == "127.0.0.1"
            assert conn.execute(sa.text("SHOW server_encoding")).scalar_one() == "UTF8"
    finally:
        engine.dispose()
    # PostgreSQL refuses root; as root the server runs as an unprivileged user
    assert _owner_uid(pg_server) != 0


def test_stop_and_start_keep_data_and_port_and_close_leaves_nothing() -> None:
    server = PostgresServer.create()
    try:
        url = server.create_database("kept")
        assert (
            server.psql("CREATE TABLE x (n int); INSERT INTO x VALUES (7)", "kept").returncode == 0
        )
        port, base = server.port, server.base
        server.stop()
        assert not server.is_running()
        assert server.psql("SELECT 1").returncode != 0  # gone, as a database that goes away
        server.start()
        assert (server.port, server.url_for("kept")) == (port, url)
        assert server.psql("SELECT n FROM x", "kept").stdout.strip() == "7"
        pid = server.postmaster_pid()
        assert pid
    finally:
        server.close()
    assert not base.exists()
    assert not _alive(pid)


def test_the_command_line_starts_reports_and_removes(tmp_path: Path) -> None:
    state = tmp_path / "pg"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "pgserver.py"), *args, "--dir", str(state)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    started = cli("start")
    assert started.returncode == 0, started.stderr
    try:
        url = started.stdout.strip()
        assert cli("url").stdout.strip() == url
        assert cli("createdb", "demo").stdout.strip() == url.rsplit("/", 1)[0] + "/demo"
        base = Path(json.loads((state / "server.json").read_text())["base"])
        assert base.exists()
    finally:
        removed = cli("stop", "--remove")
    assert removed.returncode == 0, removed.stderr
    assert not base.exists()
    assert not (state / "server.json").exists()
    again = cli("url")
    assert again.returncode == 1
    assert "run `start` first" in again.stderr


def test_missing_binaries_are_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "PGSERVER_BINDIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "pgserver.py"), "install"],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert proc.returncode == 1
    assert f"PGSERVER_BINDIR={tmp_path} has no initdb" in proc.stderr


def test_a_port_taken_meanwhile_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    import scripts.pgserver as pgserver

    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = iter([taken.getsockname()[1]])
    real = pgserver.free_port
    monkeypatch.setattr(pgserver, "free_port", lambda: next(ports, None) or real())
    try:
        server = PostgresServer.create()
        try:
            assert server.port != taken.getsockname()[1]
            assert server.psql("SELECT 1").returncode == 0
        finally:
            server.close()
    finally:
        taken.close()
