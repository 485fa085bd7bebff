"""Crash points for the exactly-once tests.

``TARGET_SAGE_KILL_AT=<point>:<n>`` makes the process SIGKILL itself the n-th time it reaches
``point``: ``before_request`` (a write is about to be sent), ``after_request`` (Sage answered a
write, nothing recorded yet; reads are not counted) or ``after_ledger`` (the ledger has the outcome, the results file and
STATE do not). Unset in normal use; it costs one dictionary lookup per request.
"""

from __future__ import annotations

import os
import signal
import threading

_ENV = "TARGET_SAGE_KILL_AT"
_lock = threading.Lock()
_counts: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    raw = os.environ.get(_ENV, "")
    point, _, n = raw.partition(":")
    if not point or not n.isdigit():
        return None
    return point, int(n)


def reached(point: str) -> None:
    """Count one passage through ``point``; die here if the environment asks for it."""
    target = _target()
    if target is None or target[0] != point:
        return
    with _lock:
        _counts[point] = _counts.get(point, 0) + 1
        if _counts[point] == target[1]:
            os.kill(os.getpid(), signal.SIGKILL)
