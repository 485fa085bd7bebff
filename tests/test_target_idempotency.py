"""Idempotency as Sage's guide says it, in the catalogue, the sandbox and target-sage; exact
decimals on the way to Sage."""

from __future__ import annotations

import decimal
import json
import sqlite3
import time
import uuid
from typing import Any

import pytest
import requests

from tap_sage.sage import catalogue
from tests.test_target_helpers import (
    SageAPI,
    killed_run,
    record_msg,
    results,
    run_cli,
    run_target,
    schema_msg,
    singer,
    target_config,
)

#: The resources of Sage's idempotency guide, as the guide names them
#: (developer.sage.com/accounting/guides/concepts/idempotency/, "These resources support
#: idempotency"). Kept here by hand, apart from the generator, so that either drifting fails.
GUIDE = [
    "address",
    "bank_account",
    "bank_deposit",
    "bank_opening_balance",
    "bank_reconciliation",
    "bank_transfer",
    "business_exchange_rate",
    "contact",
    "contact_allocation",
    "contact_opening_balance",
    "contact_payment",
    "contact_person",
    "hosted_artefact_payment_setting",
    "journal",
    "journal_code",
    "ledger_account",
    "ledger_account_opening_balance",
    "migration_tax_return",
    "opening_balance_journal",
    "other_payment",
    "product",
    "product_sales_price_type",
    "purchase_credit_note",
    "purchase_invoice",
    "purchase_quick_entry",
    "sales_credit_note",
    "sales_estimate",
    "sales_invoice",
    "sales_quick_entry",
    "sales_quote",
    "service",
    "service_rate_type",
    "stock_item",
    "stock_movement",
    "tax_profile",
]


def test_catalogue_idempotency_is_the_guide_list():
    by_wrapper = {r.wrapper: r.name for r in catalogue.resources().values() if r.wrapper}
    assert set(GUIDE) <= set(by_wrapper), set(GUIDE) - set(by_wrapper)
    idempotent = {r.name for r in catalogue.resources().values() if r.idempotency}
    assert idempotent == {by_wrapper[name] for name in GUIDE}
    # Not in the guide: intent and lookup, never a blind retry.
    for name in ("attachments", "analysis_type_categories", "tax_rates"):
        assert not catalogue.resource(name).idempotency, name


# -- the sandbox ---------------------------------------------------------------------------------


def test_sandbox_put_with_idempotency_id_is_applied_once(sandbox):
    api = SageAPI(sandbox)
    made = api.post("/contacts", {"contact": {"name": "Idem Put", "contact_type_ids": ["VENDOR"]}})
    key = uuid.uuid4().hex
    url = f"{sandbox.api_url}/contacts/{made['id']}"
    first = api.session.put(url, json={"contact": {"notes": "first", "idempotency_id": key}})
    second = api.session.put(url, json={"contact": {"notes": "second", "idempotency_id": key}})
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()  # the first answer again, nothing applied
    assert "Idempotent-Replayed" not in second.headers
    assert api.get(f"/contacts/{made['id']}")["notes"] == "first"


def test_sandbox_refuses_an_id_reused_on_another_resource(sandbox):
    api = SageAPI(sandbox)
    key = uuid.uuid4().hex
    api.post(
        "/contacts",
        {"contact": {"name": "Idem X", "contact_type_ids": ["VENDOR"], "idempotency_id": key}},
    )
    other = api.session.post(
        f"{sandbox.api_url}/addresses",
        json={"address": {"address_line_1": "1 High St", "idempotency_id": key}},
    )
    assert other.status_code == 422
    assert other.json()[0]["$dataCode"] == "IdempotencyResourceMismatch"


