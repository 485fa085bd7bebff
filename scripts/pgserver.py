#!/usr/bin/env python3
"""A private, throw-away PostgreSQL server for the tests and the demos (standard library only).

The server is the distribution's PostgreSQL (Debian/Ubuntu package ``postgresql``): its binaries
are looked for in ``$PGSERVER_BINDIR``, then ``/usr/lib/postgresql/<version>/bin`` (newest
first), then ``initdb`` on the PATH. When none is found and we are root with ``apt-get`` (CI, a
fresh container), ``apt-get install -y postgresql`` installs it (``postgresql-common`` first, with
``create_main_cluster = false``, so that the package creates and starts no cluster of its own);
elsewhere the error says what to install.
PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user that the
package creates (or ``pgserver``, created here, where the binaries came from somewhere else).

Each server has its own data directory in a fresh temporary folder (``/tmp/sage-pg-*``, where
the server's user can reach it), listens on 127.0.0.1 only, on a free port, with no Unix
socket, trusts local connections (superuser ``postgres``, no password) and turns off fsync
(test data, not kept). Stopping it keeps the data (``start`` again reuses data and port);
``close`` / ``stop --remove`` removes everything.

Command line (the state lives in ``DIR/server.json``; default ``DIR``: ``.pgserver``)::

    python scripts/pgserver.py install          # make sure the binaries are there
    python scripts/pgserver.py start [--dir DIR] [--port N]   # prints the SQLAlchemy URL
    python scripts/pgserver.py url [--dir DIR]
    python scripts/pgserver.py createdb NAME [--dir DIR]      # prints the new database's URL
    python scripts/pgserver.py stop [--dir DIR] [--remove]

From Python (tests/conftest.py's session fixture ``pg_server`` does this)::

    server = PostgresServer.create()   # starts it
    server.url                         # postgresql+psycopg://postgres@127.0.0.1:PORT/postgres
    server.create_database("x")        # -> URL of a new, empty database
    server.stop(); server.start()      # same data, same port
    server.close()                     # stopped and removed
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DRIVER = "postgresql+psycopg"
SUPERUSER = "postgres"
DEFAULT_DIR = Path(".pgserver")
START_TIMEOUT = 60
# Settings for a disposable test server: durability off, small, local only.
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "shared_buffers": "32MB",
}


class PgServerError(RuntimeError):
    """The server cannot be installed, started or stopped; the message says why and what to do."""


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", path.parent.name) or ["0"])


def find_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or None when there is none."""
    wanted = os.environ.get("PGSERVER_BINDIR")
    if wanted:
        bindir = Path(wanted)
        if not (bindir / "initdb").exists():
            raise PgServerError(f"PGSERVER_BINDIR={wanted} has no initdb")
        return bindir
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version_key)
    candidates = [p.parent for p in reversed(versions)]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if all((bindir / name).exists() for name in ("initdb", "pg_ctl", "postgres", "psql")):
            return bindir
    return None


