"""Connection settings: validation before any network call, defaults, secrets never shown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tap_sage.sage.errors import SageConfigError
from tap_sage.sage.settings import (
    ADVANCED_KEYS,
    CONNECTION_PROPERTIES,
    ConnectionSettings,
    OAuthMode,
    _default_store,
)

BASE: dict[str, Any] = {"client_id": "cid", "client_secret": "sec-XYZ-123", "refresh_token": "rt"}


def settings(**extra: Any) -> ConnectionSettings:
    return ConnectionSettings.from_config({**BASE, **extra})


def error_of(**extra: Any) -> SageConfigError:
    with pytest.raises(SageConfigError) as info:
        ConnectionSettings.from_config({**BASE, **extra})
    return info.value


@pytest.mark.parametrize("name", ["a/b", "a:b", "", "x" * 101, "tab\there"])
def test_connection_name_rejected(name: str) -> None:
    err = error_of(connection_name=name)
    assert err.setting == "connection_name"
    assert "/" in str(err) and ":" in str(err)
    # Left out, the name is `default`; given empty, it is an error (README: 1-100 characters).
    assert settings().connection_name == "default"


@pytest.mark.parametrize(
    ("mode", "missing", "config"),
    [
        ("OFF", "access_token", {}),
        ("REFRESH", "client_id", {"client_secret": "s"}),
        ("REFRESH", "client_secret", {"client_id": "c"}),
        ("GETANDREFRESH", "client_id", {"client_secret": "s"}),
        ("GETANDREFRESH", "client_secret", {"client_id": "c"}),
    ],
)
def test_missing_setting_for_the_mode(mode: str, missing: str, config: dict[str, Any]) -> None:
    with pytest.raises(SageConfigError) as info:
        ConnectionSettings.from_config({"initiate_oauth": mode, **config})
    assert info.value.setting == missing
    assert f"required when initiate_oauth is {mode}" in str(info.value)


def test_bad_mode_and_scope() -> None:
    assert error_of(initiate_oauth="sometimes").setting == "initiate_oauth"
    assert error_of(scope="everything").setting == "scope"
    assert settings(initiate_oauth="getandrefresh").initiate_oauth == "GETANDREFRESH"


def test_the_mode_is_a_typed_member_that_reads_as_its_name() -> None:
    mode = settings(initiate_oauth=" refresh ").initiate_oauth
    assert mode is OAuthMode.REFRESH and mode.rotates
    assert not OAuthMode.OFF.rotates and OAuthMode.GETANDREFRESH.rotates
    assert f"{mode}" == str(mode) == json.loads(json.dumps(mode)) == "REFRESH"
    assert [m.value for m in OAuthMode] == ["OFF", "REFRESH", "GETANDREFRESH"]


def test_advanced_config_unknown_key_and_bad_values() -> None:
    err = error_of(advanced_config={"timout": 3})
    assert err.setting == "advanced_config.timout"
    assert "unknown key" in str(err) and "timeout" in str(err)
    for key, value in [
        ("timeout", -1),
        ("timeout", "soon"),
        ("max_retries", 99),
        ("page_size", 500),
        ("refresh_margin", -5),
        ("api_url", "ftp://x"),
        ("token_url", "not a url"),
        ("user_agent", "  "),
        ("lock_timeout", 0),
    ]:
        err = error_of(advanced_config={key: value})
        assert err.setting == f"advanced_config.{key}", (key, value)
    assert error_of(advanced_config=[1, 2]).setting == "advanced_config"
    assert error_of(advanced_config="{not json").setting == "advanced_config"


def test_advanced_config_values_and_json_string() -> None:
    s = settings(advanced_config=json.dumps({"api_url": "http://x:1/v3.1/", "page_size": "50"}))
    assert s.api_url == "http://x:1/v3.1"
    assert s.page_size == 50
    assert settings().token_url == "https://oauth.accounting.sage.com/token"
    assert set(ADVANCED_KEYS) >= {"api_url", "token_url", "authorize_url", "timeout", "user_agent"}


def test_proxy_settings() -> None:
    assert error_of(use_proxy=True).setting == "proxy_url"
    err = error_of(use_proxy=True, proxy_url="ftp://u:topsecret@proxy:1")
    assert err.setting == "proxy_url" and "topsecret" not in str(err)
    s = settings(use_proxy="true", proxy_url="http://proxy:3128", proxy_username="me@corp",
                 proxy_password="p@ss:word")  # fmt: skip
    assert s.proxies == {
        "http": "http://me%40corp:p%40ss%3Aword@proxy:3128",
        "https": "http://me%40corp:p%40ss%3Aword@proxy:3128",
    }
    inline = settings(use_proxy=True, proxy_url="http://u:inl1ne@proxy:3128")
    assert inline.proxies and inline.proxies["https"] == "http://u:inl1ne@proxy:3128"
    assert inline.proxy_display == "http://***@proxy:3128"
    assert "inl1ne" in inline.secrets
    assert settings(proxy_url="http://proxy:3128").proxies is None  # environment decides
    assert error_of(use_proxy="perhaps", proxy_url="http://p:1").setting == "use_proxy"


def test_ca_bundle_must_exist(tmp_path: Path) -> None:
    assert error_of(ca_bundle=str(tmp_path / "nope.pem")).setting == "ca_bundle"
    pem = tmp_path / "ca.pem"
    pem.write_text("x")
    assert settings(ca_bundle=str(pem)).ca_bundle == str(pem)


def test_callback_url_checked() -> None:
    assert error_of(callback_url="localhost:8765").setting == "callback_url"
    assert settings().callback_url.startswith("http://localhost:")


def test_repr_hides_secrets() -> None:
    s = settings(access_token="acc-SECRET-1", refresh_token="ref-SECRET-2",
                 proxy_url="http://u:prx-SECRET-3@p:1", proxy_password="prx-SECRET-4")  # fmt: skip
    # rich (a traceback with locals, a rich logging handler) prints ``__rich_repr__``, which a
    # msgspec struct fills with every field unless told otherwise
    rich = repr(list(s.__rich_repr__()))
    text = repr(s) + str(s) + rich
    for secret in ("acc-SECRET-1", "ref-SECRET-2", "sec-XYZ-123", "prx-SECRET-3", "prx-SECRET-4"):
        assert secret not in text
    assert "connection_name" in rich


def test_default_store_unique_per_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    a = settings(connection_name="acme").oauth_settings_location
    b = settings(connection_name="globex").oauth_settings_location
    assert a != b and a.parent == b.parent == tmp_path / "sage-singer" / "connections"
    # names that need escaping never collide with the escaped spelling
    assert _default_store("a b") != _default_store("a_b")
    assert (
        settings(oauth_settings_location="~/x.json").oauth_settings_location
        == Path("~/x.json").expanduser()
    )
    assert error_of(oauth_settings_location=str(tmp_path)).setting == "oauth_settings_location"


def test_schema_marks_secrets_and_describes_everything() -> None:
    for key in ("access_token", "refresh_token", "client_secret", "proxy_password"):
        assert CONNECTION_PROPERTIES[key]["secret"] is True
        assert CONNECTION_PROPERTIES[key]["writeOnly"] is True
    for key, prop in CONNECTION_PROPERTIES.items():
        assert len(prop.get("description", "")) > 10, key
    for key in ADVANCED_KEYS:
        assert f"`{key}`" in CONNECTION_PROPERTIES["advanced_config"]["description"]


def test_sage_auth_merges_config_files_and_environment(tmp_path: Path) -> None:
    from tap_sage.sage.auth_cli import load_config

    first = tmp_path / "a.json"
    first.write_text(json.dumps({"client_id": "from-file", "scope": "readonly"}))
    second = tmp_path / "b.json"
    second.write_text(json.dumps({"scope": "full_access"}))
    env = {"TAP_SAGE_CLIENT_SECRET": "s", "TARGET_SAGE_CONNECTION_NAME": "tgt",
           "TAP_SAGE_ADVANCED_CONFIG": '{"timeout": 5}', "TAP_SAGE_USE_PROXY": "false"}  # fmt: skip
    merged = load_config([str(first), str(second), "ENV"], env)
    assert merged["client_id"] == "from-file" and merged["scope"] == "full_access"
    assert merged["connection_name"] == "tgt" and merged["client_secret"] == "s"
    s = ConnectionSettings.from_config({**merged, "refresh_token": "r"})
    assert s.timeout == 5 and s.use_proxy is False
    assert load_config(None, env) == load_config(["ENV"], env)
    with pytest.raises(SageConfigError):
        load_config([str(tmp_path / "missing.json")], env)
