"""Hostile and broken connection input: callbacks without state, damaged token stores, a FIFO
at the store's path, `--log-level` case, empty `connection_name`, `advanced_config` as all
three executables read it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests

from tap_sage.sage.errors import SageAuthError, SageConfigError
from tap_sage.sage.settings import ConnectionSettings
from tap_sage.sage.tokens import TokenStore
from tests.connection_helpers import (
    ROOT,
    free_port,
    sage_auth,
    sandbox_config,
    write_config,
)


def login_config(sandbox: Any, tmp_path: Path) -> dict[str, Any]:
    return sandbox_config(
        sandbox,
        tmp_path / "store" / "tokens.json",
        initiate_oauth="GETANDREFRESH",
        access_token=None,
        refresh_token=None,
        callback_url=f"http://localhost:{free_port()}/callback",
    )


def approve(path: Path) -> str:
    shown = sage_auth("url", "--config", str(path))
    assert shown.returncode == 0, shown.stderr
    url = shown.stdout.splitlines()[0]
    return str(requests.get(url, allow_redirects=False, timeout=10).headers["Location"])


def without(location: str, param: str) -> str:
    parts = urlsplit(location)
    query = {k: v[0] for k, v in parse_qs(parts.query).items() if k != param}
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_exchange_refuses_a_callback_without_the_state_it_issued(sandbox, tmp_path):
    path = write_config(tmp_path / "config.json", login_config(sandbox, tmp_path))
    location = approve(path)
    stateless = sage_auth("exchange", without(location, "state"), "--config", str(path))
    assert stateless.returncode == 1
    assert "state_mismatch" in stateless.stderr and "no `state`" in stateless.stderr
    # The right callback still works (the code was not spent), and only once.
    done = sage_auth("exchange", location, "--config", str(path))
    assert done.returncode == 0, done.stderr
    # A callback with a state, when no authorization is pending any more: refused.
    replay = sage_auth("exchange", approve_elsewhere(sandbox, tmp_path), "--config", str(path))
    assert replay.returncode == 1 and "state_mismatch" in replay.stderr


def approve_elsewhere(sandbox: Any, tmp_path: Path) -> str:
    """A genuine callback started by another connection's `sage-auth url`."""
    other = tmp_path / "other"
    other.mkdir()
    return approve(write_config(other / "config.json", login_config(sandbox, other)))


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\xff\xfe not utf-8 at all", "not a JSON object"),
        (b"[1, 2, 3]", "not a JSON object"),
        (json.dumps({"refresh_token": 42}).encode(), "`refresh_token`"),
        (json.dumps({"access_token_expires_at": "soon"}).encode(), "`access_token_expires_at`"),
        (json.dumps({"in_flight": [1]}).encode(), "`in_flight`"),
        (json.dumps({"pending_login": {"state": 7}}).encode(), "`pending_login.state`"),
    ],
    ids=["bytes", "list", "token_int", "expiry_text", "in_flight_list", "state_int"],
)
def test_a_damaged_token_store_is_store_unreadable_naming_the_path(tmp_path, content, says):
    store_path = tmp_path / "tokens.json"
    store_path.write_bytes(content)
    with pytest.raises(SageAuthError) as caught:
        TokenStore(store_path).read()
    assert caught.value.code == "store_unreadable"
    assert str(store_path) in caught.value.message and says in caught.value.message
    assert "sage-auth login" in str(caught.value.fix)
    config = {
        "connection_name": "x",
        "client_id": "a",
        "client_secret": "b",
        "oauth_settings_location": str(store_path),
    }
    status = sage_auth(
        "status", "--offline", "--config", str(write_config(tmp_path / "c.json", config))
    )
    assert status.returncode != 0
    assert "store_unreadable" in status.stderr and "Traceback" not in status.stderr