def install() -> Path:
    """The binaries, installed from the distribution's package when they are missing."""
    bindir = find_bindir()
    if bindir is not None:
        return bindir
    apt = shutil.which("apt-get")
    if os.geteuid() != 0 or apt is None:
        raise PgServerError(
            "PostgreSQL's server binaries (initdb, pg_ctl, postgres) were not found. Install "
            "them (Debian/Ubuntu: `sudo apt-get install -y postgresql`; elsewhere your system's "
            "PostgreSQL server package) or set PGSERVER_BINDIR to the directory that holds them."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def apt_install(package: str) -> None:
        command = [apt, "install", "-y", "--no-install-recommends", package]
        print("pgserver: installing PostgreSQL: " + " ".join(command[1:]), file=sys.stderr)
        if subprocess.run(command, env=env, check=False).returncode != 0:
            subprocess.run([apt, "update"], env=env, check=True)  # a fresh machine: no lists yet
            subprocess.run(command, env=env, check=True)

    # As the official postgres container image does: no "main" cluster (the package would
    # create one, and start it where services may start); our servers are private.
    apt_install("postgresql-common")
    conf = Path("/etc/postgresql-common/createcluster.conf")
    if conf.exists():
        text = re.sub(
            r"(?m)^#?\s*create_main_cluster\s*=.*$", "create_main_cluster = false", conf.read_text()
        )
        conf.write_text(text)
    apt_install("postgresql")
    bindir = find_bindir()
    if bindir is None:
        raise PgServerError("apt-get installed postgresql, yet initdb is still not found")
    return bindir


def server_user() -> str | None:
    """The unprivileged user the server runs as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in (SUPERUSER, "pgserver"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "pgserver"],
        check=True,
    )
    return "pgserver"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie waiting to be reaped does not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def _reachable_by_all(path: Path) -> bool:
    """Whether every user may pass through ``path`` and each folder above it."""
    return all(os.stat(p).st_mode & 0o001 for p in [path, *path.resolve().parents])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """One private server: its data folder, port and user. See the module's docstring."""

    def __init__(self, base: Path, port: int, bindir: Path, user: str | None) -> None:
        self.base = base
        self.port = port
        self.bindir = bindir
        self.user = user

    # -- life cycle -------------------------------------------------------------------------
    @classmethod
    def create(cls, port: int | None = None, start: bool = True) -> PostgresServer:
        """A new server in a new temporary folder, initialised and (by default) started."""
        bindir = install()
        user = server_user()
        parent = tempfile.gettempdir()
        if user is not None and not _reachable_by_all(Path(parent)):
            # the server's user must reach its folder, which a private TMPDIR may not let it do
            parent = "/tmp"  # noqa: S108 (mkdtemp: a new folder of mode 0700)
        base = Path(tempfile.mkdtemp(prefix="sage-pg-", dir=parent))
        server = cls(base, port or free_port(), bindir, user)
        try:
            if user is not None:
                entry = pwd.getpwnam(user)
                os.chown(base, entry.pw_uid, entry.pw_gid)
            server._run(
                [
                    str(bindir / "initdb"),
                    "--pgdata",
                    str(server.data),
                    "--username",
                    SUPERUSER,
                    "--auth",
                    "trust",
                    "--encoding",
                    "UTF8",
                    "--locale",
                    "C",
                    "--no-sync",
                ],
            )
            for attempt in range(3 if start else 0):
                try:
                    server.start()
                    break
                except PgServerError:
                    # the free port was taken between our look and the server's bind: another
                    if (
                        port is not None
                        or attempt == 2
                        or "already in use" not in server.log_tail()
                    ):
                        raise
                    server.port = free_port()
        except BaseException:
            server.close()
            raise
        return server

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    def is_running(self) -> bool:
        ctl = self._run([str(self.bindir / "pg_ctl"), "status", "--pgdata", str(self.data)])
        return ctl.returncode == 0

    def start(self) -> PostgresServer:
        """Start (or restart) on the same data and port; waits until it takes connections."""
        if self.is_running():
            return self
        options = " ".join(
            f"-c {k}={v!r}" if v == "" else f"-c {k}={v}" for k, v in SERVER_SETTINGS.items()
        )
        started = self._run(
            [
                str(self.bindir / "pg_ctl"),
                "start",
                "--pgdata",
                str(self.data),
                "--log",
                str(self.log),
                "--wait",
                "--timeout",
                str(START_TIMEOUT),
                "--options",
                f"-p {self.port} {options}",
            ],
        )
        if started.returncode != 0:
            raise PgServerError(
                f"PostgreSQL did not start on 127.0.0.1:{self.port} ({started.stdout.strip()} "
                f"{started.stderr.strip()}); its log, {self.log}, ends with:\n{self.log_tail()}"
            )
        deadline = time.monotonic() + START_TIMEOUT
        while self.psql("SELECT 1").returncode != 0:
            if time.monotonic() > deadline:
                raise PgServerError(f"PostgreSQL takes no connections; log:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Stop the server (fast shutdown) and wait until its process is gone; its data stays
        for a later ``start``."""
        pid = self.postmaster_pid()
        if self.data.exists() and self.is_running():
            self._run(
                [
                    str(self.bindir / "pg_ctl"),
                    "stop",
                    "--pgdata",
                    str(self.data),
                    "--mode",
                    "fast",
                    "--wait",
                ]
            )
        deadline = time.monotonic() + START_TIMEOUT
        while pid is not None and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        """Stop the server and remove its folder: nothing is left behind."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- use ----------------------------------------------------------------------------------
    def url_for(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of ``database`` (psycopg 3 driver)."""
        return f"{DRIVER}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for()

    def psql(self, sql: str, database: str = "postgres") -> subprocess.CompletedProcess[str]:
        """Run ``sql`` with the server's own psql (no Python driver needed)."""
        return self._run(
            [
                str(self.bindir / "psql"),
                "--no-psqlrc",
                "--quiet",
                "--tuples-only",
                "--no-align",
                "--set",
                "ON_ERROR_STOP=1",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--username",
                SUPERUSER,
                "--dbname",
                database,
                "--command",
                sql,
            ],
        )

    def create_database(self, name: str) -> str:
        """A new, empty database ``name`` (letters, digits, ``_``); returns its URL."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise PgServerError(f"database name {name!r}: use lower-case letters, digits and _")
        created = self.psql(f"CREATE DATABASE {name}")
        if created.returncode != 0:
            raise PgServerError(f"CREATE DATABASE {name} failed: {created.stderr.strip()}")
        return self.url_for(name)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- state file (the command line) --------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "base": str(self.base),
            "port": self.port,
            "bindir": str(self.bindir),
            "user": self.user,
            "url": self.url,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PostgresServer:
        return cls(Path(data["base"]), int(data["port"]), Path(data["bindir"]), data["user"])

    def _run(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return subprocess.run(
            command,
            cwd=self.base,
            env=env,
            user=self.user,
            group=pwd.getpwnam(self.user).pw_gid if self.user else None,
            extra_groups=[] if self.user else None,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT + 30,
            check=False,
        )


def _state_file(directory: Path) -> Path:
    return directory / "server.json"


def _load(directory: Path) -> PostgresServer | None:
    try:
        data = json.loads(_state_file(directory).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    server = PostgresServer.from_json(data)
    return server if server.data.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pgserver", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="install PostgreSQL's server binaries if they are missing")
    for name, text in (
        ("start", "start a server (or the stopped one of DIR); prints its URL"),
        ("url", "print the URL of DIR's server"),
        ("stop", "stop DIR's server"),
        ("createdb", "create a database; prints its URL"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument(
            "--dir", type=Path, default=DEFAULT_DIR, help="state folder (default .pgserver)"
        )
        if name == "start":
            cmd.add_argument("--port", type=int, default=None)
        if name == "stop":
            cmd.add_argument("--remove", action="store_true", help="also remove its data")
        if name == "createdb":
            cmd.add_argument("name")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            print(install())
            return 0
        server = _load(args.dir)
        if args.command == "start":
            if server is None:
                server = PostgresServer.create(port=args.port)
            else:
                server.start()
            args.dir.mkdir(parents=True, exist_ok=True)
            _state_file(args.dir).write_text(
                json.dumps(server.to_json(), indent=2), encoding="utf-8"
            )
            print(server.url)
            return 0
        if server is None:
            print(f"pgserver: no server in {args.dir} (run `start` first)", file=sys.stderr)
            return 1
        if args.command == "url":
            print(server.url)
        elif args.command == "createdb":
            print(server.create_database(args.name))
        elif args.command == "stop":
            if args.remove:
                server.close()
                _state_file(args.dir).unlink(missing_ok=True)
            else:
                server.stop()
        return 0
    except PgServerError as exc:
        print(f"pgserver: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
