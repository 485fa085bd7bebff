"""Which streams an input catalog selects, read cheaply (tap-sage's start-up, issue 15).

A Meltano catalog lists every stream of tap-sage with its whole schema (85 of them, 1.5 MB of
JSON), even to run one. ``lean_catalog`` cuts each entry that does not select its stream down
to its name and root metadata before the SDK parses the file; ``selected`` is the SDK's rule for
a stream's own breadcrumb, read from its root metadata alone.
"""

from __future__ import annotations

from typing import Any

import msgspec
from singer_sdk.singerlib import Metadata, MetadataMapping


class _MetadataRow(msgspec.Struct):
    # both left as JSON text: of the thousands of rows (one per property), only the few
    # stream-level ones are decoded (``_root``)
    breadcrumb: msgspec.Raw = msgspec.Raw(b"[]")
    metadata: msgspec.Raw = msgspec.Raw(b"{}")


class _EntryHead(msgspec.Struct):
    tap_stream_id: str = ""
    metadata: list[_MetadataRow] = msgspec.field(default_factory=list)


class _CatalogText(msgspec.Struct):
    streams: list[msgspec.Raw] = msgspec.field(default_factory=list)


_breadcrumb = msgspec.json.Decoder(list[str]).decode
_root_metadata = msgspec.json.Decoder(dict[str, Any]).decode
#: a property's breadcrumb (``["properties", "id"]``) is never this short; ``[]`` is
_SHORT = 8


def _root(row: _MetadataRow) -> dict[str, Any] | None:
    """The row as the SDK reads it if it is the stream's own (empty breadcrumb), else None."""
    if len(row.breadcrumb) > _SHORT or _breadcrumb(row.breadcrumb):
        return None
    return {"breadcrumb": [], "metadata": _root_metadata(row.metadata)}


def lean_catalog(text: str | bytes) -> str:
    """A catalog's JSON text with every entry that does not select its stream cut down to its
    name and root metadata (no schema): the SDK would otherwise parse all 85 schemas of a
    Meltano catalog to run one stream. Text that is no such catalog is returned as it is (the
    SDK then says what is wrong with it). Selected entries go through as they are."""
    try:
        raw = msgspec.json.decode(text, type=_CatalogText)
        entries = []
        for entry in raw.streams:
            head = msgspec.json.decode(entry, type=_EntryHead)
            roots = [root for root in map(_root, head.metadata) if root is not None]
            # no metadata: selected; metadata without the stream's own: not (the SDK's rule)
            if not head.metadata or (roots and row_selected(roots)):
                entries.append(bytes(entry))
            else:
                stub = {"tap_stream_id": head.tap_stream_id, "schema": {}, "metadata": roots}
                entries.append(msgspec.json.encode(stub))
    except (msgspec.DecodeError, msgspec.ValidationError):
        return text if isinstance(text, str) else text.decode()
    return (b'{"streams":[' + b",".join(entries) + b"]}").decode()


def row_selected(rows: list[dict[str, Any]]) -> bool:
    """``selected`` of an entry's metadata rows as a catalog file has them."""
    roots = MetadataMapping.from_iterable(r for r in rows if not r.get("breadcrumb"))
    # no metadata: selected; metadata without the stream's own: not (the SDK's rule)
    return not rows or (bool(roots) and selected(roots))


def selected(metadata: MetadataMapping) -> bool:
    """Whether a catalog entry's metadata selects its stream: the SDK's rule for the stream's
    own breadcrumb (``singer_sdk.singerlib.MetadataMapping.resolve_selection``), read from the
    root metadata alone rather than resolved for every property."""
    if not metadata:
        return True
    root = metadata.get((), Metadata())
    if root.inclusion == Metadata.InclusionType.UNSUPPORTED:
        return False
    if root.inclusion == Metadata.InclusionType.AUTOMATIC:
        return True
    if root.selected is not None:
        return bool(root.selected)
    return bool(root.selected_by_default)
