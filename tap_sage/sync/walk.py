"""The walk: the main scan of a list, what it accepts, its checkpoints and its heavy-page fallback."""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Iterator, Mapping
from typing import Any

from tap_sage.sync.pages import (
    CLOCK_MARGIN,
    Page,
    Progress,
    Removal,
    _Emitted,
    _PageMeta,
    _ScanBook,
    _TotalWatch,
    epoch,
    iso,
)
from tap_sage.sync.scan import PageScanner


class MainScan(PageScanner):
    """Part of ``ListReader``: the main scan and what it accepts."""

    def _main_phase(self) -> Generator[tuple[dict[str, Any], bool], None, _ScanBook]:
        """The walk, started again with smaller pages while pages keep failing as too heavy."""
        while True:
            book = _ScanBook(
                watch=None if self.deletions else _TotalWatch(self.since is not None),
                previous=deque(maxlen=self.window + 1),
            )
            try:
                yield from self._main_scan(book)
            except Exception as exc:
                if not self._smaller_pages(exc):
                    raise
                continue
            book.previous.clear()
            return book

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
        previous_pages = tuple(previous)
        out_before = self._out_before
        max_updated = self._max_updated
        for item in page.items:
            record_id = item.get("id")
            updated_at = item.get("updated_at") or ""
            if not isinstance(record_id, str):
                out.append(item)
                continue
            here[record_id] = updated_at
            shifted = False
            for seen in previous_pages:
                if seen.get(record_id) == updated_at:
                    shifted = True
                    break
            if shifted:
                # shifted back across a boundary: read twice (read concurrently, pages up to
                # max_concurrency apart were in flight together, so the same version may come
                # again that many pages later; sequentially only on the next page)
                dups.append(page.number)
                continue
            reseen = False
            updated = epoch(updated_at) if updated_at else None
            if updated is not None and updated >= tail_from:
                self._fresh_seen = True
                if sortable:
                    reseen = self._moved(item, updated, page.number, tail_from, removals)
                    if reseen and emitted.has_version(record_id, updated_at):
                        continue
            if watch is not None:
                watch.item(item, reseen=reseen)
            emitted.add(record_id, updated_at, page.number)
            if updated is not None and (max_updated is None or updated > max_updated):
                max_updated = updated
            if not out_before or not self._already_out(record_id, updated_at):
                out.append(item)
        self._max_updated = max_updated
        return out, here

    def _moved(
        self,
        item: Mapping[str, Any],
        updated: int,
        number: int,
        tail_from: int,
        removals: list[Removal],
    ) -> bool:
        """A record of a sorted main scan updated since the scan began, on page ``number``:
        whether it was read before on an earlier page (and so moved to the end), noting the
        removal it made either way (``Removal``)."""
        earlier = self._emitted.page_of(str(item.get("id")))
        if earlier is not None and earlier < number:
            # updated after it was read: it moved to the end and shifted what followed it
            # left its place after that page's query: perhaps long before this version's
            # updated_at (an update before), so that query bounds the time
            removals.append(
                Removal(self._position(earlier), self._page_sent.get(earlier, -1), updated)
            )
            return True
        if earlier is None:
            removals.extend(self._unread_update(item, tail_from))
        return False

    def _note_updated(self, updated_at: str) -> None:
        if not updated_at:
            return
        value = epoch(updated_at)
        if self._max_updated is None or value > self._max_updated:
            self._max_updated = value

    def _position(self, page: int) -> int:
        """Where, for the suspect boundaries, a record read on main-scan ``page`` sat.

        Read in order (one worker), a record that left from page ``page`` can only have shifted
        the boundaries after it. Read concurrently, pages are answered in any order, so a page
        read late may start past records that were on pages read early: its position is not
        bounded (0: before every boundary)."""
        return page if self._sequential else 0

    @property
    def _sequential(self) -> bool:
        return (self.executor is None or self.max_concurrency <= 1) and not self._reordered

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

    def _lighter_reads(self, error: Exception) -> bool:
        """After a page of a read other than the main scan (a deletion pass, a repair, the
        records changed since the scan began) kept failing as too heavy: those reads go on
        with pages half as big (down to ``page_floor``), and say so. The read that failed is
        done again from its start (each is proven on its own); what it emitted is not emitted
        again, so the records, their order and the bookmark are those of one read."""
        if self.heavy is None or not self.heavy(error):
            return False
        smaller = max(self.page_floor, self.max_page_size // 2)
        if smaller >= self.max_page_size:
            return False
        self.max_page_size = smaller
        self._wide = {"items_per_page": smaller}
        self.result.notes.append(f"repairs in pages of {smaller} after {error}")
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
