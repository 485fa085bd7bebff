"""An in-memory Sage list with a writer and a seeded scheduler, for the list reader's property.

``FakeList`` follows NOTES.md: page-number paging with ``$next``, a page past the end answers the
last page, ``updated_or_created_since`` inclusive, ``deleted_since`` exclusive with tombstones,
``sort=updated_at`` (then creation order), default creation order, one-second timestamps, and
each page answered by one atomic query. Before each query a writer creates, updates and deletes
records (stamped with the server clock), so pages shift exactly as they do at Sage.

``SeededExecutor`` is the reader's executor: it runs no thread. A submitted page request waits
until the reader asks for the result of one of the waiting requests; the scheduler then answers
the waiting requests, one at a time in an order drawn from the seed, until that one is answered.
So the order in which concurrent requests reach the list, the writes between them and the clock
they see all follow from the seed alone, and every failure comes back when its seed is run again
(``python scripts/stress_reader.py --seed N`` replays one).

``check_seed`` is the property (issue 4, and issue 9 for the concurrency): one read under writes,
then an incremental read without writes, and

1. every record that existed throughout the first read was emitted by it (or, when the read said
   it could not prove itself complete, by the second read, its bookmark having stayed put);
2. every record's final version is emitted by one of the two reads, and every deletion of a record
   the first read emitted is emitted as a tombstone (with a deletion feed);
3. no version is emitted twice by one read.
"""

from __future__ import annotations

import functools
import math
import random
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

from typing_extensions import override

from tap_sage.sync import ListReader, Page, ReaderHooks, ReaderSettings, epoch, iso

BASE = 1_700_000_000

P = ParamSpec("P")


@functools.lru_cache(maxsize=1 << 16)
def _iso(seconds: int) -> str:
    return iso(seconds)


T = TypeVar("T")


class HeavyPage(Exception):
    """A page too heavy for the server (Sage answers 500/504 after every retry)."""


@dataclass
class Rec:
    id: str
    seq: int
    updated: int
    deleted: int | None = None
    created: int = 0


class FakeList:
    """One Sage list of one business, with a server clock and an optional writer."""

    def __init__(self, rng: random.Random, count: int, *, groups: bool = True) -> None:
        self.rng = rng
        self.clock = BASE
        self.seq = 0
        self.records: dict[str, Rec] = {}
        self.writes_per_request = 0.0
        self.requests = 0
        #: re-entrant: a lost answer's retry (``lost_answers``) lets the scheduler answer other
        #: requests first, from inside the request that lost its answer
        self.lock = threading.RLock()
        #: share of answers lost after they began (``Answered``): the request is asked again,
        #: after ``between`` (the scheduler answering another request first, if one waits)
        self.lost_answers = 0.0
        self.between: Callable[[], None] | None = None
        #: heavy pages: a list page of more items than this fails (0: none does)
        self.heavy_above = 0
        #: whether deleted items carry ``deleted_at`` (Sage's sometimes do not)
        self.stamps = True
        #: set by the scheduler: the server time at which the next answered request was sent
        self.sent_override: int | None = None
        #: every query answered, in order: (page, items_per_page, ids) for debugging a seed
        self.log: list[str] = []
        stamp = BASE - 100_000
        for _ in range(count):
            if not groups or rng.random() < 0.05:
                stamp += rng.randint(1, 50)
            self._add(stamp)
        if groups:  # a group larger than a page sharing one timestamp
            stamp += 1
            for _ in range(rng.randint(0, 30)):
                self._add(stamp)
        self.clock = stamp + 10

    def _add(self, stamp: int) -> Rec:
        self.seq += 1
        rec = Rec(f"r{self.seq:06d}", self.seq, stamp, None, stamp)
        self.records[rec.id] = rec
        return rec

    def live(self) -> list[Rec]:
        return [r for r in self.records.values() if r.deleted is None]

    def write(self) -> None:
        """One random change, stamped with the server clock (which may tick first)."""
        if self.rng.random() < 0.3:
            self.clock += 1
        live = self.live()
        roll = self.rng.random()
        if roll < 0.3 or not live:
            rec = self._add(self.clock)
            self.log.append(f"  create {rec.id} @{rec.updated - BASE}")
        elif roll < 0.65:
            rec = self.rng.choice(live)
            rec.updated = self.clock
            self.log.append(f"  update {rec.id} @{rec.updated - BASE}")
        else:
            rec = self.rng.choice(live)
            rec.deleted = self.clock
            self.log.append(f"  delete {rec.id} @{rec.deleted - BASE}")

    def fetch(self, path: str, params: Mapping[str, Any] | None, *, sortable: bool,
              answered: Callable[[], None] | None = None) -> Page:  # fmt: skip
        with self.lock:  # real threads may call it too (without writes)
            page = self._fetch(path, params, sortable=sortable)
            if answered is None:
                return page
            answered()  # the answer began: its query ran (the reader may ask for the next)
            if self.lost_answers and self.rng.random() < self.lost_answers:
                self.log.append("  the answer above was lost after it began: asked again")
                if self.between is not None:
                    self.between()  # the next page's request may be answered first
                page = self._fetch(path, params, sortable=sortable)
                answered()
            return page

    def _fetch(self, path: str, params: Mapping[str, Any] | None, *, sortable: bool) -> Page:
        self.requests += 1
        sent = self.clock if self.sent_override is None else self.sent_override
        self.sent_override = None
        budget = self.writes_per_request
        while budget > 0 and (budget >= 1 or self.rng.random() < budget):
            self.write()
            budget -= 1
        if params is None:
            query = dict(parse_qsl(urlsplit(path).query))
        else:
            query = {k: str(v) for k, v in params.items()}
        page = int(query.get("page", "1"))
        size = int(query.get("items_per_page", "20"))
        if self.heavy_above and size > self.heavy_above and "deleted_since" not in query:
            raise HeavyPage(f"500 on /things with items_per_page={size}")
        deletions = "deleted_since" in query
        if deletions:
            after = epoch(query["deleted_since"])
            rows = [r for r in self.records.values() if r.deleted and r.deleted > after]
            rows.sort(key=lambda r: r.seq)
        else:
            rows = self.live()
            if "updated_or_created_since" in query:
                low = epoch(query["updated_or_created_since"])
                rows = [r for r in rows if r.updated >= low]
            if query.get("sort") == "updated_at":
                assert sortable
                rows.sort(key=lambda r: (r.updated, r.seq))
            else:
                rows.sort(key=lambda r: r.seq)
        total = len(rows)
        last = max(1, math.ceil(total / size))
        page = min(page, last)
        chosen: list[dict[str, Any]] = [
            ({"id": r.id, "deleted_at": _iso(r.deleted or 0)} if self.stamps else {"id": r.id})
            if deletions
            else {"id": r.id, "updated_at": _iso(r.updated), "created_at": _iso(r.created)}
            for r in rows[(page - 1) * size : page * size]
        ]
        nxt = None
        if page < last:
            rest = [(k, v) for k, v in query.items() if k != "page"]
            nxt = "/things?" + urlencode([("page", str(page + 1)), *rest])
        if self.rng.random() < 0.5:
            self.clock += 1
        kind = "del" if "deleted_since" in query else "list"
        self.log.append(
            f"{kind} p{page}/{size} sent@{sent - BASE} served@{self.clock - BASE} "
            f"{[i['id'] for i in chosen]}"
        )
        return Page(page, chosen, total, nxt, self.clock, sent)


