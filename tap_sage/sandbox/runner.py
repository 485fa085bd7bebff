"""Run the sandbox from Python: the process runner shared by tests, the demo and benchmarks.

Stable interface (other parts of the project depend on these names and shapes)::

    from tap_sage.sandbox.runner import SandboxProcess, seed_db, grant

    seed_db(db, businesses=2, scale=1, seed=1)          # reset + seed the SQLite file
    with SandboxProcess(db, latency_ms=0, fault_rate=0.0, token_ttl=300) as sandbox:
        sandbox.url            # "http://127.0.0.1:PORT"
        sandbox.api_url        # sandbox.url + "/v3.1"
        sandbox.token_url      # sandbox.url + "/oauth/token"
        sandbox.authorize_url  # sandbox.url + "/oauth/authorize"
        sandbox.revoke_url     # sandbox.url + "/oauth/revoke"
        sandbox.db             # the Path
        sandbox.grant()        # {"access_token", "refresh_token", "expires_in", "client_id",
                               #  "client_secret", "token_type", "scope"}

``SandboxProcess`` runs ``python -m tap_sage.sandbox.cli serve --port 0 ...`` as a child
process, waits for its ready line and reads the port from it. The server's log (request lines,
never secrets) goes to ``<db>.log`` beside the database (``.log_path``). ``extra_args`` are
appended to the ``serve`` command line (e.g. ``["--fault-seed", "3", "--quiet"]``).
``.stop()`` sends SIGTERM: the server checkpoints its WAL, so the stopped database is one
self-contained file that can be copied.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from tap_sage.sandbox.cli import issue_grant
from tap_sage.sandbox.seed import DEFAULT_CLIENT_ID, seed

READY = re.compile(r"sage-sandbox listening on (http://\S+)")
START_TIMEOUT = 30.0


def seed_db(db: Path, *, businesses: int = 2, scale: int = 1, seed: int = 1) -> None:
    """Reset ``db`` and seed it (same arguments, same data)."""
    _seed(Path(db), businesses=businesses, scale=scale, seed=seed)


_seed = seed


def grant(
    db: Path,
    *,
    client_id: str = DEFAULT_CLIENT_ID,
    scope: str = "full_access",
    business_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A fresh grant, exactly as ``sage-sandbox grant`` prints it."""
    return dict(issue_grant(Path(db), client_id=client_id, scope=scope, business_ids=business_ids))


class SandboxProcess:
    """A ``sage-sandbox serve`` child process (a context manager)."""

    def __init__(
        self,
        db: Path,
        *,
        port: int = 0,
        latency_ms: int = 0,
        fault_rate: float = 0.0,
        token_ttl: int = 300,
        fault_kinds: Sequence[str] = (),
        heavy_page_size: int = 0,
        heavy_fault_rate: float = 1.0,
        fault_seed: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.db = Path(db)
        self.fault_kinds = tuple(fault_kinds)  # () = the server's default kinds
        self.heavy_page_size = heavy_page_size
        self.heavy_fault_rate = heavy_fault_rate
        self.fault_seed = fault_seed
        self.port = port
        self.latency_ms = latency_ms
        self.fault_rate = fault_rate
        self.token_ttl = token_ttl
        self.extra_args = tuple(extra_args)
        self.url = ""
        self.log_path = Path(str(self.db) + ".log")
        self._proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None

    @property
    def api_url(self) -> str:
        """Base URL of the API, ``.url + "/v3.1"``."""
        return self.url + "/v3.1"

    @property
    def token_url(self) -> str:
        """The OAuth token endpoint."""
        return self.url + "/oauth/token"

    @property
    def authorize_url(self) -> str:
        """The OAuth authorize endpoint."""
        return self.url + "/oauth/authorize"

    @property
    def revoke_url(self) -> str:
        """The OAuth revoke endpoint."""
        return self.url + "/oauth/revoke"

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return None if self._proc is None else self._proc.pid

    def command(self) -> list[str]:
        """The command line of the child."""
        return [
            sys.executable,
            "-m",
            "tap_sage.sandbox.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--db",
            str(self.db),
            "--latency-ms",
            str(self.latency_ms),
            "--fault-rate",
            str(self.fault_rate),
            "--token-ttl",
            str(self.token_ttl),
            *(["--fault-kinds", ",".join(self.fault_kinds)] if self.fault_kinds else []),
            *(
                [
                    "--heavy-page-size",
                    str(self.heavy_page_size),
                    "--heavy-fault-rate",
                    str(self.heavy_fault_rate),
                ]
                if self.heavy_page_size
                else []
            ),
            *(["--fault-seed", str(self.fault_seed)] if self.fault_seed is not None else []),
            *self.extra_args,
        ]

    def start(self) -> SandboxProcess:
        """Start the server and wait until it listens."""
        if self._proc is not None:
            return self
        self._log = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        self._proc = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=self._log, text=True, env=env
        )
        assert self._proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._proc.poll() is not None:
                self.stop()
                msg = f"sage-sandbox did not start; see {self.log_path}"
                raise RuntimeError(msg)
            ready, _, _ = select.select([self._proc.stdout], [], [], remaining)
            if not ready:
                continue
            line = self._proc.stdout.readline()
            match = READY.search(line)
            if match:
                self.url = match.group(1)
                self.port = int(self.url.rsplit(":", 1)[1])
                return self
            if not line:
                continue

    def stop(self) -> None:
        """Stop the server (terminate, then kill if it lingers)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def grant(
        self,
        client_id: str = DEFAULT_CLIENT_ID,
        scope: str = "full_access",
        business_ids: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """A fresh grant on this sandbox's database."""
        return grant(self.db, client_id=client_id, scope=scope, business_ids=business_ids)

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
