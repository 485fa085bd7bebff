"""README.md against what the executables say. Fast, and no network.

The settings and streams tables are generated (``make docs``); these tests fail when the
README (or meltano.yml) drifts from ``--about`` and discovery, when it tells users to run a
``make`` target that does not exist, or when an error code of the connection has no entry in
the troubleshooting section.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_settings_docs", ROOT / "scripts" / "gen_settings_docs.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def _section(title: str) -> str:
    """The text of the README section whose heading is ``title`` (up to the next ``## ``)."""
    text = _readme()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


@pytest.mark.parametrize("block", gen.blocks(), ids=lambda b: f"{b.path.name}: {b.name}")
def test_generated_block_matches_the_executables(block) -> None:
    current = gen.current_block(block.path.read_text(encoding="utf-8"), block)
    assert current == block.render(), (
        f"{block.path.name}: the {block.name!r} block drifted from the executables; run `make docs`"
    )


@pytest.mark.parametrize("executable", gen.EXECUTABLES)
def test_every_setting_is_in_a_readme_table(executable: str) -> None:
    text = _readme()
    for setting in gen.settings(executable):
        assert re.search(rf"^\| `{re.escape(setting.name)}`", text, re.MULTILINE), (
            f"{executable} setting {setting.name} is missing from the README's tables"
        )


def test_secrets_are_marked_in_the_readme() -> None:
    text = _readme()
    secrets = {s.name for exe in gen.EXECUTABLES for s in gen.settings(exe) if s.sensitive}
    assert {"access_token", "refresh_token", "client_secret", "proxy_password"} <= secrets
    for name in secrets:
        assert f"| `{name}` (secret) |" in text


def test_every_discovered_stream_is_in_the_streams_table() -> None:
    table = gen.current_block(_readme(), next(b for b in gen.blocks() if "streams" in b.name))
    for entry in gen.discovered_catalog()["streams"]:
        name = entry.get("tap_stream_id") or entry["stream"]
        assert f"| `{name}` |" in table


def _console_scripts() -> list[str]:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return re.findall(r"^([A-Za-z0-9_-]+)\s*=", section, re.MULTILINE)


def test_readme_names_every_console_script() -> None:
    scripts = _console_scripts()
    assert {"tap-sage", "target-sage", "sage-sandbox", "sage-auth"} <= set(scripts)
    text = _readme()
    for script in scripts:
        assert f"`{script}" in text, f"the README never mentions `{script}`"


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][A-Za-z0-9_-]*):", text, re.MULTILINE))


def _make_commands() -> set[str]:
    """The targets of every ``make X`` the README shows as a command (inline code or a block)."""
    text = _readme()
    told = set(re.findall(r"`(?:[A-Z_]+=\S+ )*make ([a-z][a-z0-9_-]*)", text))
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.DOTALL):
        told |= set(re.findall(r"^(?:[A-Z_]+=\S+ )*make ([a-z][a-z0-9_-]*)", block, re.MULTILINE))
    return told


def test_every_make_target_the_readme_mentions_exists() -> None:
    told = _make_commands()
    assert {"demo", "test", "docs"} <= told
    missing = told - _make_targets()
    assert not missing, f"the README tells users to run make targets that do not exist: {missing}"


def test_the_two_setup_commands_come_first() -> None:
    setup = _section("Set-up")
    assert "make demo" in setup
    assert "make test" in setup


_CODE_PATTERNS = (
    re.compile(r"(?:SageAuthError|_Failure)\(\s*\"([a-z_]+)\""),  # raised with a literal code
    re.compile(r"\bcode == \"([a-z_]+)\""),  # OAuth errors Sage sends, each handled
    re.compile(r"\"code\": \"([a-z_]+)\""),  # the connection test's own failures
)


def _error_codes() -> set[str]:
    """Every error code the connection layer and sage-auth can report."""
    codes: set[str] = set()
    for path in sorted((ROOT / "tap_sage" / "sage").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        for pattern in _CODE_PATTERNS:
            codes |= set(pattern.findall(text))
    return codes


def test_troubleshooting_covers_every_error_code() -> None:
    codes = _error_codes()
    assert {"invalid_grant", "invalid_client", "token_expired", "login_required"} <= codes
    section = _section("Troubleshooting")
    missing = sorted(c for c in codes if f"`{c}`" not in section)
    assert not missing, f"no troubleshooting entry for: {', '.join(missing)}"


def test_troubleshooting_covers_the_other_failures() -> None:
    section = _section("Troubleshooting")
    for words in (
        "MultiUserAccessDenied",
        "subscription",
        "proxy",
        "Setting `",
        "gave up after",
        "403",
        "422",
        "x_request_id",
    ):
        assert words in section, f"the troubleshooting section does not mention {words!r}"


def test_relative_links_resolve() -> None:
    for target in re.findall(r"\]\(((?!https?:|#)[^)]+)\)", _readme()):
        assert (ROOT / target.split("#")[0]).exists(), f"broken link: {target}"


def test_benchmark_figures_name_their_machine() -> None:
    section = _section("Benchmarks")
    assert "Machine:" in section
