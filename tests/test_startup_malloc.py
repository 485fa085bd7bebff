"""tap-sage's threads share one glibc heap (``tap_sage.startup.one_malloc_arena``): counted
with glibc's own ``malloc_stats`` in a process that imports the tap and then allocates from
several threads at once, beside one that does not import it (which must show more heaps, or
the test proves nothing) and one where the user set ``MALLOC_ARENA_MAX`` (kept)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROGRAM = r"""
import ctypes, sys, threading
if sys.argv[1] == "tap":
    import tap_sage.tap  # noqa: F401
ready = threading.Barrier(4)
def work():
    ready.wait()  # all four at once: each would take a heap of its own
    blocks = [bytes(200_000) for _ in range(20)]
    ready.wait()
    del blocks
threads = [threading.Thread(target=work) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
ctypes.CDLL(None).malloc_stats()
"""


def _glibc() -> bool:
    import ctypes

    try:
        ctypes.CDLL(None).malloc_stats  # noqa: B018 - glibc has it, musl does not
    except (OSError, AttributeError):
        return False
    return True


pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux")
    or not _glibc()
    or "MALLOC_ARENA_MAX" in os.environ
    or "arena_max" in os.environ.get("GLIBC_TUNABLES", ""),
    reason="glibc's arenas, with no arena setting of the user's around the tests",
)


def arenas(mode: str, **env: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode],
        capture_output=True, text=True, timeout=120, check=True, env={**os.environ, **env},
    )  # fmt: skip
    return done.stderr.count("\nArena ") + done.stderr.startswith("Arena ")


def test_the_tap_runs_on_one_heap() -> None:
    assert arenas("none") > 1  # threads take heaps of their own without it
    assert arenas("tap") == 1


def test_the_users_malloc_arena_max_is_kept() -> None:
    assert arenas("tap", MALLOC_ARENA_MAX="4") > 1


def test_a_glibc_tunable_is_kept_and_so_is_a_process_with_threads() -> None:
    assert arenas("tap", GLIBC_TUNABLES="glibc.malloc.arena_max=4") > 1
    done = subprocess.run(
        [sys.executable, "-c",
         "import threading, time\n"
         "threading.Thread(target=time.sleep, args=(2,), daemon=True).start()\n"
         "from tap_sage.startup import one_malloc_arena\n"
         "print(one_malloc_arena())"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "False"
