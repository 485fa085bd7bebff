"""target-sage at DEBUG level, refreshing its token: no secret in its output or its files."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_target_helpers import SageAPI, contact, contacts_input, run_cli, target_config


def test_no_secret_at_debug_level_while_refreshing(sandbox, connection_config, tmp_path: Path):
    api = SageAPI(sandbox)
    # no access token given: the run must refresh (and so rotate the refresh token) first
    seed = {k: v for k, v in connection_config.items() if k != "access_token"}
    config = target_config(seed, tmp_path, api)
    text = contacts_input([contact("S-1"), contact("S-2"), {"code": "S-3"}], state={"s": 1})
    done = run_cli({**config, "on_error": "continue"}, text, tmp_path, env={"LOGLEVEL": "DEBUG"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "DEBUG" in done.stderr  # the run did log at DEBUG

    store = json.loads(Path(connection_config["oauth_settings_location"]).read_text())
    assert store["refresh_count"] >= 1  # tokens were rotated during the run
    assert store["refresh_token"] != connection_config["refresh_token"]
    secrets = {connection_config[k] for k in ("access_token", "refresh_token", "client_secret")}
    secrets |= {store["access_token"], store["refresh_token"]}
    written = done.stdout + done.stderr
    for key in ("results_path", "dead_letter_path", "ledger_path"):
        written += Path(config[key]).read_bytes().decode("utf-8", "replace")
    leaked = [s[:6] + "..." for s in secrets if s and s in written]
    assert leaked == []
