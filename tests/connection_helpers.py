"""Helpers of the connection tests (token store, OAuth, proxy): configs, processes, counts."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tap_sage.sage.auth import _SourceCache
from tap_sage.sage.client import SageClient
from tests.checkpoint_support import PAUSE_ENV, PAUSE_FILE_ENV

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "connection_worker.py"
SAGE_AUTH = [sys.executable, "-m", "tap_sage.sage.auth_cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sandbox_config(sandbox: Any, store: Path, **overrides: Any) -> dict[str, Any]:
    """A REFRESH config with a fresh grant on ``sandbox`` and its store at ``store``."""
    granted = sandbox.grant()
    config: dict[str, Any] = {
        "connection_name": "test",
        "initiate_oauth": "REFRESH",
        "client_id": granted["client_id"],
        "client_secret": granted["client_secret"],
        "access_token": granted["access_token"],
        "refresh_token": granted["refresh_token"],
        "oauth_settings_location": str(store),
        "advanced_config": {
            "api_url": sandbox.api_url,
            "token_url": sandbox.token_url,
            "authorize_url": sandbox.authorize_url,
            "revoke_url": sandbox.revoke_url,
            "max_retries": 1,
            "max_backoff": 1,
        },
    }
    config.update(overrides)
    return config


def forget_clients() -> None:
    """Drop this process's cached clients and token sources (as if a new process started)."""
    SageClient._instances.clear()
    _SourceCache.sources.clear()


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(json.dumps(config))
    return path


def used_refresh_tokens(db: Path) -> int:
    """Refresh tokens the sandbox has seen spent (each = one successful refresh)."""
    conn = sqlite3.connect(db)
    try:
        row = conn.execute(
            "SELECT COUNT(*) FROM tokens WHERE kind = 'refresh' AND used = 1"
        ).fetchone()
    finally:
        conn.close()
    return int(row[0])


def store_data(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def run_worker(
    config_path: Path,
    mode: str,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    **kw: Any,
) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, str(WORKER), str(config_path), mode]
    for key, value in kw.items():
        args += [f"--{key}", str(value)]
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        check=False,
    )


def sage_auth(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SAGE_AUTH, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        check=False,
    )


def secrets_of(config: dict[str, Any], store: Path | None = None) -> list[str]:
    """Every secret value in play: the config's and the store's tokens."""
    values = [config.get(k) for k in ("access_token", "refresh_token", "client_secret")]
    if store is not None and store.exists():
        data = store_data(store)
        values += [data.get("access_token"), data.get("refresh_token")]
        pending = data.get("pending_login") or {}
        values.append(pending.get("code_verifier"))
    return [v for v in values if v]


def kill_during_refresh(config_path: Path, point: str, tmp_path: Path) -> None:
    """Start a worker that refreshes now, wait until it pauses at checkpoint ``point`` (it
    says so with a file), and SIGKILL it there."""
    marker = tmp_path / f"paused-{point}"
    env = {**os.environ, PAUSE_ENV: point, PAUSE_FILE_ENV: str(marker)}
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(config_path), "refresh"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the worker never reached the pause point"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
