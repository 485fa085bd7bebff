"""Contract tests against Sage's recorded answers (``../shared/sage-api/recorded/``).

1. Every recorded record goes through tap-sage's record handling (the stream's
   ``post_process`` and record message, the tap's msgspec writer), is read back as SDK loaders
   read a Singer line, and validates against its stream's SCHEMA with Draft 7 and format
   checks, as SDK loaders validate; its decimals arrive with exactly Sage's digits (strings of
   format ``x-singer.decimal``), never as a float.
2. The sandbox answers the same requests with the same shape: the same envelope keys and, field
   by field (nested ones included), the same JSON types. A test fails when the double drifts.
"""

from __future__ import annotations

import decimal
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
from singer_sdk.contrib.msgspec import MsgSpecReader
from singer_sdk.singerlib.encoding.simple import SimpleSingerReader
from singer_sdk.sinks.core import JSONSchemaValidator

from tap_sage.sage import catalogue, wire
from tap_sage.sandbox.runner import SandboxProcess
from tap_sage.streams import _decode
from tap_sage.tap import TapSage

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT.parent / "shared" / "sage-api" / "recorded"
BUSINESS = "0d40342d0287cd6b13555c54afca6c90"
TIMEOUT = 10

pytestmark = pytest.mark.skipif(not RECORDED.exists(), reason="no recordings beside the checkout")

#: recorded list -> (stream, the request it answered: path and query)
LISTS: dict[str, tuple[str, str, dict[str, str]]] = {
    "products_list_attributes_all.json": (
        "products",
        "/products",
        {"items_per_page": "50", "attributes": "all"},
    ),
    "bank_accounts_list_full.json": ("bank_accounts", "/bank_accounts", {"attributes": "all"}),
}
#: the other recordings and where they are held to (not records of a stream)
OTHERS = {
    "businesses_list.json": "test_businesses_list_has_the_recorded_shape",
    "error_401_no_active_subscription.json": "test_error_answers_have_the_recorded_shape",
    "error_403_multi_user_access_denied.json": "test_error_answers_have_the_recorded_shape",
    "revoke_response.json": "test_revoke_answers_as_recorded",
}

_RFC3339 = re.compile(
    r"^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)$"
)  # RFC 3339 date-time


def strict_format_checker() -> jsonschema.FormatChecker:
    """Draft 7's format checker with ``date-time`` checked too (the SDK checks it when
    ``rfc3339-validator`` is installed, as it is beside many loaders)."""
    checker = jsonschema.Draft7Validator.FORMAT_CHECKER
    strict = jsonschema.FormatChecker(formats=list(checker.checkers))

    @strict.checks("date-time")
    def _date_time(value: object) -> bool:
        return not isinstance(value, str) or bool(_RFC3339.match(value))

    return strict


def recorded(name: str) -> Any:
    return json.loads((RECORDED / name).read_text(encoding="utf-8-sig"))


@pytest.fixture(scope="module")
def tap() -> TapSage:
    config = {"access_token": "x", "initiate_oauth": "OFF", "business_ids": [BUSINESS]}
    return TapSage(config=config, validate_config=False)


def through_the_tap(tap: TapSage, stream_name: str, item: dict[str, Any]) -> bytes:
    """One Sage item as the tap writes it: record handling, record message, writer."""
    stream = tap.streams[stream_name]
    record = stream.post_process({**item, "business_id": BUSINESS}, {"business_id": BUSINESS})
    assert record is not None
    messages = list(stream._generate_record_messages(record))
    assert len(messages) == 1
    return bytes(tap.message_writer.format_message(messages[0]))


def floats_in(obj: Any, where: str = "") -> list[str]:
    if isinstance(obj, float):
        return [where]
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in floats_in(v, f"{where}{k}.")]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in floats_in(v, f"{where}{i}.")]
    return []


def values_at(obj: Any, parts: list[str]) -> list[Any]:
    """Every value at a dotted path (``sales_prices[].price``) inside ``obj``."""
    if not parts:
        return [obj]
    key, many = parts[0].removesuffix("[]"), parts[0].endswith("[]")
    if not isinstance(obj, dict) or key not in obj:
        return []
    if not many:
        return values_at(obj[key], parts[1:])
    return [v for e in obj[key] or [] for v in values_at(e, parts[1:])]


def test_every_recording_has_a_contract() -> None:
    names = {p.name for p in RECORDED.glob("*.json")}
    assert names == set(LISTS) | set(OTHERS)