def test_sandbox_forgets_an_id_after_its_memory(sandbox_factory):
    short = sandbox_factory(extra_args=["--idempotency-ttl", "1"])
    api = SageAPI(short)
    body = {
        "contact": {"name": "Idem TTL", "contact_type_ids": ["VENDOR"], "idempotency_id": "a" * 32}
    }
    first = api.post("/contacts", body)
    assert api.post("/contacts", body)["id"] == first["id"]
    time.sleep(1.5)
    assert api.post("/contacts", body)["id"] != first["id"]  # 7 days (here 1 s) later: anew


# -- target-sage ---------------------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {
        "code": {"type": "string"},
        "name": {"type": "string"},
        "contact_type_ids": {"type": "array", "items": {"type": "string"}},
        "notes": {"type": ["string", "null"]},
        # Strings with a decimal format, as a tap may send Sage's amounts.
        "credit_limit": {"type": ["string", "number", "null"]},
    },
}


def contacts(rows: list[dict[str, Any]]) -> str:
    return singer([schema_msg("items", SCHEMA, ["code"])] + [record_msg("items", r) for r in rows])


def row(code: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"code": code, "name": name, "contact_type_ids": ["CUSTOMER"], **extra}


def test_reuse_across_resources_is_a_clear_error_naming_stream_and_record(
    sandbox, connection_config, tmp_path
):
    api = SageAPI(sandbox)
    config = target_config(connection_config, tmp_path, api, stream_resources={"items": "contacts"})
    text = contacts([row("IM-1", "Idem Mismatch")])
    killed_run(config, text, tmp_path, "after_request:1")
    # The same stream now routed to another idempotent resource: its interrupted create
    # comes back with the same idempotency_id.
    moved = {**config, "stream_resources": {"items": "products"}}
    account = api.first_id("/ledger_accounts")
    product = {
        "code": "IM-1",
        "description": "Idem Mismatch",
        "sales_ledger_account_id": account,
        "purchase_ledger_account_id": account,
    }
    products = singer(
        [
            schema_msg(
                "items",
                {"type": "object", "properties": {k: {"type": "string"} for k in product}},
                ["code"],
            ),
            record_msg("items", product),
        ]
    )
    done = run_cli(moved, products, tmp_path)
    assert done.returncode == 1
    (stopped,) = [x for x in done.stderr.splitlines() if "target-sage stopped" in x]
    assert "IdempotencyResourceMismatch" in stopped
    assert "Stream `items`" in stopped and '["IM-1"]' in stopped


