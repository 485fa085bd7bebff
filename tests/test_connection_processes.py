"""Several processes on one connection, and processes killed in the middle of a refresh.

Real processes (``tests/connection_worker.py``), a real sandbox over HTTP, one token store.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.connection_helpers import (
    ROOT,
    WORKER,
    kill_during_refresh,
    run_worker,
    sage_auth,
    sandbox_config,
    store_data,
    used_refresh_tokens,
    write_config,
)

RUN_SECONDS = 30
WORKERS = 3


def test_processes_share_one_connection_through_many_refreshes(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    """Three processes x two threads, one store, --token-ttl 2, 30 s: every refresh is kept,
    none is wasted, no invalid_grant, no lost connection."""
    sandbox = sandbox_factory(token_ttl=2)
    store = tmp_path / "tokens.json"
    config = sandbox_config(sandbox, store, access_token=None)
    config["advanced_config"]["lock_timeout"] = 20
    path = write_config(tmp_path / "config.json", config)
    procs = []
    for i in range(WORKERS):
        out = tmp_path / f"worker{i}.json"
        args = [sys.executable, str(WORKER), str(path), "loop", "--seconds", str(RUN_SECONDS),
                "--threads", "2", "--out", str(out)]  # fmt: skip
        procs.append((subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True), out))  # fmt: skip
    results = []
    for proc, out in procs:
        _stdout, stderr = proc.communicate(timeout=RUN_SECONDS + 60)
        assert out.exists(), stderr[-2000:]
        result = json.loads(out.read_text())
        results.append(result)
        assert proc.returncode == 0, (result, stderr[-2000:])
        assert result["errors"] == {}, result
        assert result["ok"] > 50, result
    data = store_data(store)
    refreshes = data["refresh_count"]
    print(f"\n{refreshes} refreshes by {WORKERS} processes in {RUN_SECONDS}s; "
          f"per process {[r['refreshes'] for r in results]}; "
          f"requests {sum(r['ok'] for r in results)}")  # fmt: skip
    assert refreshes >= RUN_SECONDS // 2  # a 2 s token is refreshed ~1.3 s into its life
    assert sum(r["refreshes"] for r in results) == refreshes  # each one counted once
    assert used_refresh_tokens(sandbox.db) == refreshes  # Sage saw exactly the stored ones
    assert sum(1 for r in results if r["refreshes"] > 0) >= 2  # rotation moved between processes
    assert data["in_flight"] is None and data["last_error"] is None


@pytest.mark.parametrize("point", ["after_marker", "after_write"])
def test_killed_during_refresh_next_run_connects(sandbox: Any, tmp_path: Path, point: str) -> None:
    """SIGKILL while holding the lock (before the POST, or after the store was written): the
    system releases the lock and the next run connects."""
    store = tmp_path / "tokens.json"
    config = sandbox_config(sandbox, store, access_token=None)
    config["advanced_config"]["lock_timeout"] = 10
    path = write_config(tmp_path / "config.json", config)
    kill_during_refresh(path, point, tmp_path)
    expected_marker = point == "after_marker"
    assert (store_data(store)["in_flight"] is not None) is expected_marker
    started = time.monotonic()
    result = run_worker(path, "once")
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert time.monotonic() - started < 9  # the dead process's lock did not hold us up
    data = store_data(store)
    assert data["in_flight"] is None
    assert data["refresh_count"] == 1  # one refresh in all: killed before POST, or kept by it
    assert used_refresh_tokens(sandbox.db) == 1


def test_killed_after_sage_answered_before_store_written(sandbox: Any, tmp_path: Path) -> None:
    """The one unrecoverable window: Sage consumed the refresh token and answered, the process
    died before writing the answer (milliseconds). The new token existed only in that process.
    The next run detects the unfinished refresh, tries the stored token once, and fails with
    `refresh_interrupted` naming the login; after `sage-auth login` (headless here) it connects.
    """
    store = tmp_path / "tokens.json"
    config = sandbox_config(sandbox, store, access_token=None)
    config["callback_url"] = "http://localhost:8765/callback"
    path = write_config(tmp_path / "config.json", config)
    kill_during_refresh(path, "after_answer", tmp_path)
    assert used_refresh_tokens(sandbox.db) == 1  # Sage did consume it
    result = run_worker(path, "once")
    assert result.returncode == 1
    outcome = json.loads(result.stdout)
    assert outcome["errors"] == {"refresh_interrupted": 1}
    message = outcome["messages"][0]
    assert "did not finish" in message and "sage-auth login" in message
    # what a user does: authorise again (url + approve + exchange, headless)
    url = json.loads(sage_auth("url", "--json", "--config", str(path)).stdout)["authorization_url"]
    location = requests.get(url, allow_redirects=False, timeout=10).headers["Location"]
    exchanged = sage_auth("exchange", location, "--config", str(path))
    assert exchanged.returncode == 0, exchanged.stderr
    again = run_worker(path, "once")
    assert again.returncode == 0, again.stdout
    assert store_data(store)["in_flight"] is None
