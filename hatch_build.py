"""The wheel's build hook: compiles ``tap_sage/sage/_wirescan.c`` (the fast path's page scanner)
with the C compiler Python was built with, when there is one.

The extension is optional: without a compiler or Python's headers the wheel is pure Python and
``tap_sage.records`` reads pages with msgspec alone (the same records, more CPU per record).
``TAP_SAGE_PURE_PYTHON=1`` skips it on purpose. An editable install builds it beside its source
(``tap_sage/sage/_wirescan.<suffix>``, ignored by git), so ``make venv`` is all a checkout needs;
the module carries the hash of the source it was built from, and ``tap_sage.sage.wire`` leaves
a build older than the source beside it unused.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = "tap_sage/sage/_wirescan.c"


def _linkers() -> list[list[str]]:
    """The commands to try, in turn: the user's ``LDSHARED`` or ``CC`` (as setuptools honours
    them), the command Python links its own extensions with (``-bundle -undefined
    dynamic_lookup`` on macOS, ``-shared`` elsewhere; it may name a compiler of the machine
    Python was built on), then the machine's ``cc``."""
    out: list[list[str]] = []
    if os.environ.get("LDSHARED"):
        out.append(shlex.split(os.environ["LDSHARED"]))
    elif os.environ.get("CC"):
        out.append([*shlex.split(os.environ["CC"]), "-shared"])
    configured = sysconfig.get_config_var("LDSHARED")
    if configured:
        out.append(shlex.split(configured))
    out.append(["cc", "-shared"])
    return out


def _compile(source: Path, partial: Path) -> str | None:
    """Compile ``source`` into ``partial``; None when done, else why not."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    flags = ["-O2", "-fPIC", "-Wall", "-Wextra", f"-I{sysconfig.get_paths()['include']}",
             f'-DWIRESCAN_SOURCE="{digest}"', str(source), "-o", str(partial)]  # fmt: skip
    why = "no compiler found"
    for linker in _linkers():
        try:
            done = subprocess.run(
                [*linker, *flags], capture_output=True, text=True, errors="replace",
                timeout=300, check=False,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as error:
            why = f"{linker[0]}: {error}"
            continue
        if done.returncode == 0 and partial.exists():
            return None
        why = f"{' '.join(linker)} failed:\n{done.stderr[-4000:]}"
    return why


class CustomBuildHook(BuildHookInterface):  # type: ignore[misc]
    """Compile the scanner; leave the wheel pure when it cannot be (never fail the install)."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or os.environ.get("TAP_SAGE_PURE_PYTHON") == "1":
            return
        root = Path(self.root)
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        target = root / "tap_sage" / "sage" / f"_wirescan{suffix}"
        # built beside the target and moved over it: two installs from one checkout at once
        # (``meltano install`` of tap-sage and target-sage) never import half a file
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            why = _compile(root / SOURCE, partial)
            if why is None:
                partial.replace(target)
        except Exception as error:  # noqa: BLE001 - whatever it is, the wheel stays installable
            why = f"{type(error).__name__}: {error}"
        if why is not None:
            partial.unlink(missing_ok=True)
            sys.stderr.write(
                "tap-sage: the page scanner was not compiled; the wheel is pure Python (the "
                f"same records, more CPU a record): {why}\n"
            )
            return
        if version == "editable":
            return  # imported from beside its source, as the package is
        build_data["artifacts"].append(str(target.relative_to(root)))
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
