"""The database token store (oauth_settings_location = postgresql://...) against a real
PostgreSQL server (the ``pg_server`` fixture) and the sandbox over real HTTP.

Every promise of the file store, in the database: lock, re-read under the lock, CAS writes,
in-flight marker and ``refresh_interrupted``, owner client id, ``lock_timeout``; tokens
encrypted with the user's key; ``sage-auth`` unchanged, and ``sage-auth move`` both ways.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from tap_sage.sage.auth import RotatingTokenSource
from tap_sage.sage.client import SageClient
from tap_sage.sage.errors import SageAuthError, SageConfigError
from tap_sage.sage.settings import ConnectionSettings
from tap_sage.sage.token_store_db import LOCK_NAMESPACE, TABLE, DatabaseTokenStore, new_key
from tests.connection_helpers import (
    forget_clients,
    kill_during_refresh,
    run_worker,
    sage_auth,
    sandbox_config,
    store_data,
    used_refresh_tokens,
    write_config,
)

KEY_ENV = "SAGE_TOKEN_STORE_KEY"
assert TABLE == "tap_sage_token_store"  # the raw SQL below names it


@pytest.fixture(autouse=True)
def store_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A new key in the default key variable for each test, and no cached client."""
    key = new_key()
    monkeypatch.setenv(KEY_ENV, key)
    forget_clients()
    yield key
    forget_clients()


def db_config(sandbox: Any, url: str, **overrides: Any) -> dict[str, Any]:
    config = sandbox_config(sandbox, Path("unused"), **overrides)
    config["oauth_settings_location"] = url
    return config


def tokens_of(config: dict[str, Any]) -> RotatingTokenSource:
    source = SageClient.for_config(config).tokens
    assert isinstance(source, RotatingTokenSource)
    return source


def raw_row(url: str, name: str = "test") -> Any:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT * FROM tap_sage_token_store WHERE connection_name = :n"),
                {"n": name},
            ).first()
    finally:
        engine.dispose()


def test_settings_accept_a_postgresql_url_and_name_bad_forms(tmp_path: Path) -> None:
    base = {"client_id": "c", "client_secret": "s"}
    settings = ConnectionSettings.from_config(
        {**base, "oauth_settings_location": "postgresql://u:pw-XYZ-secret@db.example:5432/sage"}
    )
    assert settings.token_store_url == "postgresql+psycopg://u:pw-XYZ-secret@db.example:5432/sage"
    assert settings.token_store_display == "postgresql+psycopg://u:***@db.example:5432/sage"
    assert "pw-XYZ-secret" in settings.secrets and "pw-XYZ-secret" not in repr(settings)
    assert settings.oauth_settings_key == "env:SAGE_TOKEN_STORE_KEY"
    for location, words in (
        ("mysql://u@h/db", "must be PostgreSQL"),
        ("postgresql://u@h:5432", "names no database"),
        ("postgresql://u@h:notaport/db", "not a valid database URL"),
    ):
        with pytest.raises(SageConfigError) as info:
            ConnectionSettings.from_config({**base, "oauth_settings_location": location})
        assert info.value.setting == "oauth_settings_location" and words in str(info.value)
    key = new_key()
    with pytest.raises(SageConfigError) as info:
        ConnectionSettings.from_config({**base, "oauth_settings_key": key})
    assert info.value.setting == "oauth_settings_key" and key not in str(info.value)
    plain = ConnectionSettings.from_config({**base, "oauth_settings_location": str(tmp_path / "t.json")})  # fmt: skip
    assert plain.token_store_url is None and plain.token_store == str(tmp_path / "t.json")


def test_refresh_through_the_database_store_keeps_the_pair_encrypted(
    sandbox_factory: Any, pg_database: str, store_key: str
) -> None:
    sandbox = sandbox_factory(token_ttl=2)
    config = db_config(sandbox, pg_database)
    client = SageClient.for_config(config)
    assert len(client.businesses()) == 2
    tokens = tokens_of(config)
    assert isinstance(tokens.store, DatabaseTokenStore)
    data = tokens.refresh_now()
    time.sleep(2.1)  # the 2 s access token expires: the next request refreshes on its own
    assert len(client.businesses()) == 2
    data = tokens.store.read()
    assert data["refresh_count"] == 2 == used_refresh_tokens(sandbox.db) == tokens.refreshes
    assert data["in_flight"] is None and data["last_error"] is None
    assert data["client_id"] == config["client_id"]
    row = raw_row(pg_database)
    assert row.generation == data["generation"] and row.format_version == 1
    for secret in (data["access_token"], data["refresh_token"], config["client_secret"]):
        assert secret not in row.payload
    assert row.key_id == data["key_id"] and store_key not in row.payload
    # a new process (another machine) reads the same row with the same key
    forget_clients()
    again = tokens_of(config).store.read()
    assert again["refresh_token"] == data["refresh_token"]


