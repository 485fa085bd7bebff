"""How tap-sage tells loaders about records deleted in Sage (the setting ``deletions``).

Sage's ``deleted_since`` lists say little about a deleted item: its id, perhaps ``deleted_at``
(tap_sage/sync/deletions.py reads them; what else an item carries is unverified, NOTES.md
"Deleted items"), never the record as it was. Loaders that merge by key (``meltanolabs-target-postgres``'s upsert,
``target-duckdb``) update every column of the stream's SCHEMA from the incoming record, so a
deleted item sent under the stream's full schema blanks every column but the keys. Hence:

``flag`` (default)
    Before the first deletion of a business, the stream's SCHEMA again, narrowed to its key
    properties and ``_sdc_deleted_at``; then one record per deletion with just those. A
    merging loader updates only those columns: the row keeps its data, ``_sdc_deleted_at``
    set. (singer-sdk targets open a new sink on a changed schema and drain the retired one
    first; target-duckdb flushes a stream's rows before it takes a new SCHEMA.) The full
    SCHEMA goes out again before the next business's records. With ``target-duckdb``'s
    ``hard_delete: true`` the loader then removes the flagged row instead. In BATCH mode (one
    SCHEMA per batch file) ``flag`` acts as ``stream``.
``stream``
    Deletions as their own stream ``<stream>_deletions`` (key properties and ``deleted_at``);
    the stream's own table is not touched. For any loader, append-only ones included.
``none``
    No deletion records (the deletion pass still runs: the read's consistency needs it). Not
    ``off``: YAML 1.1 readers take an unquoted ``off`` for ``false``.

The older boolean ``include_deleted: false`` means ``none`` when ``deletions`` is not set.
"""

from __future__ import annotations

import datetime as dt
import math
import time
import typing as t
from collections.abc import Mapping
from typing import Any

from singer_sdk.exceptions import MapperNotInitialized
from singer_sdk.mapper import RemoveRecordTransform
from singer_sdk.singerlib import RecordMessage, SchemaMessage

from tap_sage.sync import iso

if t.TYPE_CHECKING:
    from singer_sdk import Tap
    from singer_sdk.streams import Stream

FLAG = "flag"
STREAM = "stream"
NONE = "none"
MODES = (FLAG, STREAM, NONE)

DELETED_AT = "_sdc_deleted_at"
#: Suffix of the stream that carries a stream's deletions in mode ``stream``.
SUFFIX = "_deletions"

SETTING: dict[str, Any] = {
    "type": ["string", "null"],
    "enum": [*MODES, None],
    # no "default": the SDK would fill it in and hide an older `include_deleted: false`
    "description": "What a record deleted in Sage becomes (resources that take "
    "`deleted_since`). `flag` (the default): a record with only its keys and `_sdc_deleted_at`, "
    "under a SCHEMA narrowed to those, so loaders that merge by key keep the row's data and set "
    "`_sdc_deleted_at` (target-duckdb's `hard_delete: true` removes the row instead). "
    "`stream`: a record of the stream `<stream>_deletions` (keys and `deleted_at`), the "
    "stream's own table untouched. `none`: no deletion records. Which works with which "
    'loader: README, "Deleted records in a warehouse".',
}


def mode(config: Mapping[str, Any]) -> str:
    """The ``deletions`` mode of a tap configuration (``include_deleted: false`` = ``none``)."""
    chosen = config.get("deletions")
    if chosen:
        return str(chosen)
    if config.get("include_deleted") is False:
        return NONE
    return FLAG


def deleted_at(item: Mapping[str, Any]) -> str:
    """When Sage deleted ``item``; an item without ``deleted_at`` was deleted by now."""
    value = item.get("deleted_at")
    return value if isinstance(value, str) and value else iso(math.floor(time.time()))


class _Target(t.NamedTuple):
    alias: str
    schema: dict[str, Any]
    keys: list[str]


