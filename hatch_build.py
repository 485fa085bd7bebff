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


class CustomBuildHook(BuildHookInterface):  # type: ignore[misc]
    """Compile the scanner; leave the wheel pure when it cannot be."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or os.environ.get("TAP_SAGE_PURE_PYTHON") == "1":
            return
        root = Path(self.root)
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        target = root / "tap_sage" / "sage" / f"_wirescan{suffix}"
        # built beside the target and moved over it: two installs from one checkout at once
        # (``meltano install`` of tap-sage and target-sage) never import half a file
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        # the command Python links its own extensions with (``-bundle -undefined
        # dynamic_lookup`` on macOS, ``-shared`` elsewhere)
        linker = (
            sysconfig.get_config_var("LDSHARED")
            or f"{sysconfig.get_config_var('CC') or 'cc'} -shared"
        )
        source = root / SOURCE
        digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
        command = [
            *shlex.split(linker), "-O2", "-fPIC", "-Wall", "-Wextra",
            f"-I{sysconfig.get_paths()['include']}", f'-DWIRESCAN_SOURCE="{digest}"',
            str(source), "-o", str(partial),
        ]  # fmt: skip
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError as error:
            sys.stderr.write(f"tap-sage: no C compiler ({error}); the page scanner is left out\n")
            return
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            sys.stderr.write(
                "tap-sage: the page scanner did not compile; the wheel is pure Python "
                f"(the same records, more CPU):\n{done.stderr}\n"
            )
            return
        partial.replace(target)
        if version == "editable":
            return  # imported from beside its source, as the package is
        build_data["artifacts"].append(str(target.relative_to(root)))
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
