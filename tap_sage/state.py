"""When tap-sage writes STATE, and the deletion floor of first reads (issue 15).

A Singer STATE message carries the whole state: every partition's bookmarks (one partition per
stream and business). Written once or twice per partition, as the SDK and the reader used to,
the STATE of a many-business sync grew with the square of its partitions (12 businesses: 32.8 MB
of STATE beside 63.7 MB of records). Two rules keep it proportional to the output.

**Cadence.** A STATE that records progress (a finished partition's bookmark, a checkpoint, the
end of a stream, the SDK's every-10,000-records one) is written only once the records written
since the last STATE are at least ``ratio`` times that STATE's size (``STATE_RATIO``, 50, or
``TAP_SAGE_STATE_RATIO``; 0 writes every one): STATE is then at most about 1/``ratio`` of the
output. The last STATE of the sync is always written (``Cadence.pending``). This only ever
delays a STATE: every STATE, whenever it is written, is a snapshot taken on the main thread
between records, after every record it covers (``tap_sage.readahead``), so it never claims a
record that is not out; a run killed anywhere resumes from the last one written, and reads
again (never loses) what came after it. The rule counts bytes of output, not seconds, so the
messages, STATE included, are the same at every concurrency and on every machine.

**The deletion floor.** A first read (no bookmark) of a list with a deletion feed must have, in
a STATE written before its first record, a lower bound of the next run's deletion pass at or
before its scan began: a run after a kill then still emits the deletions of the records the
killed run emitted (``tap_sage.sync``, "Bookmark"). Written per partition, that bound alone was
one full STATE per partition. Instead the stream's state holds a floor (``deleted_since`` beside
``partitions``) that stands for the bound of every partition with neither a bookmark nor a
``deleted_since`` of its own. When a first read begins (on the main thread, before its first
record), the floor in the last STATE written either is at or before the read's own bound (it
covers the read: nothing is written), or it is missing or later: then the floor of this stream
and of every selected stream with a deletion feed not synced yet becomes the read's bound less
``FLOOR_SLACK`` (60 s, so that reads begun a little earlier need no STATE of their own) and a
STATE is written at once. Floors only ever move back during a run and are written the moment
they move, so the floor in the last STATE always covers every first read whose records are out.
A run that finds a floor in the state it starts from (the previous run was killed) begins the
deletion pass of each partition without a bookmark or a ``deleted_since`` there (an earlier
bound: a pass a little longer, never one that misses a deletion); a floor set by the run itself
moves none of its own passes. When a
stream's sync ends, every partition that relied on the floor and has no bookmark gets its own
``deleted_since`` (the bound it would have had, as before) and the stream's floor goes: the
STATE of a finished sync is what it was.
"""

from __future__ import annotations

import math
import os
import weakref
from dataclasses import dataclass, field
from typing import Any

#: Records written between two STATE messages: at least this many times the STATE's size.
STATE_RATIO = 50
#: The environment variable that sets ``STATE_RATIO`` (0: write every STATE).
RATIO_ENV = "TAP_SAGE_STATE_RATIO"
#: Seconds a new deletion floor is set before the first read that needs it.
FLOOR_SLACK = 60
#: Stream state key (beside ``partitions``): the deletion floor of its first reads.
FLOOR = "deleted_since"


def ratio_from_env() -> float:
    """``TAP_SAGE_STATE_RATIO``, else ``STATE_RATIO``; anything but a number >= 0 is an error
    naming the variable."""
    raw = os.environ.get(RATIO_ENV, "").strip()
    if not raw:
        return float(STATE_RATIO)
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"{RATIO_ENV}={raw!r}: must be a number, 0 or more")
    return value


@dataclass
class Cadence:
    """When the next STATE is due (module docstring), for one tap."""

    ratio: float = field(default_factory=ratio_from_env)
    #: a STATE was held back: the sync's last one must be written
    pending: bool = False
    #: bytes of output when the last STATE had been written
    after_last: int = 0
    #: size of the last STATE message
    last_size: int = 0
    #: streams whose sync ended (their floor is gone for good)
    finished: set[str] = field(default_factory=set)
    #: streams whose floor this run set or moved (it covers this run's records for the next
    #: run; this run's own deletion passes keep their own bounds)
    floored: set[str] = field(default_factory=set)
    #: stream -> the floor it had before this run first moved it (a killed run's)
    inherited: dict[str, str] = field(default_factory=dict)

    def due(self, written: int | None) -> bool:
        """Whether a STATE may go out, ``written`` bytes of output so far (None: unknown)."""
        if written is None or self.ratio <= 0:
            return True
        return written - self.after_last >= self.ratio * self.last_size

    def wrote(self, before: int | None, after: int | None) -> None:
        """A STATE went out, between ``before`` and ``after`` bytes of output."""
        self.pending = False
        if before is not None and after is not None:
            self.after_last = after
            self.last_size = after - before


_CADENCES: weakref.WeakKeyDictionary[Any, Cadence] = weakref.WeakKeyDictionary()


def cadence_of(tap: Any) -> Cadence:
    """The ``Cadence`` of ``tap`` (one per tap object)."""
    found = _CADENCES.get(tap)
    if found is None:
        found = _CADENCES[tap] = Cadence()
    return found


def floor_of(tap_state: Any, stream: str) -> str | None:
    """The deletion floor of ``stream`` in ``tap_state``, if any."""
    bookmarks = tap_state.get("bookmarks")
    entry = bookmarks.get(stream) if isinstance(bookmarks, dict) else None
    value = entry.get(FLOOR) if isinstance(entry, dict) else None
    return str(value) if value else None


def lower_floors(tap_state: Any, streams: list[str], value: str,
                 at: Any) -> list[str]:  # fmt: skip
    """Set the floor of each of ``streams`` to ``value`` where it is missing or later
    (``at``: the epoch function, to compare Sage's stamps); the streams whose floor moved."""
    bookmarks = tap_state.setdefault("bookmarks", {})
    moved = []
    for name in streams:
        entry = bookmarks.setdefault(name, {})
        old = entry.get(FLOOR)
        if not old or at(str(old)) > at(value):
            entry[FLOOR] = value
            moved.append(name)
    return moved


def partition_entries(tap_state: Any, stream: str) -> list[dict[str, Any]]:
    """The partition entries of ``stream`` in ``tap_state`` (none when it has none)."""
    bookmarks = tap_state.get("bookmarks")
    entry = bookmarks.get(stream) if isinstance(bookmarks, dict) else None
    found = entry.get("partitions") if isinstance(entry, dict) else None
    return [p for p in found if isinstance(p, dict)] if isinstance(found, list) else []


def drop_floor(tap_state: Any, stream: str) -> None:
    """Remove ``stream``'s floor (its sync ended); an entry left empty goes too."""
    bookmarks = tap_state.get("bookmarks")
    entry = bookmarks.get(stream) if isinstance(bookmarks, dict) else None
    if not isinstance(entry, dict) or FLOOR not in entry:
        return
    entry.pop(FLOOR)
    if not entry and isinstance(bookmarks, dict):
        bookmarks.pop(stream)