def test_wrong_key_names_the_setting_and_spends_no_token(
    sandbox: Any, pg_database: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    store_key: str,
) -> None:  # fmt: skip
    config = db_config(sandbox, pg_database, access_token=None)
    tokens_of(config).refresh_now()
    before = raw_row(pg_database)
    spent = used_refresh_tokens(sandbox.db)
    forget_clients()
    new = new_key()
    monkeypatch.setenv(KEY_ENV, new)
    with pytest.raises(SageAuthError) as info:
        SageClient.for_config(config).businesses()
    assert info.value.code == "store_key_wrong"
    assert "oauth_settings_key" in info.value.message and "no token was spent" in info.value.message
    assert "oauth_settings_key" in info.value.fix and new not in str(info.value)
    assert used_refresh_tokens(sandbox.db) == spent and raw_row(pg_database) == before
    # no key at all, or not a key: errors naming the setting, before anything is read
    forget_clients()
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(SageConfigError) as missing:
        tokens_of(config).refresh_now()
    assert missing.value.setting == "oauth_settings_key" and KEY_ENV in str(missing.value)
    forget_clients()
    monkeypatch.setenv(KEY_ENV, "not-a-key")
    with pytest.raises(SageConfigError) as bad:
        tokens_of(config).refresh_now()
    assert bad.value.setting == "oauth_settings_key" and "not-a-key" not in str(bad.value)
    assert used_refresh_tokens(sandbox.db) == spent and raw_row(pg_database) == before
    # key rotation: the new key first, the old one after it, in a file; the next write
    # re-encrypts the row with the new key
    forget_clients()
    key_file = tmp_path / "keys"
    key_file.write_text(f"{new}\n{store_key}\n")
    rotated = dict(config, oauth_settings_key=f"file:{key_file}")
    tokens_of(rotated).refresh_now()
    after = raw_row(pg_database)
    assert after.key_id != before.key_id and after.generation > before.generation
    forget_clients()
    monkeypatch.setenv(KEY_ENV, new)
    assert len(SageClient.for_config(config).businesses()) == 2  # the new key alone opens it


def test_store_of_another_client_is_an_error_never_overwritten(
    sandbox: Any, pg_database: str
) -> None:
    config = db_config(sandbox, pg_database, access_token=None)
    tokens_of(config).refresh_now()
    before = raw_row(pg_database)
    forget_clients()
    other = dict(config, client_id="another-app", refresh_token="rt-of-another-app")
    with pytest.raises(SageAuthError) as info:
        SageClient.for_config(other).businesses()
    assert info.value.code == "store_conflict" and "oauth_settings_location" in info.value.fix
    assert TABLE in info.value.message
    assert raw_row(pg_database) == before


def _hold_lock(url: str, name: str = "test") -> sa.Connection:
    """Another "machine" holding the connection's advisory lock (a raw session)."""
    store = DatabaseTokenStore(url, name, key_source="env:X")
    conn = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool).connect()
    conn.execute(sa.text("SELECT pg_advisory_lock(:a, :b)"),
                 {"a": LOCK_NAMESPACE, "b": store.lock_key})  # fmt: skip
    return conn


def test_lock_timeout_waits_then_names_the_holder_and_spends_nothing(
    sandbox: Any, pg_database: str
) -> None:
    config = db_config(sandbox, pg_database, access_token=None)
    config["advanced_config"]["lock_timeout"] = 1.5
    holder = _hold_lock(pg_database)
    try:
        started = time.monotonic()
        with pytest.raises(SageAuthError) as info:
            tokens_of(config).refresh_now()
        waited = time.monotonic() - started
    finally:
        holder.close()
    assert info.value.code == "lock_timeout" and 1.4 < waited < 30  # waited its lock_timeout
    assert "127.0.0.1" in info.value.message and "lock_timeout" in info.value.fix
    assert used_refresh_tokens(sandbox.db) == 0
    # the holder's session ended: the lock is free (a held one would raise lock_timeout again)
    tokens_of(config).refresh_now()
    assert used_refresh_tokens(sandbox.db) == 1


def test_threads_and_a_waiting_machine_share_one_refresh(sandbox: Any, pg_database: str) -> None:
    """Re-read under the lock: four threads asking at once, while another "machine" holds the
    lock for a moment, end with a single refresh."""
    config = db_config(sandbox, pg_database, access_token=None)
    tokens = tokens_of(config)
    holder = _hold_lock(pg_database)
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            tokens.token()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    holder.close()
    for t in threads:
        t.join(30)
    assert errors == [] and used_refresh_tokens(sandbox.db) == 1 == tokens.refreshes


