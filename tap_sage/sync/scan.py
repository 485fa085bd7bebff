"""Paging through one query of a list: sequential, or ``max_concurrency`` pages in flight."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor, Future
from typing import Any

from tap_sage.sync.pages import (
    ANCHORS,
    PAGE_BUFFER,
    Fetch,
    Page,
    Progress,
    ReadResult,
    _Emitted,
    _PageMeta,
    with_page,
)
from tap_sage.sync.settings import ReaderSettings


class ReaderState:
    """The state one read keeps (set by ``ListReader.__init__``), shared by its parts."""

    settings: ReaderSettings
    fetch: Fetch
    path: str
    base_params: dict[str, Any]
    page_size: int
    max_page_size: int
    _wide: dict[str, int]
    since: str | None
    incremental: bool
    sortable: bool
    deletions: bool
    include_deleted: bool
    executor: Executor | None
    max_concurrency: int
    log: logging.Logger
    deleted_after: str | None
    resume: Progress | None
    origin: str | None
    checkpoint: Callable[[Progress], None] | None
    checkpoint_pages: int
    _resume_suspect: bool
    _page_sent: dict[int, int]
    on_start: Callable[[str], None] | None
    result: ReadResult
    _emitted: _Emitted
    _tombstoned: set[str]
    _max_updated: int | None
    _max_deleted: int | None
    _scan_start: int | None
    _fresh_seen: bool
    heavy: Callable[[Exception], bool] | None
    page_floor: int
    on_smaller_pages: Callable[[int, Exception], None] | None
    _out_before: set[int]
    _lock: threading.Lock


class PageScanner(ReaderState):
    """Part of ``ListReader``: the pages of one query, in order."""

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

    def _scan(
        self, params: dict[str, Any], *, start_page: int = 1, concurrent: bool
    ) -> Iterator[Page]:
        """Pages ``start_page``.. of one query, in page order, till the end of the list.

        Concurrent mode: pages between the first and the (currently) last are fetched
        ``max_concurrency`` at a time; the last page only after every other page was answered.
        At ``max_concurrency`` 1 (the main scan, ``concurrent``), one page at a time, each
        asked for as soon as the one before it is answered, while that one is read
        (``_pages_in_turn``). When a page past the (shrunken) end answers the last page again,
        that answer is yielded with ``items`` emptied and ``next`` None, so the caller sees
        where the list ended.
        """
        page = self._get(self.path, dict(params, page=start_page))
        if (
            concurrent
            and page.next is not None
            and self.executor is not None
            and self.max_concurrency <= 1
        ):
            yield from self._pages_in_turn(page, self.executor)
            return
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

    def _pages_in_turn(self, page: Page, executor: Executor) -> Iterator[Page]:
        """The pages after ``page`` one at a time, as the sequential scan reads them: each is
        asked for only once the one before it is answered (so a read in order stays one,
        ``_position``), but at once, in the executor, while the caller reads the one before:
        one request is in flight all along, and reading a page costs no latency."""
        number = page.number
        ahead: Future[Page] | None = None
        if page.next is not None:
            ahead = executor.submit(self._get, page.next, None)
        try:
            yield page
            while ahead is not None:
                page = ahead.result()
                ahead = None
                if page.number <= number:
                    yield self._past_end(number + 1, page)
                    return
                number = page.number
                if page.next is not None:
                    ahead = executor.submit(self._get, page.next, None)
                yield page
        finally:
            if ahead is not None:
                ahead.cancel()  # the scan was given up: its answer is not wanted

    @staticmethod
    def _past_end(number: int, answer: Page) -> Page:
        """The answer to a request for page ``number`` that came back as an earlier page."""
        return Page(number, answer.items, answer.total, None, answer.served_at, answer.sent_at,
                    past_end=True)  # fmt: skip

    @property
    def window(self) -> int:
        """Pages of one concurrent scan requested ahead of the one handed out: the
        ``max_concurrency`` in flight and ``PAGE_BUFFER`` answered ones waiting."""
        return self.max_concurrency + PAGE_BUFFER

    def _concurrent_pages(self, template: str, current: Page) -> Iterator[Page]:
        """Pages after ``current``, in order: those before the (currently) last ``window`` at a
        time, requested before a page is handed out, so that ``max_concurrency`` stay in
        flight while it is emitted; the last only once every other page was answered."""
        while current.next is not None:
            last = max(current.number + 1, math.ceil(current.total / self.page_size))
            ahead = _Ahead(self, template, last, current.number + 1)
            try:
                while True:
                    page = ahead.take()
                    if page.number < ahead.taken:  # past the end: the list shrank
                        yield self._past_end(ahead.taken, page)
                        return
                    current = page
                    ahead.top_up()  # before handing the page out: fetching goes on meanwhile
                    yield page
                    if page.next is None or ahead.taken == last:
                        break
            finally:
                ahead.discard()
            if page.next is None:
                return

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


class _Ahead:
    """The requests of one concurrent scan between its first page and its (current) last."""

    def __init__(self, scanner: PageScanner, template: str, last: int, first: int) -> None:
        assert scanner.executor is not None
        self.scanner = scanner
        self.executor = scanner.executor
        self.template = template
        self.last = last
        self.pending: dict[int, Future[Page]] = {}
        self.to_submit = first
        self.to_take = first
        #: the number of the page taken last
        self.taken = first - 1
        self.top_up()

    def _submit(self, number: int) -> None:
        link = with_page(self.template, number)
        self.pending[number] = self.executor.submit(self.scanner._get, link, None)
        self.to_submit += 1

    def top_up(self) -> None:
        """Request pages before the last up to the window ahead; the last one alone, once
        every page before it was answered (taken)."""
        window = self.scanner.window
        while self.to_submit < self.last and self.to_submit - self.to_take < window:
            self._submit(self.to_submit)
        if self.to_submit == self.last and self.to_take == self.last:
            self._submit(self.last)

    def take(self) -> Page:
        """The next page's answer, in order (waits for it)."""
        page = self.pending.pop(self.to_take).result()
        self.taken = self.to_take
        self.to_take += 1
        return page

    def discard(self) -> None:
        """Cancel what was requested and not taken (an early end, or an error)."""
        for future in self.pending.values():
            future.cancel()
        for future in self.pending.values():
            if not future.cancelled():
                with contextlib.suppress(Exception):  # a discarded prefetch
                    future.result()
