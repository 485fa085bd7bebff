"""Ordering: ``Dispatcher`` hands operations to a pool of ``max_parallel_writes`` threads in input
order. An operation waits for the previous operation on the same record (same source key or
Sage id); a POST to a resource where Sage forbids parallel POSTs waits for the previous such
POST (``Turnstile``). Sinks are drained one at a time, so these POSTs are strictly sequential
across streams.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

from target_sage import run_lock
from target_sage.work import TargetFailure, WorkItem

if TYPE_CHECKING:
    from target_sage.engine import Engine
    from target_sage.results import Result
    from target_sage.routing import Route


class Turnstile:
    """Strict input order for the POSTs Sage wants one at a time, without serialising the rest.

    The dispatcher hands each such item a ticket in input order. Its first POST waits for its
    turn (every earlier ticket done); the turn passes on as soon as Sage has answered that POST
    (or the item ends without one), so validation, body building and ledger/results writes of
    neighbouring records overlap the POST in flight, while no two of these POSTs ever do.

    Each waiting ticket has an event of its own, set when its turn comes: passing the turn on
    wakes the one thread whose turn it is, not every waiting thread (they would each take the
    GIL to find it is not theirs, on the path from one POST's answer to the next POST).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._issued = 0
        self._next = 0
        self._done: set[int] = set()
        self._turns: dict[int, threading.Event] = {}

    def ticket(self) -> int:
        """The next ticket (dispatcher thread only)."""
        ticket = self._issued
        self._issued += 1
        return ticket

    def wait_turn(self, ticket: int) -> None:
        """Block until every earlier ticket is done."""
        with self._lock:
            if self._next >= ticket:
                return
            turn = self._turns.setdefault(ticket, threading.Event())
        turn.wait()

    def done(self, ticket: int) -> None:
        """This ticket's POST has been answered (or there was none). Idempotent."""
        with self._lock:
            if ticket < self._next or ticket in self._done:
                return
            self._done.add(ticket)
            while self._next in self._done:
                self._done.discard(self._next)
                self._next += 1
            ready = [t for t in self._turns if t <= self._next]
            turns = [self._turns.pop(t) for t in ready]
        for turn in turns:
            turn.set()


class Dispatcher:
    """Applies a batch in input order with bounded concurrency (see the module docstring)."""

    def __init__(self, engine: Engine, route: Route) -> None:
        self.engine = engine
        self.route = route

    def run(self, items: list[WorkItem], sequential_post: Callable[[WorkItem], bool]) -> None:
        """Apply every item; raise ``TargetFailure`` at the first failure under on_error=fail."""
        engine = self.engine
        run_lock.acquire_run_lock(engine.settings)
        stop: list[Result] = []
        workers = engine.settings.max_parallel_writes

        fatal: list[BaseException] = []

        def work(item: WorkItem) -> None:
            try:
                result = engine.apply(item, self.route)
                engine.reporter.report(item, result)
            except BaseException as exc:  # the connection (or the disk) failed: stop
                fatal.append(exc)
                raise
            settings = engine.settings
            if result.outcome == "failed" and settings.on_error == "fail" and not settings.dry_run:
                stop.append(result)

        if workers == 1:
            for item in items:
                work(item)
                if stop:
                    break
        else:
            last_by_chain: dict[str, Future[None]] = {}
            inflight: set[Future[None]] = set()
            engine.turnstile = Turnstile()
            with ThreadPoolExecutor(workers, thread_name_prefix="sage-write") as pool:
                for item in items:
                    if stop or fatal:
                        break
                    before = last_by_chain.get(item.chain)
                    if before is not None and not before.done():
                        wait([before])
                    if sequential_post(item):
                        item.ticket = engine.turnstile.ticket()
                    while len(inflight) >= workers:
                        done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                        inflight -= done
                    if stop or fatal:
                        break
                    future = pool.submit(work, item)
                    inflight.add(future)
                    last_by_chain[item.chain] = future
                wait(inflight)
                engine.turnstile = None
                if fatal:
                    raise fatal[0]
        if stop:
            raise TargetFailure(
                f"{stop[0].message or 'record failed'} — stopping (on_error is `fail`; set "
                "`on_error: continue` to record failures and go on)"
            )
