"""Repairs of lists in creation order: a suspect boundary found again in one page, or a rescan."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from tap_sage.sync.deletions import DeletionPass
from tap_sage.sync.pages import (
    ANCHORS,
    MAX_ROUNDS,
    Page,
    Removal,
    _PageMeta,
    _TotalWatch,
)


class GapRepairs(DeletionPass):
    """Part of ``ListReader``: the repairs of lists in creation order."""

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
                yield from self._read_on(page, low + 1)
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

    def _read_on(
        self, page: Page, start: int
    ) -> Generator[tuple[dict[str, Any], bool], None, None]:
        """Emit what was not of ``page`` from item ``start`` on, and of every page after it."""
        for item in page.items[start:]:
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

    def _rescan(self, start_page: int) -> Generator[tuple[dict[str, Any], bool], None, bool]:
        """Scan the list again from ``start_page`` (sequentially), emitting what was missed."""
        for round_no in range(MAX_ROUNDS):
            if round_no:
                self.result.rounds += 1
            pages: list[_PageMeta] = []
            where: dict[str, int] = {}
            watch = _TotalWatch(self.since is not None)
            started: int | None = None
            # pages of the main scan's size, or smaller once repairs had to go lighter
            size = min(self.page_size, self.max_page_size)
            first = (start_page - 1) * self.page_size // size + 1
            params = self._params(self.since, {"items_per_page": size})
            for page in self._scan(params, start_page=first, concurrent=False):
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