@pytest.mark.parametrize("name", sorted(LISTS))
def test_every_recorded_record_loads_exactly(tap: TapSage, name: str) -> None:
    stream_name = LISTS[name][0]
    body = _decode((RECORDED / name).read_bytes().removeprefix(b"\xef\xbb\xbf"))
    items = body["$items"]
    assert items
    stream = tap.streams[stream_name]
    validator = JSONSchemaValidator(
        stream.schema, validate_formats=True, format_checker=strict_format_checker()
    )
    shape = wire.Shape.of(stream.schema)
    assert shape.decimal_paths  # the stream has decimals: the test below means something
    raw_items = recorded(name)["$items"]
    checked = 0
    for raw, item in zip(raw_items, items, strict=True):
        line = through_the_tap(tap, stream_name, item)
        for reader in (MsgSpecReader(), SimpleSingerReader()):  # the SDK loaders' two readers
            message = reader.deserialize_json(line.decode())
            record = message["record"]
            assert floats_in(record) == []
            validator.validate(record)  # raises InvalidRecord naming the problem
            for path in shape.decimal_paths:
                sent = values_at(raw, path.split("."))
                got = values_at(record, path.split("."))
                assert len(got) == len(sent), path
                for sage, loaded in zip(sent, got, strict=True):
                    if sage is None:
                        assert loaded is None
                        continue
                    # exact, digit for digit: Sage's "-430035.84" is the record's "-430035.84"
                    # (typed x-singer.decimal: loaders make it NUMERIC; see README "Decimals")
                    assert loaded == sage and isinstance(loaded, str), (path, loaded, sage)
                    assert decimal.Decimal(loaded).is_finite()
                    checked += 1
    assert checked >= len(items)


def test_empty_strings_and_nulls_of_the_notes_load(tap: TapSage) -> None:
    """NOTES.md's unrecorded facts: ``financial_settings`` with ``""`` for unset dates and
    strings, and ``null`` booleans and codes; the tap makes a valid record of them."""
    item = {
        "$path": "/financial_settings",
        "year_end_date": "2026-12-31",
        "mtd_authenticated_date": "",
        "year_end_lockdown_date": "",
        "general_tax_number": "",
        "default_irpf_rate": "0.0",
        "flat_rate_tax_percentage": "",
        "multi_currency_enabled": None,
        "updated_at": "2025-01-31T10:00:00Z",
    }
    line = through_the_tap(tap, "financial_settings", item)
    record = MsgSpecReader().deserialize_json(line.decode())["record"]
    JSONSchemaValidator(
        tap.streams["financial_settings"].schema,
        validate_formats=True,
        format_checker=strict_format_checker(),
    ).validate(record)
    assert record["mtd_authenticated_date"] is None and record["year_end_lockdown_date"] is None
    assert record["general_tax_number"] == ""  # a string stays what Sage sent
    assert record["default_irpf_rate"] == "0.0"
    assert record["flat_rate_tax_percentage"] is None


def test_a_value_that_is_no_decimal_names_stream_record_and_field(tap: TapSage) -> None:
    stream = tap.streams["bank_accounts"]
    with pytest.raises(wire.WireValueError, match=r"stream 'bank_accounts', record 'B1'.*balance"):
        stream.post_process({"id": "B1", "balance": "12,50"}, {"business_id": BUSINESS})
    with pytest.raises(wire.WireValueError, match=r"sales_prices\.1\.price.*finite"):
        tap.streams["products"].post_process(
            {"id": "P1", "sales_prices": [{"price": "1.0"}, {"price": "NaN"}]},
            {"business_id": BUSINESS},
        )


# -- the sandbox answers as Sage does ------------------------------------------------------


