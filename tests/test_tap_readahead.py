"""Issue 15: the read-ahead across streams and businesses (``tap_sage.readahead``).

Over HTTP against the sandbox (2 businesses): a sync with partitions read ahead under one budget
of requests in flight writes exactly the messages of a sync that reads one partition after
another (records, STATE and their order), and no STATE it writes, at any point of its output,
claims a record that is not out before it. The scheduler and the budget themselves are checked
as units (how many reads start ahead, that deferred actions run on the consuming thread in
order, that an abandoned read ends its thread, that no more requests than the budget run).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tap_sage.readahead import BATCHES, RequestBudget, Scheduler, Slot, Unit
from tap_sage.sandbox.runner import SandboxProcess
from tap_sage.sync import epoch
from tests.tap_helpers import Run, run_tap
from tests.test_tap_sync import with_settings

#: lists in creation order and sorted by updated_at, one with required deletions, small lists
#: of one page, and settings singletons: the mix of a many-businesses sync
STREAMS = ("contacts", "sales_invoices", "products", "ledger_accounts", "tax_rates",
           "bank_accounts", "business_settings", "financial_settings")  # fmt: skip


def _messages(run: Run) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for message in run.messages:
        if message["type"] == "RECORD":
            out.append((message["stream"], message["record"]))
        elif message["type"] == "STATE":
            out.append(("STATE", _timeless(message["value"])))
    return out


#: state values that are the server's clock when a read began (they differ from run to run)
CLOCKS = ("deleted_since", "scan_start")


def _timeless(value: Any) -> Any:
    """``value`` with the server's clock (``CLOCKS``) replaced by a mark."""
    if isinstance(value, dict):
        return {k: "<clock>" if k in CLOCKS else _timeless(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


def _claims(state: dict[str, Any]) -> Iterator[tuple[str, str, int, str]]:
    """(stream, business, epoch, kind) of every bookmark and checkpoint in ``state``: each
    says every record of that partition updated before that second is out."""
    for stream, entry in (state.get("bookmarks") or {}).items():
        for partition in entry.get("partitions") or []:
            business = str((partition.get("context") or {}).get("business_id"))
            value = partition.get("replication_key_value")
            if value:
                yield stream, business, epoch(str(value)), "bookmark"
            progress = partition.get("progress")
            if isinstance(progress, dict) and progress.get("through"):
                yield stream, business, epoch(str(progress["through"])), "checkpoint"


def _check_state_never_ahead(run: Run, where: str) -> int:
    """At every STATE of ``run``: each record of the run older than a claim of that STATE is
    already out (cutting the output right after any STATE loses nothing it claims)."""
    records = [(m["stream"], m["record"]) for m in run.messages if m["type"] == "RECORD"]
    checked = 0
    out: set[tuple[str, str, str]] = set()
    position = 0
    for message in run.messages:
        if message["type"] == "RECORD":
            record = message["record"]
            out.add((message["stream"], record["business_id"], str(record.get("id"))))
            position += 1
            continue
        if message["type"] != "STATE":
            continue
        for stream, business, second, kind in _claims(message["value"]):
            for later_stream, record in records[position:]:
                if later_stream != stream or record["business_id"] != business:
                    continue
                updated = record.get("updated_at")
                key = (stream, business, str(record.get("id")))
                if updated and epoch(str(updated)) < second and key not in out:
                    raise AssertionError(
                        f"{where}: a STATE's {kind} for {stream}/{business} claims {key} "
                        f"(updated {updated}) before it is out"
                    )
            checked += 1
    return checked


def test_read_ahead_writes_the_messages_of_one_partition_after_another(sandbox: SandboxProcess, connection_config, tmp_path: Path) -> None:  # fmt: skip
    runs: dict[int, Run] = {}
    for workers in (1, 4):
        config = with_settings(connection_config, page_size=20, max_concurrency=workers)
        runs[workers] = run_tap(tmp_path, config, STREAMS, tag=f"ahead{workers}")
    one, four = runs[1], runs[4]
    first, second = _messages(one), _messages(four)
    differ = next((i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b), None)
    assert differ is None, f"message {differ}: {first[differ]} != {second[differ]}"
    assert len(first) == len(second)  # records, STATE and their order
    assert len({m["stream"] for m in four.messages if m["type"] == "RECORD"}) == len(STREAMS)
    assert any("progress" in str(s) for s in four.states)  # checkpoints were written too
    for workers, run in runs.items():
        assert _check_state_never_ahead(run, f"max_concurrency {workers}") > 20
    # an incremental run from the last STATE: bookmarks in every STATE from the start
    config = with_settings(connection_config, page_size=20, max_concurrency=4)
    again = run_tap(tmp_path, config, STREAMS, state=four.state, tag="again")
    assert _check_state_never_ahead(again, "incremental") > 20
    assert again.state == four.state  # nothing changed: the bookmarks stay


def test_the_check_catches_a_state_ahead_of_its_records() -> None:
    """The STATE check above can fail: a bookmark written before the record it covers."""
    record = {"type": "RECORD", "stream": "contacts",
              "record": {"business_id": "b1", "id": "c1", "updated_at": "2024-01-01T00:00:00Z"}}  # fmt: skip
    state = {"type": "STATE", "value": {"bookmarks": {"contacts": {"partitions": [
        {"context": {"business_id": "b1"}, "replication_key_value": "2024-01-02T00:00:00Z"}]}}}}  # fmt: skip
    good = Run("\n".join(json.dumps(m) for m in (record, state)), "", 0)
    bad = Run("\n".join(json.dumps(m) for m in (state, record)), "", 0)
    assert _check_state_never_ahead(good, "good") == 1
    with pytest.raises(AssertionError, match="claims"):
        _check_state_never_ahead(bad, "bad")


# -- units ----------------------------------------------------------------------------------------


def _unit(name: str, items: list[int], log: list[str] | None = None) -> Unit:
    unit = Unit(name, batch=2)

    def produce() -> Iterator[int]:
        for item in items:
            if log is not None and item % 3 == 0:
                unit.defer(log.append)(f"{name} after {item}")
            yield item
        unit.result = f"{name} done"

    return unit.start(produce())


def test_scheduler_starts_the_next_reads_and_keeps_their_order() -> None:
    started: list[str] = []
    log: list[str] = []

    def slot(name: str) -> Slot:
        def start() -> Unit:
            started.append(name)
            return _unit(name, list(range(7)), log)

        return Slot(("s", name), start)

    names = [f"b{i}" for i in range(6)]
    scheduler = Scheduler(lambda: [slot(n) for n in names], ahead=2)
    first = scheduler.take(("s", "b0"), slot("b0").start)
    assert started == ["b0", "b1", "b2"]  # the one asked for and the next two
    seen = []
    for item in first.items():
        seen.append(item)
        log.append(f"b0 emitted {item}")
    assert seen == list(range(7)) and first.result == "b0 done"
    # deferred actions ran on this thread, after the items produced before them
    assert log.index("b0 after 3") == log.index("b0 emitted 2") + 1
    assert log.index("b0 after 6") == log.index("b0 emitted 5") + 1
    second = scheduler.take(("s", "b1"), slot("b1").start)
    assert started == ["b0", "b1", "b2", "b3"]  # b1 was read ahead: not started again
    assert list(second.items()) == list(range(7))
    scheduler.close()
    # a partition read on its own (not in the plan's order) reads nothing ahead
    alone = Scheduler(lambda: [slot(n) for n in names], ahead=2)
    started.clear()
    assert list(alone.take(("s", "b3"), slot("b3").start).items()) == list(range(7))
    assert started == ["b3"]
    alone.close()


def test_an_abandoned_read_ends_its_thread() -> None:
    produced: list[int] = []
    unit = Unit("big", batch=10)

    def produce() -> Iterator[int]:
        for item in range(100_000):
            produced.append(item)
            yield item

    unit.start(produce())
    items = unit.items()
    assert next(items) == 0
    unit.stop()
    unit._thread.join(5)
    assert not unit._thread.is_alive()
    # bounded: the thread waited for the consumer (at most BATCHES batches ahead, and the one
    # it was handing over), then ended without reading on
    assert len(produced) <= 10 * (BATCHES + 3)


def test_an_error_of_the_read_is_raised_where_it_is_consumed() -> None:
    unit = Unit("failing", batch=5)

    def produce() -> Iterator[int]:
        yield 1
        raise ValueError("page 2 failed")

    unit.start(produce())
    items = unit.items()
    assert next(items) == 1
    with pytest.raises(ValueError, match="page 2 failed"):
        next(items)


def test_the_budget_bounds_the_requests_in_flight() -> None:
    budget = RequestBudget(3)
    lock = threading.Lock()
    three = threading.Barrier(3, timeout=10)  # passes only when three are in flight at once
    now = peak = 0

    def request() -> None:
        nonlocal now, peak
        with budget:
            with lock:
                now += 1
                peak = max(peak, now)
            three.wait()
            with lock:
                now -= 1

    threads = [threading.Thread(target=request) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 3  # never more than the budget; the budget was used
