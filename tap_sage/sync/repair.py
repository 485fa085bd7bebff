"""Finding and re-reading what a scan may have skipped, for lists sorted by ``updated_at``
(keyset windows) and the records changed since the scan began."""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

from tap_sage.sync.gaps import GapRepairs
from tap_sage.sync.pages import (
    CLOCK_MARGIN,
    MAX_ROUNDS,
    Page,
    Removal,
    _PageMeta,
    _ScanBook,
    _TotalWatch,
    epoch,
    iso,
)


class Repairs(GapRepairs):
    """Part of ``ListReader``: the repairs of lists sorted by ``updated_at``."""

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
        pages (``_sequential``): either may mean a record left a place the scan had passed."""
        if len(book.metas) <= 1:
            return
        if book.watch is not None and book.watch.lost:
            book.removals.append(Removal(1, -1))  # $total fell: something may have left
            self.result.notes.append("$total says records left during the scan")
        if book.dups and not self._sequential:
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

    def _repair_windows_range(
        self, low: int, high: int
    ) -> Generator[tuple[dict[str, Any], bool], None, bool]:
        for _ in range(MAX_ROUNDS):
            clean = yield from self._repair_window(low, high)
            if clean:
                return True
            self.result.rounds += 1
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