@pytest.fixture(scope="module")
def box(seeded_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    db = tmp_path_factory.mktemp("contract") / "sandbox.db"
    db.write_bytes(seeded_db.read_bytes())
    with SandboxProcess(db) as process:
        yield process


def get(box: SandboxProcess, path: str, token: str | None = None, **params: str) -> Any:
    token = token or box.grant()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    return requests.get(box.api_url + path, params=params, headers=headers, timeout=TIMEOUT)


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", dict: "object", list: "array"}[type(value)]


def field_types(items: list[Any]) -> dict[str, set[str]]:
    """Path (``a.b``, ``a[].b``) -> the JSON types seen there, over every item."""
    out: dict[str, set[str]] = {}

    def walk(obj: dict[str, Any], prefix: str) -> None:
        for key, value in obj.items():
            path = prefix + key
            out.setdefault(path, set()).add(json_type(value))
            if isinstance(value, dict):
                walk(value, path + ".")
            elif isinstance(value, list):
                for element in value:
                    out.setdefault(path + "[]", set()).add(json_type(element))
                    if isinstance(element, dict):
                        walk(element, path + "[].")

    for item in items:
        walk(item, "")
    return out


def shape_drift(sage: list[Any], double: list[Any]) -> list[str]:
    """Where the double's items differ in shape from Sage's: a field Sage sends that the
    double lacks, or a field whose non-null JSON types differ (null is allowed either way,
    since any field may be unset; a field Sage only sent as null constrains nothing more)."""
    want, got = field_types(sage), field_types(double)
    drift = []
    for path, types in sorted(want.items()):
        if path not in got:
            drift.append(f"{path}: missing (Sage sends {sorted(types)})")
            continue
        if types - {"null"} and types - {"null"} != got[path] - {"null"}:
            drift.append(f"{path}: Sage {sorted(types)}, sandbox {sorted(got[path])}")
    return drift


def test_shape_drift_is_caught() -> None:
    """The comparison itself: a number for a string, a missing or retyped nested field."""
    sage = [{"balance": "1.0", "link": {"id": "a"}, "prices": [{"price": "2.0"}], "code": None}]
    assert shape_drift(sage, [dict(sage[0], code=5)]) == []
    assert shape_drift(sage, [dict(sage[0], balance=1.0)]) == [
        "balance: Sage ['string'], sandbox ['number']"
    ]
    assert shape_drift(sage, [dict(sage[0], link={})]) == [
        "link.id: missing (Sage sends ['string'])"
    ]
    assert shape_drift(sage, [dict(sage[0], prices=[{"price": 2}])]) == [
        "prices[].price: Sage ['string'], sandbox ['number']"
    ]


@pytest.mark.parametrize("name", sorted(LISTS))
def test_the_sandbox_answers_with_the_recorded_shape(box: SandboxProcess, name: str) -> None:
    _, path, params = LISTS[name]
    sage = recorded(name)
    response = get(box, path, **params)
    assert response.status_code == 200, response.text
    double = response.json()
    assert list(double) == list(sage)  # the envelope, in Sage's order
    assert [json_type(double[k]) for k in sage if k not in ("$next", "$back")] == [
        json_type(sage[k]) for k in sage if k not in ("$next", "$back")
    ]
    if sage["$next"] is not None and double["$next"] is not None:
        assert double["$next"] == sage["$next"]  # relative, every parameter kept, in order
    assert shape_drift(sage["$items"], double["$items"]) == []
    assert response.headers["X-Business"]


def test_businesses_list_has_the_recorded_shape(box: SandboxProcess) -> None:
    sage = recorded("businesses_list.json")
    response = get(box, "/businesses")
    double = response.json()
    assert list(double) == list(sage)
    assert double["$items_per_page"] == sage["$items_per_page"] == 2147483647
    assert double["$next"] is None and double["$page"] == 1
    assert double["$total"] == len(double["$items"])
    assert shape_drift(sage["$items"], double["$items"]) == []
    assert [set(i) for i in double["$items"]] == [set(sage["$items"][0])] * len(double["$items"])
    assert "X-Business" not in response.headers


def test_error_answers_have_the_recorded_shape(box: SandboxProcess) -> None:
    unauthorised = get(box, "/contacts", token="not-a-token")
    assert unauthorised.status_code == 401
    assert shape_drift(recorded("error_401_no_active_subscription.json"), unauthorised.json()) == []
    assert unauthorised.json()[0]["$dataCode"] == "AuthorizationFailure"
    gb = get(box, "/businesses").json()["$items"][0]["id"]
    limited = box.grant(business_ids=[gb])["access_token"]
    us = next(b["id"] for b in get(box, "/businesses").json()["$items"] if b["id"] != gb)
    headers = {"Authorization": f"Bearer {limited}", "X-Business": us}
    denied = requests.get(box.api_url + "/contacts", headers=headers, timeout=TIMEOUT)
    assert denied.status_code == 403
    assert denied.json() == recorded("error_403_multi_user_access_denied.json")


def test_revoke_answers_as_recorded(box: SandboxProcess) -> None:
    granted = box.grant()
    response = requests.post(
        box.revoke_url,
        data={
            "client_id": granted["client_id"],
            "client_secret": granted["client_secret"],
            "token": granted["refresh_token"],
        },
        timeout=TIMEOUT,
    )
    assert response.status_code == 200
    assert response.json() == recorded("revoke_response.json")


def test_every_stream_schema_types_decimals_as_the_wire_module_says() -> None:
    """The committed read schemas carry the chosen representation for every spec decimal:
    a string of format ``x-singer.decimal`` (README, "Decimals"), no precision or scale."""
    spec_path = ROOT.parent / "shared" / "sage-api" / "swagger-v3.1.json"
    if not spec_path.exists():
        pytest.skip("Sage's spec is not beside the checkout")
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    res = catalogue.resource("bank_accounts")
    assert spec["definitions"][res.definition]["properties"]["balance"]["type"] == "number"
    schema = catalogue.list_schema("bank_accounts")
    assert schema["properties"]["balance"] == wire.DECIMAL_SCHEMA
    assert wire.DECIMAL_SCHEMA == {"type": ["string", "null"], "format": "x-singer.decimal"}
    assert schema["properties"]["nominal_code"] == {"type": ["integer", "null"]}
    products = catalogue.list_schema("products")["properties"]
    assert products["sales_prices"]["items"]["properties"]["price"] == wire.DECIMAL_SCHEMA
    assert "enum" not in json.dumps(catalogue.list_schema("invoice_settings"))
