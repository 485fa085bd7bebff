"""The sink: one per stream; buffers records and applies them through the engine."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from singer_sdk.sinks import Sink
from typing_extensions import override

from target_sage.ledger import APPLIED
from target_sage.ordering import Dispatcher
from target_sage.payload import nest_dotted, nested_fields, source_key
from target_sage.results import Result
from target_sage.versions import message_version
from target_sage.work import TargetFailure, WorkItem

if TYPE_CHECKING:
    from target_sage.target import TargetSage


class SageSink(Sink):
    """Writes the records of one stream to its Sage resource or Execute procedure."""

    #: Records held before a drain (memory stays flat however long the input).
    MAX_SIZE_DEFAULT = 500

    def __init__(
        self,
        target: TargetSage,
        stream_name: str,
        schema: dict[str, Any],
        key_properties: Sequence[str] | None,
    ) -> None:
        self.sage_target = target
        self.engine = target.engine
        # Routing first: a stream that maps to nothing is an error before any write.
        self.route = self.engine.route(stream_name)
        super().__init__(target, stream_name, schema, key_properties)
        self.records_to_drain: list[WorkItem] = []
        res = self.route.resource
        self._nested = nested_fields(res.name) if res is not None and res.wrapper else frozenset()
        self.logger.addFilter(_no_validation_traceback)

    @property
    @override
    def include_sdc_metadata_properties(self) -> bool:
        # Always keep `_sdc_deleted_at`: it is what makes a record a delete.
        return True

    @override
    def process_record(self, record: dict[str, Any], context: dict[str, Any]) -> None:
        target = self.sage_target
        # Records this one refers to must be in Sage (and in the ledger) first.
        for other in set(self.engine.settings.references.get(self.stream_name, {}).values()):
            sink = target.active_sink(other)
            if sink is not None and sink is not self and sink.current_size:
                target.drain_one(sink)
        key, _ = source_key(record, self.key_properties)
        empty = [k for k in self.key_properties if record.get(k) in (None, "")]
        display: Any = (
            {k: record.get(k) for k in self.key_properties} if self.key_properties else key
        )
        raw = target.current_message or {
            "type": "RECORD",
            "stream": self.stream_name,
            "record": record,
        }
        sage_id = record.get(self.engine.settings.sage_id_field)
        # `main_address.city` (or `main_address__city`) -> {"main_address": {"city": ...}}
        record = nest_dotted(record, self._nested)
        item = WorkItem(
            stream=self.stream_name,
            record=record,
            key=key,
            key_display=display,
            raw_message=raw,
            schema_message=target.schema_message(str(raw.get("stream"))),
            chain=f"id:{sage_id}" if sage_id else f"key:{key}",
            key_problem=f"key property `{empty[0]}` is empty" if empty else None,
            version=message_version(raw, target.schema_message(str(raw.get("stream")))),
        )
        self.records_to_drain.append(item)

    def _sequential_post(self, item: WorkItem) -> bool:
        """Whether this item will be a POST that Sage wants one at a time."""
        from target_sage.procedures import PROCEDURES

        route = self.route
        if route.procedure:
            return PROCEDURES[route.procedure].sequential
        res = route.resource
        if res is None or res.parallel_posts or res.singleton:
            return False
        settings = self.engine.settings
        forced = settings.operations.get(self.stream_name)
        if forced in ("update", "delete") or item.record.get("_sdc_deleted_at") is not None:
            return False
        if item.record.get(settings.sage_id_field) and forced != "create":
            return False
        entry = self.engine.ledger.get(self.engine.business_id, self.stream_name, item.key)
        return not (entry is not None and entry.state == APPLIED and entry.sage_id)

    def _newest_only(self, items: list[WorkItem]) -> list[WorkItem]:
        """Of several versions of one source record in a batch, only the last goes to Sage
        (it is the newest: input order); the others are reported skipped. Procedures are
        actions, each applied, and records without key properties have no versions."""
        if self.route.procedure or not self.key_properties:
            return items
        last = {item.key: i for i, item in enumerate(items) if not item.key_problem}
        kept = []
        for i, item in enumerate(items):
            if item.key_problem or last[item.key] == i:
                kept.append(item)
                continue
            self.engine.reporter.report(
                item,
                Result(
                    item.stream,
                    "upsert",
                    item.key_display,
                    "skipped",
                    message="superseded by a later version of this record in the input",
                    dry_run=self.engine.settings.dry_run,
                ),
            )
        return kept

    @override
    def process_batch(self, context: dict[str, Any]) -> None:
        items, self.records_to_drain = self.records_to_drain, []
        items = self._newest_only(items)
        if not items:
            return
        try:
            Dispatcher(self.engine, self.route).run(items, self._sequential_post)
        except ValueError as exc:  # never mistaken for an invalid input record upstream
            msg = f"Stream `{self.stream_name}`: internal error while applying a batch: {exc}"
            raise TargetFailure(msg) from exc


def _no_validation_traceback(record: logging.LogRecord) -> bool:
    """The SDK logs a record that breaks its schema with a traceback ("Record validation
    failed", singer_sdk/sinks/core.py) before raising; the target reports it in one line with
    the input line, stream, key and JSON Schema path instead. Tests (test_target_input) fail
    if the SDK's message changes and the traceback comes back."""
    return record.getMessage() != "Record validation failed"
