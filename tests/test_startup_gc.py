"""The executables' imports with only the young generation collected (``tap_sage.startup``)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tap_sage.startup import YOUNG_THRESHOLD, long_lived_imports, package_version

#: what a fresh interpreter reports after importing an executable's module: the thresholds,
#: how many objects were frozen, and the garbage a full pass then finds among them
PROBE = r"""
import gc, json, sys
before = gc.get_threshold()
import {module}
after = gc.get_threshold()
frozen = gc.get_freeze_count()
gc.unfreeze()
gc.set_debug(gc.DEBUG_SAVEALL)
garbage = gc.collect()
print(json.dumps({{"before": before, "after": after, "frozen": frozen, "garbage": garbage}}))
"""


@pytest.mark.parametrize("module", ["tap_sage.tap", "target_sage.target"])
def test_an_executable_import_freezes_what_lives_and_collects_what_dies_young(module: str) -> None:
    """Without the young passes, ``import tap_sage.tap`` leaves about 1,900 objects of garbage
    (attrs' and jsonschema's replaced classes); with them, about 20. The thresholds are back."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    seen = json.loads(out)
    assert seen["after"] == seen["before"]
    assert seen["frozen"] > 10_000  # the SDK's modules, classes and functions
    assert seen["garbage"] < 300, seen


def test_the_block_collects_only_young_objects_and_restores_the_thresholds() -> None:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    default = gc.get_threshold()  # as this Python reports it back
    try:
        frozen = gc.get_freeze_count()
        with long_lived_imports():
            assert gc.get_threshold()[0] == YOUNG_THRESHOLD
            assert gc.get_threshold()[1] > 1_000_000
            kept: list[list[int]] = [[] for _ in range(100)]
        assert gc.get_threshold() == default
        assert gc.get_freeze_count() >= frozen + len(kept)
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)


def test_the_thresholds_come_back_when_an_import_fails() -> None:
    saved = gc.get_threshold()
    try:
        with pytest.raises(ImportError), long_lived_imports():
            import tap_sage.no_such_module  # noqa: F401
        assert gc.get_threshold() == saved
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)


@pytest.mark.parametrize("distribution", ["tap-sage", "singer-sdk", "requests", "msgspec", "click"])
def test_a_package_version_is_what_importlib_metadata_says(distribution: str) -> None:
    from importlib import metadata

    assert package_version(distribution) == metadata.version(distribution)


def test_a_version_is_the_header_not_a_line_folded_into_another(tmp_path: Path) -> None:
    """A METADATA whose summary folds a line that reads like a ``Version`` header."""
    info = tmp_path / "folded_pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: folded-pkg\nSummary: a\n Version: 9.9\nVersion: 1.0\n\n"
        "Version: 7.7\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        assert package_version("folded-pkg") == "1.0"
    finally:
        sys.path.remove(str(tmp_path))


def test_an_unknown_distribution_has_the_sdks_answer() -> None:
    assert package_version("no-such-distribution-here") == "[could not be detected]"


def test_both_executables_report_their_versions_by_it() -> None:
    """The SDK's ``--version`` line and its start-up log line read these two class methods."""
    from importlib import metadata

    from tap_sage.tap import TapSage
    from target_sage.target import TargetSage

    for plugin in (TapSage, TargetSage):
        assert plugin.get_plugin_version() == metadata.version("tap-sage")
        assert plugin.get_sdk_version() == metadata.version("singer-sdk")
    out = subprocess.run(
        [sys.executable, "-m", "tap_sage.tap", "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"v{metadata.version('tap-sage')}, Meltano SDK v{metadata.version('singer-sdk')}" in out
