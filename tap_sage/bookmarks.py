"""The STATE side of a tap-sage stream: bookmarks, checkpoints, the deletion floor, and when
STATE is written.

``StreamState`` sits between the SDK's ``Stream`` and ``tap_sage.streams.SageStream``: every
bookmark comes from a read that ``tap_sage.sync`` proved complete (never from the records seen),
a long read's checkpoints go into its partition's state, a first read with a deletion feed is
covered by its stream's deletion floor, and STATE goes out at the cadence of ``tap_sage.state``
(all on the main thread, between the records the state covers: ``tap_sage.readahead``).
"""

from __future__ import annotations

import typing as t
from collections.abc import Mapping
from typing import Any

from singer_sdk.streams import Stream
from typing_extensions import override

from tap_sage import partitioning, state
from tap_sage.sync import Progress, ReadResult, epoch, iso
from tap_sage.writer import BufferedMsgSpecWriter

if t.TYPE_CHECKING:
    from singer_sdk.helpers import types

    from tap_sage.sage.catalogue import Resource
    from tap_sage.tap import TapSage

#: Partition state key: lower bound of the next deletion pass when there is no bookmark yet.
DELETED_AFTER = "deleted_since"
#: Partition state key: checkpoint of a read in progress (``tap_sage.sync.Progress``).
PROGRESS = "progress"


