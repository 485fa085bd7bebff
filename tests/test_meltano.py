"""meltano.yml, the demo script and the demo's input files. Fast, and no network.

The demo itself (which installs Meltano) is not run here: `make demo` runs it.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tap_sage.sage import settings as connection
from tap_sage.sage.auth_cli import build_parser
from tests.test_readme import gen

ROOT = Path(__file__).resolve().parent.parent
SAGE_PLUGINS = {"extractors": "tap-sage", "loaders": "target-sage"}


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "meltano.yml").read_text(encoding="utf-8"))
    return data


def _plugin(project: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(p for p in project["plugins"][kind] if p["name"] == name)
    return found


def _environment(project: dict[str, Any], name: str) -> dict[str, Any]:
    env: dict[str, Any] = next(e for e in project["environments"] if e["name"] == name)
    return env


def _env_plugin_config(project: dict[str, Any], env: str, kind: str, name: str) -> dict[str, Any]:
    plugins = _environment(project, env).get("config", {}).get("plugins", {}).get(kind, [])
    for plugin in plugins:
        if plugin["name"] == name:
            config: dict[str, Any] = plugin.get("config", {})
            return config
    return {}


def test_the_default_environment_is_the_sandbox(project: dict[str, Any]) -> None:
    assert project["default_environment"] == "sandbox"
    assert {e["name"] for e in project["environments"]} >= {"sandbox", "prod"}
    assert project.get("send_anonymous_usage_stats") is False
    assert project.get("project_id")


@pytest.mark.parametrize(("kind", "name"), SAGE_PLUGINS.items())
def test_sage_plugins_are_custom_and_complete(
    project: dict[str, Any], kind: str, name: str
) -> None:
    plugin = _plugin(project, kind, name)
    assert plugin["namespace"] == name.replace("-", "_")
    assert plugin["pip_url"] == "-e ."
    assert plugin["executable"] == name
    about = gen.about(name)
    assert plugin["capabilities"] == about["capabilities"]
    declared = {s["name"]: s for s in plugin["settings"]}
    properties = about["settings"]["properties"]
    assert set(declared) == set(properties), "run `make docs`"
    for setting_name, schema in properties.items():
        setting = declared[setting_name]
        assert setting.get("kind"), setting_name
        assert setting["kind"] != "password", "secrets are `sensitive: true`, never kind password"
        assert setting.get("description"), setting_name
        secret = bool(schema.get("secret") or schema.get("writeOnly"))
        assert bool(setting.get("sensitive")) == secret, setting_name


@pytest.mark.parametrize(("kind", "name"), SAGE_PLUGINS.items())
def test_one_settings_group_per_oauth_mode(project: dict[str, Any], kind: str, name: str) -> None:
    plugin = _plugin(project, kind, name)
    declared = {s["name"] for s in plugin["settings"]}
    groups = plugin["settings_group_validation"]
    assert ["access_token"] in groups  # OFF
    assert ["client_id", "client_secret", "refresh_token"] in groups  # REFRESH
    assert ["client_id", "client_secret", "initiate_oauth"] in groups  # GETANDREFRESH
    for group in groups:
        assert set(group) <= declared


@pytest.mark.parametrize(("kind", "name"), SAGE_PLUGINS.items())
def test_sage_auth_commands_exist(project: dict[str, Any], kind: str, name: str) -> None:
    plugin = _plugin(project, kind, name)
    usage = build_parser().format_help()
    assert {"login", "status", "test", "refresh"} <= set(plugin["commands"])
    for command in plugin["commands"].values():
        assert command["executable"] == "sage-auth"
        subcommand = command["args"].split()[0]
        assert re.search(rf"^\s+{subcommand}\s", usage, re.MULTILINE), subcommand


def test_no_secret_is_written_in_meltano_yml(project: dict[str, Any]) -> None:
    secrets = {"access_token", "refresh_token", "client_secret", "proxy_password"}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in secrets:
                    assert value in ("", None) or re.fullmatch(r"\$\{[A-Z0-9_]+\}", str(value)), (
                        f"{key} must come from the environment, not meltano.yml"
                    )
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(project)
    assert "kind: password" not in (ROOT / "meltano.yml").read_text(encoding="utf-8")


@pytest.mark.parametrize(("kind", "name"), SAGE_PLUGINS.items())
def test_plugin_config_points_at_the_sandbox(project: dict[str, Any], kind: str, name: str) -> None:
    config = _plugin(project, kind, name)["config"]
    advanced = config["advanced_config"]
    assert advanced["api_url"] == "${SAGE_SANDBOX_URL}/v3.1"
    for key in ("token_url", "authorize_url", "revoke_url"):
        assert advanced[key].startswith("${SAGE_SANDBOX_URL}/oauth/")
    assert config["refresh_token"] == "${SAGE_SANDBOX_REFRESH_TOKEN}"
    assert config["oauth_settings_location"].startswith("${MELTANO_PROJECT_ROOT}/demo-work/")


@pytest.mark.parametrize(("kind", "name"), SAGE_PLUGINS.items())
def test_prod_points_at_sage_itself(project: dict[str, Any], kind: str, name: str) -> None:
    config = _env_plugin_config(project, "prod", kind, name)
    # Meltano merges objects key by key, so prod must override every sandbox URL.
    assert config["advanced_config"] == {
        "api_url": connection.SAGE_API_URL,
        "token_url": connection.SAGE_TOKEN_URL,
        "authorize_url": connection.SAGE_AUTHORIZE_URL,
        "revoke_url": connection.SAGE_REVOKE_URL,
    }
    assert config["connection_name"] == "prod"
    assert config["client_secret"] == "${SAGE_CLIENT_SECRET}"
    assert config["oauth_settings_location"] == ""


def test_other_plugins_are_pinned_pypi_packages(project: dict[str, Any]) -> None:
    for kind, plugins in project["plugins"].items():
        for plugin in plugins:
            if plugin["name"] in SAGE_PLUGINS.values() or "inherit_from" in plugin:
                continue
            for requirement in plugin["pip_url"].split():
                assert re.fullmatch(r"[A-Za-z0-9_.-]+(\[[a-z,]+\])?==[0-9][0-9.]*", requirement), (
                    f"{kind} {plugin['name']}: pin {requirement!r} to one PyPI version"
                )


def test_file_extractors_feed_streams_target_sage_can_write(project: dict[str, Any]) -> None:
    from tap_sage.sage.catalogue import resources

    writable = {name for name, res in resources().items() if res.writable}
    children = [p for p in project["plugins"]["extractors"] if p.get("inherit_from") == "tap-jsonl"]
    assert len(children) >= 2
    for plugin in children:
        stream = plugin["config"]["stream_name"]
        assert stream in writable
        assert plugin["config"]["primary_keys"] == ["source_id"]
        assert "demo-work/inbox/" in plugin["config"]["path"]


def _demo_records(folder: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((ROOT / "demo" / "input" / folder).glob("*.jsonl")):
        lines = path.read_text(encoding="utf-8").splitlines()
        out[path.stem] = [json.loads(line) for line in lines if line.strip()]
    return out


def test_demo_inputs_create_then_update_delete_and_void() -> None:
    created = _demo_records("1-create")
    changed = _demo_records("2-change")
    assert set(created) == set(changed) == {"contacts", "sales_invoices"}
    contacts = {r["source_id"] for r in created["contacts"]}
    invoices = {r["source_id"] for r in created["sales_invoices"]}
    for invoice in created["sales_invoices"]:
        assert invoice["contact_id"] in contacts  # resolved by target-sage's `references`
        for line in invoice["invoice_lines"]:
            assert re.fullmatch(r"\{\{ledger_account:\d+\}\}", line["ledger_account_id"])
    updates = [r for r in changed["contacts"] if "_sdc_deleted_at" not in r]
    deletes = [r for r in changed["contacts"] if "_sdc_deleted_at" in r]
    voids = [r for r in changed["sales_invoices"] if "_sdc_deleted_at" in r]
    assert updates and deletes and voids
    assert {r["source_id"] for r in updates + deletes} <= contacts
    assert {r["source_id"] for r in voids} <= invoices
    assert all(r.get("void_reason") for r in voids)
    referenced = {i["contact_id"] for i in created["sales_invoices"]}
    assert not {r["source_id"] for r in deletes} & referenced, "delete a contact without invoices"


def test_demo_script_is_valid_bash_and_pins_meltano(project: dict[str, Any]) -> None:
    script = ROOT / "scripts" / "demo.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text(encoding="utf-8")
    assert "set -euo pipefail" in text
    assert "trap cleanup EXIT" in text
    version = re.search(r'MELTANO_VERSION="([0-9.]+)"', text)
    assert version is not None
    major, minor = (int(n) for n in version.group(1).split(".")[:2])
    low = re.search(r">=(\d+)\.(\d+)", project["requires_meltano"])
    high = re.search(r"<(\d+)", project["requires_meltano"])
    assert low is not None
    assert high is not None
    assert (int(low.group(1)), int(low.group(2))) <= (major, minor) < (int(high.group(1)), 0)


@pytest.mark.parametrize(("kind", "name"), SAGE_PLUGINS.items())
def test_hub_definitions_are_generated_from_meltano_yml(
    project: dict[str, Any], kind: str, name: str
) -> None:
    path = ROOT / "hub" / f"{name}.yml"
    text = path.read_text(encoding="utf-8")
    assert text == gen.hub_definition(name), f"hub/{name}.yml drifted; run `make docs`"
    definition = yaml.safe_load(text)
    plugin = _plugin(project, kind, name)
    for key in ("namespace", "executable", "capabilities", "settings"):
        assert definition[key] == plugin[key], key
    for key in ("settings_group_validation", "commands"):
        assert definition[key] == plugin[key], key
    # One file for every install source: a git URL or a local path, from the user's .env.
    assert definition["pip_url"] == "${SAGE_SINGER_PIP_URL}"
    assert "config" not in definition, "configuration belongs to the user's project"
    # Meltano copies a definition's comments into the user's meltano.yml, wherever they sit:
    # comments only in the header, before the first key.
    body = text.split("\nname: ", 1)[1]
    assert not [line for line in body.splitlines() if line.lstrip().startswith("#")]


_MELTANO3_SPELLINGS = (
    re.compile(r"meltano (?:--\S+ )*config (?:tap|target)-sage (?:test|set|list)\b"),
    re.compile(r"meltano (?:--\S+ )*test (?:tap|target)-sage\b"),
)


def test_readme_and_demo_use_the_spellings_of_the_pinned_meltano() -> None:
    demo = (ROOT / "scripts" / "demo.sh").read_text(encoding="utf-8")
    version = re.search(r'MELTANO_VERSION="([0-9.]+)"', demo)
    assert version is not None
    assert version.group(1).startswith("4.")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"Meltano {version.group(1)}" in readme
    # Meltano 3's spellings appear only in Troubleshooting, as the mistake they are.
    start = readme.index("\n## Troubleshooting\n")
    end = readme.index("\n## ", start + 1)
    for text in (readme[:start] + readme[end:], demo):
        for pattern in _MELTANO3_SPELLINGS:
            assert not pattern.search(text), pattern.search(text)
    for command in ("config test tap-sage", "config test target-sage"):
        assert command in demo
        assert command in readme


def test_meltano_3_is_declared_unsupported_and_requires_meltano_says_so(
    project: dict[str, Any],
) -> None:
    """What the README says of Meltano 3.9 holds: `requires_meltano` admits no 3.x release (the
    last, 3.9.5, included) and admits the pinned 4.x; Meltano 3 predates the key."""
    from packaging.specifiers import SpecifierSet

    admitted = SpecifierSet(project["requires_meltano"])
    for old in ("3.0.0", "3.7.9", "3.9.0", "3.9.5"):
        assert old not in admitted, old
    demo = (ROOT / "scripts" / "demo.sh").read_text(encoding="utf-8")
    pinned = re.search(r'MELTANO_VERSION="([0-9.]+)"', demo)
    assert pinned is not None
    assert pinned.group(1) in admitted
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "**Meltano 3 (3.9 included) is not supported**" in readme
    assert "`requires_meltano` excludes it" in readme
