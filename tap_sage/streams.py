"""The streams of tap-sage: one per Sage list resource and one per settings singleton.

``SageStream`` is the one base class: it owns the shared ``SageClient`` (auth, retries, errors),
the partitions (one per business), the skipping of streams a business cannot reach, and the
bookmarks. The consistent, concurrent read of a list lives in ``tap_sage.sync``.
"""

from __future__ import annotations

import copy
import email.utils
import logging
import math
import time
import typing as t
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import msgspec
from singer_sdk.helpers._catalog import pop_deselected_record_properties
from singer_sdk.helpers._util import utc_now
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.singerlib import RecordMessage
from singer_sdk.streams import Stream
from typing_extensions import override

from tap_sage import partitioning
from tap_sage.progress import ReadProgress, request_timer
from tap_sage.sage import catalogue, wire
from tap_sage.sage.client import decode_json
from tap_sage.sage.errors import SageAccessDenied, SageAPIError, SageNetworkError, SageNotFound
from tap_sage.sync import ListReader, Page, Progress, ReadResult, epoch, iso

if t.TYPE_CHECKING:
    from singer_sdk.helpers import types

    from tap_sage.sage.catalogue import Resource
    from tap_sage.tap import TapSage

DELETED_AT = "_sdc_deleted_at"

#: List parameters Sage requires (from the v3.1 spec) with no values listed in it. Such a stream
#: is not selected by default and reads only with the parameter given in ``stream_filters``.
#: (A required parameter the spec enumerates, tax_determinations' ``usage``, partitions the
#: stream instead: ``tap_sage.partitioning``.)
REQUIRED_FILTERS: dict[str, tuple[str, ...]] = {
    r.name: tuple(p.name for p in r.params if p.required and not p.enum)
    for r in catalogue.resources().values()
    if partitioning.needs_filters(r)
}
#: Partition state key: lower bound of the next deletion pass when there is no bookmark yet.
DELETED_AFTER = "deleted_since"
#: Partition state key: checkpoint of a read in progress (``tap_sage.sync.Progress``).
PROGRESS = "progress"

# JSON numbers with a fraction decode as Decimal: no amount ever becomes a binary float.
_decode = msgspec.json.Decoder(float_hook=Decimal).decode


def stream_schema(resource: Resource) -> dict[str, Any]:
    """The record schema of ``resource``: Sage's item schema plus ``business_id`` (and
    ``_sdc_deleted_at`` where the resource reports deletions)."""
    schema = copy.deepcopy(catalogue.list_schema(resource.name))
    properties: dict[str, Any] = schema.setdefault("properties", {})
    # Every list item has its key and every answer its ``$path``, even where the spec's item
    # definition forgets them (the exchange-rate lists, email_settings).
    if not resource.singleton:
        properties.setdefault(resource.key or "id", {"type": ["string", "null"]})
    properties.setdefault("$path", {"type": ["string", "null"]})
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


def _decode_list(response: t.Any, path: str) -> t.Any:
    """Sage's JSON body; an answer that is not JSON (an HTML page from a gateway) is a
    ``SageAPIError`` naming the status, the path and the request id, never a decoding
    traceback."""
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


