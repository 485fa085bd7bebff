"""What the list reader knows: Sage's clock, answered pages, their bookkeeping and the
reader's constants."""

from __future__ import annotations

import logging
import math
from array import array
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: Seconds of disagreement tolerated between the clock of Sage's ``Date`` header and the clock
#: of its ``updated_at``/``deleted_at`` stamps.
CLOCK_MARGIN = 2

#: A read sorted by ``updated_at`` checkpoints (``Progress``) every this many pages.
CHECKPOINT_PAGES = 25

#: Sage's largest ``items_per_page``.
MAX_PAGE_SIZE = 200

#: Records remembered at each end of each page, to find a page boundary again.
ANCHORS = 4

#: Smallest page the reader falls back to when pages keep failing as too heavy.
PAGE_FLOOR = 10

#: Answered pages a concurrent scan keeps ready beyond the ``max_concurrency`` in flight.
PAGE_BUFFER = 2

#: Repair rounds before a read is declared unproven (bookmark then stays where it was).
MAX_ROUNDS = 6

LOGGER = logging.getLogger("tap_sage.sync")

_EPOCH_CACHE: dict[str, int] = {}


def epoch(stamp: str) -> int:
    """Whole seconds since the epoch of a Sage timestamp (``2024-05-01T10:00:00Z`` and kin)."""
    cached = _EPOCH_CACHE.get(stamp)
    if cached is not None:
        return cached
    text = stamp.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    value = math.floor(parsed.timestamp())
    if len(_EPOCH_CACHE) > 4096:  # bounded: memory must not grow with the records read
        _EPOCH_CACHE.clear()
    _EPOCH_CACHE[stamp] = value
    return value


