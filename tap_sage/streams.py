"""The streams of tap-sage: one per Sage list resource and one per settings singleton.

``SageStream`` is the one base class: it owns the shared ``SageClient`` (auth, retries, errors),
the partitions (one per business), the skipping of streams a business cannot reach, and the
bookmarks. The consistent, concurrent read of a list lives in ``tap_sage.sync``.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
import typing as t
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import msgspec
from singer_sdk import metrics
from singer_sdk.exceptions import MapperNotInitialized
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.singerlib import RecordMessage
from typing_extensions import override

from tap_sage import deletions, partitioning, reads, records
from tap_sage.bookmarks import StreamState
from tap_sage.progress import request_timer
from tap_sage.readahead import Unit
from tap_sage.records import RawRecord
from tap_sage.sage import catalogue, wire
from tap_sage.sage.client import decode_json
from tap_sage.sage.errors import SageAccessDenied, SageAPIError, SageNetworkError, SageNotFound
from tap_sage.sdk_private import pop_deselected_record_properties, utc_now
from tap_sage.sync import (
    Answered,
    Fetch,
    Page,
    ReadResult,
)
from tap_sage.writer import BufferedMsgSpecWriter, RawRecordLine, record_head, record_tail

if t.TYPE_CHECKING:
    from singer_sdk.helpers import types

    from tap_sage.sage.catalogue import Resource
    from tap_sage.tap import TapSage

DELETED_AT = "_sdc_deleted_at"

# JSON numbers with a fraction decode as Decimal: no amount ever becomes a binary float.
_decode = msgspec.json.Decoder(float_hook=Decimal).decode
_DELETIONS = "deleted_since"


def stream_schema(resource: Resource) -> dict[str, Any]:
    """The record schema of ``resource``: Sage's item schema plus ``business_id`` (and
    ``_sdc_deleted_at`` where the resource reports deletions)."""
    # a private copy (the catalogue's is shared), made in C: a JSON round trip costs a tenth
    # of ``copy.deepcopy`` on the big schemas (start-up, issue 15)
    schema: dict[str, Any] = msgspec.json.decode(
        msgspec.json.encode(catalogue.list_schema(resource.name))
    )
    properties: dict[str, Any] = schema.setdefault("properties", {})
    # Every list item has its key and every answer its ``$path``, even where the spec's item
    # definition forgets them (the exchange-rate lists, email_settings).
    if not resource.singleton:
        properties.setdefault(resource.key or "id", {"type": ["string", "null"]})
    properties.setdefault("$path", {"type": ["string", "null"]})
    wire.fix_spec_types(schema)
    properties["business_id"] = {
        "type": "string",
        "description": "Id of the Sage business the record belongs to.",
    }
    partitioning.add_properties(resource, properties)
    if resource.deletions:
        properties[DELETED_AT] = {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "When Sage deleted the record; set only on deletion records.",
        }
    return schema


def _decode_list(
    response: t.Any, path: str, check: wire.RecordCheck | None = None, business_id: str = ""
) -> t.Any:
    """Sage's JSON body; an answer that is not JSON (an HTML page from a gateway) is a
    ``SageAPIError`` naming the status, the path and the request id, never a decoding
    traceback. With ``check``: the items that need no change as ``RawRecord``
    (``tap_sage.records``)."""
    if check is not None:
        try:
            return records.decode_page(response.content, check, business_id or None)
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass  # not a list page: the ordinary decoding says what it is
    try:
        return _decode(response.content)
    except msgspec.DecodeError:
        return decode_json(response, "GET", urlsplit(path).path)


def _server_time(headers: Mapping[str, str]) -> int | None:
    value = headers.get("Date")
    if not value:
        return None
    try:
        return math.floor(email.utils.parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError):
        return None


def _query(path: str, params: Mapping[str, Any] | None) -> dict[str, str]:
    if params is not None:
        return {k: str(v) for k, v in params.items()}
    return dict(parse_qsl(urlsplit(path).query))


def _requested_page(path: str, params: Mapping[str, Any] | None) -> int:
    return int(_query(path, params).get("page", "1"))


def missing_next(
    path: str, params: Mapping[str, Any] | None, body: Mapping[str, Any]
) -> str | None:
    """The link to the next page when an answer has no ``$next`` but its ``$total`` says more
    records follow it (else None): the scan must not end silently there."""
    if body.get("$next"):
        return None
    items = body.get("$items") or []
    query = _query(path, params)
    try:
        page = int(body.get("$page") or query.get("page", "1"))
        per_page = int(body.get("$itemsPerPage") or body.get("$items_per_page")
                       or query.get("items_per_page", "20"))  # fmt: skip
        total = int(str(body.get("$total")))
    except (TypeError, ValueError):
        return None
    if not items or total <= (page - 1) * per_page + len(items):
        return None
    rest = [(k, v) for k, v in query.items() if k != "page"]
    return urlsplit(path).path + "?" + urlencode([("page", str(page + 1)), *rest])


def heavy_page_error(error: Exception) -> bool:
    """Whether a list page failed in a way smaller pages may cure: a 5xx (HTML 52x
    included) or a timeout / dropped connection, after every retry. Sage's lists with
    ``attributes=all`` time out on large pages (500/504) and answer smaller ones."""
    if isinstance(error, SageAPIError):
        return error.status >= 500
    return isinstance(error, SageNetworkError)


def _page_of(
    body: Mapping[str, Any],
    response: Any,
    path: str,
    params: Mapping[str, Any] | None,
    elapsed: float,
    logger: logging.Logger,
    business_id: str,
) -> Page:
    """One answered list page for the reader: its items, total, next link (asked for
    anyway when ``$total`` says more follow) and Sage's times of sending and serving."""
    served = _server_time(response.headers)
    if served is None:
        served = math.floor(time.time())
    items = body.get("$items") or []
    total = body.get("$total")
    link = body.get("$next")
    guessed = missing_next(path, params, body)
    if guessed is not None:
        logger.warning(
            "Sage answered page %s of %s for business %s without $next although "
            "$total (%s) says more records follow; asking for the next page anyway",
            body.get("$page"), urlsplit(path).path, business_id, total,
        )  # fmt: skip
        link = guessed
    return Page(
        number=int(body.get("$page") or _requested_page(path, params)),
        items=items,
        total=int(total) if total is not None else len(items),
        next=link,
        served_at=served,
        sent_at=served - math.ceil(elapsed),
    )