class StreamState(Stream):
    """Bookmarks, checkpoints, the deletion floor and STATE of a stream (module docstring)."""

    resource: Resource
    _sage_tap: TapSage
    #: first reads covered by the deletion floor: partition key -> (context, own bound)
    _floor_reads: dict[str, tuple[dict[str, Any], str]]

    #: the STATE being written must go out now (``tap_sage.state``: a deletion floor moved)
    _state_forced = False
    #: the sync's last STATE: written whatever the cadence
    _state_final = False

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
        """Record a finished read in the partition's state; STATE follows when due
        (``tap_sage.state``: a sync killed later resumes from the last one written)."""
        if not self.replication_key:
            return
        entry = self.get_context_state(context)
        entry.pop(PROGRESS, None)
        if result.bookmark is not None:
            entry["replication_key"] = self.replication_key
            entry["replication_key_value"] = result.bookmark
            entry.pop(DELETED_AFTER, None)
        elif result.deleted_after is not None:
            # a first read that could not be proven complete: the next one reads everything
            # again, and its deletion pass must still cover the deletions made during this one
            entry[DELETED_AFTER] = result.deleted_after
        else:
            return
        if self.get_batch_config(self.config) is None:  # in BATCH mode the SDK writes STATE
            self._emit_state()  # after the BATCH message, not before

    def _checkpoint(self, context: types.Context) -> t.Callable[[Progress], None]:
        def save(progress: Progress) -> None:
            if self.get_batch_config(self.config) is not None:
                return  # BATCH mode: records are not on stdout yet
            self.get_context_state(context)[PROGRESS] = progress.to_dict()
            self._emit_state()

        return save

    def _on_start(self, context: types.Context, since: str | None) -> t.Callable[[str], None]:
        # the floor this read's deletion pass starts from (``read_start``; built ahead, so no
        # partition entry is made here)
        used = self._deleted_after({}, since)

        def started(deleted_after: str) -> None:
            """A first read (no bookmark) began: before any of its records goes out, a STATE
            must hold a lower bound of the next deletion pass at or before ``deleted_after``,
            so a run after a kill still emits the deletions of records this one emitted: the
            stream's deletion floor (``tap_sage.state``), moved back and written if it does
            not cover the read already."""
            entry = self.get_context_state(context)
            if since is not None or DELETED_AFTER in entry:
                return
            if self.get_batch_config(self.config) is not None:
                return
            bound = deleted_after
            if used is not None and epoch(used) < epoch(deleted_after):
                bound = used  # this read's pass reached back to the floor: so must the next
            self._floor_reads[partitioning.key(context)] = (dict(context), bound)
            floor = state.floor_of(self.tap_state, self.name)
            if floor is not None and epoch(floor) <= epoch(deleted_after):
                return  # the last STATE written holds it (floors are written as they move)
            value = iso(epoch(deleted_after) - state.FLOOR_SLACK)
            cadence = state.cadence_of(self._sage_tap)
            streams = self._floor_streams()
            for name in streams:  # a floor this run did not set: a killed run's
                inherited = state.floor_of(self.tap_state, name)
                if inherited is not None and name not in cadence.floored:
                    cadence.inherited.setdefault(name, inherited)
            moved = state.lower_floors(self.tap_state, streams, value, epoch)
            cadence.floored.update(moved)
            self._emit_state(force=True)

        return started

    def _deleted_after(self, entry: Mapping[str, Any], since: str | None) -> str | None:
        """The exclusive lower bound of a read's deletion pass besides its bookmark: the
        partition's own ``deleted_since``, else (no bookmark) the deletion floor its stream
        had in the state this run began from. A floor this run set covers only this run's
        records for the next one: it does not move this run's own deletion passes."""
        own = entry.get(DELETED_AFTER)
        if own is not None or since is not None:
            return str(own) if own is not None else None
        cadence = state.cadence_of(self._sage_tap)
        if self.name in cadence.floored:
            # moved by this run (even back by a clock behind the killed run's): the floor
            # this run began from still holds for the partitions that relied on it
            return cadence.inherited.get(self.name)
        return state.floor_of(self.tap_state, self.name)

    def _floor_streams(self) -> list[str]:
        """The selected streams with a deletion feed whose sync has not ended (this one too)."""
        tap = self._sage_tap
        done = state.cadence_of(tap).finished
        return [s.name for s in tap.streams.values()
                if isinstance(s, StreamState) and s.selected and s.resource.deletions
                and s.name not in done]  # fmt: skip

    def _settle_floor(self) -> None:
        """The stream's sync ended: each partition that relied on the deletion floor and has
        no bookmark gets its own bound (what it would have had without the floor), and the
        floor goes."""
        for context, bound in self._floor_reads.values():
            entry = self.get_context_state(context)
            if not entry.get("replication_key_value") and DELETED_AFTER not in entry:
                entry[DELETED_AFTER] = bound
        self._floor_reads.clear()
        # a partition a killed run began and this one did not read again (skipped, or not
        # among this run's businesses) relied on the floor too: it keeps it as its own bound
        floor = state.floor_of(self.tap_state, self.name)
        if floor is not None:
            for entry in state.partition_entries(self.tap_state, self.name):
                if not entry.get("replication_key_value") and DELETED_AFTER not in entry:
                    entry[DELETED_AFTER] = floor
        state.drop_floor(self.tap_state, self.name)
        state.cadence_of(self._sage_tap).finished.add(self.name)

    def _emit_state(self, *, force: bool = False) -> None:
        """The state changed: STATE now if ``force``, else when the cadence allows."""
        self.state_manager.is_flushed = False
        self._state_forced = force
        try:
            self._write_state_message()
        finally:
            self._state_forced = False

    @override
    def _write_state_message(self) -> None:
        """The SDK's STATE message, written when due (``tap_sage.state``): when forced, for
        the sync's last one, or once the output since the last STATE is large enough; else
        held back (a later STATE carries it)."""
        cadence = state.cadence_of(self._sage_tap)
        if self.state_manager.is_flushed and not (self._state_final and cadence.pending):
            return
        writer = self._sage_tap.message_writer
        counted = writer if isinstance(writer, BufferedMsgSpecWriter) else None
        before = counted.written if counted is not None else None
        if not (self._state_forced or self._state_final or cadence.due(before)):
            cadence.pending = True
            return
        self.state_manager.is_flushed = False
        super()._write_state_message()
        cadence.wrote(before, counted.written if counted is not None else None)

    @override
    def finalize_state_progress_markers(self, state: dict[str, Any] | None = None) -> None:
        """At the end of the stream's sync: the deletion floor settled (``_settle_floor``),
        then the SDK's end of stream, whose STATE is written if this is the sync's last."""
        if not state:
            self._settle_floor()
            self._state_final = self._last_stream()
        try:
            super().finalize_state_progress_markers(state)
        finally:
            self._state_final = False

    def _last_stream(self) -> bool:
        """Whether this is the last stream ``Tap.sync_all`` syncs."""
        synced = [s for s in self._sage_tap.streams.values()
                  if (s.selected or s.has_selected_descendents) and not s.parent_stream_type]  # fmt: skip
        return bool(synced) and synced[-1] is self

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