def test_a_write_that_lost_its_lock_never_overwrites_a_newer_pair(
    sandbox: Any, pg_database: str
) -> None:
    """Compare-and-swap: a write under the lock changes the row only if no one else wrote
    since this process read it."""
    config = db_config(sandbox, pg_database, access_token=None)
    tokens = tokens_of(config)
    tokens.refresh_now()
    store = tokens.store
    with store.locked():
        data = store.read()
        engine = sa.create_engine(pg_database, poolclass=sa.NullPool)
        with engine.begin() as conn:  # a writer that does not take the lock
            conn.execute(sa.text("UPDATE tap_sage_token_store SET generation = generation + 1"))
        engine.dispose()
        data["refresh_token"] = "stale"
        with pytest.raises(SageAuthError) as info:
            store.write(data)
    assert info.value.code == "store_changed" and "nothing was overwritten" in info.value.message
    assert store.read()["refresh_token"] != "stale"


@pytest.mark.parametrize("point", ["after_marker", "after_answer"])
def test_killed_during_refresh_marker_and_refresh_interrupted(
    sandbox: Any, pg_database: str, tmp_path: Path, point: str
) -> None:
    """SIGKILL while holding the database lock: the server frees the lock with the session.
    Killed before the POST: the next run spends the same token and connects. Killed after Sage
    answered: the next run says `refresh_interrupted` and names the login."""
    config = db_config(sandbox, pg_database, access_token=None)
    config["advanced_config"]["lock_timeout"] = 60
    path = write_config(tmp_path / "config.json", config)
    kill_during_refresh(path, point, tmp_path)
    assert tokens_of(config).store.read()["in_flight"] is not None
    started = time.monotonic()
    result = run_worker(path, "once")
    # the dead process's lock and marker held no one up (a wait would last 60 s or more)
    assert time.monotonic() - started < 45
    if point == "after_marker":
        assert result.returncode == 0, result.stdout + result.stderr[-2000:]
        data = tokens_of(config).store.read()
        assert data["in_flight"] is None and data["refresh_count"] == 1
        assert used_refresh_tokens(sandbox.db) == 1
    else:
        assert result.returncode == 1
        outcome = json.loads(result.stdout)
        assert outcome["errors"] == {"refresh_interrupted": 1}, outcome
        assert "sage-auth login" in outcome["messages"][0]


def test_sage_auth_commands_with_a_database_store(sandbox: Any, pg_database: str, tmp_path: Path) -> None:  # fmt: skip
    """url + exchange (a login by hand), status, test, refresh, revoke: unchanged."""
    config = db_config(sandbox, pg_database, access_token=None, refresh_token=None)
    path = write_config(tmp_path / "config.json", config)
    url = sage_auth("url", "--json", "--config", str(path))
    assert url.returncode == 0, url.stderr
    address = json.loads(url.stdout)["authorization_url"]
    verifier_row = raw_row(pg_database)
    assert "code_verifier" not in verifier_row.payload  # the pending login is encrypted too
    location = requests.get(address, allow_redirects=False, timeout=10).headers["Location"]
    exchanged = sage_auth("exchange", location, "--config", str(path))
    assert exchanged.returncode == 0, exchanged.stderr
    assert pg_database in exchanged.stdout and "businesses reachable: 2" in exchanged.stdout
    status = sage_auth("status", "--json", "--config", str(path),
                       env={"PYTHONWARNINGS": "always::ResourceWarning"})  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert "ResourceWarning" not in status.stderr  # its database sessions closed at exit
    report = json.loads(status.stdout)
    assert report["has_refresh_token"] and report["token_store_mode"] is None
    assert report["token_store"].startswith(pg_database) and len(report["businesses"]) == 2
    assert (
        "encrypted, key fernet:" in sage_auth("status", "--offline", "--config", str(path)).stdout
    )
    tested = sage_auth("test", "--probe", "sample", "--config", str(path))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    refreshed = sage_auth("refresh", "--json", "--config", str(path))
    assert refreshed.returncode == 0 and json.loads(refreshed.stdout)["refreshes"] == 1
    revoked = sage_auth("revoke", "--config", str(path))
    assert revoked.returncode == 0, revoked.stderr
    offline = sage_auth("status", "--offline", "--config", str(path))
    assert "refresh token: none" in offline.stdout


