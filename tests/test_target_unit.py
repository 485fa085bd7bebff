"""target-sage's pure parts: keys, idempotency ids, bodies and validation, ledger, settings."""

from __future__ import annotations

import datetime as dt
import decimal
import re
from pathlib import Path

import pytest

from tap_sage.sage.errors import SageConfigError
from target_sage.engine import Engine
from target_sage.ledger import APPLIED, DELETED, PENDING, Ledger
from target_sage.payload import (
    RecordError,
    build_body,
    idempotency_id,
    key_text,
    source_key,
    to_json_value,
)
from target_sage.results import DeadLetterFile, ResultsFile
from target_sage.routing import RoutingError
from target_sage.settings import TargetSettings

BASE = {"client_id": "c", "client_secret": "s", "refresh_token": "r"}


def test_source_key_from_key_properties_or_content():
    assert source_key({"id": 7, "x": 1}, ["id"]) == ("[7]", True)
    assert source_key({"a": "1", "b": 2}, ["a", "b"]) == ('["1",2]', True)
    key, from_keys = source_key({"x": 1, "y": "z"}, [])
    assert not from_keys and key.startswith("#") and len(key) == 33
    assert source_key({"y": "z", "x": 1}, [])[0] == key  # order does not matter
    assert source_key({"x": 2, "y": "z"}, [])[0] != key
    assert key_text("C-1") == '["C-1"]' == source_key({"code": "C-1"}, ["code"])[0]


def test_idempotency_id_is_32_hex_and_stable_per_stream_key_generation():
    one = idempotency_id("biz", "customers", '["C1"]', 0)
    assert re.fullmatch(r"[0-9a-f]{32}", one)
    assert one == idempotency_id("biz", "customers", '["C1"]', 0)
    others = {
        idempotency_id("biz", "customers", '["C2"]', 0),
        idempotency_id("biz", "suppliers", '["C1"]', 0),
        idempotency_id("biz", "customers", '["C1"]', 1),
        idempotency_id("biz2", "customers", '["C1"]', 0),
    }
    assert one not in others and len(others) == 4


def test_sdk_datetimes_and_decimals_go_back_to_json():
    value = {
        "when": dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
        "day": dt.date(2025, 1, 2),
        "amount": decimal.Decimal("10.50"),
        "count": decimal.Decimal("3"),
        "lines": [{"at": dt.date(2024, 12, 31)}],
    }
    assert to_json_value(value) == {
        "when": "2025-01-02T03:04:05Z",
        "day": "2025-01-02",
        "amount": 10.5,
        "count": 3,
        "lines": [{"at": "2024-12-31"}],
    }


def test_build_body_wraps_selects_fields_and_serialises_dates():
    body, ignored = build_body(
        "sales_invoices",
        "post",
        {
            "contact_id": "c1",
            "date": dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc),
            "invoice_lines": [
                {"description": "d", "ledger_account_id": "l", "unit_price": decimal.Decimal("5.5")}
            ],
            "colour": "blue",
        },
        stream="invoices",
        key='["I1"]',
        extra={"idempotency_id": "0" * 32},
    )
    assert body == {
        "sales_invoice": {
            "contact_id": "c1",
            "date": "2025-03-01",
            "idempotency_id": "0" * 32,
            "invoice_lines": [{"description": "d", "ledger_account_id": "l", "unit_price": 5.5}],
        }
    }
    assert ignored == ["colour"]


@pytest.mark.parametrize(
    ("fields", "field", "problem"),
    [
        ({"name": "n"}, "contact_type_ids", "required"),
        ({"name": 5, "contact_type_ids": ["CUSTOMER"]}, "name", "not of type"),
        (
            {"name": "n", "contact_type_ids": ["CUSTOMER"], "credit_limit": "lots"},
            "credit_limit",
            "not of type",
        ),
    ],
)
def test_validation_error_names_stream_key_and_field(fields, field, problem):
    with pytest.raises(RecordError) as failure:
        build_body("contacts", "post", fields, stream="customers", key='["C9"]')
    assert failure.value.field == field
    text = str(failure.value)
    assert "`customers`" in text and '["C9"]' in text and f"`{field}`" in text and problem in text


def test_nested_line_field_is_named():
    with pytest.raises(RecordError) as failure:
        build_body(
            "sales_invoices",
            "post",
            {
                "contact_id": "c",
                "date": "2025-01-01",
                "invoice_lines": [{"description": "d", "ledger_account_id": "l"}],
            },
            stream="invoices",
            key='["I"]',
        )
    assert failure.value.field == "invoice_lines[0].unit_price"


