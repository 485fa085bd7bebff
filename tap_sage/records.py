"""The tap's fast path: Sage items that need no change but ``business_id``, kept as JSON text.

Most items of a list need nothing done to them: their decimals are Sage's plain strings, no
date is ``""``, no stream map or selection touches them. Turning such an item into Python
objects and back (decode, ``Shape.to_record``, encode) is about half of the tap's CPU per
record. ``decode_page`` splits a list page into its items' JSON texts instead, and checks
them: an item that passes becomes a ``RawRecord``, whose text goes out unchanged, with
``,"business_id":"..."`` spliced before its last brace; any other item is decoded and converted
the ordinary way (``Shape.to_record``). Two readers do it, the first that takes the page:

- the compiled page scanner (``tap_sage/sage/_wirescan.c``, ``wire.SCANNER``): one pass in C
  that checks the page's whole grammar, every decimal, date and text field of every item and
  the reader's fields, and splits and splices the items' texts; it refuses (and the next reader
  goes) at anything it is not sure of, a whole page at a time. An install without a C
  compiler has none (``hatch_build.py``);
- msgspec: the page split into ``msgspec.Raw`` items, checked in one decode of the fields
  that could need work (``wire.RecordCheck``), a page at a time, else item by item.

Both produce
the same bytes (tests/test_fast_path.py), because the ordinary path writes with msgspec, and an
item's text is msgspec's own writing of it when:

- the page is compact (no whitespace between tokens; a pretty-printed page is compacted
  first, ``_pretty``),
- the item has no backslash (msgspec writes ``&`` where Sage may write ``\\u0026``),
- it has no ``business_id`` of its own (the ordinary path would replace it in place; the
  check refuses an item that has one),
- ``wire.RecordCheck`` finds nothing ``to_record`` would change.

What msgspec's check cannot see: a JSON number outside every decimal and text field of the
schema written with an exponent or as ``-0`` (the ordinary path writes ``1E+5`` for ``1e5``);
Sage writes none (its decimals are strings, its integers plain). The compiled scanner refuses
those pages (its ``number``), so msgspec's reader gets them. Nor a key repeated in one object:
both readers keep the item's text with both (the scanner checks each occurrence, msgspec the
last), where the ordinary path writes the last alone; every JSON reader of the loaders keeps
the last too, and Sage writes no such object.
"""

from __future__ import annotations

import typing as t
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import msgspec

from tap_sage.sage.wire import SCANNER

if t.TYPE_CHECKING:
    from tap_sage.sage.wire import RecordCheck

# JSON numbers with a fraction decode as Decimal: no amount ever becomes a binary float.
decode_item = msgspec.json.Decoder(float_hook=Decimal).decode

_BUSINESS_KEY = b'"business_id":'
_encode = msgspec.json.encode


class RawRecord(Mapping[str, Any]):
    """One Sage item as its JSON text, checked to need no change (see the module docstring).

    A read-only mapping for the list reader: ``get`` answers the ``wire.READER_FIELDS`` from
    the check, anything else from the item decoded on demand (and kept)."""

    __slots__ = ("_attrs", "_business", "_decoded", "_meta", "raw")

    def __init__(
        self, raw: bytes, meta: Any, attrs: Mapping[str, int], *, business: bool = False
    ) -> None:
        self.raw = raw
        self._meta = meta
        self._attrs = attrs
        self._decoded: dict[str, Any] | None = None
        self._business = business

    @property
    def has_business(self) -> bool:
        """Whether ``business_id`` is in the text already (``with_business``)."""
        return self._business

    def with_business(self, business_id: str) -> RawRecord:
        """The record with ``business_id`` added last (as ``record["business_id"] = ...`` adds
        it to a dict)."""
        return RawRecord(
            _spliced(self.raw, _encode(business_id)), self._meta, self._attrs, business=True
        )

    def record(self) -> dict[str, Any]:
        """The item as the ordinary path holds it (decoded once, then kept)."""
        if self._decoded is None:
            self._decoded = decode_item(self.raw)
        return self._decoded

    @t.overload
    def get(self, key: str, /) -> Any: ...
    @t.overload
    def get(self, key: str, /, default: Any) -> Any: ...
    def get(self, key: str, /, default: Any = None) -> Any:
        index = self._attrs.get(key)
        if index is not None:
            value = self._meta[index]
            return default if value is None and default is not None else value
        return self.record().get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.record()[key]

    def __contains__(self, key: object) -> bool:
        # the SDK asks for the partition's key on every record: answered without decoding
        if key == "business_id":
            return self._business
        return key in self.record()

    def __iter__(self) -> Iterator[str]:
        return iter(self.record())

    def __len__(self) -> int:
        return len(self.record())


def _spliced(raw: bytes | memoryview | msgspec.Raw, business: bytes) -> bytes:
    """``raw`` (an item's compact JSON text) with ``"business_id": business`` added last, in one
    copy."""
    view = memoryview(raw)
    tail = _BUSINESS_KEY + business + b"}"
    # compact: the item ends with its closing brace; ``{}`` gets no comma
    return b"".join((view[:-1], tail if view[-2:-1].tobytes() == b"{" else b"," + tail))


