"""The wheel as a user's ``pip install`` builds it: with the compiled page scanner where a C
compiler is (``hatch_build.py``), pure Python without one, and the tap reading the same pages
either way (``tests/test_fast_path.py`` runs both readers)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNER = f"tap_sage/sage/_wirescan{sysconfig.get_config_var('EXT_SUFFIX')}"


def build_wheel(out: Path, **env: str) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=300, env={**os.environ, **env}, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = out.glob("tap_sage-*.whl")
    return wheel


def test_the_wheel_carries_the_scanner_and_a_platform_tag(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert SCANNER in names, [n for n in names if "_wirescan" in n]
    assert "tap_sage/sage/_wirescan.c" not in names  # the source stays in the sdist
    assert "tap_sage/sage/_wirescan.pyi" in names
    assert not wheel.name.endswith("-none-any.whl"), wheel.name
    wheel_info = zipfile.ZipFile(wheel).read(f"{wheel.name.split('-')[0]}-0.1.0.dist-info/WHEEL")
    assert b"Root-Is-Purelib: false" in wheel_info


def test_without_the_scanner_the_wheel_is_pure_python(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path, TAP_SAGE_PURE_PYTHON="1")
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.endswith((".so", ".pyd"))], names
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name


@pytest.mark.parametrize(
    ("env", "expected"), [({}, "True"), ({"TAP_SAGE_PURE_PYTHON": "1"}, "False")]
)
def test_the_tap_uses_the_scanner_unless_told_not_to(env: dict[str, str], expected: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from tap_sage.sage import wire; print(wire.SCANNER is not None)"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env}, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == expected
