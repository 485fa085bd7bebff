"""Consistent, concurrent reads of one Sage list for one business.

Sage lists are paged by page NUMBER (``page``/``items_per_page``), and page numbers are offsets:
a record that leaves the part of the list already read (deleted, or, when the list is sorted by
``updated_at``, updated and so moved to its end) shifts every later record one place forward,
and the record that was first on the next page slips onto a page already read. A naive scan
never sees it. This module reads a list so that it never loses a record:

**The walk.** One scan of the list, bounded below by ``updated_or_created_since=<bookmark>``
(inclusive) where the resource takes it, ordered by ``sort=updated_at`` where the resource takes
it (else Sage's default creation order). Page 1 is fetched first and its records are handed out
at once (so the first record comes after one request); ``$total`` then says how many pages there
are, and pages 2..n-1 are fetched ``max_concurrency`` at a time while the records are handed out
strictly in page order, exactly as a sequential scan would hand them out. The LAST page is fetched
alone, once every other page has been answered, and the walk goes on from there (via ``$next``) for
as long as the list grows. With no concurrent writes this costs exactly one request per
``items_per_page`` records, the page-1 request included.

**Why a record can be skipped (issue 9).** Keys only grow: a record created or updated gets
``updated_at`` = now, so (sorted by ``updated_at``) it goes to the end of the list, and (in
creation order) a new record goes to the end and an update moves nothing. So the position of a
record whose key does not change can only FALL, and only when a record before it leaves (is
deleted, or updated and so moved past it). Take such a record R, present throughout, on no page
of a scan. Page 1 starts at the list's start, so it is wholly before R; the last page (no
``$next``) is not wholly before R. So some boundary k has page k wholly before R and page k+1
wholly after it: R sat after offset ``k*size - 1`` when page k was answered and before offset
``k*size`` when page k+1 was. Its position fell, so (i) page k+1 was answered AFTER page k and
(ii) in between some record before it left. This holds whatever order the pages were answered
in. What the old reader missed (issue 9): read concurrently, the record that left need not be
one the scan READ. Page 5 answered, then a record of page 4's range deleted or updated, then
page 4 and page 6 answered: the record is on no page (it left first), page 4 and 5 share a
record, and the first record of page 6's old range is lost at the 5/6 boundary. And the reads
that repaired a skip were themselves scans under writes that nothing checked.

**The lemma (scans read in order).** A scan whose pages are answered one after another reads
every record present when its last page is answered, unless a record it read on one of its
pages but the last left the list before that last page was answered. (By induction: while no
record read so far leaves, the first ``k*size`` records of the list are exactly those of pages
1..k, since nothing enters before them, so page k+1 continues exactly where page k ended.) One
page is one atomic query: it needs no check.

**Detection.** The scan's suspect boundaries are those where (i) and (ii) are possible: some
record left after page k's query could have begun (``sent_at``, the ``Date`` header less the
request's duration) and before page k+1 was answered (``served_at``), from a position before
that boundary. The records that left are all known, with the times they left:

* deleted: the deletion pass (``deleted_since``) lists them with ``deleted_at``; tombstones
  only accumulate, so reading that feed over pages loses none;
* updated (sorted by ``updated_at``): they are among the records changed since the scan began,
  which the reader reads COMPLETELY (``_complete_tail``: one page of up to 200, or several checked
  by the lemma and read again until proven) whenever the scan met any changed record. The last
  page is read after every other page was answered, so an update made before it ends the list
  and shows on it (or makes it all fresh records); a scan that met no changed record had none
  that matters. A changed record created during the scan sat after every older record and
  shifted none; in creation order an update moves nothing.

A record the scan read sat, read in order (one worker), on that page or later (the lemma), and
left after that page's query began; read concurrently, it may have sat anywhere. A record the
scan never read (it left before its page came, or it was itself skipped and then left) may have
sat anywhere, and, unless its ``deleted_at`` says when (creation order), left any time from the
scan's start. A removal is never after its ``deleted_at`` / new ``updated_at``, so boundaries
whose first page was sent after it are not suspect on its account. Two neighbouring pages
that share a record cannot hide one. Resources without ``deleted_since`` fall back to ``$total``:
fresh records seen (``created_at``/``updated_at`` after the scan began, including those of a
page answered past the shrunken end) minus the change of ``$total`` counts the records that
left; a positive count makes the scan suspect (a deletion masked by a create the reader never
saw escapes this: such resources give nothing better).

**Why nothing is lost.** A record R present throughout the sync either (a) kept its key during
the main scan and the repairs, or (b) was updated during them. (a): if the scan skipped R, R's
boundary is suspect (above) and its repair is a chain of atomic pages each starting at or before
the end of the previous one, reaching past the boundary's far side, so R is on one of them;
where a single second holds more records than a page, the repair spans pages and is checked by
the lemma. (b): after every repair, the records changed since the scan began are read once more,
completely (proven by the lemma, else read again, ``MAX_ROUNDS`` times); R, changed before that
read, is on it. A read that cannot be proven keeps the bookmark where it was.

**Repair.** Where the list is sorted by ``updated_at``, the records skipped at boundary k lie,
in (``updated_at``, creation) order, strictly between the last record of page k and the first of
page k+1; they are re-read by keyset: ``updated_or_created_since=<updated_at of the last record
of page k>`` with ``items_per_page=200`` until the window's upper timestamp is passed, and
finally the records changed since the scan began are read once more, completely (a skipped
record updated before its window was re-read has moved there). In creation order, each suspect boundary is found again in ONE page (an
``items_per_page`` chosen so that the page holds remembered records from both sides of it; one
page is one atomic query) and what lies between them is emitted; failing that, the list is
scanned again from the first suspect page. Records already emitted (same id and ``updated_at``)
are not emitted twice. A repair that itself spans pages is checked the same way, for at most
``MAX_ROUNDS`` rounds; a read that cannot be proven complete does not move the bookmark, so the
next run reads the same range again (a record may come twice; none is lost).

**Heavy pages.** When a main-scan page keeps failing after its retries in a way smaller pages
may cure (``heavy``: a 5xx, an HTML 52x from a gateway, a timeout), the read starts again with
pages half as big, down to ``page_floor``, and says so (``on_smaller_pages``). The new scan is a
scan of its own, proven as above; what the given-up one emitted is not emitted again, so the
records, their order and the bookmark are those of one read.

**Bookmark.** ``min(latest updated_at or deleted_at read, server time when the scan began - 1 s)``: every
change made during the sync carries an ``updated_at`` at or after the scan began and is read
again by the next run (``updated_or_created_since`` is inclusive), and everything older was
emitted. The next deletion pass asks for ``deleted_since = bookmark - 1 s`` (exclusive), which
covers every deletion this run's pass could not have seen; a first read (no bookmark) puts its
own lower bound in state before its first record, so a run after a killed first run still
emits the deletions of what the killed run emitted. The bookmark depends only on the data, never
on the concurrency: sequential and concurrent reads of the same data emit the same records in
the same order and the same bookmark.

**Checkpoints.** A read sorted by ``updated_at`` (with a deletion feed) offers a ``Progress``
every ``CHECKPOINT_PAGES`` pages while nothing suggests a skip: every record up to the last one
emitted, in list order, is out. A run killed after it resumes from there, and then checks that
nothing left the list since the killed read began (no deletion since, no record created before
the checkpoint and changed since); if something did, it re-reads the killed read's range too.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
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

#: Repair rounds before a read is declared unproven (bookmark then stays where it was).
MAX_ROUNDS = 6

LOGGER = logging.getLogger("tap_sage.sync")


# -- time ----------------------------------------------------------------------------------------

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


# -- pages ---------------------------------------------------------------------------------------


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


#: ``fetch(path_or_next, params)`` -> Page. ``params`` is None when following a ``$next``.
Fetch = Callable[[str, Mapping[str, Any] | None], Page]


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


@dataclass(frozen=True)
class ReaderSettings:
    """What one read of one list is asked to do: the reader's parameters."""

    #: ``items_per_page`` of the main scan
    page_size: int
    #: inclusive lower bound of ``updated_at`` (the bookmark), when ``incremental``
    since: str | None
    incremental: bool
    #: the list takes ``sort=updated_at``
    sortable: bool
    #: the list takes ``deleted_since``
    deletions: bool
    #: emit the deletion pass's tombstones
    include_deleted: bool = True
    #: the stream's own filters (``stream_filters``)
    params: Mapping[str, Any] = field(default_factory=dict)
    #: pages of one list in flight at a time
    max_concurrency: int = 1
    #: exclusive lower bound of the deletion pass when there is no bookmark to derive it from
    deleted_after: str | None = None
    #: largest ``items_per_page`` of the repairs
    max_page_size: int = MAX_PAGE_SIZE
    #: an interrupted read's checkpoint to resume from
    resume: Progress | None = None
    checkpoint_pages: int = CHECKPOINT_PAGES
    #: smallest page the heavy-page fallback goes down to
    page_floor: int = PAGE_FLOOR


