"""The deletion pass (tombstones), and whether records left the list in a way that may have
shifted a read's pages (the suspect boundaries)."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

from tap_sage.sync.pages import (
    CLOCK_MARGIN,
    Removal,
    _PageMeta,
    _ScanBook,
    epoch,
    iso,
)
from tap_sage.sync.walk import MainScan


class DeletionPass(MainScan):
    """Part of ``ListReader``: the deletion pass, and what left the list under a read."""

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
        fresh: set[str] = set()
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
            if record_id in self._tombstoned or record_id in fresh:
                continue
            fresh.add(record_id)
            if self.include_deleted:
                emit.append(item)
        self._tombstoned |= fresh  # only once the pass is complete: it may be done again
        return emit, recent

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
