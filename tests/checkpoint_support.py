"""Test support: what the tests make happen at the checkpoints (``tap_sage.checkpoints``).

Child processes started by the tests install it at start (``install_from_environment``; the
target through ``TARGET_CLI``, the connection worker itself), and then the environment says what
happens; production code never loads this module:

- ``TARGET_SAGE_KILL_AT=<point>:<n>``: SIGKILL the process the n-th time it reaches ``point``;
- ``TAP_SAGE_TEST_PAUSE_AT=<point>``: stop there (until killed), after creating the file
  ``TAP_SAGE_TEST_PAUSE_FILE`` names, so the test knows it is there;
- ``TAP_SAGE_TEST_LOSE_REFRESH_ANSWER=1``: the answer of the next refresh POST is lost.

In the tests' own process, ``lose_next_refresh_answer()`` does the last for one block.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tap_sage import checkpoints
from tap_sage.sage.oauth import TokenAnswerLost

ROOT = Path(__file__).resolve().parents[1]

KILL_ENV = "TARGET_SAGE_KILL_AT"
PAUSE_ENV = "TAP_SAGE_TEST_PAUSE_AT"
PAUSE_FILE_ENV = "TAP_SAGE_TEST_PAUSE_FILE"
LOSE_ANSWER_ENV = "TAP_SAGE_TEST_LOSE_REFRESH_ANSWER"

#: ``python -c`` code that runs target-sage with the checkpoints of this module installed (the
#: test's folder need not be the checkout: the checkout is put on the path first).
TARGET_CLI = (
    f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
    "from tests.checkpoint_support import install_from_environment\n"
    "install_from_environment()\n"
    "from target_sage.target import TargetSage\n"
    "TargetSage.cli()\n"
)


class _Kill:
    """SIGKILL at the n-th passage through one point."""

    def __init__(self, point: str, n: int) -> None:
        self.point, self.n = point, n
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, name: str) -> None:
        if name != self.point:
            return
        with self.lock:
            self.count += 1
            if self.count == self.n:
                os.kill(os.getpid(), signal.SIGKILL)


def _pause(point: str, marker: str | None) -> checkpoints.Handler:
    def handler(name: str) -> None:
        if name != point:
            return
        if marker:
            with open(marker, "w", encoding="utf-8") as handle:
                handle.write(f"{os.getpid()} {name}\n")
        time.sleep(600)

    return handler


def _lose_answer(once: list[bool]) -> checkpoints.Handler:
    def handler(name: str) -> None:
        if name == "refresh_answered" and once:
            once.clear()
            raise TokenAnswerLost("the answer to the token refresh was lost (test hook)")

    return handler


def install_from_environment() -> None:
    """Install what the environment asks for (nothing when it asks for nothing)."""
    point, _, n = os.environ.get(KILL_ENV, "").partition(":")
    if point and n.isdigit():
        checkpoints.install(_Kill(point, int(n)))
    pause = os.environ.get(PAUSE_ENV)
    if pause:
        checkpoints.install(_pause(pause, os.environ.get(PAUSE_FILE_ENV)))
    if os.environ.get(LOSE_ANSWER_ENV) == "1":
        checkpoints.install(_lose_answer([True]))


@contextlib.contextmanager
def lose_next_refresh_answer() -> Iterator[None]:
    """In this process: the next refresh POST's answer is lost (within the block)."""
    remove = checkpoints.install(_lose_answer([True]))
    try:
        yield
    finally:
        remove()