def test_a_create_replayed_after_the_idempotency_window_makes_no_duplicate(
    sandbox_factory, connection_config, tmp_path
):
    short = sandbox_factory(extra_args=["--idempotency-ttl", "1"])
    api = SageAPI(short)
    grant = short.grant()
    conn = {
        **connection_config,
        "access_token": grant["access_token"],
        "refresh_token": grant["refresh_token"],
        "advanced_config": {"api_url": short.api_url, "token_url": short.token_url},
    }
    config = target_config(conn, tmp_path, api, stream_resources={"items": "contacts"})
    text = contacts([row("IW-1", "Idem Window", notes="v1")])
    killed_run(config, text, tmp_path, "after_request:1")
    assert len(api.contacts_named("Idem Window")) == 1
    # Eight days pass: Sage forgets the id (here after 1 s); the ledger's intent is that old.
    time.sleep(1.5)
    with sqlite3.connect(config["ledger_path"]) as db:
        db.execute("UPDATE records SET intent_at = intent_at - 8 * 86400")
    again = run_cli(config, contacts([row("IW-1", "Idem Window", notes="v2")]), tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    found = api.contacts_named("Idem Window")
    assert len(found) == 1 and found[0]["notes"] == "v2"


@pytest.fixture
def sent_bodies(monkeypatch) -> list[bytes]:
    """The bytes of every write body as it leaves through requests (a spy, not a mock)."""
    seen: list[bytes] = []
    original = requests.adapters.HTTPAdapter.send

    def spy(self, request, *args, **kwargs):
        if request.method in ("POST", "PUT") and request.body:
            body = request.body
            seen.append(body if isinstance(body, bytes) else str(body).encode())
        return original(self, request, *args, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", spy)
    return seen


def test_decimals_go_to_sage_exactly_as_the_source_gave_them(
    sandbox, connection_config, tmp_path, sent_bodies
):
    api = SageAPI(sandbox)
    config = target_config(connection_config, tmp_path, api, stream_resources={"items": "contacts"})
    # JSON text as a tap writes it: a long decimal, a float-unfriendly sum, a string amount.
    lines = [
        json.dumps(schema_msg("items", SCHEMA, ["code"])),
        '{"type": "RECORD", "stream": "items", "record": {"code": "DX-1", "name": "Dec One",'
        ' "contact_type_ids": ["CUSTOMER"], "credit_limit": 1234567.891234567891}}',
        '{"type": "RECORD", "stream": "items", "record": {"code": "DX-2", "name": "Dec Two",'
        ' "contact_type_ids": ["CUSTOMER"], "credit_limit": 0.30}}',
        '{"type": "RECORD", "stream": "items", "record": {"code": "DX-3", "name": "Dec Three",'
        ' "contact_type_ids": ["CUSTOMER"], "credit_limit": "10.50"}}',
    ]
    run_target(config, "\n".join(lines) + "\n")
    assert {x["outcome"] for x in results(config)} == {"created"}
    sent = b"\n".join(sent_bodies)
    assert b'"credit_limit": 1234567.891234567891' in sent
    assert b'"credit_limit": 0.30' in sent
    assert b'"credit_limit": 10.50' in sent  # a decimal string goes as the number it is
    assert b"0.30000000000000004" not in sent and b"1234567.8912345679" not in sent
    # A replay compares by value: nothing is sent again.
    before = len(sent_bodies)
    run_target(config, "\n".join(lines) + "\n")
    assert len(sent_bodies) == before


def test_a_decimal_that_is_no_number_names_the_field(sandbox, connection_config, tmp_path):
    api = SageAPI(sandbox)
    config = target_config(
        connection_config,
        tmp_path,
        api,
        stream_resources={"items": "contacts"},
        on_error="continue",
    )
    run_target(config, contacts([row("DX-9", "Dec Bad", credit_limit="ten")]))
    (line,) = results(config)
    assert line["outcome"] == "failed" and "credit_limit" in line["$message"]


def test_requests_writes_decimal_bodies_digit_for_digit():
    """target-sage hands requests bodies with Decimal values; requests encodes `json=` with
    simplejson when it is installed (a declared dependency), which writes them exactly."""
    prepared = requests.Request(
        "POST", "http://x/", json={"a": decimal.Decimal("0.10"), "b": decimal.Decimal("1E+2")}
    ).prepare()
    body = prepared.body if isinstance(prepared.body, bytes) else str(prepared.body).encode()
    assert body == b'{"a": 0.10, "b": 1E+2}'


def test_x_singer_decimal_strings_from_tap_sage_go_exactly(
    sandbox, connection_config, tmp_path, sent_bodies
):
    """tap-sage writes Sage's amounts as strings with `format: x-singer.decimal`: the target
    sends them to Sage as the numbers they are, digit for digit."""
    api = SageAPI(sandbox)
    config = target_config(connection_config, tmp_path, api, stream_resources={"items": "contacts"})
    schema = {
        "type": "object",
        "properties": {
            **SCHEMA["properties"],
            "credit_limit": {"type": ["string", "null"], "format": "x-singer.decimal"},
        },
    }
    text = singer(
        [
            schema_msg("items", schema, ["code"]),
            record_msg("items", row("XD-1", "Dec Wire", credit_limit="-430035.840")),
        ]
    )
    run_target(config, text)
    assert [x["outcome"] for x in results(config)] == ["created"]
    assert b'"credit_limit": -430035.840' in b"\n".join(sent_bodies)