class _LazyFuture(Future[Any]):
    """A future that asks its scheduler to answer waiting requests when its result is wanted."""

    def __init__(self, scheduler: SeededExecutor) -> None:
        super().__init__()
        self._scheduler = scheduler

    @override
    def result(self, timeout: float | None = None) -> Any:
        self._scheduler.run_until(self)
        return super().result(timeout)


@dataclass
class _Job:
    future: _LazyFuture
    call: Callable[[], Any]
    submitted: int  # server clock when the reader sent it


@dataclass
class SeededExecutor(Executor):
    """Answers concurrent page requests in an order and at times drawn from ``rng``.

    ``submit`` only queues. When the reader wants a result, waiting requests are answered one by
    one (each a whole atomic query, with the writer's changes before it) in an order the seed
    picks, until the wanted one is answered: a request may overtake any request sent before it.
    Each answer says it was sent at a time drawn between its submission and its query (the
    ``sent_at`` bound the reader relies on stays true, as with Sage's ``Date`` header less the
    request's duration).
    """

    fake: FakeList
    rng: random.Random
    waiting: list[_Job] = field(default_factory=list)
    answered: int = 0

    @override
    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future = _LazyFuture(self)
        self.waiting.append(_Job(future, lambda: fn(*args, **kwargs), self.fake.clock))
        return future

    def run_one(self) -> None:
        """Answer one waiting request, if one waits (a lost answer's retry comes after it)."""
        saved = self.fake.sent_override
        self._answer_one()
        self.fake.sent_override = saved

    def run_until(self, target: _LazyFuture) -> None:
        while not target.done():
            if not self._answer_one():
                return

    def _answer_one(self) -> bool:
        """Answer one waiting request (False: none waits)."""
        self.waiting = [job for job in self.waiting if not job.future.cancelled()]
        if not self.waiting:
            return False
        # mostly oldest first, as a pool would, but any waiting request may overtake
        oldest = self.rng.random() < 0.5
        job = self.waiting[0] if oldest else self.rng.choice(self.waiting)
        self.waiting.remove(job)
        if not job.future.set_running_or_notify_cancel():
            return True
        self.fake.sent_override = self.rng.randint(job.submitted, self.fake.clock)
        self.answered += 1
        try:
            job.future.set_result(job.call())
        except BaseException as exc:  # noqa: BLE001 - handed to the reader
            job.future.set_exception(exc)
        finally:
            self.fake.sent_override = None
        return True

    @override
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        for job in self.waiting:
            job.future.cancel()
        self.waiting = []