class _Envelope(msgspec.Struct, gc=False):
    """A list page with its items as JSON texts."""

    items: list[msgspec.Raw] = msgspec.field(name="$items", default_factory=list)
    total: Any = msgspec.field(name="$total", default=None)
    page: Any = msgspec.field(name="$page", default=None)
    next: Any = msgspec.field(name="$next", default=None)
    per_page: Any = msgspec.field(name="$itemsPerPage", default=None)
    per_page_snake: Any = msgspec.field(name="$items_per_page", default=None)


_decode_envelope = msgspec.json.Decoder(_Envelope).decode


def _pretty(content: bytes, first: bytes) -> bool:
    """Whether a page has whitespace between tokens: a tab or a line break anywhere (which
    no string can hold unescaped: one memchr each), or a space after or before a key's colon
    in its first item (backslash-free JSON has no quote inside a string, so ``":`` then a
    space is whitespace after a key). A serializer writes a whole body one way, so its first
    item tells; searching every item for the two 3-byte patterns would cost 6 us a record."""
    if b"\n" in content or b"\r" in content or b"\t" in content:
        return True
    return b'": ' in first or b'" :' in first


def decode_page(
    content: bytes, check: RecordCheck, business_id: str | None = None
) -> dict[str, Any]:
    """A list page as ``client.decode`` gives it (``$items``, ``$total``, ``$page``,
    ``$next``, ...), its items ``RawRecord`` where the fast path may take them (with
    ``business_id`` spliced in already when given) and decoded dicts (not yet converted:
    ``post_process`` does it) elsewhere. Raises ``msgspec.DecodeError`` / ``ValidationError``
    for what is no list page.

    The usual page (compact, no backslash in its items, no ``business_id`` and no item to
    change anywhere) is read by the compiled scanner when there is one (a pretty-printed page once
    compacted), else checked as a whole by msgspec (``RecordCheck.check_all``); any other
    page item by item."""
    business = None if business_id is None else _encode(business_id)
    scanned = _scanned(content, check, business)
    if scanned is not None:
        return scanned
    envelope = _decode_envelope(content)
    if envelope.items and _pretty(content, bytes(envelope.items[0])):
        content = msgspec.json.format(content, indent=-1)
        scanned = _scanned(content, check, business)  # compact now: the scanner may take it
        if scanned is not None:
            return scanned
        envelope = _decode_envelope(content)
    metas = check.check_all(content) if _items_unescaped(content) else None
    if metas is not None and len(metas) == len(envelope.items):
        items: list[Any] = _raw_records(envelope.items, metas, check.attrs, business)
    else:
        items = _checked_items(envelope.items, check, business)
    return _body(items, envelope)


def _scanned(content: bytes, check: RecordCheck, business: bytes | None) -> dict[str, Any] | None:
    """The page as the compiled scanner reads it, or None (no scanner, or it refused)."""
    if check.table is None or SCANNER is None:
        return None
    suffix = None if business is None else _BUSINESS_KEY + business
    scanned = SCANNER.scan(content, check.table, suffix)
    if scanned is None:
        return None
    texts, metas, members = scanned
    # the envelope's other members, as JSON texts: decoded as msgspec's reader does
    envelope = _decode_envelope(b"{%b}" % b",".join(b'"%b":%b' % m for m in members))
    attrs, spliced = check.attrs, business is not None
    records = [RawRecord(text, meta, attrs, business=spliced)
               for text, meta in zip(texts, metas, strict=True)]  # fmt: skip
    return _body(records, envelope)


def _items_unescaped(content: bytes) -> bool:
    """Whether no item of a compact page has a backslash: none from the first ``"$items":[``
    on (the page's own is that one or a later one, so the search covers every item). Escapes
    before it are the envelope's: Sage writes ``&`` in ``$next`` as ``\\u0026`` (recorded:
    products), and msgspec decodes them."""
    at = content.find(b'"$items":[')
    return content.find(b"\\", max(at, 0)) < 0


def _body(items: list[Any], envelope: _Envelope) -> dict[str, Any]:
    """The page body ``decode_page`` gives, from its items and its envelope."""
    body: dict[str, Any] = {"$items": items, "$total": envelope.total, "$page": envelope.page}
    body["$next"] = envelope.next
    if envelope.per_page is not None:
        body["$itemsPerPage"] = envelope.per_page
    if envelope.per_page_snake is not None:
        body["$items_per_page"] = envelope.per_page_snake
    return body


def _raw_records(
    items: list[msgspec.Raw], metas: list[Any], attrs: Mapping[str, int], business: bytes | None
) -> list[Any]:
    """Every item of a page checked as a whole, as ``RawRecord``."""
    if business is None:
        return [
            RawRecord(bytes(item), meta, attrs) for item, meta in zip(items, metas, strict=True)
        ]
    return [
        RawRecord(_spliced(item, business), meta, attrs, business=True)
        for item, meta in zip(items, metas, strict=True)
    ]


def _checked_items(
    items: list[msgspec.Raw], check: RecordCheck, business: bytes | None
) -> list[Any]:
    """A page's items checked one by one: a ``RawRecord`` where the fast path may take it, the
    decoded dict elsewhere."""
    attrs = check.attrs
    checker = check.check
    out: list[Any] = []
    append = out.append
    for item in items:
        raw = bytes(item)
        meta = None if b"\\" in raw else checker(raw)
        if meta is None:
            append(decode_item(raw))
        elif business is None:
            append(RawRecord(raw, meta, attrs))
        else:
            append(RawRecord(_spliced(raw, business), meta, attrs, business=True))
    return out