class Deletions:
    """One stream's deletion records, in the chosen mode (see the module docstring)."""

    def __init__(self, stream: Stream, tap: Tap, chosen: str) -> None:
        self.stream = stream
        self.tap = tap  # writes the messages, as the SDK's stream does
        self.mode = chosen
        if chosen == FLAG and stream.get_batch_config(stream.config) is not None:
            # BATCH files carry the records of a stream under one SCHEMA: a narrowed one would
            # narrow the live records of the batch too
            stream.logger.warning(
                "Stream '%s': deletions go to '%s%s' (deletions: stream), as `flag` cannot be "
                "told apart in BATCH mode (batch_config)", stream.name, stream.name, SUFFIX,
            )  # fmt: skip
            self.mode = STREAM
        self._narrowed = False  # the narrowed SCHEMA is the last one the loader saw
        self._announced: set[str] = set()  # `<alias>_deletions` streams whose SCHEMA went out

    def start_partition(self) -> None:
        """Before a business's records: the stream's full SCHEMA again if it was narrowed."""
        if self._narrowed:
            bookmarks = [self.stream.replication_key] if self.stream.replication_key else None
            for target in self._maps():
                self.tap.write_message(
                    SchemaMessage(target.alias, target.schema, target.keys, bookmarks)
                )
            self._narrowed = False

    def record(self, item: Mapping[str, Any], business_id: str) -> dict[str, Any] | None:
        """The record to emit on the stream for the deleted ``item`` (None: nothing there)."""
        keys = self._keys(item, business_id)
        when = deleted_at(item)
        if self.mode == FLAG:
            if not self._narrowed:
                for message in self._narrowed_schemas():
                    self.tap.write_message(message)
                self._narrowed = True
            return {**keys, DELETED_AT: when}
        if self.mode == STREAM:
            self._write_deletion({**keys, "deleted_at": when})
        return None

    def _keys(self, item: Mapping[str, Any], business_id: str) -> dict[str, Any]:
        keys: dict[str, Any] = {}
        for name in self.stream.primary_keys or ():
            keys[name] = business_id if name == "business_id" else item.get(name)
        return keys

    def _maps(self) -> list[_Target]:
        """Each stream the records go out as: (alias, schema, key properties) after the stream
        maps (the stream itself when no mapper is set up, as in a unit test)."""
        try:
            maps = self.stream.stream_maps
        except MapperNotInitialized:
            return [_Target(self.stream.name, self.stream.schema, list(self.stream.primary_keys))]
        return [
            _Target(m.stream_alias, m.transformed_schema, list(m.transformed_key_properties or ()))
            for m in maps
            if not isinstance(m, RemoveRecordTransform)
        ]

    def _narrowed_schemas(self) -> list[SchemaMessage]:
        messages = []
        for target in self._maps():
            properties = {
                name: prop
                for name, prop in target.schema.get("properties", {}).items()
                if name in target.keys or name == DELETED_AT
            }
            narrowed = {"type": "object", "properties": properties}
            messages.append(SchemaMessage(target.alias, narrowed, target.keys, None))
        return messages

    def _write_deletion(self, record: dict[str, Any]) -> None:
        key_names = list(record)[:-1]
        now = dt.datetime.now(dt.timezone.utc)
        for target in self._maps():
            name = target.alias + SUFFIX
            if name not in self._announced:
                key_schema = self.stream.schema["properties"]
                properties: dict[str, Any] = {
                    k: key_schema.get(k, {"type": ["string", "null"]}) for k in key_names
                }
                properties["deleted_at"] = {
                    "type": ["string", "null"],
                    "format": "date-time",
                    "description": "When Sage deleted the record.",
                }
                schema = {"type": "object", "properties": properties}
                self.tap.write_message(SchemaMessage(name, schema, key_names, None))
                self._announced.add(name)
            self.tap.write_message(
                RecordMessage(stream=name, record=dict(record), time_extracted=now)
            )