def test_a_fifo_at_the_store_path_cannot_hang_a_command(tmp_path):
    store_path = tmp_path / "tokens.json"
    os.mkfifo(store_path)
    with pytest.raises(SageAuthError) as caught:
        TokenStore(store_path).read()
    assert caught.value.code == "store_unreadable" and "FIFO" in caught.value.message
    config = {
        "connection_name": "x",
        "client_id": "a",
        "client_secret": "b",
        "oauth_settings_location": str(store_path),
    }
    path = write_config(tmp_path / "c.json", config)
    status = sage_auth("status", "--offline", "--config", str(path))  # would block for ever
    assert "store_unreadable" in status.stderr


@pytest.mark.parametrize("level", ["DEBUG", "Info", "warning", "ERROR"])
def test_log_level_takes_any_case(tmp_path, level):
    config = {
        "connection_name": "x",
        "initiate_oauth": "OFF",
        "access_token": "t",
        "oauth_settings_location": str(tmp_path / "t.json"),
    }
    path = write_config(tmp_path / "c.json", config)
    done = sage_auth("status", "--offline", "--log-level", level, "--config", str(path))
    assert "invalid choice" not in done.stderr
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", ["", "   "])
def test_an_empty_connection_name_is_an_error(tmp_path, name):
    base = {"initiate_oauth": "OFF", "access_token": "t"}
    with pytest.raises(SageConfigError, match="connection_name"):
        ConnectionSettings.from_config({**base, "connection_name": name})
    assert ConnectionSettings.from_config(base).connection_name == "default"


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TAP_SAGE_", "TARGET_SAGE_"))}
    return subprocess.run(
        args, env={**clean, **env}, capture_output=True, text=True, cwd=cwd, timeout=60,
        input="", check=False,
    )  # fmt: skip


EXECUTABLES = {
    "tap-sage": [sys.executable, "-c", "from tap_sage.tap import TapSage; TapSage.cli()", "--test"],
    "target-sage": [sys.executable, "-c", "from target_sage.target import TargetSage; TargetSage.cli()", "--test"],
    "sage-auth": [sys.executable, "-m", "tap_sage.sage.auth_cli", "test", "--probe", "none"],
}  # fmt: skip
PREFIX = {"tap-sage": "TAP_SAGE_", "target-sage": "TARGET_SAGE_", "sage-auth": "TAP_SAGE_"}


@pytest.mark.parametrize("exe", list(EXECUTABLES))
@pytest.mark.parametrize("how", ["file_text", "env_text"])
def test_advanced_config_is_read_the_same_way_by_all_three(sandbox, tmp_path, exe, how):
    """The same advanced_config, as JSON text in the config file or in the environment (the
    object form is what every other test uses), reaches the sandbox with every executable; a
    bad value is the same clear error."""
    base = {
        "connection_name": "adv",
        "initiate_oauth": "OFF",
        "access_token": sandbox.grant()["access_token"],
        "oauth_settings_location": str(tmp_path / "t.json"),
    }
    urls = {"api_url": sandbox.api_url, "token_url": sandbox.token_url}
    outcomes = []
    for advanced in ({"max_retries": 3, **urls}, {"max_retries": "x", **urls}):
        env: dict[str, str] = {}
        config = dict(base)
        if how == "file_text":
            config["advanced_config"] = json.dumps(advanced)
        else:
            env = {PREFIX[exe] + k.upper(): str(v) for k, v in base.items()}
            env[PREFIX[exe] + "ADVANCED_CONFIG"] = json.dumps(advanced)
        args = [
            *EXECUTABLES[exe],
            "--config",
            "ENV" if env else str(write_config(tmp_path / "c.json", config)),
        ]
        outcomes.append(_run(args, env, ROOT))
    good, bad = outcomes
    assert "Setting `advanced_config" not in good.stderr, good.stderr[-2000:]
    assert good.returncode == 0, good.stderr[-2000:]
    assert bad.returncode != 0
    assert "advanced_config.max_retries" in bad.stderr
    assert "JSONDecodeError" not in bad.stderr
