"""Pure parts of tap-sage: the buffered writer and the validation of tap settings."""

from __future__ import annotations

import io
import sys
from typing import Any

import pytest
from singer_sdk.singerlib import RecordMessage, StateMessage

from tap_sage.sage.errors import SageConfigError
from tap_sage.tap import TAP_PROPERTIES, TapSage, validate_stream_filters
from tap_sage.writer import BufferedMsgSpecWriter


class FakeStdout(io.TextIOWrapper):
    def __init__(self) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8")
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()

    def text(self) -> str:
        self.buffer.seek(0)  # type: ignore[attr-defined]
        return self.buffer.read().decode()  # type: ignore[attr-defined]


def test_writer_flushes_the_first_record_and_every_state_not_every_record(monkeypatch) -> None:
    out = FakeStdout()
    monkeypatch.setattr(sys, "stdout", out)
    writer = BufferedMsgSpecWriter()
    writer.write_message(RecordMessage(stream="s", record={"id": 1}))
    assert out.text().count("RECORD") == 1  # the first record goes out at once
    for i in range(2, 50):
        writer.write_message(RecordMessage(stream="s", record={"id": i}))
    assert out.text().count("RECORD") == 1  # the rest wait...
    writer.write_message(StateMessage(value={"bookmarks": {}}))
    lines = out.text().splitlines()
    assert len(lines) == 50  # ...until a STATE, which comes after every record before it
    assert '"type":"STATE"' in lines[-1]


def test_stream_filters_are_checked_against_the_catalogue() -> None:
    checked = validate_stream_filters(
        {"sales_invoices": {"from_date": "2024-01-01", "status_id": "UNPAID"},
         "products": {"active": True}}
    )  # fmt: skip
    assert checked == {
        "sales_invoices": {"from_date": "2024-01-01", "status_id": "UNPAID"},
        "products": {"active": "true"},
    }
    with pytest.raises(SageConfigError, match=r"stream_filters\.contacts\.status_id.*it takes"):
        validate_stream_filters({"contacts": {"status_id": "PAID"}})
    with pytest.raises(SageConfigError, match=r"stream_filters\.business_settings"):
        validate_stream_filters({"business_settings": {"x": 1}})
    with pytest.raises(SageConfigError, match=r"updated_or_created_since.*set by the tap"):
        validate_stream_filters({"contacts": {"updated_or_created_since": "2024-01-01"}})


def test_settings_are_documented_for_the_readme() -> None:
    for name, prop in TAP_PROPERTIES.items():
        assert prop.get("description"), name
    properties = TapSage.config_jsonschema["properties"]
    assert properties["max_concurrency"]["default"] == 4
    assert properties["include_deleted"]["default"] is True


def test_a_page_without_next_while_total_says_more_gets_one() -> None:
    from tap_sage.streams import missing_next

    body = {"$items": [{"id": "a"}] * 20, "$total": 45, "$page": 1, "$next": None}
    link = missing_next("/contacts", {"page": 1, "items_per_page": 20, "attributes": "all"}, body)
    assert link == "/contacts?page=2&items_per_page=20&attributes=all"
    # following a $next of its own (no params): the same from the path's query
    body2 = {"$items": [{"id": "b"}] * 20, "$total": 45, "$page": 2}
    assert missing_next("/v3.1/contacts?page=2&items_per_page=20", None, body2) == (
        "/v3.1/contacts?page=3&items_per_page=20"
    )
    # the real end, a $next given, or no $total: nothing to add
    last = {"$items": [{"id": "c"}] * 5, "$total": 45, "$page": 3}
    assert missing_next("/contacts", {"page": 3, "items_per_page": 20}, last) is None
    given = dict(body, **{"$next": "/contacts?page=2"})
    assert missing_next("/contacts", {"page": 1, "items_per_page": 20}, given) is None
    assert missing_next("/contacts", {"page": 1}, {"$items": [{"id": "d"}]}) is None