class SageStream(Stream):
    """A Sage list resource, read per business (see ``tap_sage.sync`` for how)."""

    # Records are Sage's JSON as decoded: already JSON-typed, nothing to conform.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    def __init__(self, tap: TapSage, resource: Resource) -> None:
        """One stream for ``resource``."""
        self.resource = resource
        self._sage_tap = tap
        self._everything_selected: bool | None = None
        #: items_per_page of this stream's lists: lowered for good when pages keep failing as
        #: too heavy (``_smaller_pages``)
        self._page_size: int | None = None
        super().__init__(tap, schema=stream_schema(resource), name=resource.name)
        self._wire = wire.Shape.of(self.schema)
        by = [p.name for p in partitioning.enumerated(resource)]  # one read per value (usage)
        self.primary_keys = ["business_id", *by, resource.key or "id"]
        self.replication_key = "updated_at" if resource.incremental else None
        if resource.name in REQUIRED_FILTERS:
            self.selected_by_default = False

    # -- output -------------------------------------------------------------------------------

    @override
    def post_process(
        self, row: types.Record, context: types.Context | None = None
    ) -> types.Record | None:
        """Sage's wire to a record (``tap_sage.sage.wire``): decimal strings as exact
        ``Decimal`` (emitted as JSON numbers with Sage's digits), ``""`` dates as null."""
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

    # -- partitions and state -----------------------------------------------------------------

    @property
    @override
    def partitions(self) -> list[dict[str, Any]] | None:
        """One partition per business (setting ``business_ids``, else all from /businesses),
        and per allowed value of a required parameter (``tap_sage.partitioning``)."""
        given = self._sage_tap.stream_filters.get(self.name, {})
        return [{"business_id": business, **values} for business in self._sage_tap.business_ids
                for values in partitioning.values(self.resource, given)]  # fmt: skip

    @override
    def get_replication_key_signpost(self, context: types.Context | None = None) -> None:
        """No signpost: ``tap_sage.sync`` computes a bookmark that is safe by construction."""
        return

    @override
    def _increment_stream_state(
        self, latest_record: types.Record, *, context: types.Context | None = None
    ) -> None:
        """Bookmarks never come from the records seen: ``get_records`` sets the partition's
        bookmark once its read is complete (``tap_sage.sync`` says why)."""
        return

    def _set_bookmark(self, context: types.Context, result: ReadResult) -> None:
        """Record a finished read in the partition's state and emit STATE at once (so a sync
        killed later resumes from here)."""
        if not self.replication_key:
            return
        state = self.get_context_state(context)
        state.pop(PROGRESS, None)
        if result.bookmark is not None:
            state["replication_key"] = self.replication_key
            state["replication_key_value"] = result.bookmark
            state.pop(DELETED_AFTER, None)
        elif result.deleted_after is not None:
            # a first read that could not be proven complete: the next one reads everything
            # again, and its deletion pass must still cover the deletions made during this one
            state[DELETED_AFTER] = result.deleted_after
        else:
            return
        if self.get_batch_config(self.config) is None:  # in BATCH mode the SDK writes STATE
            self.state_manager.is_flushed = False  # after the BATCH message, not before
            self._write_state_message()

    def _checkpoint(self, context: types.Context) -> t.Callable[[Progress], None]:
        def save(progress: Progress) -> None:
            if self.get_batch_config(self.config) is not None:
                return  # BATCH mode: records are not on stdout yet
            self.get_context_state(context)[PROGRESS] = progress.to_dict()
            self.state_manager.is_flushed = False
            self._write_state_message()

        return save

    def _on_start(self, context: types.Context, since: str | None) -> t.Callable[[str], None]:
        def started(deleted_after: str) -> None:
            """A first read (no bookmark) began: keep the lower bound of the next deletion pass
            in state before any record goes out, so a run after a kill still emits the
            deletions of records this one emitted."""
            state = self.get_context_state(context)
            if since is not None or DELETED_AFTER in state:
                return
            if self.get_batch_config(self.config) is not None:
                return
            state[DELETED_AFTER] = deleted_after
            self.state_manager.is_flushed = False
            self._write_state_message()

        return started

    def _resume(self, context: types.Context, since: str | None) -> Progress | None:
        progress = Progress.from_dict(self.get_context_state(context).get(PROGRESS))
        if progress is None or progress.since != since:
            return None
        self.logger.info(
            "Resuming %s for business %s after %s (an interrupted run's checkpoint)",
            self.name, context["business_id"], progress.through,
        )  # fmt: skip
        return progress

    def _since(self, context: types.Context) -> str | None:
        if not self.resource.incremental:
            return None
        value = self.get_starting_replication_key_value(context)
        if not value:
            return None
        return iso(epoch(str(value)))

    # -- reading --------------------------------------------------------------------------------

    def _fetch(self, business_id: str) -> t.Callable[[str, Mapping[str, Any] | None], Page]:
        client = self._sage_tap.client

        def fetch(path: str, params: Mapping[str, Any] | None) -> Page:
            started = time.time()
            response = client.request("GET", path, business_id=business_id, params=params)
            elapsed = time.time() - started
            body = _decode_list(response, path)
            served = _server_time(response.headers)
            if served is None:
                served = math.floor(time.time())
            items = body.get("$items") or []
            total = body.get("$total")
            link = body.get("$next")
            guessed = missing_next(path, params, body)
            if guessed is not None:
                self.logger.warning(
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

        return fetch

    @staticmethod
    def _heavy(error: Exception) -> bool:
        """Whether a list page failed in a way smaller pages may cure: a 5xx (HTML 52x
        included) or a timeout / dropped connection, after every retry. Sage's lists with
        ``attributes=all`` time out on large pages (500/504) and answer smaller ones."""
        if isinstance(error, SageAPIError):
            return error.status >= 500
        return isinstance(error, SageNetworkError)

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

    @override
    def get_records(self, context: types.Context | None) -> Iterable[dict[str, Any]]:
        """Every record (and deletion record) of one business, in a consistent read."""
        assert context is not None
        business_id = str(context["business_id"])
        tap = self._sage_tap
        given = tap.stream_filters.get(self.name, {})
        missing = partitioning.unreadable(self.resource, given)
        if missing:
            self.logger.warning(
                "Skipping stream '%s' for business %s: Sage requires the parameter(s) %s; set "
                "them in stream_filters.%s",
                self.name, business_id, ", ".join(missing), self.name,
            )  # fmt: skip
            return
        since = self._since(context)
        by = {k: str(v) for k, v in context.items() if k != "business_id"}  # e.g. usage
        size = self._page_size or tap.connection.page_size
        progress = ReadProgress(self.logger, self.name, business_id, page_size=size,
                                label=partitioning.label(context))  # fmt: skip
        reader = ListReader(
            progress.wrap(self._fetch(business_id)),
            self.resource.path,
            params={**given, **by},
            page_size=size,
            # once pages proved too heavy, the reader's wide pages (repairs) keep to that size
            **({"max_page_size": self._page_size} if self._page_size else {}),
            since=since,
            incremental=self.resource.incremental,
            sortable=self.resource.sortable,
            deletions=self.resource.deletions,
            include_deleted=tap.include_deleted,
            executor=tap.executor,
            max_concurrency=tap.max_concurrency,
            deleted_after=self.get_context_state(context).get(DELETED_AFTER),
            checkpoint=self._checkpoint(context),
            resume=self._resume(context, since),
            on_start=self._on_start(context, since),
            logger=self.logger,
            heavy=self._heavy,
            on_smaller_pages=self._smaller_pages(business_id),
        )
        properties = self.schema["properties"]
        progress.start()
        try:
            for item, tombstone in reader.records():
                if tombstone:
                    record = {k: v for k, v in item.items() if k in properties}
                    # a deleted item may come without ``deleted_at``: it was deleted by now
                    record[DELETED_AT] = item.get("deleted_at") or iso(math.floor(time.time()))
                else:
                    record = item
                record["business_id"] = business_id
                record.update(by)
                progress.record()
                yield record
        except (SageAccessDenied, SageNotFound) as error:
            self._skip(business_id, error)
            return
        finally:
            progress.stop()
            tap.flush_output()
        result = reader.result
        self.logger.log(
            logging.INFO if result.verified else logging.WARNING,
            "Read %s for business %s: %d records, %d deletions, %d requests, %d repaired "
            "in %d repair rounds%s; bookmark %s",
            self.name, business_id, result.emitted, result.tombstones, result.requests,
            result.repaired, result.rounds,
            f" ({'; '.join(result.notes)})" if result.notes else "", result.bookmark,
        )  # fmt: skip
        self._set_bookmark(context, result)


class SageSingletonStream(SageStream):
    """A settings singleton (``/business_settings``, ...): one record per business."""

    def __init__(self, tap: TapSage, resource: Resource) -> None:
        """One stream for the singleton ``resource``."""
        super().__init__(tap, resource)
        self.primary_keys = ["business_id"]
        self.replication_key = None

    @override
    def get_records(self, context: types.Context | None) -> Iterable[dict[str, Any]]:
        """The singleton of one business."""
        assert context is not None
        business_id = str(context["business_id"])
        try:
            with request_timer(self.name, self.resource.path, business_id):
                response = self._sage_tap.client.request(
                    "GET", self.resource.path, business_id=business_id
                )
        except (SageAccessDenied, SageNotFound) as error:
            self._skip(business_id, error)
            return
        body = _decode_list(response, self.resource.path)
        if isinstance(body, dict):
            body["business_id"] = business_id
            yield body