class SageStream(StreamState):
    """A Sage list resource, read per business (see ``tap_sage.sync`` for how)."""

    # Records are Sage's JSON as decoded: already JSON-typed, nothing to conform.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    def __init__(self, tap: TapSage, resource: Resource) -> None:
        """One stream for ``resource``."""
        self.resource = resource
        self._sage_tap = tap
        self._everything_selected: bool | None = None
        #: whether records that need no change go out as Sage's JSON text (``_fast_path``)
        self._fast: bool | None = None
        self._record_head: bytes | None = None  # of the fast path's RECORD lines
        self._sage_counter: metrics.Counter | None = None  # the SDK's (get_record_counter)
        #: items_per_page of this stream's lists: lowered for good when pages keep failing as
        #: too heavy (``_smaller_pages``)
        self._page_size: int | None = None
        self._deleted: deletions.Deletions | None = None  # the setting ``deletions``
        #: first reads covered by the deletion floor: partition key -> (context, own bound)
        self._floor_reads: dict[str, tuple[dict[str, Any], str]] = {}
        super().__init__(tap, schema=stream_schema(resource), name=resource.name)
        self._wire = wire.Shape.of(self.schema)
        by = [p.name for p in partitioning.enumerated(resource)]  # one read per value (usage)
        self.primary_keys = ["business_id", *by, resource.key or "id"]
        self.replication_key = "updated_at" if resource.incremental else None
        if partitioning.needs_filters(resource):
            # a list parameter Sage requires, with no values in the spec: the stream reads only
            # with it in ``stream_filters`` (one the spec enumerates, tax_determinations'
            # ``usage``, partitions the stream instead: ``tap_sage.partitioning``)
            self.selected_by_default = False

    # -- output -------------------------------------------------------------------------------

    @override
    def post_process(
        self, row: types.Record, context: types.Context | None = None
    ) -> types.Record | None:
        """Sage's wire to a record (``tap_sage.sage.wire``): decimals as Sage's strings,
        checked (a JSON number as its exact text), ``""`` dates as null; a ``RawRecord`` (the
        fast path, ``tap_sage.records``) was checked already and needs nothing."""
        if isinstance(row, RawRecord):
            return row  # checked, nothing to change (``tap_sage.records``)
        try:
            return self._wire.to_record(row)
        except wire.WireValueError as exc:
            where = f"stream '{self.name}', record {row.get('id') or row.get('$path')!r}"
            raise exc.within(where) from None

    @override
    def _generate_record_messages(
        self, record: types.Record
    ) -> t.Generator[RecordMessage, None, None]:
        """The SDK's record messages, minus two per-record costs that do nothing here: walking
        the record against the selection mask when every property is selected, and conforming
        types (``TYPE_CONFORMANCE_LEVEL`` is NONE). Stream maps and flattening apply as usual."""
        if isinstance(record, RawRecord):  # only when ``_fast_path``: one map, no change
            if self._record_head is None:
                self._record_head = record_head(self.stream_maps[0].stream_alias)
            line = RawRecordLine(
                self._record_head, record.raw, record_tail(self._stream_version, utc_now())
            )
            yield t.cast("RecordMessage", line)  # the writer takes it as it is (writer.py)
            return
        if self._everything_selected is None:
            self._everything_selected = all(self.mask.values())
        if not self._everything_selected:
            pop_deselected_record_properties(record, self.schema, self.mask)
        extracted = utc_now()
        for stream_map in self.stream_maps:
            mapped = stream_map.transform(record)
            if mapped is not None:
                yield RecordMessage(
                    stream=stream_map.stream_alias,
                    record=mapped,
                    version=self._stream_version,
                    time_extracted=extracted,
                )

    @override
    def generate_child_contexts(
        self, record: types.Record, context: types.Context | None
    ) -> Iterable[types.Context | None]:
        """None without child streams (tap-sage has none): the SDK would otherwise copy the
        context and ask the stream map's filter for every record, to sync no child."""
        if not self.child_streams:
            return ()
        return super().generate_child_contexts(record, context)

    @override
    def get_record_counter(
        self, *, endpoint: str | None = None, log_interval: float = metrics.DEFAULT_LOG_INTERVAL
    ) -> metrics.Counter:
        """The SDK's counter, kept: records written directly (``_write_raw``) are counted on it
        as the SDK counts the records it writes."""
        counter = super().get_record_counter(endpoint=endpoint, log_interval=log_interval)
        self._sage_counter = counter
        return counter

    def _writes_directly(self) -> bool:
        """Whether the fast path's records are written by ``get_records`` itself, a batch
        (about a page) at a time, instead of one by one through the SDK's record loop
        (``Stream._sync_records``), which would do nothing else with them: the fast path
        holds (one plain map, nothing to conform, no children, no BATCH), the stream is
        selected, and no record limit is set (``ABORT_AT_RECORD_COUNT``: a connection test or
        a dry run, which the SDK's loop enforces)."""
        return (
            self._fast_path()
            and self.selected
            and self.ABORT_AT_RECORD_COUNT is None
            and self._sage_counter is not None
        )

    def _write_raw(self, run: list[RawRecord]) -> None:
        """Write fast-path records as the SDK would: RECORD lines (``writer.RawRecordLine``'s
        bytes, one ``time_extracted`` for the batch), counted on the SDK's record counter, the
        state marked as having records after it."""
        if self._record_head is None:
            self._record_head = record_head(self.stream_maps[0].stream_alias)
        writer = t.cast("BufferedMsgSpecWriter", self._sage_tap.message_writer)
        tail = record_tail(self._stream_version, utc_now())
        writer.write_records(self._record_head, [record.raw for record in run], tail)
        if self._sage_counter is not None:
            self._sage_counter.increment(len(run))
        self.state_manager.is_flushed = False

    def _fast_path(self) -> bool:
        """Whether records that need no change but ``business_id`` may go out as Sage's JSON
        text (``tap_sage.records``): no stream map or flattening (the SDK's one default map),
        every property selected, no BATCH messages, no child streams. Types are never
        conformed (``TYPE_CONFORMANCE_LEVEL``). Each record is then checked on its own."""
        if self._fast is None:
            try:
                maps = self.stream_maps
            except MapperNotInitialized:  # a tap made without its mapper (get_records alone)
                maps = []
            self._fast = (
                len(maps) == 1
                and type(maps[0]) is SameRecordTransform
                and not maps[0].flattening_enabled
                and maps[0].stream_alias == self.name
                and all(self.mask.values())
                and self.get_batch_config(self.config) is None
                and not self.child_streams
                and self.TYPE_CONFORMANCE_LEVEL == TypeConformanceLevel.NONE
                and not partitioning.enumerated(self.resource)  # records get `usage`
                # the line goes out as it is (``writer.RawRecordLine``)
                and isinstance(self._sage_tap.message_writer, BufferedMsgSpecWriter)
            )
        return self._fast

    # -- partitions and state -----------------------------------------------------------------

    @property
    @override
    def partitions(self) -> list[dict[str, Any]] | None:
        """One partition per business (setting ``business_ids``, else all from /businesses),
        and per allowed value of a required parameter (``tap_sage.partitioning``)."""
        given = self._sage_tap.stream_filters.get(self.name, {})
        return [{"business_id": business, **values} for business in self._sage_tap.business_ids
                for values in partitioning.values(self.resource, given)]  # fmt: skip

    # -- reading --------------------------------------------------------------------------------

    def _fetch(self, business_id: str) -> Fetch:
        client = self._sage_tap.client
        fast = self._fast_path()
        check = self._wire.record_check

        budget = self._sage_tap.request_budget

        def fetch(
            path: str, params: Mapping[str, Any] | None, *, answered: Answered | None = None
        ) -> Page:
            with request_timer(self.name, urlsplit(path).path, business_id):
                started = time.time()
                # one of the connection's requests in flight (tap_sage.readahead) until Sage's
                # answer begins: the next request may go while this body is read
                response = client.request("GET", path, business_id=business_id, params=params,
                                          slot=budget, answered=answered)  # fmt: skip
                elapsed = time.time() - started
            # deletion passes become tombstones (dicts), never raw records
            raw = fast and _DELETIONS not in (params if params is not None else path)
            body = _decode_list(response, path, check if raw else None, business_id)
            return _page_of(body, response, path, params, elapsed, self.logger, business_id)

        return fetch

    #: whether a failed list page may pass with smaller pages (``heavy_page_error``)
    _heavy = staticmethod(heavy_page_error)

    def _smaller_pages(self, business_id: str) -> t.Callable[[int, Exception], None]:
        def smaller(size: int, error: Exception) -> None:
            first = self._page_size is None
            self._page_size = size
            self.logger.log(
                logging.WARNING if first else logging.DEBUG,
                "Pages of %s kept failing (%s); reading it with pages of %d from now on (for "
                "business %s and the next ones), %s",
                self.name, error, size, business_id,
                "the records, their order and the bookmarks are the same",
            )  # fmt: skip

        return smaller

    def _skip(self, business_id: str, error: Exception) -> None:
        reason = getattr(error, "sage_message", None) or str(error)
        status = getattr(error, "status", "")
        self.logger.warning(
            "Skipping stream '%s' for business %s: Sage answered %s (%s). The business's "
            "country, edition or the user's role does not give access to it; the rest of the "
            "sync goes on.",
            self.name, business_id, status, reason,
        )  # fmt: skip

    def _deletions(self) -> deletions.Deletions:
        if self._deleted is None:
            tap = self._sage_tap
            self._deleted = deletions.Deletions(self, tap, deletions.mode(tap.config))
        return self._deleted

    def _end_unit(self, unit: Unit, *, ended: bool) -> None:
        """A partition's read is over: abandoned (the SDK's record limit, an error) when not
        ``ended``; then the reads started ahead end too (the sync goes on without them)."""
        unit.stop()
        if not ended:
            self._sage_tap.scheduler.close()

    def _missing_filters(self) -> list[str]:
        given = self._sage_tap.stream_filters.get(self.name, {})
        return partitioning.unreadable(self.resource, given)

    def read_unit(self, context: types.Context) -> Unit:
        """The read of one partition, started in a thread of its own (``tap_sage.reads``)."""
        return reads.list_unit(self, context)

    @override
    def get_records(self, context: types.Context | None) -> Iterable[dict[str, Any]]:
        """Every record (and deletion record) of one business, in a consistent read."""
        assert context is not None
        business_id = str(context["business_id"])
        tap = self._sage_tap
        key = (self.name, partitioning.key(context))
        unit = tap.scheduler.take(key, lambda: self.read_unit(context))
        by = partitioning.values_of(context)  # e.g. {"usage": "sales"}
        missing = self._missing_filters()
        if missing:  # (its unit reads nothing)
            self.logger.warning(
                "Skipping stream '%s' for business %s: Sage requires the parameter(s) %s; set "
                "them in stream_filters.%s",
                self.name, business_id, ", ".join(missing), self.name,
            )  # fmt: skip
            return
        ended = False
        try:
            yield from self._partition_records(unit, business_id, by)
            ended = True
        except (SageAccessDenied, SageNotFound) as error:
            ended = True
            self._skip(business_id, error)
            return
        finally:
            self._end_unit(unit, ended=ended)
            tap.flush_output()
        result: ReadResult = unit.result
        self.logger.log(
            logging.INFO if result.verified else logging.WARNING,
            "Read %s for business %s: %d records, %d deletions, %d requests, %d repaired "
            "in %d repair rounds%s; bookmark %s",
            self.name, business_id, result.emitted, result.tombstones, result.requests,
            result.repaired, result.rounds,
            f" ({'; '.join(result.notes)})" if result.notes else "", result.bookmark,
        )  # fmt: skip
        self._set_bookmark(context, result)

    def _partition_records(
        self, unit: Unit, business_id: str, by: Mapping[str, Any]
    ) -> Iterator[dict[str, Any]]:
        """The records of one partition's read, in order: deletion records from its
        tombstones (``tap_sage.deletions``), the fast path's raw records written directly
        (``_write_raw``, a run at a time) or yielded, the others with ``business_id`` and the
        partition's values."""
        deleted = self._deletions()
        deleted.start_partition()
        direct = self._writes_directly()
        for batch in unit.batches():
            run: list[RawRecord] = []  # raw records to write directly, in order
            for item, tombstone in batch:
                if run and (tombstone or item.__class__ is not RawRecord):
                    # written before whatever this item writes (a SCHEMA for tombstones)
                    self._write_raw(run)
                    run = []
                if tombstone:
                    found = deleted.record(item, business_id)  # tap_sage.deletions
                    if found is None:
                        continue
                    record = found
                elif item.__class__ is RawRecord:  # ``business_id`` is in its text
                    raw = item if item.has_business else item.with_business(business_id)
                    if direct:
                        run.append(raw)
                    else:
                        yield raw  # type: ignore[misc]  # a Mapping, not a dict
                    continue
                else:
                    record = item
                record["business_id"] = business_id
                record.update(by)
                yield record
            if run:
                self._write_raw(run)


class SageSingletonStream(SageStream):
    """A settings singleton (``/business_settings``, ...): one record per business."""

    def __init__(self, tap: TapSage, resource: Resource) -> None:
        """One stream for the singleton ``resource``."""
        super().__init__(tap, resource)
        self.primary_keys = ["business_id"]
        self.replication_key = None

    @override
    def read_unit(self, context: types.Context) -> Unit:
        """The request for the singleton of one business, in a thread of its own."""
        return reads.singleton_unit(self, context, _decode_list)

    @override
    def get_records(self, context: types.Context | None) -> Iterable[dict[str, Any]]:
        """The singleton of one business."""
        assert context is not None
        business_id = str(context["business_id"])
        unit = self._sage_tap.scheduler.take(
            (self.name, business_id), lambda: self.read_unit(context)
        )
        ended = False
        try:
            yield from unit.items()
            ended = True
        except (SageAccessDenied, SageNotFound) as error:
            ended = True
            self._skip(business_id, error)
            return
        finally:
            self._end_unit(unit, ended=ended)