def test_move_to_the_database_and_back_spends_no_token(
    sandbox: Any, pg_database: str, tmp_path: Path
) -> None:
    file_store = tmp_path / "tokens.json"
    file_config = sandbox_config(sandbox, file_store, access_token=None)
    file_path = write_config(tmp_path / "file.json", file_config)
    assert sage_auth("refresh", "--config", str(file_path)).returncode == 0
    tokens_before = store_data(file_store)
    spent = used_refresh_tokens(sandbox.db)
    moved = sage_auth("move", "--to", pg_database, "--json", "--config", str(file_path))
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["moved_to"] == pg_database
    left = store_data(file_store)
    assert left["refresh_token"] is None and left["access_token"] is None
    assert left["moved_to"] == pg_database and file_store.stat().st_mode & 0o777 == 0o600
    # a run still pointing at the file says where the tokens went (config seed not re-applied)
    old = run_worker(file_path, "once")
    assert old.returncode == 1 and json.loads(old.stdout)["errors"] == {"store_moved": 1}
    db_path = write_config(tmp_path / "db.json", dict(file_config, oauth_settings_location=pg_database))  # fmt: skip
    assert run_worker(db_path, "once").returncode == 0
    forget_clients()
    in_db = tokens_of(dict(file_config, oauth_settings_location=pg_database)).store.read()
    assert in_db["refresh_token"] == tokens_before["refresh_token"]
    assert in_db["seed_fingerprints"] == tokens_before["seed_fingerprints"]
    assert used_refresh_tokens(sandbox.db) == spent  # nothing refreshed by the move
    # and back to another file
    back = tmp_path / "back" / "tokens.json"
    returned = sage_auth("move", "--to", str(back), "--config", str(db_path))
    assert returned.returncode == 0, returned.stderr
    assert store_data(back)["refresh_token"] == tokens_before["refresh_token"]
    assert used_refresh_tokens(sandbox.db) == spent
    again = sage_auth("move", "--to", str(back), "--config", str(db_path))
    assert again.returncode == 1 and "nothing_to_move" in again.stderr and str(back) in again.stderr
    back_path = write_config(tmp_path / "back.json", dict(file_config, oauth_settings_location=str(back)))  # fmt: skip
    assert sage_auth("refresh", "--config", str(back_path)).returncode == 0
    assert used_refresh_tokens(sandbox.db) == spent + 1


def test_keygen_writes_a_private_key_file(tmp_path: Path) -> None:
    out = tmp_path / "store.key"
    made = sage_auth("keygen", "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert out.stat().st_mode & 0o777 == 0o600 and len(out.read_text().strip()) == 44
    assert out.read_text().strip() not in made.stdout + made.stderr
    assert sage_auth("keygen", "--out", str(out)).returncode == 1  # never overwritten
    printed = sage_auth("keygen").stdout.strip()
    assert len(printed) == 44 and printed != out.read_text().strip()


def test_nothing_secret_in_debug_output_of_a_database_store(
    sandbox: Any, pg_server: Any, pg_database: str, tmp_path: Path, store_key: str
) -> None:
    """A password in the URL (the test server trusts any), the key, the tokens: never in the
    output of a DEBUG refresh and status, nor in an error about an unreachable database."""
    password = "pw-Secret-4711"
    url = pg_database.replace("postgres@", f"postgres:{password}@")
    config = db_config(sandbox, url)
    path = write_config(tmp_path / "config.json", config)
    runs = [sage_auth("refresh", "--log-level", "debug", "--config", str(path)),
            sage_auth("status", "--log-level", "debug", "--config", str(path))]  # fmt: skip
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    data = tokens_of(config).store.read()
    down = dict(config, oauth_settings_location=url.replace(str(pg_server.port), "1"))
    runs.append(sage_auth("refresh", "--log-level", "debug",
                          "--config", str(write_config(tmp_path / "down.json", down))))  # fmt: skip
    assert runs[-1].returncode == 1 and "store_unreachable" in runs[-1].stderr
    secrets = [password, store_key, data["access_token"], data["refresh_token"],
               config["client_secret"], config["refresh_token"]]  # fmt: skip
    for run in runs:
        for secret in secrets:
            assert secret not in run.stdout + run.stderr


def test_an_unfinished_refresh_of_another_machine_is_waited_for_then_tried(
    sandbox: Any, pg_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A database lock is lost with its session while its holder may live on: an in-flight
    marker of another host is given twice lock_timeout (from its start) to clear; then the
    stored token is tried once (here Sage had not consumed it, so the run connects)."""
    config = db_config(sandbox, pg_database, access_token=None)
    config["advanced_config"]["lock_timeout"] = 2
    tokens = tokens_of(config)
    store = tokens.store
    with store.locked():
        data = tokens.read_store()
        data["in_flight"] = {"fingerprint": "sha256:x", "pid": 1, "host": "another-machine",
                             "started_at": time.time() - 2.5}  # fmt: skip
        store.write(data)
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="sage.auth"):
        tokens.refresh_now()
    waited = time.monotonic() - started
    assert 1.2 < waited < 30, waited  # the marker's bound (2 x 2 s from its start), not more
    assert "another-machine" in caplog.text and "has not finished" in caplog.text
    after = store.read()
    assert after["in_flight"] is None and after["refresh_count"] == 1
    assert used_refresh_tokens(sandbox.db) == 1
