"""The private singer-sdk names the project relies on (``tap_sage.sdk_private``) are still
there, with the parameters we use, in the installed SDK; and no other private SDK import
sneaks in."""

from __future__ import annotations

import re
from pathlib import Path

from tap_sage import sdk_private
from tap_sage.sdk_private import PrivateName

ROOT = Path(__file__).resolve().parents[1]


def test_every_private_sdk_name_is_as_we_rely_on_it() -> None:
    found = sdk_private.problems()
    assert not found, "singer-sdk changed: " + "; ".join(found)


def test_a_changed_name_fails_with_a_message_naming_it() -> None:
    gone = PrivateName("singer_sdk:Target", "_no_such_method", ("self",), "for the test")
    moved = PrivateName("singer_sdk:Stream", "_write_state_message", ("self", "x"), "test")
    unset = PrivateName("singer_sdk:Target", "_no_such_attr", None, "test", instance=True)
    module = PrivateName("singer_sdk.helpers._no_such_module", "f", (), "test")
    override = PrivateName(
        "singer_sdk:Target",
        "_write_state_message",
        ("self", "state"),
        "test",
        ("tests.test_sdk_private:_Drifted",),
    )
    messages = [sdk_private._check(e) for e in (gone, moved, unset, override)]
    assert "singer_sdk.Target._no_such_method is gone" in messages[0][0]
    assert "singer_sdk.Stream._write_state_message now takes ('self',)" in messages[1][0]
    assert "singer_sdk.Target._no_such_attr" in messages[2][0] and "__init__" in messages[2][0]
    assert "tests.test_sdk_private:_Drifted._write_state_message takes" in messages[3][0]
    original = sdk_private.PRIVATE_NAMES
    try:
        sdk_private.PRIVATE_NAMES = (module,)
        assert "cannot be looked up" in sdk_private.problems()[0]
    finally:
        sdk_private.PRIVATE_NAMES = original


class _Drifted:
    def _write_state_message(self, state: dict[str, object], extra: int = 0) -> None:
        """An override whose parameters no longer match the SDK's."""


def test_private_sdk_imports_go_through_the_one_module() -> None:
    private_import = re.compile(r"^\s*(from|import)\s+singer_sdk[\w.]*\._\w+", re.MULTILINE)
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("tap_sage", "target_sage")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.name != "sdk_private.py" and private_import.search(path.read_text())
    ]
    assert not offenders, f"private singer-sdk imports outside tap_sage/sdk_private.py: {offenders}"
