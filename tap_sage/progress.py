"""Progress of a long read: what one stream has read for one business so far, logged regularly.

A sync of tens of thousands of records takes minutes; without this it logs nothing between its
start and its end. ``ReadProgress`` watches one read (one stream, one business, one partition):
every page Sage answers and every record the stream hands on. At most every ``interval`` seconds
(``TAP_SAGE_PROGRESS_SECONDS``, default 10) it logs one line::

    Progress: contacts for business 3f2a...: 12000 records, page 60 of 150, 2400 records/s,
    about 75 s left

The line is written when a page is answered or a record goes out and the interval has passed,
and by a watcher thread when neither happens for an interval (one slow request still shows that
the read is alive). "Pages of the total" counts the pages of the main scan: the total comes from
Sage's ``$total`` of the scan's first page and its ``items_per_page``; the repair and deletion
pages the reader also needs are counted apart (``more pages``). Time left is the records still
to come at the rate so far; it is left out until a rate is known.

The SDK's own metrics (``METRIC`` lines) carry the stream's name: ``record_count`` from the SDK
itself, ``http_request_duration`` from ``tap_sage.streams`` (our client is no SDK REST stream,
so the SDK would log none of its request metrics).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from singer_sdk import metrics

from tap_sage.sync import Answered, Fetch, Page

#: The environment variable that sets the seconds between two progress lines (default 10).
INTERVAL_ENV = "TAP_SAGE_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 10.0

_T = TypeVar("_T")


def interval_from_env() -> float:
    """Seconds between two progress lines: ``TAP_SAGE_PROGRESS_SECONDS``, else 10. A value that
    is not a positive number is an error naming the variable."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{INTERVAL_ENV}={raw!r}: must be a positive number of seconds")
    return value


def _query(path: str, params: Mapping[str, Any] | None) -> dict[str, str]:
    if params is not None:
        return {k: str(v) for k, v in params.items()}
    return dict(parse_qsl(urlsplit(path).query))


def request_timer(stream: str, endpoint: str, business_id: str) -> metrics.Timer:
    """The SDK's ``http_request_duration`` metric of one request, tagged with the stream, the
    endpoint, the business and the status. SDK REST streams log it themselves
    (singer_sdk/streams/rest.py); ours request through ``tap_sage.sage.client``."""
    return metrics.Timer(
        metrics.Metric.HTTP_REQUEST_DURATION,
        {
            metrics.Tag.STREAM: stream,
            metrics.Tag.ENDPOINT: endpoint,
            metrics.Tag.CONTEXT: {"business_id": business_id},
        },
    )


class ReadProgress:
    """Counts one read's pages and records and logs its progress (see the module docstring)."""

    def __init__(
        self,
        logger: logging.Logger,
        stream: str,
        business_id: str,
        *,
        page_size: int,
        label: str = "",
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Progress of ``stream`` for ``business_id`` (``label``: the partition's other keys,
        e.g. ``usage sales``), read with pages of ``page_size``."""
        self.logger = logger
        self.stream = stream
        self.business_id = business_id
        self.page_size = page_size
        self.label = label
        self.interval = interval_from_env() if interval is None else interval
        self.clock = clock
        self.started = clock()
        self.records = 0
        self.scan_pages = 0  # pages of the main scan answered
        self.other_pages = 0  # repair and deletion pages
        self.expected: int | None = None  # records the scan's first page announced ($total)
        self.expected_pages: int | None = None
        self._last_line = self.started
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- hooks ------------------------------------------------------------------------------

    def wrap(self, fetch: Fetch) -> Fetch:
        """``fetch`` that notes every page answered (any thread)."""

        def fetch_noted(
            path: str, params: Mapping[str, Any] | None, /, *, answered: Answered | None = None
        ) -> Page:
            if answered is None:
                page = fetch(path, params)
            else:
                page = fetch(path, params, answered=answered)
            self.page(page, _query(path, params))
            return page

        return fetch_noted

    def counted(self, items: Iterable[_T]) -> Iterator[_T]:
        """``items`` (the read's records), counted, with the watcher running while they come."""
        self.start()
        try:
            for item in items:
                self.record()
                yield item
        finally:
            self.stop()

    def start(self) -> None:
        """Start the watcher thread (a line also when no page comes for an interval)."""
        if self._watcher is None:
            self._watcher = threading.Thread(
                target=self._watch, name=f"progress-{self.stream}", daemon=True
            )
            self._watcher.start()

    def stop(self) -> None:
        """Stop the watcher thread (idempotent; from any thread but the watcher's)."""
        self._stop.set()
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join()

    def page(self, page: Page, query: Mapping[str, str]) -> None:
        """One page answered (any thread)."""
        main = "deleted_since" not in query and str(
            query.get("items_per_page", self.page_size)
        ) == str(self.page_size)
        with self._lock:
            if main and self.expected is None:
                self.expected = page.total
                self.expected_pages = max(1, math.ceil(page.total / self.page_size))
            if main:
                self.scan_pages += 1
            else:
                self.other_pages += 1
        self._maybe_log()

    def record(self) -> None:
        """One record handed on (the stream's thread)."""
        self.records += 1
        if self.records % 50 == 0:
            self._maybe_log()

    # -- lines ------------------------------------------------------------------------------

    def _maybe_log(self) -> None:
        now = self.clock()
        with self._lock:
            if now - self._last_line < self.interval:
                return
            self._last_line = now
        self.logger.info("%s", self.line(now))

    def _watch(self) -> None:
        while not self._stop.wait(self.interval / 4):
            self._maybe_log()

    def line(self, now: float | None = None) -> str:
        """The progress line as of ``now``."""
        now = self.clock() if now is None else now
        with self._lock:
            records, pages, more = self.records, self.scan_pages, self.other_pages
            expected, expected_pages = self.expected, self.expected_pages
        elapsed = max(now - self.started, 1e-9)
        rate = records / elapsed
        where = f"{self.stream} for business {self.business_id}"
        if self.label:
            where += f" ({self.label})"
        parts = [f"{records} records"]
        if expected_pages is not None:
            parts.append(f"page {pages} of {max(expected_pages, pages)}")
        else:
            parts.append(f"page {pages} of ?")  # before the scan's first page
        if more:
            parts.append(f"{more} more pages (repairs, deletions)")
        parts.append(f"{rate:.0f} records/s")
        if expected is not None and records and rate > 0:
            left = max(expected - records, 0) / rate
            parts.append(f"about {math.ceil(left)} s left")
        return f"Progress: {where}: " + ", ".join(parts)