@dataclass(frozen=True)
class ReaderHooks:
    """How a read reports to its stream (all optional)."""

    #: a ``Progress`` to put in state (every record up to it is out)
    checkpoint: Callable[[Progress], None] | None = None
    #: a first read began: the lower bound (ISO) of the next run's deletion pass
    on_start: Callable[[str], None] | None = None
    #: whether a page's error may be cured by smaller pages
    heavy: Callable[[Exception], bool] | None = None
    #: the read goes on with pages of this size after this error
    on_smaller_pages: Callable[[int, Exception], None] | None = None
    logger: logging.Logger | None = None


@dataclass
class _ScanBook:
    """The bookkeeping of one main scan."""

    watch: _TotalWatch | None
    #: ids and versions of the last few pages, to find a record read twice
    previous: deque[dict[str, str]]
    metas: list[_PageMeta] = field(default_factory=list)
    removals: list[Removal] = field(default_factory=list)
    dups: list[int] = field(default_factory=list)


class ListReader:
    """Reads one list resource of one business consistently (see the module docstring).

    Iterate ``records()``; afterwards ``result`` holds the bookmark and whether the read was
    proven complete.
    """

    def __init__(
        self,
        fetch: Fetch,
        path: str,
        settings: ReaderSettings,
        *,
        executor: Executor | None = None,
        hooks: ReaderHooks | None = None,
    ) -> None:
        hooks = hooks or ReaderHooks()
        incremental = settings.incremental
        page_size = settings.page_size
        self.settings = settings
        self.fetch = fetch
        self.path = path
        self.base_params = dict(settings.params)
        self.page_size = page_size
        self.max_page_size = max(page_size, settings.max_page_size)
        self._wide = {"items_per_page": self.max_page_size}
        self.since = settings.since if incremental else None
        self.incremental = incremental
        self.sortable = settings.sortable
        self.deletions = settings.deletions
        self.include_deleted = settings.include_deleted
        self.executor = executor
        self.max_concurrency = max(1, settings.max_concurrency)
        self.log = hooks.logger or LOGGER
        self.deleted_after = settings.deleted_after
        # resuming: read from the checkpoint; the range before it is checked, not re-read
        # (only where both removals show: sorted by updated_at, with a deletion feed)
        resumable = incremental and settings.sortable and settings.deletions
        resume = settings.resume
        self.resume = resume if (resume and resumable) else None
        self.origin = self.resume.since if self.resume else self.since  # the safe bookmark
        if self.resume:
            self.since = self.resume.through
        self.checkpoint = hooks.checkpoint if resumable else None
        self.checkpoint_pages = max(1, settings.checkpoint_pages)
        self._resume_suspect = False
        self._page_sent: dict[int, int] = {}
        self.on_start = hooks.on_start
        self.result = ReadResult(bookmark=self.origin, verified=False)
        self._emitted = _Emitted()
        self._tombstoned: set[str] = set()
        self._max_updated: int | None = None
        self._max_deleted: int | None = None  # latest deleted_at of the deletion pass
        self._scan_start: int | None = None
        self._fresh_seen = False  # the main scan met a record changed since it began
        self.heavy = hooks.heavy
        self.page_floor = max(1, min(settings.page_floor, page_size))
        self.on_smaller_pages = hooks.on_smaller_pages
        self._out_before: set[int] = set()  # versions emitted by a scan given up
        self._lock = threading.Lock()

    # -- requests ---------------------------------------------------------------------------

    def _get(self, path: str, params: Mapping[str, Any] | None) -> Page:
        with self._lock:
            self.result.requests += 1
        return self.fetch(path, params)

    def _params(self, since: str | None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {
            "page": 1,
            "items_per_page": self.page_size,
            "attributes": "all",
            **self.base_params,
        }
        if since is not None:
            params["updated_or_created_since"] = since
        if self.sortable:
            params["sort"] = "updated_at"
        if extra:
            params.update(extra)
        return params

    # -- scanning ---------------------------------------------------------------------------

    def _scan(
        self, params: dict[str, Any], *, start_page: int = 1, concurrent: bool
    ) -> Iterator[Page]:
        """Pages ``start_page``.. of one query, in page order, till the end of the list.

        Concurrent mode: pages between the first and the (currently) last are fetched
        ``max_concurrency`` at a time; the last page only after every other page was answered.
        When a page past the (shrunken) end answers the last page again, that answer is yielded
        with ``items`` emptied and ``next`` None, so the caller sees where the list ended.
        """
        page = self._get(self.path, dict(params, page=start_page))
        yield page
        if page.next is None:
            return
        template = page.next
        if not concurrent or self.executor is None or self.max_concurrency <= 1:
            number = page.number
            while page.next is not None:
                page = self._get(page.next, None)
                if page.number <= number:
                    yield self._past_end(number + 1, page)
                    return
                number = page.number
                yield page
            return
        yield from self._concurrent_pages(template, page)

    @staticmethod
    def _past_end(number: int, answer: Page) -> Page:
        """The answer to a request for page ``number`` that came back as an earlier page."""
        return Page(number, answer.items, answer.total, None, answer.served_at, answer.sent_at,
                    past_end=True)  # fmt: skip

    def _concurrent_pages(self, template: str, current: Page) -> Iterator[Page]:
        assert self.executor is not None
        executor = self.executor
        while current.next is not None:
            last = max(current.number + 1, math.ceil(current.total / self.page_size))
            pending: dict[int, Future[Page]] = {}
            to_submit = to_yield = current.number + 1
            try:
                while to_yield < last:
                    while to_submit < last and to_submit - to_yield < self.max_concurrency:
                        link = with_page(template, to_submit)
                        pending[to_submit] = executor.submit(self._get, link, None)
                        to_submit += 1
                    page = pending.pop(to_yield).result()
                    if page.number < to_yield:  # past the end: the list shrank
                        yield self._past_end(to_yield, page)
                        return
                    to_yield += 1
                    current = page
                    yield page
                    if page.next is None:
                        return
            finally:
                for future in pending.values():
                    future.cancel()
                for future in pending.values():
                    if not future.cancelled():
                        with contextlib.suppress(Exception):  # a discarded prefetch
                            future.result()
            # the (currently) last page, alone, once every other page was answered
            page = self._get(with_page(template, last), None)
            if page.number < last:
                yield self._past_end(last, page)
                return
            current = page
            yield page

    # -- accepting records ------------------------------------------------------------------

    def _note_updated(self, updated_at: str) -> None:
        if not updated_at:
            return
        value = epoch(updated_at)
        if self._max_updated is None or value > self._max_updated:
            self._max_updated = value

    def _accept_main(
        self,
        page: Page,
        previous: deque[dict[str, str]],
        removals: list[Removal],
        dups: list[int],
        watch: _TotalWatch | None,
    ) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """Records of a main-scan page to emit; updates the scan's bookkeeping."""
        out: list[dict[str, Any]] = []
        here: dict[str, str] = {}
        emitted = self._emitted
        tail_from = (self._scan_start or 0) - CLOCK_MARGIN
        sortable = self.sortable
        for item in page.items:
            record_id = item.get("id")
            updated_at = item.get("updated_at") or ""
            if not isinstance(record_id, str):
                out.append(item)
                continue
            here[record_id] = updated_at
            if any(seen.get(record_id) == updated_at for seen in previous):
                # shifted back across a boundary: read twice (read concurrently, pages up to
                # max_concurrency apart were in flight together, so the same version may come
                # again that many pages later; sequentially only on the next page)
                dups.append(page.number)
                continue
            reseen = False
            if updated_at and epoch(updated_at) >= tail_from:
                self._fresh_seen = True
            if sortable and updated_at and epoch(updated_at) >= tail_from:
                earlier = emitted.page_of(record_id)
                if earlier is not None and earlier < page.number:
                    # updated after it was read: it moved to the end and shifted what followed
                    # it left its place after that page's query: perhaps long before this
                    # version's updated_at (an update before), so that query bounds the time
                    reseen = True
                    removals.append(
                        Removal(
                            self._position(earlier),
                            self._page_sent.get(earlier, -1),
                            epoch(updated_at),
                        )
                    )
                    if emitted.has_version(record_id, updated_at):
                        continue
                elif earlier is None:
                    removals.extend(self._unread_update(item, tail_from))
            if watch is not None:
                watch.item(item, reseen=reseen)
            emitted.add(record_id, updated_at, page.number)
            self._note_updated(updated_at)
            if not self._already_out(record_id, updated_at):
                out.append(item)
        return out, here

    def _position(self, page: int) -> int:
        """Where, for the suspect boundaries, a record read on main-scan ``page`` sat.

        Read in order (one worker), a record that left from page ``page`` can only have shifted
        the boundaries after it. Read concurrently, pages are answered in any order, so a page
        read late may start past records that were on pages read early: its position is not
        bounded (0: before every boundary)."""
        return page if self._sequential else 0

    @property
    def _sequential(self) -> bool:
        return self.executor is None or self.max_concurrency <= 1

    def _unread_update(self, item: Mapping[str, Any], tail_from: int) -> list[Removal]:
        """A record updated during the scan whose earlier version this scan never read.

        Read concurrently, it may have sat anywhere below a page answered before it left and
        above one answered after (see the module docstring); read in order, it may have been
        skipped (by an earlier departure) and then left. Its position is unknown and it left at
        some time between the scan's start and this version's ``updated_at``. A record created
        during the scan never sat below one that existed before it, and shifts nothing.
        """
        created = item.get("created_at")
        if isinstance(created, str) and created and epoch(created) >= tail_from:
            return []
        updated = item.get("updated_at")
        until = epoch(updated) if isinstance(updated, str) and updated else 2**62
        return [Removal(0, tail_from, until)]

    @staticmethod
    def _meta(page: Page) -> _PageMeta:
        items = page.items
        first = items[0] if items else None
        last = items[-1] if items else None
        return _PageMeta(
            page.number,
            page.served_at,
            (str(first.get("id")), first.get("updated_at") or "") if first else None,
            (str(last.get("id")), last.get("updated_at") or "") if last else None,
            tuple(str(i.get("id")) for i in items[:ANCHORS]),
            tuple(str(i.get("id")) for i in items[-ANCHORS:]),
            page.sent_at,
            frozenset(
                (str(i.get("id")), str(i.get("updated_at") or ""))
                for i in items[:ANCHORS] + items[-ANCHORS:]
            ),
        )

    def _accept_repair(self, item: dict[str, Any]) -> bool:
        record_id = item.get("id")
        if not isinstance(record_id, str):
            return False
        updated_at = item.get("updated_at") or ""
        if self._emitted.has_version(record_id, updated_at) or self._already_out(
            record_id, updated_at
        ):
            return False
        self._emitted.add(record_id, updated_at, 0)
        self._note_updated(updated_at)
        self.result.repaired += 1
        return True

    # -- deletions ----------------------------------------------------------------------------

    def _deleted(self, after: int) -> Iterator[dict[str, Any]]:
        """Tombstones of records deleted after ``after`` (epoch seconds, exclusive)."""
        params: dict[str, Any] = {
            "page": 1,
            "items_per_page": self.max_page_size,
            "deleted_since": iso(after),
        }
        next_link: str | None = self.path
        query: dict[str, Any] | None = params
        seen_page = 0
        while next_link is not None:
            page = self._get(next_link, query)
            if page.number <= seen_page:
                return
            seen_page = page.number
            yield from page.items
            next_link, query = page.next, None

    def _deletion_pass(
        self, after: int, watch_from: int
    ) -> tuple[list[dict[str, Any]], list[tuple[str, int]]]:
        """Tombstones to emit (deleted after ``after``) and the (id, deleted_at) of records
        deleted at or after ``watch_from`` (those may have shifted this run's pages)."""
        emit: list[dict[str, Any]] = []
        recent: list[tuple[str, int]] = []
        for item in self._deleted(after):
            record_id = item.get("id")
            deleted_at = item.get("deleted_at")
            if not isinstance(record_id, str):
                continue
            when = epoch(deleted_at) if isinstance(deleted_at, str) and deleted_at else -1
            if when < 0 or when >= watch_from:
                recent.append((record_id, when))
            if when >= 0 and (self._max_deleted is None or when > self._max_deleted):
                self._max_deleted = when
            if record_id in self._tombstoned:
                continue
            self._tombstoned.add(record_id)
            if self.include_deleted:
                emit.append(item)
        return emit, recent

    # -- the read -----------------------------------------------------------------------------

    def records(self) -> Iterator[tuple[dict[str, Any], bool]]:
        """Every record to emit, in order, as ``(record, is_tombstone)``."""
        started = int(time.time())
        book = yield from self._main_phase()
        scan_start = self._scan_start if self._scan_start is not None else started - 1
        watch_from = scan_start - CLOCK_MARGIN
        killed_from = (
            epoch(self.resume.scan_start) - CLOCK_MARGIN if self.resume is not None else watch_from
        )
        after = self._deletions_after(watch_from, killed_from)
        deleted_count = 0
        if self.deletions:
            deleted_count = yield from self._deletion_phase(book, after, watch_from, killed_from)
        verified = yield from self._changed_phase(book, watch_from)
        self._scan_doubts(book)
        suspects = self._suspect_boundaries(book.metas, book.removals)
        if suspects:
            self.result.rounds += 1
            repaired = yield from self._repair_phase(book, suspects, deleted_count)
            verified = verified and repaired
        if verified and self.resume is not None and self._resume_suspect:
            # something left the list while the interrupted read ran: read its range again
            self.result.notes.append("re-read the range of the interrupted run")
            self.result.rounds += 1
            low = epoch(self.origin) if self.origin else 0
            verified = yield from self._repair_windows_range(low, epoch(self.resume.through))
        if self.sortable and (suspects or self._resume_suspect):
            # last: a skipped record updated before its window was re-read has moved here
            held, _changed = yield from self._complete_tail()
            verified = verified and held
        self._finish(verified, after, scan_start)

    def _main_phase(self) -> Generator[tuple[dict[str, Any], bool], None, _ScanBook]:
        """The walk, started again with smaller pages while pages keep failing as too heavy."""
        while True:
            book = _ScanBook(
                watch=None if self.deletions else _TotalWatch(self.since is not None),
                previous=deque(maxlen=self.max_concurrency + 1),
            )
            try:
                yield from self._main_scan(book)
            except Exception as exc:
                if not self._smaller_pages(exc):
                    raise
                continue
            book.previous.clear()
            return book

    def _deletions_after(self, watch_from: int, killed_from: int) -> int:
        """The exclusive lower bound (epoch seconds) of this read's deletion pass."""
        after = watch_from - 1
        if self.resume is not None:
            after = epoch(self.origin) - 1 if self.origin else killed_from - 1
        elif self.since:
            after = epoch(self.since) - 1
        if self.deleted_after:
            after = min(after, epoch(self.deleted_after))
        return after

    def _deletion_phase(
        self, book: _ScanBook, after: int, watch_from: int, killed_from: int
    ) -> Generator[tuple[dict[str, Any], bool], None, int]:
        """Emit the tombstones; note the deletions that may have shifted the scan's pages.
        Returns how many records were deleted while the scan ran."""
        deleted_count = 0
        tombs, recent = self._deletion_pass(after, min(watch_from, killed_from))
        self.result.tombstones += len(tombs)
        for item in tombs:
            yield item, True
        for record_id, when in recent:
            if self.resume is not None and (when < 0 or when >= killed_from):
                self._resume_suspect = True  # it may have sat before the checkpoint
            if when >= 0 and when < watch_from:
                continue
            deleted_count += 1
            page_no = self._emitted.page_of(record_id)
            until = when if when >= 0 else 2**62
            if page_no is not None:
                # sorted by updated_at, an update may have moved it before it was deleted
                at = self._page_sent.get(page_no, -1) if self.sortable else when
                book.removals.append(Removal(self._position(page_no), at, until))
            else:
                # never read: it may still have sat below a boundary (``_unread_update``);
                # it left at ``deleted_at``, or, sorted by updated_at, perhaps earlier by
                # an update
                at = watch_from if self.sortable else when
                book.removals.append(Removal(0, at, until))
        return deleted_count

    def _changed_phase(
        self, book: _ScanBook, watch_from: int
    ) -> Generator[tuple[dict[str, Any], bool], None, bool]:
        """Records changed during the scan may have left places it had passed: find every one
        of them (the scan's own tail may have missed some). Returns whether that read held."""
        if not (self.sortable and self._fresh_seen and len(book.metas) > 1):
            return True
        held, changed = yield from self._complete_tail()
        for item, earlier in changed:
            changed_id = item.get("id")
            changed_at = item.get("updated_at")
            if not isinstance(changed_id, str) or not isinstance(changed_at, str) or not changed_at:
                continue
            if earlier is None:
                book.removals.extend(self._unread_update(item, watch_from))
            elif earlier > 0:
                sent = self._page_sent.get(earlier, -1)
                book.removals.append(Removal(self._position(earlier), sent, epoch(changed_at)))
        return held

    def _scan_doubts(self, book: _ScanBook) -> None:
        """Without a deletion feed, a fallen ``$total``; read concurrently, a record read on two
        pages: either may mean a record left a place the scan had passed."""
        if len(book.metas) <= 1:
            return
        if book.watch is not None and book.watch.lost:
            book.removals.append(Removal(1, -1))  # $total fell: something may have left
            self.result.notes.append("$total says records left during the scan")
        if book.dups and self.max_concurrency > 1:
            book.removals.append(Removal(max(1, min(book.dups) - 1), -1))
            self.result.notes.append("a record was read on two pages")

    def _repair_phase(
        self, book: _ScanBook, suspects: list[int], deleted_count: int
    ) -> Generator[tuple[dict[str, Any], bool], None, bool]:
        """Re-read what the suspect boundaries may hide; whether that was proven."""
        if self.sortable:
            return (yield from self._repair_windows(book.metas, suspects))
        verified = yield from self._repair_gaps(book.metas, suspects, book.removals)
        if not verified:
            first_page = book.metas[suspects[0]].number
            start = max(1, first_page - math.ceil(deleted_count / self.page_size) - 1)
            verified = yield from self._rescan(start)
        return verified

    def _finish(self, verified: bool, after: int, scan_start: int) -> None:
        """The read's outcome: proven or not, and its bookmark (module docstring)."""
        self.result.verified = verified
        if not verified:
            self.log.warning(
                "Could not prove the read of %s complete after %d repair rounds; the bookmark "
                "stays at %s so the next run reads this range again",
                self.path, MAX_ROUNDS, self.origin,
            )  # fmt: skip
            self.result.bookmark = self.origin
            if self.origin is None and self.deletions:
                self.result.deleted_after = iso(after)
        elif not self.incremental:
            self.result.bookmark = None
        else:
            # A deletion is a change too: a list whose newest event is a deletion would
            # otherwise ask for that tombstone (and every one after its last update) again on
            # every run. Still capped at the scan's start, so the argument above holds.
            latest = max(
                (v for v in (self._max_updated, self._max_deleted) if v is not None), default=None
            )
            self.result.bookmark = self.since if latest is None else iso(min(latest, scan_start))

    def _main_scan(self, book: _ScanBook) -> Iterator[tuple[dict[str, Any], bool]]:
        """The walk (module docstring), with its bookkeeping in ``book``."""
        metas, removals, dups, watch = book.metas, book.removals, book.dups, book.watch
        for page in self._scan(self._params(self.since), concurrent=True):
            if self._scan_start is None:
                self._scan_start = page.sent_at - 1
                if self.on_start is not None and self.deletions:
                    # before any record: the deletion pass of whatever run follows this one
                    # (even if this one is killed) must reach back to here
                    self.on_start(iso(self._scan_start - CLOCK_MARGIN - 1))
            if page.past_end:
                # the list shrank under the scan: the end may have moved onto read pages. The
                # answer is the list's last page now: what it holds that was not read is
                # emitted (and counted, without a deletion feed: a record created during the
                # scan and met only here must not hide a deletion from ``$total``)
                metas.append(self._meta(Page(page.number, [], page.total, None, page.served_at,
                                             page.sent_at)))  # fmt: skip
                removals.append(Removal(metas[-2].number if len(metas) > 1 else 1, -1))
                self._fresh_seen = True
                if watch is not None:
                    watch.page(page)
                for item in page.items:
                    if self._accept_repair(item):
                        if watch is not None:
                            watch.item(item)
                        self.result.emitted += 1
                        yield item, False
                continue
            metas.append(self._meta(page))
            self._page_sent.setdefault(page.number, page.sent_at)
            if watch is not None:
                watch.page(page)
            if self.resume is not None:
                self._check_resumed(page)
            out, here = self._accept_main(page, book.previous, removals, dups, watch)
            book.previous.append(here)
            self.result.emitted += len(out)
            for item in out:
                yield item, False
            # every record of this page is written now: a checkpoint may follow it
            self._maybe_checkpoint(metas, removals, dups)

    def _smaller_pages(self, error: Exception) -> bool:
        """After a page kept failing as too heavy (``heavy``): read again with pages half as big
        (down to ``page_floor``), and say so. The new scan is a scan of its own (the proof of
        the module docstring is about it alone); what the failed one emitted is not emitted
        again, so the records, their order and the bookmark are those of one read."""
        if self.heavy is None or not self.heavy(error):
            return False
        smaller = max(self.page_floor, self.page_size // 2)
        if smaller >= self.page_size:
            return False
        self.page_size = smaller
        self.max_page_size = smaller
        self._wide = {"items_per_page": smaller}
        self._out_before.update(self._emitted.versions)
        self._emitted = _Emitted()
        self._page_sent = {}
        self._fresh_seen = True  # the failed scan's changes are not known to the new one
        self.result.notes.append(f"pages of {smaller} after {error}")
        if self.on_smaller_pages is not None:
            self.on_smaller_pages(smaller, error)
        return True

    def _already_out(self, record_id: str, updated_at: str) -> bool:
        """Emitted by a scan given up for smaller pages."""
        return bool(self._out_before) and hash((record_id, updated_at)) in self._out_before

    def _check_resumed(self, page: Page) -> None:
        """While resuming: a record changed after the interrupted read began, created before
        its checkpoint, may have left a place that read had passed."""
        assert self.resume is not None
        killed_from = epoch(self.resume.scan_start) - CLOCK_MARGIN
        through = epoch(self.resume.through)
        for item in page.items:
            updated = item.get("updated_at")
            if not (isinstance(updated, str) and updated and epoch(updated) >= killed_from):
                continue
            created = item.get("created_at")
            if not (isinstance(created, str) and created) or epoch(created) <= through:
                self._resume_suspect = True
                return

    def _maybe_checkpoint(
        self, metas: list[_PageMeta], removals: list[Removal], dups: list[int]
    ) -> None:
        """Offer a checkpoint after every ``checkpoint_pages`` pages, while nothing suggests a
        skipped record and the read has not reached the records changed since it began."""
        if self.checkpoint is None or not metas or len(metas) % self.checkpoint_pages:
            return
        last = metas[-1].last
        if removals or dups or self._resume_suspect or last is None or not last[1]:
            return
        start = self._scan_start or 0
        if epoch(last[1]) >= start - CLOCK_MARGIN:
            return
        if self.resume is not None:  # keep the interrupted read's start and origin
            progress = Progress(self.origin, self.resume.scan_start, last[1])
        else:
            progress = Progress(self.since, iso(start), last[1])
        self.checkpoint(progress)

    def _repair_windows_range(
        self, low: int, high: int
    ) -> Generator[tuple[dict[str, Any], bool], None, bool]:
        for _ in range(MAX_ROUNDS):
            clean = yield from self._repair_window(low, high)
            if clean:
                return True
            self.result.rounds += 1
        return False

    @staticmethod
    def _suspect_boundaries(metas: list[_PageMeta], removals: list[Removal]) -> list[int]:
        """Indexes i of boundaries (between ``metas[i]`` and ``metas[i+1]``) that a removal may
        have shifted: the removal sat at or before page i and happened before page i+1 ran."""
        if len(metas) < 2 or not removals:
            return []
        out: list[int] = []
        for index in range(len(metas) - 1):
            number = metas[index].number
            sent = metas[index].sent_at
            later = metas[index + 1]
            for removal in removals:
                if (
                    removal.page <= number
                    and (removal.at < 0 or later.served_at + CLOCK_MARGIN >= removal.at)
                    and (sent < 0 or sent - CLOCK_MARGIN <= removal.until)
                ):
                    out.append(index)
                    break
        return out

    def _repair_windows(
        self, metas: list[_PageMeta], suspects: list[int]
    ) -> Generator[tuple[dict[str, Any], bool], None, bool]:
        """Re-read by keyset the (updated_at) windows around suspect boundaries."""
        windows: list[tuple[int, int | None]] = []
        for index in suspects:
            if metas[index].ends & metas[index + 1].ends:
                continue  # the pages overlap: nothing can lie between them
            low_meta = metas[index].last or metas[index].first
            high_meta = metas[index + 1].first
            if low_meta is None or not low_meta[1]:
                return (yield from self._rescan(1))
            low = epoch(low_meta[1])
            high = epoch(high_meta[1]) if high_meta and high_meta[1] else None
            if windows and low <= (windows[-1][1] or low):
                prev_low, prev_high = windows[-1]
                merged = None if high is None or prev_high is None else max(high, prev_high)
                windows[-1] = (prev_low, merged)
            else:
                windows.append((low, high))
        for _ in range(MAX_ROUNDS):
            again: list[tuple[int, int | None]] = []
            for low, high in windows:
                clean = yield from self._repair_window(low, high)
                if not clean:
                    again.append((low, high))
            if not again:
                return True
            self.result.rounds += 1
            windows = again
        return False

    def _complete_tail(
        self,
    ) -> Generator[
        tuple[dict[str, Any], bool], None, tuple[bool, list[tuple[dict[str, Any], int | None]]]
    ]:
        """Read, completely, every record changed since the scan began; emit what was not.

        Returns whether the read is proven complete and each record met with the page of the
        main scan on which an older version of it was emitted (None: no older version emitted
        before; 0: by a repair). One page is one atomic query and complete; a read over several pages (in
        order) is complete unless a record read on one of its pages but the last left the list
        (was updated or deleted) before its last page was answered (module docstring, "the
        lemma"); that is checked, and the read done again when it fails, ``MAX_ROUNDS`` times.
        """
        since = (self._scan_start or 0) - CLOCK_MARGIN
        met: list[tuple[dict[str, Any], int | None]] = []
        for round_no in range(MAX_ROUNDS):
            if round_no:
                self.result.rounds += 1
            pages: list[Page] = []
            read_on: dict[str, tuple[int, str]] = {}  # id -> (index of its page, updated_at)
            for page in self._scan(self._params(iso(since), self._wide), concurrent=False):
                pages.append(page)
                for item in page.items:
                    record_id = item.get("id")
                    if not isinstance(record_id, str):
                        continue
                    read_on.setdefault(record_id, (len(pages) - 1, item.get("updated_at") or ""))
                    updated = item.get("updated_at") or ""
                    known = self._emitted.has_version(record_id, updated)
                    met.append((item, None if known else self._emitted.page_of(record_id)))
                    if self._accept_repair(item):
                        self.result.emitted += 1
                        yield item, False
            if not pages or (len(pages) == 1 and pages[0].next is None):
                return True, met
            if pages[-1].past_end:
                continue  # the list shrank under the read: something left it
            held = yield from self._tail_held(pages, read_on)
            if held:
                return True, met
        return False, met

    def _tail_held(
        self, pages: list[Page], read_on: dict[str, tuple[int, str]]
    ) -> Generator[tuple[dict[str, Any], bool], None, bool]:
        """Whether no record read on ``pages`` (one read, in order) but on the last left the
        list before the last was answered: then the read missed nothing (the lemma)."""
        last = len(pages) - 1
        started = pages[0].sent_at - 1 - CLOCK_MARGIN
        ended = pages[-1].served_at + CLOCK_MARGIN
        if self.deletions:
            for item in self._deleted(started - 1):
                record_id = item.get("id")
                deleted_at = item.get("deleted_at")
                when = epoch(deleted_at) if isinstance(deleted_at, str) and deleted_at else -1
                if (
                    isinstance(record_id, str)
                    and record_id in read_on
                    and when <= ended
                    and read_on[record_id][0] < last
                ):
                    return False
        else:
            watch = _TotalWatch(True)
            for page in pages:
                watch.page(page)
                for item in page.items:
                    watch.item(item)
            if watch.lost:
                return False
        # updated since the read began: one page, one atomic query, or no proof
        check = self._get(self.path, self._params(iso(started), self._wide))
        for item in check.items:
            record_id = item.get("id")
            if isinstance(record_id, str) and record_id in read_on:
                index, version = read_on[record_id]
                if index < last and (item.get("updated_at") or "") != version:
                    return False
            if self._accept_repair(item):
                self.result.emitted += 1
                yield item, False
        return check.next is None

    def _repair_window(
        self, low: int, high: int | None
    ) -> Generator[tuple[dict[str, Any], bool], None, bool]:
        """Emit what is in ``low <= updated_at <= high`` (to the end when ``high`` is None).

        A chain of page-1 queries, each one atomic and starting (``updated_or_created_since``,
        inclusive) at the second of the previous one's last record, until one passes ``high``
        or ends the list: a record that keeps its key lies on one of them. Only a second holding
        more records than a page makes the chain page within it (``_repair_window_offsets``,
        checked). False when it must run again."""
        since = low
        while True:
            page = self._get(self.path, self._params(iso(since), self._wide))
            beyond = False
            for item in page.items:
                updated_at = item.get("updated_at") or ""
                if high is not None and updated_at and epoch(updated_at) > high:
                    beyond = True
                    break
                if self._accept_repair(item):
                    self.result.emitted += 1
                    yield item, False
            if beyond or page.next is None or not page.items:
                return True
            stamp = page.items[-1].get("updated_at")
            last = epoch(stamp) if isinstance(stamp, str) and stamp else since
            if last <= since:  # one second fills the page: page within it
                return (yield from self._repair_window_offsets(since, high))
            since = last

    def _repair_window_offsets(
        self, low: int, high: int | None
    ) -> Generator[tuple[dict[str, Any], bool], None, bool]:
        """One keyset pass over ``low <= updated_at <= high`` by pages, checked."""
        pages: list[_PageMeta] = []
        where: dict[str, int] = {}
        started: int | None = None
        totals: set[int] = set()
        for page in self._scan(self._params(iso(low), self._wide), concurrent=False):
            if started is None:
                started = page.sent_at - 1
            totals.add(page.total)
            beyond = False
            for item in page.items:
                updated_at = item.get("updated_at") or ""
                if high is not None and updated_at and epoch(updated_at) > high:
                    beyond = True
                    break
                record_id = item.get("id")
                if isinstance(record_id, str):
                    where.setdefault(record_id, page.number)
                if self._accept_repair(item):
                    self.result.emitted += 1
                    yield item, False
            pages.append(self._meta(page))
            if beyond:
                break
        if len(pages) < 2 or started is None:
            return True  # one page is one atomic query: nothing can have shifted inside it
        if not self.deletions and len(totals) > 1:
            return False  # no deletion feed: only a steady $total proves nothing left
        return not self._left_since(started, where, pages)

    def _left_since(self, started: int, where: dict[str, int], pages: list[_PageMeta]) -> bool:
        """Whether a record read on ``pages`` (id -> page in ``where``) left the list (updated
        or deleted) after ``started`` in a way that may have shifted those pages."""
        removals: list[Removal] = []
        watch = started - CLOCK_MARGIN
        sent = {p.number: p.sent_at for p in pages}
        if self.sortable:  # the time it left is bounded only by the query that read it
            for page in self._scan(self._params(iso(watch), self._wide), concurrent=False):
                for item in page.items:
                    record_id = item.get("id")
                    if isinstance(record_id, str) and record_id in where:
                        number = where[record_id]
                        removals.append(Removal(number, sent.get(number, -1)))
        if self.deletions:
            for item in self._deleted(watch - 1):
                record_id = item.get("id")
                if isinstance(record_id, str) and record_id in where:
                    number = where[record_id]
                    deleted_at = item.get("deleted_at")
                    at = epoch(deleted_at) if isinstance(deleted_at, str) and deleted_at else -1
                    removals.append(Removal(number, sent.get(number, -1) if self.sortable else at))
        return bool(self._suspect_boundaries(pages, removals))

    def _repair_gaps(
        self, metas: list[_PageMeta], suspects: list[int], removals: list[Removal]
    ) -> Generator[tuple[dict[str, Any], bool], None, bool]:
        """Creation-ordered lists: re-read each suspect boundary in ONE page that holds a record
        of each side of it (records keep their relative order; one page is one atomic query),
        and emit what lies between. False when a boundary cannot be found again."""
        for index in suspects:
            before, after = metas[index], metas[index + 1]
            if before.ends & after.ends:
                continue  # the pages overlap: nothing can lie between them
            if not before.tail:
                return False
            shift = sum(1 for r in removals if r.page <= before.number)
            found = yield from self._repair_gap(before, after, shift)
            if not found:
                return False
        return True

    def _repair_gap(
        self, before: _PageMeta, after: _PageMeta, shift: int
    ) -> Generator[tuple[dict[str, Any], bool], None, bool]:
        size = self.page_size
        tails, heads = set(before.tail), set(after.head)
        width = shift + 2 * ANCHORS + 2  # records expected from the first anchor to the last
        guess = before.number * size - 1 - shift  # 0-based position of the last tail anchor
        asked: set[tuple[int, int]] = set()
        for _ in range(8):
            start = max(0, guess - ANCHORS)
            per_page = self.max_page_size
            for candidate in range(max(size, 2 * width), width, -1):
                if candidate <= self.max_page_size and start % candidate + width < candidate:
                    per_page = candidate
                    break
            else:  # no page holds the whole width: the one reaching furthest past ``start``
                per_page = max(range(2, self.max_page_size + 1), key=lambda c: c - start % c)
            page_no = start // per_page + 1
            if (page_no, per_page) in asked:
                return False
            asked.add((page_no, per_page))
            extra = {"page": page_no, "items_per_page": per_page}
            page = self._get(self.path, self._params(self.since, extra))
            ids = [str(item.get("id")) for item in page.items]
            low = max((i for i, x in enumerate(ids) if x in tails), default=None)
            high = min((i for i, x in enumerate(ids) if x in heads), default=None)
            if low is not None and not heads:
                # the boundary is the end of the list: read on from the last anchor
                for item in page.items[low + 1 :]:
                    if self._accept_repair(item):
                        self.result.emitted += 1
                        yield item, False
                number, link = page.number, page.next
                while link is not None:
                    more = self._get(link, None)
                    if more.number <= number:
                        break
                    number, link = more.number, more.next
                    for item in more.items:
                        if self._accept_repair(item):
                            self.result.emitted += 1
                            yield item, False
                return True
            if low is not None and high is not None and low < high:
                for item in page.items[low + 1 : high]:
                    if self._accept_repair(item):
                        self.result.emitted += 1
                        yield item, False
                return True
            base = (page.number - 1) * per_page
            if low is not None:
                guess = base + low
            elif high is not None:
                # no tail anchor on this page, a head one: the tail lies before the page (what
                # precedes the head here is between the two); this page is the list as it is
                # now, so the shift is in it already
                guess = base - 1
            else:
                pages = [p for p in (self._emitted.page_of(x) for x in ids) if p]
                if not pages:
                    return False
                step = max(1, per_page // 2)
                guess = guess + step if max(pages) <= before.number else guess - step
                if guess < 0:
                    return False
        return False

    def _rescan(self, start_page: int) -> Generator[tuple[dict[str, Any], bool], None, bool]:
        """Scan the list again from ``start_page`` (sequentially), emitting what was missed."""
        for round_no in range(MAX_ROUNDS):
            if round_no:
                self.result.rounds += 1
            pages: list[_PageMeta] = []
            where: dict[str, int] = {}
            watch = _TotalWatch(self.since is not None)
            started: int | None = None
            params = self._params(self.since)
            for page in self._scan(params, start_page=start_page, concurrent=False):
                if started is None:
                    started = page.sent_at - 1
                watch.page(page)
                for item in page.items:
                    watch.item(item)
                    record_id = item.get("id")
                    if isinstance(record_id, str):
                        where.setdefault(record_id, page.number)
                    if self._accept_repair(item):
                        self.result.emitted += 1
                        yield item, False
                pages.append(self._meta(page))
            if len(pages) < 2 or started is None:
                return True
            if self.deletions:
                if not self._left_since(started, where, pages):
                    return True
                start_page = max(1, start_page - 1)
            elif not watch.lost:
                return True
            else:
                start_page = 1
        return False
