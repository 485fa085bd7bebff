"""The tap's fast path (``tap_sage.records``) writes the same bytes as the ordinary path.

Every item of every list of the sandbox (both businesses, over real HTTP) and of Sage's
recordings goes through both: the ordinary path (decode, ``post_process``, record message,
writer) and the fast path (``records.decode_page``: the item's JSON text, checked, with
``business_id`` spliced in). The RECORD lines must be byte for byte the same, and the fast
path must have taken most items (else the comparison proves nothing). Items the fast path
must refuse (an empty date, a number for a decimal, an escape, ...) go the ordinary way.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import requests

from tap_sage import partitioning, records
from tap_sage.records import RawRecord
from tap_sage.sage import catalogue, wire
from tap_sage.sandbox.runner import SandboxProcess
from tap_sage.streams import SageStream, _decode
from tap_sage.tap import TapSage

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT.parent / "shared" / "sage-api" / "recorded"
BUSINESS = "0d40342d0287cd6b13555c54afca6c90"
FIXED = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)


_EXTRACTED = re.compile(rb',"time_extracted":"[^"]*"')


def same_instant(line: bytes) -> bytes:
    """Both paths stamp ``time_extracted`` with the clock: one instant for both, so that the
    lines compare byte for byte (the field itself is the SDK's, written the same way)."""
    stamped, count = _EXTRACTED.subn(
        b',"time_extracted":"' + FIXED.isoformat().encode() + b'"', line
    )
    assert count == 1, line[-200:]
    return stamped


@pytest.fixture(autouse=True, params=["scanner", "msgspec"])
def page_reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: pages read by the compiled scanner (``wire.SCANNER``, what an install
    with a C compiler uses), and by msgspec alone (an install without one)."""
    if request.param == "scanner":
        assert records.SCANNER is not None, "the page scanner was not compiled (hatch_build.py)"
    else:
        monkeypatch.setattr(records, "SCANNER", None)
    return str(request.param)


@pytest.fixture(scope="module")
def tap() -> TapSage:
    config = {"access_token": "x", "initiate_oauth": "OFF", "business_ids": [BUSINESS]}
    return TapSage(config=config, validate_config=False)


def ordinary_lines(tap: TapSage, stream: SageStream, content: bytes, business: str) -> list[bytes]:
    out = []
    for item in _decode(content)["$items"]:
        item["business_id"] = business
        record = stream.post_process(item, {"business_id": business})
        assert record is not None and record.__class__ is dict
        for message in stream._generate_record_messages(record):
            out.append(same_instant(bytes(tap.message_writer.format_message(message))))
    return out


def fast_lines(
    tap: TapSage, stream: SageStream, content: bytes, business: str
) -> tuple[list[bytes], int]:
    assert stream._fast_path()
    out, raw = [], 0
    for item in records.decode_page(content, stream._wire.record_check)["$items"]:
        if item.__class__ is RawRecord:
            raw += 1
            record: Any = item.with_business(business)
        else:
            item["business_id"] = business
            record = item
        processed = stream.post_process(record, {"business_id": business})
        assert processed is not None
        for message in stream._generate_record_messages(processed):
            out.append(same_instant(bytes(tap.message_writer.format_message(message))))
    return out, raw


def assert_same(tap: TapSage, name: str, content: bytes, business: str) -> tuple[int, int]:
    stream = tap.streams[name]
    assert isinstance(stream, SageStream)
    expected = ordinary_lines(tap, stream, content, business)
    got, raw = fast_lines(tap, stream, content, business)
    assert len(got) == len(expected), name
    for i, (a, b) in enumerate(zip(expected, got, strict=True)):
        assert a == b, f"{name} item {i}:\n ordinary {a[:300]!r}\n fast     {b[:300]!r}"
    return len(got), raw


# -- the sandbox, every list, both businesses ------------------------------------------------


@pytest.fixture(scope="module")
def box(seeded_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    db = tmp_path_factory.mktemp("fast-path") / "sandbox.db"
    db.write_bytes(seeded_db.read_bytes())
    with SandboxProcess(db, extra_args=["--quiet"]) as process:
        yield process


def test_every_sandbox_list_gives_the_same_bytes_both_ways(
    tap: TapSage, box: SandboxProcess
) -> None:
    token = box.grant()["access_token"]
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json"})
    businesses = [
        b["id"] for b in session.get(box.api_url + "/businesses", timeout=10).json()["$items"]
    ]
    assert len(businesses) == 2
    total = raw = lists = 0
    for name, resource in sorted(catalogue.resources().items()):
        if not resource.list or resource.singleton or partitioning.needs_filters(resource):
            continue
        for business in businesses:
            response = session.get(
                f"{box.api_url}{resource.path}",
                params={"items_per_page": 200, "attributes": "all"},
                headers={"X-Business": business},
                timeout=30,
            )
            if response.status_code != 200:  # 403: not in this business's country/edition
                continue
            lists += 1
            n, fast = assert_same(tap, name, response.content, business)
            total, raw = total + n, raw + fast
    assert lists > 60 and total > 3000, (lists, total)
    # the sandbox sends no "" date in a list, so nearly every item takes the fast path
    assert raw > 0.9 * total, (raw, total)


# -- Sage's recordings ---------------------------------------------------------------------


@pytest.mark.skipif(not RECORDED.exists(), reason="no recordings beside the checkout")
@pytest.mark.parametrize(
    ("name", "stream"),
    [
        ("products_list_attributes_all.json", "products"),
        ("bank_accounts_list_full.json", "bank_accounts"),
    ],
)
def test_recorded_pages_give_the_same_bytes_both_ways(
    tap: TapSage, name: str, stream: str, page_reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pretty-printed, with a byte-order mark: compacted first, then the same bytes; the
    scanner takes a page once it is compact (the products page's ``$next`` escapes its ``&``s,
    as Sage does: the envelope may)."""
    content = (RECORDED / name).read_bytes().removeprefix(b"\xef\xbb\xbf")
    taken: list[bool] = []
    if page_reader == "scanner":
        scan = records.SCANNER.scan

        def counted(*args: Any) -> Any:
            taken.append(scan(*args) is not None)
            return scan(*args)

        monkeypatch.setattr(
            records, "SCANNER", type("Counted", (), {"scan": staticmethod(counted)})
        )
    total, raw = assert_same(tap, stream, content, BUSINESS)
    assert total == len(json.loads(content)["$items"])
    assert raw == total, (raw, total)  # the recorded items need no change
    if page_reader == "scanner":  # refused pretty-printed, taken compacted
        assert taken == [False, True], taken


# -- what the fast path must refuse --------------------------------------------------------

#: (stream, a change to one sandbox-like item) the ordinary path changes something for
REFUSED = [
    ("sales_invoices", {"date": ""}),  # "" date -> null
    ("sales_invoices", {"total_amount": 12}),  # a number -> its text
    ("sales_invoices", {"total_amount": Decimal("12.50")}),
    ("sales_invoices", {"total_amount": "1e5"}),  # plain digits
    ("sales_invoices", {"total_amount": ""}),
    ("sales_invoices", {"invoice_lines": [{"unit_price": 3}]}),
    ("sales_invoices", {"contact_name": "Smith \\u0026 Co"}),  # an escape msgspec would not write
    ("sales_invoices", {"business_id": "other"}),
    ("transactions", {"audit_trail_id": 1234}),  # spec: string; Sage: a number
    ("purchase_credit_notes", {"inverse_exchange_rate": Decimal("0.8123")}),
]


def _item_text(base: dict[str, Any], change: dict[str, Any]) -> bytes:
    item = dict(base, **change)
    text = msgspec.json.Encoder(decimal_format="number").encode(item)
    # raw text where the change is JSON text of its own (an escape)
    return text.replace(b"\\\\u0026", b"\\u0026")


@pytest.mark.parametrize(("stream", "change"), REFUSED, ids=[str(c) for _, c in REFUSED])
def test_what_needs_a_change_goes_the_ordinary_way(
    tap: TapSage, stream: str, change: dict[str, Any]
) -> None:
    base = {"id": "x1", "displayed_as": "X", "updated_at": "2026-01-01T00:00:00Z",
            "created_at": "2026-01-01T00:00:00Z", "date": "2026-01-01", "total_amount": "1.0"}  # fmt: skip
    plain = b'{"$items":[' + _item_text(base, {}) + b"]}"
    changed = b'{"$items":[' + _item_text(base, change) + b"]}"
    check = tap.streams[stream]._wire.record_check  # type: ignore[attr-defined]
    assert records.decode_page(plain, check)["$items"][0].__class__ is RawRecord
    assert records.decode_page(changed, check)["$items"][0].__class__ is dict
    assert_same(tap, stream, changed, BUSINESS)


def test_numbers_in_string_fields_become_their_exact_text(tap: TapSage) -> None:
    """Sage sends ``audit_trail_id`` / ``number_of_attachments`` as JSON numbers where the
    spec says string, and ``inverse_exchange_rate`` is a decimal the spec types string in two
    definitions (``wire.NUMBERS_IN_STRING_FIELDS``): exact text, never through a float."""
    content = (b'{"$items":[{"id":"t1","audit_trail_id":1234,"number_of_attachments":0,'
               b'"transaction":{"id":"x","audit_trail_id":98765432109876543210}}]}')  # fmt: skip
    item = _decode(content)["$items"][0]
    record = tap.streams["transactions"].post_process(item, {"business_id": BUSINESS})
    assert record is not None
    assert record["audit_trail_id"] == "1234" and record["number_of_attachments"] == "0"
    note = b'{"id":"n1","inverse_exchange_rate":0.81234567890123456789}'
    got = tap.streams["purchase_credit_notes"].post_process(
        _decode(note), {"business_id": BUSINESS}
    )
    assert got is not None and got["inverse_exchange_rate"] == "0.81234567890123456789"
    schema = tap.streams["purchase_credit_notes"].schema["properties"]["inverse_exchange_rate"]
    assert schema == wire.DECIMAL_SCHEMA


def test_a_raw_record_answers_the_reader_without_decoding() -> None:
    check = wire.Shape.of(catalogue.list_schema("contacts")).record_check
    page = records.decode_page(
        b'{"$total":1,"$page":1,"$next":null,"$items":[{"id":"c1","updated_at":"2026-01-01T00:00:00Z","name":"A"}]}',
        check,
    )
    item = page["$items"][0]
    assert item.__class__ is RawRecord and page["$total"] == 1 and page["$next"] is None
    assert item.get("id") == "c1" and item.get("updated_at") == "2026-01-01T00:00:00Z"
    assert item._decoded is None  # answered from the check
    assert item.get("name") == "A" and dict(item) == {
        "id": "c1",
        "updated_at": "2026-01-01T00:00:00Z",
        "name": "A",
    }
    with_id = item.with_business("b1")
    assert with_id.raw.endswith(b',"business_id":"b1"}') and "business_id" in with_id
    empty = RawRecord(b"{}", None, {}).with_business("b")
    assert json.loads(empty.raw) == {"business_id": "b"}


# -- through the tap, over HTTP, with items the fast path must refuse among the others -----


def test_a_sync_mixes_both_paths_and_every_record_is_right(
    seeded_db: Path, tmp_path: Path, sandbox_factory: Any
) -> None:
    """The sandbox's store is given what Sage really sends and the sandbox does not: JSON
    numbers in ``audit_trail_id`` / ``number_of_attachments`` (spec: string) and ``""`` for an
    unset date. A real sync over HTTP takes those items the ordinary way (exact text, null)
    and the rest the fast way, and every record validates against its stream's schema."""
    import sqlite3

    from singer_sdk.sinks.core import JSONSchemaValidator

    from tests.tap_helpers import run_tap

    db = tmp_path / "sandbox.db"
    db.write_bytes(seeded_db.read_bytes())
    conn = sqlite3.connect(str(db))
    changed: dict[str, str] = {}
    with conn:
        for resource, change in (
            ("transactions", {"audit_trail_id": 1234, "number_of_attachments": 2}),
            ("sales_invoices", {"due_date": ""}),
        ):
            seq, record_id, data = conn.execute(
                "SELECT seq, id, data FROM records WHERE resource = ? AND deleted_at IS NULL "
                "ORDER BY seq LIMIT 1 OFFSET 7", (resource,)
            ).fetchone()  # fmt: skip
            conn.execute("UPDATE records SET data = ? WHERE seq = ?",
                         (json.dumps({**json.loads(data), **change}), seq))  # fmt: skip
            changed[resource] = record_id
    conn.close()
    box = sandbox_factory(db=db)
    granted = box.grant()
    config = {
        "connection_name": "fast-path", "initiate_oauth": "REFRESH",
        "client_id": granted["client_id"], "client_secret": granted["client_secret"],
        "access_token": granted["access_token"], "refresh_token": granted["refresh_token"],
        "oauth_settings_location": str(tmp_path / "tokens.json"),
        "advanced_config": {"api_url": box.api_url, "token_url": box.token_url},
    }  # fmt: skip
    run = run_tap(tmp_path, config, ["transactions", "sales_invoices"])
    schemas = {m["stream"]: m["schema"] for m in run.messages if m["type"] == "SCHEMA"}
    for stream, record_id in changed.items():
        validator = JSONSchemaValidator(schemas[stream], validate_formats=True)
        rows = run.records(stream)
        assert len(rows) > 100, stream
        for row in rows:
            validator.validate(row)
        odd = [r for r in rows if r["id"] == record_id]
        assert odd, (stream, record_id)
        if stream == "transactions":
            assert odd[0]["audit_trail_id"] == "1234" and odd[0]["number_of_attachments"] == "2"
        else:
            assert odd[0]["due_date"] is None


def test_a_page_decoded_for_a_business_carries_it_already() -> None:
    check = wire.Shape.of(catalogue.list_schema("contacts")).record_check
    content = b'{"$items":[{"id":"c1","name":"A"},{}]}'
    items = records.decode_page(content, check, "b1")["$items"]
    assert [i.raw for i in items] == [
        b'{"id":"c1","name":"A","business_id":"b1"}',
        b'{"business_id":"b1"}',
    ]
    assert all(i.has_business and "business_id" in i for i in items)
    plain = records.decode_page(content, check)["$items"]
    assert [i.with_business("b1").raw for i in plain] == [i.raw for i in items]


def _sync_output(
    config: dict[str, Any],
    streams: list[str],
    caplog: pytest.LogCaptureFixture,
    *,
    limit: int | None,
    state: dict[str, Any] | None = None,
) -> tuple[list[bytes], int]:
    """One in-process sync of ``streams``: its stdout lines (``time_extracted`` taken out) and
    the records the SDK's record counter reported (its ``record_count`` METRIC lines).
    ``limit`` set (``ABORT_AT_RECORD_COUNT``) turns the direct writing off: every record then
    goes through the SDK's record loop one by one."""
    import io
    import logging
    from contextlib import redirect_stdout

    from tests.tap_helpers import catalog_for

    caplog.clear()
    caplog.set_level(logging.INFO, logger="singer_sdk.metrics")
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    import copy

    tap = TapSage(config=config, catalog=catalog_for(config, streams), state=copy.deepcopy(state))
    chosen = [tap.streams[name] for name in streams]
    for stream in chosen:
        assert isinstance(stream, SageStream)
        stream.ABORT_AT_RECORD_COUNT = limit
    with redirect_stdout(out):
        tap.sync_all()
        tap.flush_output()
    out.flush()
    for stream in chosen:
        assert stream._writes_directly() is (limit is None)  # type: ignore[attr-defined]
    counted = 0
    for entry in caplog.records:
        text = entry.getMessage()
        if text.startswith("METRIC: ") and '"metric":"record_count"' in text:
            counted += json.loads(text[len("METRIC: ") :])["value"]
    lines = out.buffer.getvalue().splitlines()  # type: ignore[attr-defined]
    # the two clock readings of a run: when a record was written, when its read began
    return [_SINCE.sub(b'"deleted_since":"<clock>"', _EXTRACTED.sub(b"", line))
            for line in lines], counted  # fmt: skip


_SINCE = re.compile(rb'"deleted_since":"[^"]*"')  # a partition's, or its stream's floor


def _last_state(lines: list[bytes]) -> dict[str, Any]:
    states = [json.loads(line) for line in lines if line.startswith(b'{"type":"STATE"')]
    return dict(states[-1]["value"])


def test_records_written_directly_are_the_sdk_loops_bytes(
    seeded_db: Path, tmp_path: Path, sandbox_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The fast path's records are written a page at a time by ``get_records`` (not one by one
    through the SDK's record loop): the same lines in the same order, SCHEMA and STATE lines
    included, with ordinary records (here: ``""`` dates) among them, tombstones and their
    SCHEMA after a deletion (``deletions: flag``) in an incremental run, and the same count on
    the SDK's record counter."""
    import sqlite3

    db = tmp_path / "sandbox.db"
    db.write_bytes(seeded_db.read_bytes())
    conn = sqlite3.connect(str(db))
    with conn:
        rows = conn.execute(
            "SELECT seq, data FROM records WHERE resource = 'sales_invoices' AND "
            "deleted_at IS NULL ORDER BY seq"
        ).fetchall()
        for seq, data in rows[3::17]:  # every 17th goes the ordinary way
            conn.execute("UPDATE records SET data = ? WHERE seq = ?",
                         (json.dumps({**json.loads(data), "due_date": ""}), seq))  # fmt: skip
    conn.close()
    box = sandbox_factory(db=db)
    config = {"access_token": box.grant()["access_token"], "initiate_oauth": "OFF",
              "deletions": "flag",
              "advanced_config": {"api_url": box.api_url, "token_url": box.token_url}}  # fmt: skip
    streams = ["contacts", "sales_invoices"]
    direct, direct_count = _sync_output(config, streams, caplog, limit=None)
    looped, looped_count = _sync_output(config, streams, caplog, limit=10**9)
    records_out = [line for line in direct if line.startswith(b'{"type":"RECORD"')]
    assert len(records_out) > len(rows) and direct_count == looped_count == len(records_out)
    assert direct == looped
    nulls = [line for line in records_out if b'"due_date":null' in line]
    assert len(nulls) == len(rows[3::17])

    # an incremental run after a contact is deleted and another changed: tombstones (with a
    # SCHEMA line of their own before them) among the raw records
    state = _last_state(direct)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {config['access_token']}"
    business = session.get(box.api_url + "/businesses", timeout=10).json()["$items"][0]["id"]
    session.headers["X-Business"] = business
    contacts = session.get(box.api_url + "/contacts", timeout=10).json()["$items"]
    assert session.delete(f"{box.api_url}/contacts/{contacts[0]['id']}", timeout=10).ok
    changed = session.put(f"{box.api_url}/contacts/{contacts[1]['id']}",
                          json={"contact": {"notes": "changed"}}, timeout=10)  # fmt: skip
    assert changed.ok, changed.text
    # a bookmark is capped at its read's start (tap_sage.sync): both reads start seconds after
    # the changes, so that both bookmarks are the changes' own times
    time.sleep(3)
    direct, direct_count = _sync_output(config, streams, caplog, limit=None, state=state)
    looped, looped_count = _sync_output(config, streams, caplog, limit=10**9, state=state)
    assert direct == looped and direct_count == looped_count > 0
    tombstones = [line for line in direct if b'"_sdc_deleted_at"' in line and b"RECORD" in line]
    assert len(tombstones) == 1 and contacts[0]["id"].encode() in tombstones[0]


@pytest.mark.parametrize(
    ("page", "unescaped"),
    [
        (b'{"$next":"/x?a=1\\u0026b=2","$items":[{"id":"a"}]}', True),  # Sage's $next
        (b'{"$items":[{"id":"a\\u0026"}],"$next":null}', False),
        (b'{"$items":[{"id":"a"}],"$next":"\\u0026"}', False),  # after the items: not told apart
        (b'{"k\\"$items":[1],"$items":[{"id":"a\\n"}]}', False),  # a key that looks like it
        (b'{"$next":"\\u0026"}', False),  # no items: the whole page
        (b'{"$items":[]}', True),
    ],
)
def test_escapes_of_the_envelope_leave_the_items_to_one_check(page: bytes, unescaped: bool) -> None:
    assert records._items_unescaped(page) is unescaped
