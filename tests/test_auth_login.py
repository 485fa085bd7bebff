"""The GETANDREFRESH login and the `sage-auth` command line, headless against the sandbox.

A "browser" here is a plain HTTP client following the sandbox's authorize redirect (the
sandbox approves at once) to the local callback server of `sage-auth login`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from tap_sage.sage.auth import RotatingTokenSource
from tap_sage.sage.client import SageClient
from tap_sage.sage.settings import ConnectionSettings
from tests.connection_helpers import (
    ROOT,
    SAGE_AUTH,
    forget_clients,
    free_port,
    sage_auth,
    sandbox_config,
    store_data,
    write_config,
)

URL_LINE = re.compile(r"^(http://\S+/oauth/authorize\?\S+)$", re.MULTILINE)


@pytest.fixture(autouse=True)
def _fresh_process() -> Iterator[None]:
    forget_clients()
    yield
    forget_clients()


def login_config(sandbox: Any, tmp_path: Path) -> dict[str, Any]:
    """GETANDREFRESH with app credentials only (no token anywhere yet)."""
    config = sandbox_config(sandbox, tmp_path / "store" / "tokens.json",
                            initiate_oauth="GETANDREFRESH", access_token=None, refresh_token=None,
                            callback_url=f"http://localhost:{free_port()}/callback")  # fmt: skip
    return config


def browse(url: str) -> tuple[int, str]:
    """Open ``url`` like a browser (following redirects), with urllib (which logs nothing)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - test URLs
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class LoginProcess:
    """`sage-auth login` in a subprocess; its stderr is collected by a thread."""

    def __init__(self, config_path: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [*SAGE_AUTH, "login", "--no-browser", "--config", str(config_path), *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.err = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err += line

    def url(self) -> str:
        deadline = time.monotonic() + 20
        while not (match := URL_LINE.search(self.err)):
            assert self.proc.poll() is None, self.err
            assert time.monotonic() < deadline, self.err
            time.sleep(0.05)
        return match.group(1)

    def finish(self) -> tuple[int, str, str]:
        # stderr belongs to the reader thread: communicate() would race it for the lines
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        self.proc.wait(timeout=30)
        self._reader.join(5)
        return self.proc.returncode, out, self.err


def test_headless_login_flow(sandbox: Any, tmp_path: Path) -> None:
    """`sage-auth login`: local callback server, state checked, PKCE S256, code exchanged,
    tokens stored 0600; the connection then works (status, test) without another login."""
    config = login_config(sandbox, tmp_path)
    path = write_config(tmp_path / "config.json", config)
    login = LoginProcess(path, "--json", "--log-level", "debug")
    url = login.url()
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["redirect_uri"] == [config["callback_url"]] and query["state"][0]
    assert "client_secret" not in url
    # a callback with a foreign state is refused, and the login keeps waiting
    forged = config["callback_url"] + "?" + urlencode({"code": "GB/forged", "state": "nope"})
    assert browse(forged)[0] == 400
    status, page = browse(url)  # authorize -> 302 -> our callback -> exchange
    assert status == 200 and "authorised" in page
    code, out, err = login.finish()
    assert code == 0, err
    result = json.loads(out)
    assert result["ok"] and len(result["businesses"]) == 2
    assert {b["country"] for b in result["businesses"]} == {"GB", "US"}
    store = Path(config["oauth_settings_location"])
    data = store_data(store)
    assert data["access_token"] and data["refresh_token"] and data["login_how"] == "login"
    assert store.stat().st_mode & 0o777 == 0o600
    for secret in (data["access_token"], data["refresh_token"], config["client_secret"]):
        assert secret not in out and secret not in err
    status_run = sage_auth("status", "--json", "--config", str(path))
    assert status_run.returncode == 0, status_run.stderr
    status_json = json.loads(status_run.stdout)
    assert status_json["has_refresh_token"] and status_json["token_store_mode"] == "0o600"
    assert status_json["businesses"][0]["subscription"].startswith("Accounting")
    assert data["access_token"] not in status_run.stdout
    test_run = sage_auth("test", "--probe", "sample", "--config", str(path))
    assert test_run.returncode == 0, test_run.stdout + test_run.stderr
    assert "OK" in test_run.stdout and "reachable" in test_run.stdout


def test_login_denied_in_the_browser(sandbox: Any, tmp_path: Path) -> None:
    config = login_config(sandbox, tmp_path)
    login = LoginProcess(write_config(tmp_path / "config.json", config))
    state = parse_qs(urlsplit(login.url()).query)["state"][0]
    denied = config["callback_url"] + "?" + urlencode({"error": "access_denied", "state": state})
    assert browse(denied)[0] == 400
    code, _out, err = login.finish()
    assert code == 1
    assert "not granted" in err and "approve" in err


def test_getandrefresh_at_a_terminal_starts_the_login(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GETANDREFRESH with no usable token and a person at the terminal: the run logs in
    (the browser is played by a thread following the URL), then carries on."""
    settings = ConnectionSettings.from_config(login_config(sandbox, tmp_path))
    opened: list[str] = []

    def fake_browser(url: str) -> bool:
        opened.append(url)
        threading.Thread(target=browse, args=(url,), daemon=True).start()
        return True

    monkeypatch.setattr("webbrowser.open", fake_browser)
    client = SageClient(settings)
    client.tokens = RotatingTokenSource(settings, client.new_session, is_interactive=lambda: True)
    assert len(client.businesses()) == 2
    assert len(opened) == 1
    assert store_data(settings.oauth_settings_location)["login_how"] == "login"


def test_url_then_exchange_by_hand(sandbox: Any, tmp_path: Path) -> None:
    """`sage-auth url` keeps state and verifier; `exchange` takes the code (GB/..., also
    URL-encoded) or the whole callback URL (state checked); a stale state is refused."""
    config = login_config(sandbox, tmp_path)
    path = write_config(tmp_path / "config.json", config)

    def approve() -> str:
        shown = sage_auth("url", "--config", str(path))
        assert shown.returncode == 0, shown.stderr
        url = shown.stdout.splitlines()[0]
        location = requests.get(url, allow_redirects=False, timeout=10).headers["Location"]
        return location

    location = approve()
    code = parse_qs(urlsplit(location).query)["code"][0]
    assert re.match(r"^[A-Z]{2}/", code)
    encoded = code.replace("/", "%2F")
    done = sage_auth("exchange", encoded, "--config", str(path))
    assert done.returncode == 0, done.stderr
    assert "authorised" in done.stdout
    again = sage_auth("exchange", code, "--config", str(path))  # single use
    assert again.returncode == 1
    assert "invalid_grant" in again.stderr and "60 seconds" in again.stderr
    stale = approve()
    approve()  # a newer `url` replaces the pending state
    mismatch = sage_auth("exchange", stale, "--config", str(path))
    assert mismatch.returncode == 1 and "state_mismatch" in mismatch.stderr
    assert "sage-auth url" in mismatch.stderr


def test_refresh_revoke_and_env_config(sandbox: Any, tmp_path: Path) -> None:
    """Config from TAP_SAGE_* variables (as Meltano passes it); refresh; revoke."""
    config = sandbox_config(sandbox, tmp_path / "tokens.json")
    env = {f"TAP_SAGE_{k.upper()}": (json.dumps(v) if isinstance(v, dict) else str(v))
           for k, v in config.items() if v is not None}  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TAP_SAGE_", "TARGET_SAGE_"))}
    refreshed = subprocess.run([*SAGE_AUTH, "refresh", "--json"], env={**clean, **env},
                               capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)  # fmt: skip
    assert refreshed.returncode == 0, refreshed.stderr
    assert json.loads(refreshed.stdout)["refreshes"] == 1
    spent = store_data(tmp_path / "tokens.json")["refresh_token"]
    path = write_config(tmp_path / "config.json", config)
    revoked = sage_auth("revoke", "--config", str(path))
    assert revoked.returncode == 0, revoked.stderr
    data = store_data(tmp_path / "tokens.json")
    assert data["refresh_token"] is None and data["access_token"] is None
    answer = requests.post(sandbox.token_url, data={"grant_type": "refresh_token",
                           "refresh_token": spent, "client_id": config["client_id"],
                           "client_secret": config["client_secret"]}, timeout=10)  # fmt: skip
    assert answer.json()["error"] == "invalid_grant"
    status = sage_auth("status", "--offline", "--config", str(path))
    assert "refresh token: none" in status.stdout


def test_connection_test_fails_with_cause_and_fix(sandbox: Any, tmp_path: Path) -> None:
    config = sandbox_config(sandbox, tmp_path / "tokens.json", client_secret="not-it",
                            access_token=None)  # fmt: skip
    run = sage_auth("test", "--json", "--config", str(write_config(tmp_path / "c.json", config)))
    assert run.returncode == 1
    report = json.loads(run.stdout)
    assert report["ok"] is False and report["error"]["code"] == "invalid_client"
    assert "client_secret" in report["error"]["fix"]
    bad = sage_auth("status", "--config", str(tmp_path / "missing.json"))
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_login_into_another_apps_store_is_refused(sandbox: Any, tmp_path: Path) -> None:
    store = tmp_path / "tokens.json"
    first = sandbox_config(sandbox, store)
    assert (
        sage_auth("refresh", "--config", str(write_config(tmp_path / "a.json", first))).returncode
        == 0
    )
    before = store.read_bytes()
    other = sandbox.grant(client_id="someone-else")
    config = login_config(sandbox, tmp_path)
    config.update(client_id=other["client_id"], client_secret=other["client_secret"],
                  oauth_settings_location=str(store))  # fmt: skip
    run = sage_auth("login", "--no-browser", "--timeout", "5",
                    "--config", str(write_config(tmp_path / "b.json", config)))  # fmt: skip
    assert run.returncode == 1 and "store_conflict" in run.stderr
    assert "http://" not in run.stderr  # refused before any URL was shown
    assert store.read_bytes() == before