def iso(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` of whole epoch seconds."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Page:
    """One answered list request."""

    number: int
    items: list[dict[str, Any]]
    total: int
    next: str | None
    #: Server clock (epoch seconds) at which the answer was sent: the query ran no later.
    served_at: int
    #: Server clock (epoch seconds) no later than the moment the request was sent.
    sent_at: int
    #: Asked for page ``number``, Sage answered its last page (a lower number): the list shrank
    #: under the scan. ``items`` are that last page's, ``next`` is None.
    past_end: bool = False


#: Told that Sage's answer to a page request has begun (status and headers in: its query
#: ran), before its body is read; told again if that body is lost and the request is retried.
Answered = Callable[[], None]


class Fetch(Protocol):
    """``fetch(path_or_next, params)`` -> Page. ``params`` is None when following a ``$next``;
    ``answered``, when given, is called as ``Answered`` says (``PageScanner._pages_in_turn``)."""

    def __call__(
        self, path: str, params: Mapping[str, Any] | None, /, *, answered: Answered | None = None
    ) -> Page: ...


def with_page(link: str, number: int) -> str:
    """``link`` (a relative ``$next``) asking for page ``number`` instead."""
    parts = urlsplit(link)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "page"]
    query.insert(0, ("page", str(number)))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


@dataclass
class _PageMeta:
    number: int
    served_at: int
    first: tuple[str, str] | None  # (id, updated_at) of its first record
    last: tuple[str, str] | None
    head: tuple[str, ...] = ()  # ids of its first few records (anchors)
    tail: tuple[str, ...] = ()  # ids of its last few records, last one last
    sent_at: int = -1  # server time no later than its query
    #: (id, updated_at) of the first and last few records: two pages that share one of these
    #: (the same record in the same version, so at the same place) cannot hide a record
    #: between them; sharing only an id may mean it moved (updated) to the later page
    ends: frozenset[tuple[str, str]] = frozenset()


@dataclass
class Removal:
    """A record that left the list while it was read: it may have shifted later pages."""

    page: int  # page (of the scan it belongs to) on which it was read; 0 when unknown
    at: int  # server time it left (new updated_at or deleted_at), or earlier; -1 when unknown
    until: int = 2**62  # server time by which it had left, or later


@dataclass(frozen=True)
class Progress:
    """A checkpoint inside a read sorted by ``updated_at``: every record up to ``through``
    (in list order) was emitted by a read that began at ``scan_start`` from ``since``."""

    since: str | None
    scan_start: str
    through: str

    def to_dict(self) -> dict[str, Any]:
        return {"since": self.since, "scan_start": self.scan_start, "through": self.through}

    @classmethod
    def from_dict(cls, raw: Any) -> Progress | None:
        if not isinstance(raw, dict):
            return None
        try:
            epoch(str(raw["scan_start"]))
            epoch(str(raw["through"]))
        except (KeyError, ValueError):
            return None
        since = raw.get("since")
        return cls(str(since) if since else None, str(raw["scan_start"]), str(raw["through"]))


@dataclass
class ReadResult:
    """What one read ended with."""

    bookmark: str | None
    verified: bool
    #: Exclusive lower bound of the next deletion pass when there is no bookmark to derive it
    #: from (a first read that could not be proven complete).
    deleted_after: str | None = None
    requests: int = 0
    emitted: int = 0
    tombstones: int = 0
    rounds: int = 0
    repaired: int = 0
    notes: list[str] = field(default_factory=list)


class _Emitted:
    """Compact memory of the records emitted by one read (20 bytes a record).

    ``ids``/``pages``: hash of the id and the page it was read on (to know WHERE a record that
    later left the list sat). ``versions``: hash of (id, updated_at), to emit each version once.
    """

    def __init__(self) -> None:
        self.ids = array("q")
        self.versions = array("q")
        self.pages = array("i")
        self._version_set: set[int] | None = None
        self._index: dict[int, int] | None = None
        self._lookups = 0

    def add(self, record_id: str, updated_at: str, page: int) -> None:
        self.ids.append(hash(record_id))
        version = hash((record_id, updated_at))
        self.versions.append(version)
        self.pages.append(page)
        if self._version_set is not None:
            self._version_set.add(version)
        if self._index is not None:
            self._index.setdefault(self.ids[-1], page)

    def page_of(self, record_id: str) -> int | None:
        """Page on which ``record_id`` was first emitted, if it was.

        A linear search of a C array for the first few look-ups (a handful of changes during a
        sync); an index dict once look-ups become frequent.
        """
        key = hash(record_id)
        if self._index is None:
            self._lookups += 1
            if self._lookups <= 32:
                try:
                    return int(self.pages[self.ids.index(key)])
                except ValueError:
                    return None
            self._index = {}
            for ident, page in zip(self.ids, self.pages, strict=True):
                self._index.setdefault(ident, page)
        return self._index.get(key)

    def has_version(self, record_id: str, updated_at: str) -> bool:
        """Whether this very version was emitted (builds a set on first use: repairs only)."""
        if self._version_set is None:
            self._version_set = set(self.versions)
        return hash((record_id, updated_at)) in self._version_set

    def __len__(self) -> int:
        return len(self.ids)


class _TotalWatch:
    """Without a deletion feed: did records leave the list while it was read?

    ``$total`` moves by creates and by updates that bring a record into an
    ``updated_or_created_since`` range (both seen as records with a fresh ``created_at`` /
    ``updated_at``) and by deletions (not seen). Records that left = fresh records seen -
    change of ``$total``; a positive count makes the scan suspect. (A deletion masked by an
    insert that was not seen, between the same two requests, escapes it: resources without
    ``deleted_since`` give nothing better.)
    """

    def __init__(self, filtered: bool) -> None:
        self.filtered = filtered
        self.first_total: int | None = None
        self.last_total = 0
        self.mark = 0
        self.fresh = 0

    def page(self, page: Page) -> None:
        if self.first_total is None:
            self.first_total = page.total
            self.mark = page.sent_at - 1 - CLOCK_MARGIN
        self.last_total = page.total

    def item(self, item: Mapping[str, Any], *, reseen: bool = False) -> None:
        created = item.get("created_at")
        if isinstance(created, str) and created and epoch(created) >= self.mark:
            self.fresh += 1
            return
        updated = item.get("updated_at")
        fresh = isinstance(updated, str) and bool(updated) and epoch(updated) >= self.mark
        if self.filtered and not reseen and fresh:
            self.fresh += 1

    @property
    def lost(self) -> bool:
        return self.fresh - (self.last_total - (self.first_total or 0)) > 0


@dataclass
class _ScanBook:
    """The bookkeeping of one main scan."""

    watch: _TotalWatch | None
    #: ids and versions of the last few pages, to find a record read twice
    previous: deque[dict[str, str]]
    metas: list[_PageMeta] = field(default_factory=list)
    removals: list[Removal] = field(default_factory=list)
    dups: list[int] = field(default_factory=list)
