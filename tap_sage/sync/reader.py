"""The list reader: one consistent read of one list of one business (``ListReader``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Executor
from typing import Any, TypeVar

from tap_sage.sync.pages import (
    CLOCK_MARGIN,
    LOGGER,
    MAX_ROUNDS,
    Fetch,
    ReadResult,
    _Emitted,
    epoch,
    iso,
)
from tap_sage.sync.repair import Repairs
from tap_sage.sync.settings import ReaderHooks, ReaderSettings

_R = TypeVar("_R")


class ListReader(Repairs):
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
        self._reordered = False

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
            deleted_count = yield from self._lighter(
                lambda: self._deletion_phase(book, after, watch_from, killed_from)
            )
        verified = yield from self._lighter(lambda: self._changed_phase(book, watch_from))
        self._scan_doubts(book)
        suspects = self._suspect_boundaries(book.metas, book.removals)
        if suspects:
            self.result.rounds += 1
            repaired = yield from self._lighter(
                lambda: self._repair_phase(book, suspects, deleted_count)
            )
            verified = verified and repaired
        if verified and self.resume is not None and self._resume_suspect:
            # something left the list while the interrupted read ran: read its range again
            self.result.notes.append("re-read the range of the interrupted run")
            self.result.rounds += 1
            low = epoch(self.origin) if self.origin else 0
            high = epoch(self.resume.through)
            verified = yield from self._lighter(lambda: self._repair_windows_range(low, high))
        if self.sortable and (suspects or self._resume_suspect):
            # last: a skipped record updated before its window was re-read has moved here
            held, _changed = yield from self._lighter(self._complete_tail)
            verified = verified and held
        self._finish(verified, after, scan_start)

    def _lighter(
        self, read: Callable[[], Generator[tuple[dict[str, Any], bool], None, _R]]
    ) -> Generator[tuple[dict[str, Any], bool], None, _R]:
        """``read()``, done again from its start with lighter pages while its pages keep
        failing as too heavy (``_lighter_reads``): the heavy-page fallback of every read after
        the main scan (which has its own, ``_main_phase``)."""
        while True:
            try:
                return (yield from read())
            except Exception as exc:
                if not self._lighter_reads(exc):
                    raise

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