def test_put_needs_no_required_field_and_bad_date_is_refused():
    body, _ = build_body("contacts", "put", {"notes": "x"}, stream="s", key="k")
    assert body == {"contact": {"notes": "x"}}
    with pytest.raises(RecordError, match="date"):
        build_body("sales_invoices", "put", {"date": "01/02/2025"}, stream="s", key="k")


def test_ledger_protocol(tmp_path: Path):
    ledger = Ledger(tmp_path / "l.sqlite")
    assert ledger.get("b", "s", "k") is None
    ledger.record_intent("b", "s", "k", "contacts", "h1", note='{"x": 1}')
    entry = ledger.get("b", "s", "k")
    assert entry is not None and entry.state == PENDING and entry.note == '{"x": 1}'
    ledger.clear_intent("b", "s", "k")
    assert ledger.get("b", "s", "k") is None
    ledger.record_applied("b", "s", "k", "contacts", "id1", "h1")
    ledger.record_applied("b", "s", "k", "contacts", "id1", "h2")
    entry = ledger.get("b", "s", "k")
    assert entry is not None and (entry.state, entry.sage_id, entry.content_hash) == (
        APPLIED,
        "id1",
        "h2",
    )
    assert entry.applied_before("h1") and entry.applied_before("h2")
    assert ledger.sage_id_taken("b", "contacts", "id1")
    ledger.record_deleted("b", "s", "k", "contacts", "id1")
    entry = ledger.get("b", "s", "k")
    assert entry is not None and entry.state == DELETED and entry.generation == 1
    assert ledger.get("other-business", "s", "k") is None
    assert (tmp_path / "l.sqlite").stat().st_mode & 0o777 == 0o600
    ledger.close()
    # A read-only (dry run) ledger never writes, even where no file exists.
    dry = Ledger(tmp_path / "none.sqlite", read_only=True)
    dry.record_applied("b", "s", "k", "contacts", "x", "h")
    assert not (tmp_path / "none.sqlite").exists()


def test_default_paths_sit_beside_the_token_store(tmp_path: Path):
    settings = TargetSettings.from_config(
        {**BASE, "connection_name": "acme uk", "oauth_settings_location": str(tmp_path / "t.json")}
    )
    assert settings.ledger_path == tmp_path / "acme_uk.ledger.sqlite"
    assert settings.results_path == tmp_path / "acme_uk.results.jsonl"
    assert settings.dead_letter_path == tmp_path / "acme_uk.dead-letter.singer"
    assert settings.on_error == "fail" and settings.max_parallel_writes == 4


@pytest.mark.parametrize(
    ("extra", "setting"),
    [
        ({"stream_resources": {"a": "countries"}}, "stream_resources.a"),
        ({"stream_resources": {"a": "nope"}}, "stream_resources.a"),
        ({"operations": {"a": "merge"}}, "operations.a"),
        ({"references": {"a": {"f": ""}}}, "references.a"),
        ({"on_error": "skip"}, "on_error"),
        ({"max_parallel_writes": 0}, "max_parallel_writes"),
        ({"client_secret": None}, "client_secret"),
    ],
)
def test_settings_errors_name_the_setting(extra, setting):
    with pytest.raises(SageConfigError) as failure:
        TargetSettings.from_config({**BASE, **extra})
    assert failure.value.setting == setting


def _engine(tmp_path: Path, **config) -> Engine:
    settings = TargetSettings.from_config({**BASE, **config})
    return Engine(
        settings=settings,
        results=ResultsFile(None, "r"),
        dead_letter=DeadLetterFile(None),
        ledger=Ledger(tmp_path / "l.sqlite"),
        client_factory=lambda: pytest.fail("no HTTP in routing"),
    )


def test_routing(tmp_path: Path):
    engine = _engine(
        tmp_path, stream_resources={"customers": "contacts", "voids": "void_sales_invoices"}
    )
    assert engine.route("customers").target == "contacts"
    assert engine.route("sales_invoices").target == "sales_invoices"
    assert engine.route("voids").procedure == "void_sales_invoices"
    assert engine.route("release_purchase_invoices").procedure == "release_purchase_invoices"
    with pytest.raises(RoutingError, match=r"orders.*stream_resources"):
        engine.route("orders")
    with pytest.raises(RoutingError, match="cannot be written"):
        engine.route("countries")