def test_a_tombstone_without_deleted_at_still_says_deleted(tmp_path) -> None:
    """A deleted item that comes without ``deleted_at`` becomes a deletion record all the same
    (``_sdc_deleted_at`` set to when it was read). The stream's own fetch is replaced (a unit)."""
    from tap_sage.sync import Page

    config = {"connection_name": "unit", "initiate_oauth": "REFRESH", "client_id": "c",
              "client_secret": "s", "access_token": "a", "refresh_token": "r",
              "oauth_settings_location": str(tmp_path / "tokens.json")}  # fmt: skip
    tap = TapSage(config=config, validate_config=False, setup_mapper=False)
    stream = tap.streams["contacts"]

    def fetch(path: str, params: object) -> Page:
        if isinstance(params, dict) and "deleted_since" in params:
            return Page(1, [{"id": "gone"}], 1, None, 1_800_000_000, 1_800_000_000)
        item = {"id": "kept", "updated_at": "2026-01-01T00:00:00Z"}
        return Page(1, [item], 1, None, 1_800_000_000, 1_800_000_000)

    stream._fetch = lambda business_id: fetch  # type: ignore[method-assign]
    records = list(stream.get_records({"business_id": "b1"}))
    gone = [r for r in records if r["id"] == "gone"]
    assert gone and gone[0]["_sdc_deleted_at"]
    assert next(r for r in records if r["id"] == "kept").get("_sdc_deleted_at") is None


def _catalog(selected: set[str], drop: frozenset[str] = frozenset()) -> dict[str, object]:
    from tests.tap_helpers import catalog_for

    config = {"access_token": "x", "initiate_oauth": "OFF", "business_ids": ["b"]}
    catalog = catalog_for(config, selected)
    catalog["streams"] = [e for e in catalog["streams"] if e["tap_stream_id"] not in drop]
    return catalog


def test_a_catalog_of_one_selected_stream_builds_one_stream() -> None:
    """Start-up proportional to what is selected (issue 15): the deselected entries of an
    input catalog are neither built as streams nor registered with the SDK's mapper; a stream
    the catalog does not list at all is built (the SDK syncs it); discovery builds them all."""
    config = {"access_token": "x", "initiate_oauth": "OFF", "business_ids": ["b"]}
    tap = TapSage(config=config, validate_config=False, catalog=_catalog({"sales_invoices"}))
    assert list(tap.streams) == ["sales_invoices"] and tap.streams["sales_invoices"].selected
    assert list(tap.mapper.stream_maps) == ["sales_invoices"]
    unlisted = TapSage(
        config=config, validate_config=False,
        catalog=_catalog({"contacts"}, drop={"products"}),
    )  # fmt: skip
    assert sorted(unlisted.streams) == ["contacts", "products"]
    everything = TapSage(config=config, validate_config=False)
    assert len(everything.streams) > 80
    assert len(everything.catalog_dict["streams"]) == len(everything.streams)
    assert everything.catalog_dict["streams"][0]["schema"]["properties"]


def test_catalog_selection_follows_the_sdk_rule() -> None:
    from singer_sdk.singerlib import MetadataMapping

    from tap_sage.selection import selected as _selected

    def root(**md: object) -> MetadataMapping:
        return MetadataMapping.from_iterable([{"breadcrumb": [], "metadata": md}])

    assert _selected(MetadataMapping()) is True
    assert _selected(root(selected=True)) and not _selected(root(selected=False))
    assert _selected(root(**{"selected-by-default": True}))
    assert not _selected(root(**{"selected-by-default": False}))
    assert _selected(root(inclusion="automatic", selected=False))
    assert not _selected(root(inclusion="unsupported", selected=True))
    # the same as the SDK resolves it for the stream itself
    for md in ({"selected": True}, {"selected": False}, {"selected-by-default": True}, {}):
        mapping = root(**md)
        assert _selected(mapping) == bool(mapping.resolve_selection()[()]), md


