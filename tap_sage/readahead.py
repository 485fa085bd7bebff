"""Read-ahead across streams and businesses, under one budget of requests in flight.

The Singer SDK syncs one stream partition (one stream of one business) after another, and
emits each partition's records, bookmarks and STATE in that order; tap-sage keeps that order,
and so every STATE guarantee of ``tap_sage.sync``. What it adds is that the partitions which
come next are READ while the current one is emitted: a sync of many small lists (most of them
one page) is then as latency-bound as one big list.

* ``RequestBudget``: every request of the connection (every list page of every partition, every
  settings singleton) holds one of ``max_concurrency`` slots while it is in flight.
* ``Unit``: one partition read in a thread of its own, into a bounded buffer (``BATCHES`` batches
  of up to a page of records); the thread waits when the buffer is full. The partition's reader
  is built on the main thread from the state as it is before the partition's turn (no other
  partition writes it), exactly as the SDK would build it at its turn. Whatever the reader
  reports to the stream (the deletion lower bound when it begins, checkpoints, smaller pages)
  is not done in the thread: it is queued between the records, and done by the main thread
  when the partition's records before it have been emitted. So the messages on stdout, STATE
  included, are those of a read that ran at the partition's turn: no STATE ever claims a record
  that is not out.
* ``Scheduler``: the partitions in the SDK's order (selected streams as ``Tap.sync_all`` walks
  them, each stream's partitions in order). When the SDK asks for one, the next ``ahead`` are
  started too (``partitions_ahead``: threads and memory are bounded, ``PAGES_AHEAD``).
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ParamSpec

LOGGER = logging.getLogger("tap_sage.readahead")

#: Batches (of up to ``batch`` records each, about a page) buffered per partition read ahead.
BATCHES = 4

#: Most pages held by the reads started ahead (each holds at most ``BATCHES`` batches of a page
#: and its list's ``max_concurrency + 2`` answered pages): memory stays bounded whatever the
#: concurrency and the lists' sizes.
PAGES_AHEAD = 300


def partitions_ahead(max_concurrency: int) -> int:
    """How many partitions to read ahead: enough to keep ``max_concurrency`` requests in flight
    over lists of one page (twice as many, and two), within ``PAGES_AHEAD`` (at concurrency 4:
    10 partitions; at 8: 18; at 150: 2)."""
    per_read = max_concurrency + 2 + BATCHES
    return max(2, min(2 * max_concurrency + 2, PAGES_AHEAD // per_read))


P = ParamSpec("P")


class RequestBudget:
    """At most ``limit`` requests of the connection in flight (a context manager per request)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._slots = threading.BoundedSemaphore(self.limit)

    def __enter__(self) -> None:
        self._slots.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._slots.release()


class _Stopped(Exception):
    """The unit was stopped (the sync ended or its partition was abandoned)."""


@dataclass
class _Done:
    result: Any


@dataclass
class _Failed:
    error: BaseException


@dataclass
class _Call:
    action: Callable[[], None]


class Unit:
    """One partition read in its own thread into a bounded buffer (see the module docstring)."""

    def __init__(self, name: str, batch: int) -> None:
        self.name = name
        self.result: Any = None
        self._items: Iterator[Any] = iter(())
        self._batch = max(1, batch)
        self._pending: list[Any] = []
        self._queue: queue.Queue[list[Any] | _Call | _Done | _Failed] = queue.Queue(BATCHES)
        self._stopped = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._run, name=f"sage-read {name}", daemon=True)

    def start(self, items: Iterator[Any]) -> Unit:
        """Read ``items`` (a generator built with ``defer``) in the unit's thread."""
        self._items = items
        self._thread.start()
        return self

    # -- in the unit's thread -------------------------------------------------------------------

    def defer(self, action: Callable[P, None]) -> Callable[P, None]:
        """``action``, done by the main thread once the items produced before it are out."""

        def later(*args: P.args, **kwargs: P.kwargs) -> None:
            self._flush()
            self._put(_Call(functools.partial(action, *args, **kwargs)))

        return later

    def _run(self) -> None:
        try:
            for item in self._items:
                self._pending.append(item)
                if len(self._pending) >= self._batch:
                    self._flush()
            self._flush()
            self._put(_Done(self.result))
        except _Stopped:
            pass
        except BaseException as error:  # noqa: BLE001 - raised again on the main thread
            try:
                self._flush()
                self._put(_Failed(error))
            except _Stopped:
                pass
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()

    def _flush(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self._put(batch)

    def _put(self, event: list[Any] | _Call | _Done | _Failed) -> None:
        while not self._stopped.is_set():
            try:
                self._queue.put(event, timeout=0.2)
                return
            except queue.Full:
                continue
        raise _Stopped

    # -- on the main thread ---------------------------------------------------------------------

    def items(self) -> Iterator[Any]:
        """The partition's items in order, doing the deferred actions between them; the read's
        error, if it failed, is raised here."""
        for batch in self.batches():
            yield from batch

    def batches(self) -> Iterator[list[Any]]:
        """The partition's items in order, in the batches they were read in (about a page
        each), doing the deferred actions between them; the read's error, if it failed, is
        raised here."""
        while not self._finished:
            event = self._queue.get()
            if isinstance(event, list):
                yield event
            elif isinstance(event, _Call):
                event.action()
            elif isinstance(event, _Failed):
                self._finished = True
                raise event.error
            else:
                self._finished = True
                self.result = event.result

    def stop(self) -> None:
        """Abandon the read (its thread ends at its next hand-over)."""
        if self._finished:
            return
        self._finished = True
        self._stopped.set()
        while True:  # free a thread waiting on a full buffer
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break


@dataclass(frozen=True)
class Slot:
    """One partition in the SDK's order: its key and how to start its read."""

    key: tuple[str, str]
    #: builds the read (on the main thread) and starts it
    start: Callable[[], Unit]


class Scheduler:
    """Starts the reads of the partitions that come next while one is emitted."""

    def __init__(self, plan: Callable[[], list[Slot]], ahead: int) -> None:
        self._plan = plan
        self._slots: list[Slot] = []
        self._index: dict[tuple[str, str], int] = {}
        self._started: dict[tuple[str, str], Unit] = {}
        self._taken: set[tuple[str, str]] = set()
        self.ahead = max(0, ahead)
        self._closed = False

    def take(self, key: tuple[str, str], start: Callable[[], Unit]) -> Unit:
        """The read of partition ``key`` (already running, or started now with ``start``);
        when the partitions are taken in the plan's order, the reads of the next ``ahead``
        partitions are started as well."""
        if not self._slots:
            self._slots = self._plan()
            self._index = {slot.key: i for i, slot in enumerate(self._slots)}
        self._taken.add(key)
        unit = self._started.pop(key, None)
        if unit is None:
            unit = start()
        position = self._index.get(key)
        # read ahead only while the partitions are taken in the plan's order (a sync), not for
        # a partition read on its own
        walking = position is not None and (
            position == 0 or self._slots[position - 1].key in self._taken
        )
        if position is not None and walking and not self._closed:
            for slot in self._slots[position + 1 : position + 1 + self.ahead]:
                if slot.key not in self._started and slot.key not in self._taken:
                    self._started[slot.key] = slot.start()
        return unit

    def close(self) -> None:
        """Stop every read started ahead and not taken (the sync ended)."""
        self._closed = True
        for unit in self._started.values():
            unit.stop()
        self._started.clear()
