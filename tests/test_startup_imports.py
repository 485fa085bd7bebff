"""What a sync of one stream imports before its first request (issue 15: start-up cost).

The tap runs as a process over the real sandbox; a hook on ``requests.Session.send`` writes the
names in ``sys.modules`` at its first request (and lets the request go on). Modules that only
``--test``, ``sage-auth``, the database token store or the sandbox need must not be
among them: each one imported costs every run its import (and, from a checkout, its compile).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.tap_helpers import catalog_for

HOOK = r"""
import json, runpy, sys
import requests
out = sys.argv.pop(1)
send = requests.Session.send
def first_send(self, request, **kwargs):
    requests.Session.send = send
    with open(out, "w") as handle:
        json.dump(sorted(sys.modules), handle)
    return send(self, request, **kwargs)
requests.Session.send = first_send
sys.argv = ["tap_sage.tap", *sys.argv[1:]]
runpy.run_module("tap_sage.tap", run_name="__main__", alter_sys=True)
"""

#: never needed by a sync of one stream with the file token store
NOT_AT_START = (
    "tap_sage.sage.connection_check",  # --test only
    "tap_sage.sage.token_store_db",  # the database token store
    "tap_sage.sage.auth_cli",  # sage-auth
    "tap_sage.sage.login",  # the interactive login
    "tap_sage.duckdb_views",
    "tap_sage.sandbox",
    "target_sage",
    "psycopg",
    "sqlalchemy",
    # what importlib.metadata.version imports to parse a METADATA file (tap_sage.startup)
    "email.policy",
    "email.headerregistry",
)


def _modules_at_first_request(config: dict[str, Any], tmp_path: Path) -> list[str]:
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    catalog_path = tmp_path / "catalog.json"
    catalog_path.write_text(json.dumps(catalog_for(config, ["bank_accounts"])))
    out = tmp_path / "modules.json"
    command = [sys.executable, "-c", HOOK, str(out)]
    proc = subprocess.run(
        [*command, "--config", str(config_path), "--catalog", str(catalog_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"stream":"bank_accounts"' in proc.stdout.replace(" ", "")  # it did sync
    names: list[str] = json.loads(out.read_text())
    return names


def test_a_sync_of_one_stream_imports_only_what_it_needs(
    connection_config: dict[str, Any], tmp_path: Path
) -> None:
    modules = _modules_at_first_request(connection_config, tmp_path)
    assert "tap_sage.streams" in modules  # the hook saw the tap's own start-up
    unwanted = [m for m in modules if any(m == n or m.startswith(n + ".") for n in NOT_AT_START)]
    assert unwanted == []