def read(fake: FakeList, since: str | None, *, sortable: bool, deletions: bool, workers: int,
         executor: Executor | None, size: int = 10, deleted_after: str | None = None,
         wide: int | None = None) -> tuple[list[tuple[dict[str, Any], bool]], ListReader]:  # fmt: skip
    """One read of ``fake`` by the reader, all of it."""
    reader = ListReader(
        lambda path, params, answered=None: fake.fetch(
            path, params, sortable=sortable, answered=answered
        ),
        "/things",
        ReaderSettings(
            page_size=size,
            since=since,
            incremental=True,
            sortable=sortable,
            deletions=deletions,
            include_deleted=True,
            max_concurrency=workers,
            deleted_after=deleted_after,
            max_page_size=wide or 2 * size,
        ),
        executor=executor,
        hooks=ReaderHooks(heavy=lambda error: isinstance(error, HeavyPage)),
    )
    return list(reader.records()), reader


RATES = (0.0, 0.3, 1.0, 3.0)


@dataclass
class Outcome:
    """What one seed did: whether the first read proved itself complete, and at what rate."""

    verified: bool
    rate: float
    requests: int
    #: the first read's page sizes at its end: main scan, and the other reads
    page_sizes: tuple[int, int] = (0, 0)


def check_seed(seed: int, *, sortable: bool, deletions: bool, workers: int,
               heavy: bool = False, stamps: bool = True,
               heavy_repairs: bool = False, lost_answers: float = 0.0) -> Outcome:  # fmt: skip
    """Run the property for one seed; AssertionError (naming the seed) when it fails.

    ``heavy``: pages of more than 20 records fail, so the first read falls back from pages of
    80 to 40 to 20 (the second reads pages of 10, and 20 in its repairs). ``heavy_repairs``:
    the same limit, with a main scan of pages of 10 and the other reads (deletion pass,
    repairs, changed records) asking for 80, so that those fall back (80, 40, 20) instead.
    ``lost_answers``: that share of the answers that began (``Answered``: the reader's scan at
    concurrency 1) is lost and asked again, after the scheduler answered another waiting
    request (the next page, asked for early) when one waits."""
    rng = random.Random(seed)
    fake = FakeList(rng, rng.randint(0, 300))
    fake.heavy_above = 20 if heavy or heavy_repairs else 0
    fake.stamps = stamps
    before = {r.id for r in fake.live()}
    rate = rng.choice(RATES)
    executor = SeededExecutor(fake, random.Random(f"scheduler {seed}"))
    fake.lost_answers = lost_answers
    fake.between = executor.run_one
    fake.writes_per_request = rate
    out1, reader1 = read(fake, None, sortable=sortable, deletions=deletions, workers=workers,
                         executor=executor, size=80 if heavy else 10,
                         wide=80 if heavy_repairs else None)  # fmt: skip
    fake.writes_per_request = 0.0
    if heavy:
        assert reader1.page_size == 20, f"seed {seed}: no fallback to smaller pages"
    where = (f"seed {seed} (sortable={sortable}, deletions={deletions}, workers={workers}, "
             f"lost_answers={lost_answers})")  # fmt: skip
    emitted1 = {(rec["id"], rec.get("updated_at")) for rec, tomb in out1 if not tomb}
    ids1 = {rec["id"] for rec, tomb in out1 if not tomb}
    out2, _ = read(fake, reader1.result.bookmark, sortable=sortable, deletions=deletions,
                   workers=workers, executor=executor,
                   deleted_after=reader1.result.deleted_after)  # fmt: skip
    # 1. every record that existed throughout the read was emitted by it; unless the writes
    # outran every repair round, in which case the bookmark did not move and the next run read
    # the whole range again
    throughout = {i for i in before if fake.records[i].deleted is None}
    if reader1.result.verified:
        missing = throughout - ids1
    else:
        # with a deletion feed only the heaviest write rates outrun the repairs; without one,
        # ``$total`` is all there is and any writing may leave a read unproven
        assert rate >= 1.0 or (rate and not deletions), f"{where}: unproven at rate {rate}"
        assert reader1.result.bookmark is None, where
        missing = throughout - ids1 - {r["id"] for r, t in out2 if not t}
    assert not missing, f"{where}: lost {sorted(missing)[:5]} (verified={reader1.result.verified})"
    # 2. every change made during it is emitted now or by the next incremental run
    emitted = emitted1 | {(r["id"], r.get("updated_at")) for r, t in out2 if not t}
    for rec in fake.live():
        assert (rec.id, iso(rec.updated)) in emitted, f"{where}: {rec} not emitted"
    if deletions:
        tombs = {r["id"] for r, t in out1 + out2 if t}
        for rec in fake.records.values():
            if rec.deleted is not None and rec.id in ids1:
                assert rec.id in tombs, f"{where}: deletion of {rec.id} not emitted"
    # 3. no version twice in one run
    versions = [(r["id"], r.get("updated_at")) for r, t in out1 if not t]
    assert len(versions) == len(set(versions)), f"{where}: duplicate in one run"
    if heavy_repairs:
        assert reader1.page_size == 10, f"seed {seed}: the main scan's pages changed"
        assert reader1.max_page_size in (20, 80), f"seed {seed}: {reader1.max_page_size}"
    sizes = (reader1.page_size, reader1.max_page_size)
    return Outcome(reader1.result.verified, rate, fake.requests, sizes)
