"""The token store and the OAuth modes against the sandbox over real HTTP.

Each test names the requirement of issue 3 it covers.
"""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from typing_extensions import override

from tap_sage.sage.auth import RotatingTokenSource
from tap_sage.sage.client import SageClient
from tap_sage.sage.connection_check import check
from tap_sage.sage.errors import (
    SageAccessDenied,
    SageAuthError,
    SageConfigError,
    SageSubscriptionInactive,
)
from tap_sage.sandbox.runner import SandboxProcess
from tests.checkpoint_support import lose_next_refresh_answer
from tests.connection_helpers import (
    forget_clients,
    free_port,
    sandbox_config,
    store_data,
    used_refresh_tokens,
)


@pytest.fixture(autouse=True)
def _fresh_process() -> Iterator[None]:
    forget_clients()
    yield
    forget_clients()


@pytest.fixture(scope="module")
def sandbox300(
    seeded_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SandboxProcess]:
    db = tmp_path_factory.mktemp("store300") / "sandbox.db"
    shutil.copyfile(seeded_db, db)
    with SandboxProcess(db) as process:
        yield process


@pytest.fixture(scope="module")
def sandbox2(seeded_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    db = tmp_path_factory.mktemp("store2") / "sandbox.db"
    shutil.copyfile(seeded_db, db)
    with SandboxProcess(db, token_ttl=2) as process:
        yield process


def tokens_of(config: dict[str, Any]) -> RotatingTokenSource:
    source = SageClient.for_config(config).tokens
    assert isinstance(source, RotatingTokenSource)
    return source


def test_short_run_does_not_refresh(sandbox300: SandboxProcess, tmp_path: Path) -> None:
    """Keep the access token and its expiry so a short run does not refresh at all."""
    store = tmp_path / "tokens.json"
    config = sandbox_config(sandbox300, store)
    before = used_refresh_tokens(sandbox300.db)
    client = SageClient.for_config(config)
    for _ in range(3):
        assert len(client.businesses()) == 2
    assert store_data(store).get("refresh_count", 0) == 0
    tokens_of(config).refresh_now()
    assert store_data(store)["refresh_count"] == 1
    forget_clients()  # a second, short run
    assert len(SageClient.for_config(config).businesses()) == 2
    assert store_data(store)["refresh_count"] == 1
    assert used_refresh_tokens(sandbox300.db) == before + 1


def test_store_mode_0600_and_folder_0700(sandbox300: SandboxProcess, tmp_path: Path) -> None:
    """The store's mode is 0600, in a folder created 0700; the lock file too is private."""
    store = tmp_path / "new" / "folder" / "tokens.json"
    config = sandbox_config(sandbox300, store)
    tokens_of(config).refresh_now()
    assert store.stat().st_mode & 0o777 == 0o600
    assert store.parent.stat().st_mode & 0o777 == 0o700
    assert Path(str(store) + ".lock").stat().st_mode & 0o077 == 0
    assert not list(store.parent.glob("*.tmp"))


def test_refresh_on_401_and_ahead_of_expiry(sandbox2: SandboxProcess, tmp_path: Path) -> None:
    """Refresh on a 401 (config token of unknown age) and ahead of expiry (refresh_margin)."""
    store = tmp_path / "tokens.json"
    config = sandbox_config(sandbox2, store)
    client = SageClient.for_config(config)
    time.sleep(2.3)  # the configured access token has expired at the sandbox
    assert len(client.businesses()) == 2  # 401 -> one refresh -> retried
    assert store_data(store)["refresh_count"] == 1
    first = client.tokens.token()
    time.sleep(1.5)  # 0.5 s left of 2 s: inside the margin (a third of the lifetime)
    second = client.tokens.token()
    assert second != first
    assert store_data(store)["refresh_count"] == 2


def test_threads_share_one_refresh(sandbox2: SandboxProcess, tmp_path: Path) -> None:
    """One token source per connection per process, shared by threads: one refresh, not eight."""
    store = tmp_path / "tokens.json"
    config = sandbox_config(sandbox2, store)
    source = tokens_of(config)
    source.refresh_now()
    time.sleep(2.1)
    seen: list[str] = []
    threads = [threading.Thread(target=lambda: seen.append(source.token())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1
    assert store_data(store)["refresh_count"] == 2
    assert SageClient.for_config(dict(config)).tokens is source


def test_new_config_token_wins_unchanged_defers(sandbox300: SandboxProcess, tmp_path: Path) -> None:
    """A refresh token newly put in the config wins; an unchanged one defers to the store."""
    store = tmp_path / "tokens.json"
    config = sandbox_config(sandbox300, store)
    tokens_of(config).refresh_now()  # spends the config's refresh token
    data = store_data(store)
    assert data["refresh_token"] != config["refresh_token"]
    assert data["seed_fingerprint"].startswith("sha256:")
    assert config["refresh_token"] not in json.dumps(data["seed_fingerprint"])
    forget_clients()  # the same (now spent) config again: the rotated stored token is used
    tokens_of(config).refresh_now()
    assert store_data(store)["refresh_count"] == 2
    forget_clients()  # a new grant put in the config replaces the stored token
    fresh = sandbox_config(sandbox300, store)
    source = tokens_of(fresh)
    assert source.read_store()["refresh_token"] == fresh["refresh_token"]
    source.refresh_now()
    assert store_data(store)["refresh_count"] == 3


def test_store_of_another_client_is_an_error_never_overwritten(
    sandbox300: SandboxProcess, tmp_path: Path
) -> None:
    store = tmp_path / "tokens.json"
    tokens_of(sandbox_config(sandbox300, store)).refresh_now()
    before = store.read_bytes()
    forget_clients()
    other = sandbox300.grant(client_id="another-app")
    config = sandbox_config(sandbox300, store)
    config.update(client_id=other["client_id"], client_secret=other["client_secret"],
                  refresh_token=other["refresh_token"], access_token=None)  # fmt: skip
    with pytest.raises(SageAuthError) as info:
        SageClient.for_config(config).businesses()
    assert info.value.code == "store_conflict"
    assert "connection_name" in info.value.fix and "oauth_settings_location" in info.value.fix
    assert store.read_bytes() == before


def _spend(sandbox: SandboxProcess, config: dict[str, Any]) -> None:
    """Spend the config's refresh token behind the connection's back."""
    response = requests.post(
        sandbox.token_url,
        data={"grant_type": "refresh_token", "refresh_token": config["refresh_token"],
              "client_id": config["client_id"], "client_secret": config["client_secret"]},
        timeout=10,
    )  # fmt: skip
    assert response.status_code == 200


def test_invalid_grant_says_run_the_login(sandbox300: SandboxProcess, tmp_path: Path) -> None:
    """Error: invalid_grant (refresh token used, expired or revoked) -> run the login."""
    config = sandbox_config(sandbox300, tmp_path / "tokens.json", access_token=None)
    _spend(sandbox300, config)
    with pytest.raises(SageAuthError) as info:
        SageClient.for_config(config).businesses()
    err = info.value
    assert err.code == "invalid_grant"
    assert "already used, has expired" in err.message and "revoked" in err.message
    assert "sage-auth login" in err.fix
    # the next run says the same, without another request for the dead token
    forget_clients()
    with pytest.raises(SageConfigError) as again:
        SageClient.for_config(config).businesses()
    assert "the last refresh failed" in str(again.value) and "sage-auth login" in str(again.value)
    # a fresh refresh token put into the config repairs the connection
    forget_clients()
    fresh = sandbox300.grant()
    config.update(refresh_token=fresh["refresh_token"])
    assert len(SageClient.for_config(config).businesses()) == 2


def test_invalid_client_says_check_the_app_credentials(
    sandbox300: SandboxProcess, tmp_path: Path
) -> None:
    """Error: invalid_client -> check client_id / client_secret; the refresh token is kept."""
    store = tmp_path / "tokens.json"
    config = sandbox_config(sandbox300, store, client_secret="wrong-secret", access_token=None)
    with pytest.raises(SageAuthError) as info:
        SageClient.for_config(config).businesses()
    assert info.value.code == "invalid_client"
    assert "client_id and client_secret" in info.value.fix
    assert store_data(store)["refresh_token"] == config["refresh_token"]
    assert store_data(store)["in_flight"] is None


def test_off_mode_401_says_what_to_do(sandbox300: SandboxProcess, tmp_path: Path) -> None:
    """Error: 401 in OFF mode -> a clear message: no refresh in OFF; use REFRESH."""
    config = sandbox_config(sandbox300, tmp_path / "t.json", initiate_oauth="OFF",
                            access_token="an-expired-token")  # fmt: skip
    with pytest.raises(SageAuthError) as info:
        SageClient.for_config(config).businesses()
    assert info.value.code == "token_expired"
    assert "initiate_oauth is OFF" in info.value.message
    assert "REFRESH" in info.value.fix
    assert not (tmp_path / "t.json").exists()


def test_multi_user_access_denied_names_cause_and_fix(
    sandbox300: SandboxProcess, tmp_path: Path
) -> None:
    """Error: 403 MultiUserAccessDenied -> the user's access rights; what to do."""
    config = sandbox_config(sandbox300, tmp_path / "tokens.json")
    all_ids = [b["id"] for b in SageClient.for_config(config).businesses()]
    forget_clients()
    limited = sandbox300.grant(business_ids=[all_ids[0]])
    config.update(access_token=limited["access_token"], refresh_token=limited["refresh_token"])
    with pytest.raises(SageAccessDenied) as info:
        SageClient.for_config(config).request("GET", "/contacts", business_id=all_ids[1])
    err = info.value
    assert err.status == 403 and err.data_code == "MultiUserAccessDenied"
    assert "access" in err.fix and "Full Access" in err.fix and "sage-auth login" in err.fix
    assert "Fix:" in str(err)


class _NoSubscription(BaseHTTPRequestHandler):
    """Answers every request as Sage does for a business without an active subscription."""

    def do_GET(self) -> None:
        body = json.dumps([{"$severity": "error", "$dataCode": "AuthorizationFailure",
                            "$message": "No active subscription. (MSE)", "$source": ""}]).encode()  # fmt: skip
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    @override
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_inactive_subscription_401_is_not_a_token_problem(tmp_path: Path) -> None:
    """Error: an inactive subscription (Sage: 401 'No active subscription') names cause and fix
    and does not burn the token (the sandbox has no such business: a local server plays it)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoSubscription)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v3.1"
        config = {"initiate_oauth": "OFF", "access_token": "tok-1234",
                  "advanced_config": {"api_url": url}}  # fmt: skip
        client = SageClient.for_config(config)
        for _ in range(2):  # the token is not invalidated: same error, not token_expired
            with pytest.raises(SageSubscriptionInactive) as info:
                client.request("GET", "/contacts", business_id="b1")
        assert "renew it in Sage" in str(info.value)
        assert isinstance(info.value, SageAccessDenied)
    finally:
        server.shutdown()
        server.server_close()


def test_connection_check_reports_inactive_subscription(
    sandbox_factory: Any, sandbox_db: Path, tmp_path: Path
) -> None:
    """The connection test flags a business whose subscription is inactive, with the fix."""
    conn = sqlite3.connect(sandbox_db)
    row = conn.execute("SELECT id, data FROM businesses ORDER BY position DESC LIMIT 1").fetchone()
    data = json.loads(row[1])
    data["subscriptions"][0].update(active=False, status="cancelled")
    conn.execute("UPDATE businesses SET data = ? WHERE id = ?", (json.dumps(data), row[0]))
    conn.commit()
    conn.close()
    sandbox = sandbox_factory(db=sandbox_db)
    report = check(sandbox_config(sandbox, tmp_path / "tokens.json"), probe="sample")
    assert report.ok
    by_id = {b.id: b for b in report.businesses}
    bad = by_id[row[0]]
    assert not bad.ok and bad.active is False
    assert bad.problem and "not active" in bad.problem and "renew" in bad.problem
    good = next(b for b in report.businesses if b.id != row[0])
    assert good.ok and "contacts" in good.reachable and good.country == "GB"
    assert any("INACTIVE" in line for line in report.lines())


def test_missing_refresh_token_is_found_before_any_network_call(tmp_path: Path) -> None:
    """Error: a missing setting for the mode, before any network call (nothing listens)."""
    dead = f"http://127.0.0.1:{free_port()}"
    config = {"client_id": "c", "client_secret": "s", "oauth_settings_location": str(tmp_path / "t.json"),
              "advanced_config": {"api_url": dead + "/v3.1", "token_url": dead + "/token"}}  # fmt: skip
    with pytest.raises(SageConfigError) as info:
        SageClient.for_config(config).businesses()
    assert info.value.setting == "refresh_token"
    assert "sage-auth login" in str(info.value) and "GETANDREFRESH" in str(info.value)


def test_getandrefresh_without_a_terminal_fails_at_once_naming_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.argv", ["tap-sage", "--config", "/etc/sage/tap.json"])
    monkeypatch.delenv("MELTANO_PROJECT_ROOT", raising=False)
    dead = f"http://127.0.0.1:{free_port()}"
    config = {"initiate_oauth": "GETANDREFRESH", "client_id": "c", "client_secret": "s",
              "oauth_settings_location": str(tmp_path / "t.json"),
              "advanced_config": {"api_url": dead + "/v3.1", "token_url": dead + "/token"}}  # fmt: skip
    started = time.monotonic()
    with pytest.raises(SageAuthError) as info:
        SageClient.for_config(config).businesses()
    assert time.monotonic() - started < 2
    assert info.value.code == "login_required"
    assert "sage-auth login --config /etc/sage/tap.json" in info.value.fix
    monkeypatch.setenv("MELTANO_PROJECT_ROOT", str(tmp_path))
    monkeypatch.setenv("MELTANO_EXTRACTOR_NAME", "tap-sage")
    forget_clients()
    with pytest.raises(SageAuthError) as meltano:
        SageClient.for_config(config).businesses()
    assert "meltano invoke tap-sage:login" in meltano.value.fix


def test_lost_refresh_answer_is_not_replayed_blindly(
    sandbox300: SandboxProcess, tmp_path: Path
) -> None:
    """The answer to a refresh is lost after Sage consumed the token: the store is unchanged,
    the error says so; the next attempt re-reads the store, tries once, and on invalid_grant
    explains the interrupted refresh and names the login (it does not loop)."""
    store = tmp_path / "tokens.json"
    config = sandbox_config(sandbox300, store, access_token=None)
    before = used_refresh_tokens(sandbox300.db)
    source = tokens_of(config)
    with lose_next_refresh_answer(), pytest.raises(SageAuthError) as lost:
        source.token()
    assert lost.value.code == "refresh_unconfirmed"
    assert "may have consumed" in lost.value.message and "sage-auth login" in lost.value.fix
    data = store_data(store)
    assert data["refresh_token"] == config["refresh_token"]  # unchanged: nothing invented
    assert data["in_flight"]["fingerprint"].startswith("sha256:")
    assert used_refresh_tokens(sandbox300.db) == before + 1
    with pytest.raises(SageAuthError) as second:
        source.token()
    assert second.value.code == "refresh_interrupted"
    assert "did not finish" in second.value.message and "sage-auth login" in second.value.fix
    assert used_refresh_tokens(sandbox300.db) == before + 1


class _Swallow:
    """A token endpoint that reads the request and closes without answering (answer lost
    before the server did anything)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/token"
        self.hits = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.recv(65536)
            self.hits += 1
            conn.close()


def test_lost_answer_when_token_was_not_consumed_recovers(
    sandbox300: SandboxProcess, tmp_path: Path
) -> None:
    """Same loss, but the server never processed it: the next run connects with the same token."""
    store = tmp_path / "tokens.json"
    swallow = _Swallow()
    config = sandbox_config(sandbox300, store, access_token=None)
    config["advanced_config"]["token_url"] = swallow.url
    with pytest.raises(SageAuthError) as lost:
        SageClient.for_config(config).businesses()
    assert lost.value.code == "refresh_unconfirmed"
    assert swallow.hits == 1  # sent once, never replayed
    forget_clients()
    config["advanced_config"]["token_url"] = sandbox300.token_url
    assert len(SageClient.for_config(config).businesses()) == 2
    assert store_data(store)["in_flight"] is None
    swallow.sock.close()


def test_token_endpoint_429_and_503_are_retried_safely(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    """A refresh POST that Sage refused unprocessed (429 with Retry-After, 503) is sent again;
    every refresh still succeeds and each spends exactly one token."""
    sandbox = sandbox_factory(token_ttl=300, extra_args=["--oauth-fault-rate", "0.4",
                              "--fault-kinds", "429,503", "--fault-seed", "7"])  # fmt: skip
    store = tmp_path / "tokens.json"
    config = sandbox_config(sandbox, store, access_token=None)
    config["advanced_config"]["max_retries"] = 8
    source = tokens_of(config)
    for _ in range(3):
        source.refresh_now()
    assert store_data(store)["refresh_count"] == 3
    assert used_refresh_tokens(sandbox.db) == 3
    log = sandbox.log_path.read_text()
    assert " 429 " in log or " 503 " in log or "429" in log


def test_unwritable_store_spends_no_token(sandbox300: SandboxProcess, tmp_path: Path) -> None:
    """The new pair is written before it is used: if the store cannot be written, no refresh
    POST is sent at all."""
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")  # (a read-only folder would not stop root)
    config = sandbox_config(sandbox300, not_a_folder / "tokens.json", access_token=None)
    before = used_refresh_tokens(sandbox300.db)
    with pytest.raises(SageAuthError) as info:
        SageClient.for_config(config).businesses()
    assert info.value.code == "store_unwritable" and "no token was spent" in info.value.message
    assert used_refresh_tokens(sandbox300.db) == before


def test_getandrefresh_invalid_grant_without_terminal_names_the_login(
    sandbox300: SandboxProcess, tmp_path: Path
) -> None:
    config = sandbox_config(sandbox300, tmp_path / "tokens.json", access_token=None,
                            initiate_oauth="GETANDREFRESH")  # fmt: skip
    _spend(sandbox300, config)
    with pytest.raises(SageAuthError) as info:
        SageClient.for_config(config).businesses()
    assert info.value.code == "login_required"
    assert "already used" in info.value.message and "sage-auth login" in info.value.fix


def test_tls_is_always_verified(tmp_path: Path) -> None:
    pem = tmp_path / "corp-ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    plain = SageClient.for_config({"initiate_oauth": "OFF", "access_token": "x"})
    assert plain.new_session().verify is True
    forget_clients()
    custom = SageClient.for_config(
        {"initiate_oauth": "OFF", "access_token": "x", "ca_bundle": str(pem)}
    )
    assert custom.new_session().verify == str(pem)


def test_two_plugins_with_different_grants_do_not_flip_flop(
    sandbox300: SandboxProcess, tmp_path: Path
) -> None:
    """A tap and a target configured with two different grants on one connection: the first
    applied seed wins once, the other's config token is applied once too, and from then on both
    follow the store's rotated token (no config token is re-applied after it was spent)."""
    store = tmp_path / "tokens.json"
    tap = sandbox_config(sandbox300, store, access_token=None)
    target = sandbox_config(sandbox300, store, access_token=None)
    for _ in range(3):
        for config in (tap, target):
            forget_clients()
            tokens_of(config).refresh_now()
    data = store_data(store)
    assert data["refresh_count"] == 6 and data["last_error"] is None
    assert len(data["seed_fingerprints"]) == 2
