"""No token, secret, refresh token or authorization code in any log line (DEBUG included),
in stdout, in Singer state, or in an error message."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tap_sage.sage.auth import RotatingTokenSource
from tap_sage.sage.client import SageClient
from tap_sage.sage.connection_check import check
from tap_sage.sage.errors import SageError
from tap_sage.sage.login import run_login, start_authorization
from tap_sage.sage.settings import ConnectionSettings
from tap_sage.sandbox.runner import SandboxProcess
from tests.connection_helpers import (
    ROOT,
    forget_clients,
    free_port,
    sage_auth,
    sandbox_config,
    secrets_of,
    write_config,
)


@pytest.fixture(autouse=True)
def _fresh_process() -> Iterator[None]:
    forget_clients()
    yield
    forget_clients()


@pytest.fixture(scope="module")
def sandbox2(seeded_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    db = tmp_path_factory.mktemp("secrets") / "sandbox.db"
    shutil.copyfile(seeded_db, db)
    with SandboxProcess(db, token_ttl=2) as process:
        yield process


def assert_clean(text: str, secrets: set[str], where: str) -> None:
    leaked = [s[:6] + "..." for s in secrets if s and s in text]
    assert not leaked, f"secret(s) {leaked} found in {where}"


def test_nothing_secret_in_debug_logs_or_errors(
    sandbox2: SandboxProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets: set[str] = set()
    errors: list[str] = []
    store = tmp_path / "tokens.json"
    config = sandbox_config(sandbox2, store)
    secrets.update(secrets_of(config))
    client = SageClient.for_config(config)
    client.businesses()
    time.sleep(2.2)
    client.businesses()  # 401 -> refresh
    assert isinstance(client.tokens, RotatingTokenSource)
    client.tokens.refresh_now()
    secrets.update(secrets_of(config, store))
    check(config, probe="sample")
    secrets.update(secrets_of(config, store))
    # error paths: invalid_client, invalid_grant, OFF 401
    for broken in (
        dict(config, client_secret="wrong-secret-value", oauth_settings_location=str(tmp_path / "a.json"), access_token=None),
        dict(config, initiate_oauth="OFF"),
    ):  # fmt: skip
        forget_clients()
        try:
            SageClient.for_config(broken).businesses()
            time.sleep(2.2)
            SageClient.for_config(broken).businesses()
        except SageError as exc:
            errors.append(str(exc))
    secrets.add("wrong-secret-value")
    # the login flow, with the code captured from the redirect
    settings = ConnectionSettings.from_config(
        dict(
            config,
            initiate_oauth="GETANDREFRESH",
            access_token=None,
            refresh_token=None,
            oauth_settings_location=str(tmp_path / "login.json"),
            callback_url=f"http://localhost:{free_port()}/callback",
        )
    )
    codes: list[str] = []

    def browser(url: str) -> None:
        location = requests.get(url, allow_redirects=False, timeout=10).headers["Location"]
        codes.append(location.split("code=")[1].split("&")[0])
        with urllib.request.urlopen(location, timeout=10) as response:  # noqa: S310
            response.read()

    sink = open(tmp_path / "login-out.txt", "w")  # noqa: SIM115
    try:
        run_login(settings, requests.Session, out=sink, timeout=20,
                  on_url=lambda u: threading.Thread(target=browser, args=(u,)).start())  # fmt: skip
    finally:
        sink.close()
    assert codes
    secrets.update(codes)
    secrets.update(c.replace("%2F", "/") for c in codes)
    start_authorization(settings)
    secrets.update(secrets_of(config, tmp_path / "login.json"))
    secrets.discard("")
    assert len(secrets) >= 8
    assert_clean(caplog.text, secrets, "log records")
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    assert_clean("\n".join(errors), secrets, "error messages")
    assert len(errors) == 2
    assert_clean((tmp_path / "login-out.txt").read_text(), secrets, "login output")


def test_nothing_secret_in_command_output_at_debug(
    sandbox2: SandboxProcess, tmp_path: Path
) -> None:
    store = tmp_path / "tokens.json"
    config = sandbox_config(sandbox2, store, access_token=None)
    path = write_config(tmp_path / "config.json", config)
    outputs = []
    for args in (["refresh"], ["status", "--json"], ["test", "--probe", "sample", "--json"],
                 ["url"], ["refresh"], ["status"]):  # fmt: skip
        run = sage_auth(*args, "--log-level", "debug", "--config", str(path))
        assert run.returncode == 0, run.stderr
        outputs.append(run.stdout + run.stderr)
    secrets = set(secrets_of(config, store))
    assert any("DEBUG" in o for o in outputs)
    for number, text in enumerate(outputs):
        assert_clean(text, secrets, f"sage-auth output #{number}")


def test_nothing_secret_in_tap_output_and_state(sandbox2: SandboxProcess, tmp_path: Path) -> None:
    """A tap run at debug level: stdout (records and STATE) and stderr carry no token."""
    store = tmp_path / "tokens.json"
    config = sandbox_config(sandbox2, store, access_token=None)
    path = write_config(tmp_path / "config.json", config)
    tap = shutil.which("tap-sage", path=str(ROOT / ".venv" / "bin")) or "tap-sage"
    discovered = subprocess.run([tap, "--config", str(path), "--discover"], capture_output=True,
                                text=True, cwd=ROOT, timeout=120, check=False)  # fmt: skip
    assert discovered.returncode == 0, discovered.stderr[-2000:]
    catalog = json.loads(discovered.stdout)
    for stream in catalog["streams"]:
        chosen = stream["tap_stream_id"] == "contact_types"
        for entry in stream["metadata"]:
            if not entry["breadcrumb"]:
                entry["metadata"]["selected"] = chosen
    cat = tmp_path / "catalog.json"
    cat.write_text(json.dumps(catalog))
    run = subprocess.run([tap, "--config", str(path), "--catalog", str(cat)], capture_output=True,
                         text=True, cwd=ROOT, timeout=120, check=False,
                         env={**os.environ, "LOGLEVEL": "DEBUG"})  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert '"type":"STATE"' in run.stdout.replace(" ", "")
    secrets = set(secrets_of(config, store))
    assert_clean(run.stdout, secrets, "tap stdout (records and state)")
    assert "urllib3" in run.stderr or "sage.http" in run.stderr  # DEBUG lines were written
    assert_clean(run.stderr, secrets, "tap stderr")
    assert_clean(discovered.stdout + discovered.stderr, secrets, "discovery output")
