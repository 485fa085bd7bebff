"""Named points of the token refresh and of the target's writes, where a test may act.

Production code calls ``checkpoint("name")`` and nothing else: with no handler installed (always,
outside the tests) it does nothing and reads no environment. The behaviours (SIGKILL at the n-th
passage, pause until killed, lose the refresh answer) live in the tests' support module
``tests/checkpoint_support.py``, which child processes of the tests install at start.

The points:

- ``after_marker``, ``after_answer``, ``after_write``: a refresh (``tap_sage.sage.auth``) has
  written its in-flight marker, has Sage's answer, has stored the new pair;
- ``refresh_answered``: the refresh POST answered (a handler may raise ``TokenAnswerLost``, as if
  the answer had been lost on the way);
- ``before_request``, ``after_request``: a write of target-sage is about to be sent / Sage has
  answered it, nothing recorded yet (reads are not checkpoints);
- ``after_ledger``: the ledger has a write's outcome, the results file and STATE do not.
"""

from __future__ import annotations

from collections.abc import Callable

Handler = Callable[[str], None]

_handlers: list[Handler] = []


def checkpoint(name: str) -> None:
    """The code has reached point ``name``: run the installed handlers (none in production)."""
    for handler in tuple(_handlers):
        handler(name)


def install(handler: Handler) -> Callable[[], None]:
    """Run ``handler`` at every checkpoint from now on; returns the function that removes it."""
    _handlers.append(handler)

    def remove() -> None:
        if handler in _handlers:
            _handlers.remove(handler)

    return remove
