"""``--about`` of both executables, as a user reads it (markdown and JSON)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("plugin", ["tap-sage", "target-sage"])
def test_markdown_about_starts_with_its_title(plugin: str) -> None:
    out = subprocess.run(
        [str(BIN / plugin), "--about", "--format", "markdown"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    lines = out.splitlines()
    assert lines[0] == f"# `{plugin}`"
    # no header line is indented (an indented block renders as code)
    assert [line for line in lines[:4] if line.startswith(" ")] == []
    assert "## Settings" in out


def test_json_about_keeps_the_whole_description() -> None:
    out = subprocess.run(
        [str(BIN / "target-sage"), "--about", "--format", "json"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    about = json.loads(out)
    assert "`reissue_journals`" in about["description"]
    assert "`download_attachments`" in about["description"]