def test_the_catalog_file_is_read_lean() -> None:
    """A deselected entry keeps its name and root metadata, not its schema; selected ones
    stay exactly as they were; text that is no catalog is left to the SDK's error."""
    import json

    from tap_sage.selection import lean_catalog

    catalog = _catalog({"contacts"})
    lean = json.loads(lean_catalog(json.dumps(catalog)))
    assert [e["tap_stream_id"] for e in lean["streams"]] == [
        e["tap_stream_id"] for e in catalog["streams"]
    ]  # type: ignore[union-attr]
    for before, after in zip(catalog["streams"], lean["streams"], strict=True):  # type: ignore[call-overload]
        if before["tap_stream_id"] == "contacts":
            assert after == before
        else:
            assert after["schema"] == {} and [m["breadcrumb"] for m in after["metadata"]] == [[]]
            assert after["metadata"][0]["metadata"]["selected"] is False
    assert lean_catalog("not json") == "not json"


def test_the_writer_writes_schema_messages_as_the_sdk_does() -> None:
    """The SCHEMA line is built without ``dataclasses.asdict`` (start-up): byte for byte the
    SDK's msgspec line, with and without bookmark properties, ``None`` inside the schema kept."""
    from singer_sdk.contrib.msgspec import MsgSpecWriter
    from singer_sdk.singerlib import SchemaMessage

    from tap_sage.sage import catalogue

    big = catalogue.list_schema("sales_invoices")
    for message in (
        SchemaMessage(stream="s", schema=big, key_properties=["business_id", "id"],
                      bookmark_properties=["updated_at"]),
        SchemaMessage(stream="s", schema={"type": "object", "x": None}, key_properties=[]),
    ):  # fmt: skip
        ours = bytes(BufferedMsgSpecWriter().serialize_message(message))
        assert ours == bytes(MsgSpecWriter().serialize_message(message))
        assert ours.startswith(b'{"type":"SCHEMA","stream":"s","schema":{')


def test_bodies_are_read_in_one_chunk_by_requests() -> None:
    """tap_sage.sage.client raises requests' read size for answers (``BODY_CHUNK``): this fails
    when a requests release stops reading ``requests.models.CONTENT_CHUNK_SIZE`` in
    ``Response.content`` (the setting would then do nothing) or drops the name."""
    import inspect

    import requests.models

    from tap_sage.sage import client

    assert requests.models.CONTENT_CHUNK_SIZE >= client.BODY_CHUNK
    source = inspect.getsource(requests.models.Response.content.fget)  # type: ignore[attr-defined]
    assert "iter_content(CONTENT_CHUNK_SIZE)" in source


class _CountingBuffer(bytearray):
    """A writer buffer that counts its appends."""

    appends = 0

    def __iadd__(self, other: Any) -> _CountingBuffer:  # type: ignore[override]
        self.appends += 1
        return super().__iadd__(other)  # type: ignore[return-value]


def test_a_record_line_goes_into_the_buffer_in_one_append() -> None:
    """The SDK writes a last STATE from its SIGTERM handler into the same buffer: a RECORD line
    appended in parts could be cut there by the STATE (a broken line). Each line, and each run
    of the fast path's lines, is one append."""
    from tap_sage.writer import RawRecordLine

    writer = BufferedMsgSpecWriter()
    writer._buffer = _CountingBuffer()
    writer._records = 5  # past the first record: nothing is flushed here
    writer.write_records(b"<h>", [b"{1}", b"{2}", b"{3}"], b"<t>\n")
    assert writer._buffer.appends == 1
    assert bytes(writer._buffer) == b"<h>{1}<t>\n<h>{2}<t>\n<h>{3}<t>\n"
    writer.write_message(RawRecordLine(b"<h>", b"{4}", b"<t>\n"))  # type: ignore[arg-type]
    assert writer._buffer.appends == 2
    assert bytes(writer._buffer).endswith(b"<t>\n<h>{4}<t>\n")
