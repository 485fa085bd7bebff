"""How a stream partition's read is built and started (``tap_sage.readahead``).

A partition's read is built on the main thread, from the partition's state as the SDK finds it
at the partition's turn (no other partition writes it), and run in a thread of its own: what
the reader reports to its stream (the deletion lower bound when it begins, checkpoints, smaller
pages) is deferred to the main thread, between the records it follows.
"""

from __future__ import annotations

import copy
import typing as t
from typing import Any

from tap_sage import partitioning
from tap_sage.progress import ReadProgress, request_timer
from tap_sage.readahead import Unit
from tap_sage.sdk_private import write_starting_replication_value
from tap_sage.sync import ListReader, Progress, ReaderHooks, ReaderSettings

if t.TYPE_CHECKING:
    from singer_sdk.helpers import types

    from tap_sage.streams import SageSingletonStream, SageStream

#: Partition state key of the SDK: the value a partition's read starts from.
STARTING_MARKER = "starting_replication_value"
#: Partition state key: lower bound of the next deletion pass when there is no bookmark yet.
DELETED_AFTER = "deleted_since"


def read_start(
    stream: SageStream, context: types.Context
) -> tuple[str | None, str | None, Progress | None]:
    """Where a partition's read starts, from its state: the bookmark, the deletion lower
    bound and a checkpoint, as the SDK finds them at the partition's turn (no other
    partition writes them). A read started ahead leaves the state as it was: the partition
    shows in STATE from its turn on, as when partitions are read one after another."""
    bookmarks = stream.tap_state.get("bookmarks")
    before = copy.deepcopy(bookmarks.get(stream.name)) if isinstance(bookmarks, dict) else None
    write_starting_replication_value(stream, context)  # what the SDK does at the turn
    since = stream._since(context)
    entry = stream.get_context_state(context)
    deleted_after = stream._deleted_after(entry, since)  # its own, else the stream's floor
    resume = stream._resume(context, since)
    old = [
        p
        for p in (before or {}).get("partitions") or []
        if p.get("context") == entry.get("context")
    ]
    if old:
        entry.pop(STARTING_MARKER, None)
        if STARTING_MARKER in old[0]:
            entry[STARTING_MARKER] = old[0][STARTING_MARKER]
        return since, deleted_after, resume
    entries = stream.tap_state["bookmarks"][stream.name]
    partitions = entries.setdefault("partitions", [])
    partitions[:] = [p for p in partitions if p is not entry]
    if before is None:
        stream.tap_state["bookmarks"].pop(stream.name, None)
    elif "partitions" not in before and not entries["partitions"]:
        entries.pop("partitions")
    if bookmarks is None and not stream.tap_state["bookmarks"]:
        stream.tap_state.pop("bookmarks")
    return since, deleted_after, resume


def list_unit(stream: SageStream, context: types.Context) -> Unit:
    """The read of one partition, built now from its state and started in a thread of its
    own (``tap_sage.readahead``): what it reports to the stream is deferred to the main
    thread, between its records."""
    business_id = str(context["business_id"])
    tap = stream._sage_tap
    unit = Unit(f"{stream.name} {business_id}", tap.connection.page_size)
    if stream._missing_filters():
        return unit.start(iter(()))
    since, deleted_after, resume = read_start(stream, context)
    page_size = tap.connection.page_size
    size = min(stream._page_size or page_size, page_size)
    progress = ReadProgress(stream.logger, stream.name, business_id, page_size=size,
                            label=partitioning.label(context))  # fmt: skip
    reader = ListReader(
        progress.wrap(stream._fetch(business_id)),
        stream.resource.path,
        ReaderSettings(
            # a partition's own values (tax_determinations' usage) beside the filters
            params={**tap.stream_filters.get(stream.name, {}), **partitioning.values_of(context)},
            # once pages proved too heavy, this stream's pages keep to that size
            page_size=size,
            **({"max_page_size": stream._page_size} if stream._page_size else {}),
            since=since,
            incremental=stream.resource.incremental,
            sortable=stream.resource.sortable,
            deletions=stream.resource.deletions,
            include_deleted=tap.include_deleted,
            max_concurrency=tap.max_concurrency,
            deleted_after=deleted_after,
            resume=resume,
        ),
        executor=tap.executor,
        hooks=ReaderHooks(
            checkpoint=unit.defer(stream._checkpoint(context)),
            on_start=unit.defer(stream._on_start(context, since)),
            logger=stream.logger,
            heavy=stream._heavy,
            on_smaller_pages=unit.defer(stream._smaller_pages(business_id)),
        ),
    )

    def produce() -> t.Iterator[tuple[dict[str, Any], bool]]:
        yield from progress.counted(reader.records())
        unit.result = reader.result

    return unit.start(produce())


def singleton_unit(
    stream: SageSingletonStream, context: types.Context, decode_list: t.Callable[[Any, str], Any]
) -> Unit:
    """The request for the singleton of one business, in a thread of its own; its answer read
    by ``decode_list``."""
    business_id = str(context["business_id"])
    tap = stream._sage_tap
    unit = Unit(f"{stream.name} {business_id}", 1)

    def produce() -> t.Iterator[dict[str, Any]]:
        with tap.request_budget, request_timer(stream.name, stream.resource.path, business_id):
            response = tap.client.request("GET", stream.resource.path, business_id=business_id)
        body = decode_list(response, stream.resource.path)
        if isinstance(body, dict):
            body["business_id"] = business_id
            yield body

    return unit.start(produce())
