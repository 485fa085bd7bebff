"""The sandbox over real HTTP: writes, validation, void, actions, idempotency, faults."""

from __future__ import annotations

import base64
import copy
import re
import sqlite3
import threading
import uuid
from typing import Any

import pytest
import requests

from tap_sage.sage import wire
from tap_sage.sandbox.runner import SandboxProcess
from tap_sage.sandbox.store import token_hash
from tests.test_sandbox import TIMEOUT, Api, sage_error

HEX32 = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def api(sandbox: SandboxProcess) -> Api:
    return Api(sandbox)


def ledger_account(api: Api) -> str:
    items = api.get("/ledger_accounts", search="sales - products").json()["$items"]
    return str(items[0]["id"])


def a_contact(api: Api) -> dict[str, Any]:
    return dict(api.get("/contacts", attributes="all").json()["$items"][0])


def invoice_body(api: Api, **extra: Any) -> dict[str, Any]:
    return {
        "sales_invoice": {
            "contact_id": a_contact(api)["id"],
            "date": "2026-11-01",
            "invoice_lines": [
                {
                    "description": "Consulting",
                    "ledger_account_id": ledger_account(api),
                    "unit_price": 100.0,
                    "quantity": 2,
                    "tax_rate_id": "GB_STANDARD",
                },
                {
                    "description": "Travel",
                    "ledger_account_id": ledger_account(api),
                    "unit_price": 50.0,
                    "quantity": 1,
                },
            ],
            **extra,
        }
    }


def test_post_get_and_list_a_contact(api: Api) -> None:
    before = api.get("/contacts").json()["$total"]
    response = api.post(
        "/contacts",
        {
            "contact": {
                "name": "Newco Ltd",
                "contact_type_ids": ["CUSTOMER"],
                "reference": "NEW001",
                "currency_id": "GBP",
                "idempotency_id": uuid.uuid4().hex,
                "main_address": {"address_line_1": "1 New Street", "country_id": "GB"},
            }
        },
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert HEX32.match(created["id"])
    assert created["displayed_as"] == "Newco Ltd (NEW001)"
    assert created["$path"] == f"/contacts/{created['id']}"
    assert created["created_at"] == created["updated_at"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", created["created_at"])
    assert created["contact_types"] == [
        {"id": "CUSTOMER", "displayed_as": "Customer", "$path": "/contact_types/CUSTOMER"}
    ]
    assert created["currency"]["id"] == "GBP"
    assert created["main_address"]["country"]["id"] == "GB"
    assert "idempotency_id" not in created
    assert api.get(created["$path"]).json() == created
    assert api.get("/contacts").json()["$total"] == before + 1
    since = api.get("/contacts", updated_or_created_since=created["updated_at"]).json()
    assert created["id"] in [i["id"] for i in since["$items"]]


def test_write_errors(api: Api) -> None:
    error = sage_error(api.post("/contacts", {"name": "no wrapper"}), 422, "RecordInvalid")
    assert error["$source"] == "contact"
    response = requests.post(
        api.sandbox.api_url + "/contacts",
        data="contact=x",
        headers=api.headers(**{"Content-Type": "text/plain"}),
        timeout=TIMEOUT,
    )
    assert response.status_code == 415
    sage_error(api.delete("/ledger_accounts/" + ledger_account(api)), 405, "MethodNotAllowed")
    sage_error(api.post("/ledger_entries", {"ledger_entry": {}}), 405, "MethodNotAllowed")
    sage_error(api.get("/contacts/" + "0" * 32), 404, "RecordNotFound")
    sage_error(api.put("/contacts/" + "0" * 32, {"contact": {"name": "x"}}), 404, "RecordNotFound")


def test_required_fields_and_types_from_the_spec(api: Api) -> None:
    response = api.post("/contacts", {"contact": {"contact_type_ids": "CUSTOMER"}})
    assert response.status_code == 422
    sources = {e["$source"]: e for e in response.json()}
    assert set(sources) == {"name", "contact_type_ids"}
    assert all(e["$dataCode"] == "RecordInvalid" for e in sources.values())
    body = invoice_body(api)
    del body["sales_invoice"]["invoice_lines"][1]["ledger_account_id"]
    response = api.post("/sales_invoices", body)
    assert [e["$source"] for e in response.json()] == ["invoice_lines.1.ledger_account_id"]
    body = invoice_body(api, date="yesterday")
    assert [e["$source"] for e in api.post("/sales_invoices", body).json()] == ["date"]
    unknown_contact = invoice_body(api, contact_id="f" * 32)
    error = sage_error(api.post("/sales_invoices", unknown_contact), 422, "RecordInvalid")
    assert error["$source"] == "contact_id"


def test_invoice_creation_expands_links_and_totals(api: Api) -> None:
    response = api.post("/sales_invoices", invoice_body(api))
    assert response.status_code == 201, response.text
    invoice = response.json()
    assert invoice["contact"]["$path"] == f"/contacts/{invoice['contact']['id']}"
    assert invoice["contact"]["displayed_as"]
    assert invoice["status"]["id"] == "UNPAID"
    lines = invoice["invoice_lines"]
    assert [HEX32.match(line["id"]) is not None for line in lines] == [True, True]
    assert lines[0]["ledger_account"]["displayed_as"] == "Sales - Products (4000)"
    # decimals answer as Sage writes them: Rails BigDecimal strings (NOTES.md, "The wire")
    assert lines[0]["tax_amount"] == "40.0" and lines[0]["unit_price"] == "100.0"
    assert invoice["net_amount"] == "250.0" and invoice["total_amount"] == "290.0"
    assert invoice["invoice_number"]
    assert invoice["displayed_as"] == invoice["invoice_number"]


def test_put_changes_only_the_fields_sent(api: Api) -> None:
    invoice = api.post("/sales_invoices", invoice_body(api, notes="first")).json()
    response = api.put(invoice["$path"], {"sales_invoice": {"reference": "PO-9"}})
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["reference"] == "PO-9" and changed["notes"] == "first"
    assert changed["invoice_lines"] == invoice["invoice_lines"]
    new_lines = [
        {
            "description": "Only line",
            "ledger_account_id": ledger_account(api),
            "unit_price": 10.0,
            "quantity": 3,
        }
    ]
    replaced = api.put(invoice["$path"], {"sales_invoice": {"invoice_lines": new_lines}}).json()
    assert [line["description"] for line in replaced["invoice_lines"]] == ["Only line"]
    assert replaced["net_amount"] == "30.0"
    assert replaced["created_at"] == invoice["created_at"]


def test_idempotency_id_returns_the_first_result(api: Api) -> None:
    key = uuid.uuid4().hex
    body = {"contact": {"name": "Once Only", "contact_type_ids": ["VENDOR"], "idempotency_id": key}}
    before = api.get("/contacts").json()["$total"]
    first = api.post("/contacts", body)
    second = api.post("/contacts", body)
    assert first.status_code == second.status_code == 201
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json()["id"] == first.json()["id"]
    assert api.get("/contacts").json()["$total"] == before + 1


def test_parallel_posts_with_one_idempotency_id_create_one_record(api: Api) -> None:
    key = uuid.uuid4().hex
    account = ledger_account(api)
    body = {
        "product": {
            "description": "Racing widget",
            "idempotency_id": key,
            "sales_ledger_account_id": account,
            "purchase_ledger_account_id": account,
        }
    }
    ids: list[str] = []

    def post() -> None:
        response = api.post("/products", body)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 6 and len(set(ids)) == 1


def test_delete_tombstones(api: Api) -> None:
    contact = api.post(
        "/contacts", {"contact": {"name": "Short Lived", "contact_type_ids": ["CUSTOMER"]}}
    ).json()
    response = api.delete(contact["$path"])
    assert response.status_code == 204 and response.content == b""
    sage_error(api.get(contact["$path"]), 404, "RecordNotFound")
    tombstones = api.get(
        "/contacts", deleted_since="2026-01-01T00:00:00Z", items_per_page=200
    ).json()["$items"]
    mine = [t for t in tombstones if t["id"] == contact["id"]]
    assert mine and mine[0]["deleted_at"] >= contact["created_at"]


def test_void_sales_invoice(api: Api) -> None:
    invoice = api.post("/sales_invoices", invoice_body(api)).json()
    error = sage_error(api.delete(invoice["$path"]), 422, "RecordInvalid")
    assert error["$source"] == "void_reason"
    response = api.delete(invoice["$path"], void_reason="Raised in error")
    assert response.status_code == 200, response.text
    voided = response.json()
    assert voided["status"]["id"] == "VOID" and voided["void_reason"] == "Raised in error"
    assert api.get(invoice["$path"]).json()["status"]["id"] == "VOID"
    updated = api.get("/sales_invoices", updated_or_created_since=voided["updated_at"]).json()
    assert invoice["id"] in [i["id"] for i in updated["$items"]]
    deleted = api.get("/sales_invoices", deleted_since="2026-01-01").json()["$items"]
    assert invoice["id"] not in [t["id"] for t in deleted]
    sage_error(api.delete(invoice["$path"], void_reason="again"), 422, "RecordInvalid")


def test_draft_release_and_draft_delete(api: Api) -> None:
    draft = api.post("/sales_invoices", invoice_body(api, status_id="DRAFT")).json()
    assert draft["status"]["id"] == "DRAFT"
    released = api.post(draft["$path"] + "/release")
    assert released.status_code == 201, released.text
    assert released.json()["status"]["id"] == "UNPAID"
    sage_error(api.post(draft["$path"] + "/release"), 422, "RecordInvalid")
    other = api.post("/sales_invoices", invoice_body(api, status_id="DRAFT")).json()
    assert api.delete(other["$path"]).status_code == 204  # a draft is deleted, no reason
    sage_error(api.get(other["$path"]), 404, "RecordNotFound")
    sage_error(api.post("/contacts/" + a_contact(api)["id"] + "/release"), 404, "RecordNotFound")


def test_journal_reissue(api: Api) -> None:
    account = ledger_account(api)
    journal = api.post(
        "/journals",
        {
            "journal": {
                "date": "2026-10-01",
                "reference": "JN-1",
                "journal_lines": [
                    {"ledger_account_id": account, "debit": 10.0, "credit": 0.0},
                    {"ledger_account_id": account, "debit": 0.0, "credit": 10.0},
                ],
            }
        },
    )
    assert journal.status_code == 201, journal.text
    old = journal.json()
    response = api.post(old["$path"] + "/reissue")
    assert response.status_code == 201
    new = response.json()
    assert new["id"] != old["id"] and new["reference"] == "JN-1"
    sage_error(api.get(old["$path"]), 404, "RecordNotFound")
    tombstones = api.get("/journals", deleted_since="2026-01-01").json()["$items"]
    assert old["id"] in [t["id"] for t in tombstones]


def test_attachment_file_round_trip(api: Api) -> None:
    content = b"%PDF-1.4 sandbox\x00\x01"
    response = api.post(
        "/attachments",
        {
            "attachment": {
                "file": base64.b64encode(content).decode(),
                "file_name": "receipt.pdf",
                "mime_type": "application/pdf",
                "description": "A receipt",
            }
        },
    )
    assert response.status_code == 201, response.text
    attachment = response.json()
    assert attachment["file_size"] == len(content)
    file = requests.get(
        api.sandbox.api_url + attachment["$path"] + "/file",
        headers=api.headers(Accept="application/octet-stream"),
        timeout=TIMEOUT,
    )
    assert file.status_code == 200
    assert file.headers["Content-Type"] == "application/octet-stream"
    assert file.content == content
    bad = api.post(
        "/attachments", {"attachment": {"file": "***", "file_name": "x", "mime_type": "text/plain"}}
    )
    assert sage_error(bad, 422, "RecordInvalid")["$source"] == "file"


def test_quote_becomes_an_invoice(api: Api) -> None:
    quote = api.get("/sales_quotes", status_id="PENDING", attributes="all").json()["$items"][0]
    response = api.post(
        "/sales_invoices", {"sales_invoice": {"original_quote_estimate_id": quote["id"]}}
    )
    assert response.status_code == 201, response.text
    invoice = response.json()
    assert invoice["original_quote_estimate"]["id"] == quote["id"]
    assert invoice["contact"]["id"] == quote["contact"]["id"]
    assert len(invoice["invoice_lines"]) == len(quote["quote_lines"])
    assert api.get(quote["$path"]).json()["status"]["id"] == "INVOICED"


def test_other_business_records_are_not_visible(api: Api) -> None:
    contact = a_contact(api)
    us = api.get("/businesses").json()["$items"][1]["id"]
    api.business = us
    sage_error(api.get(contact["$path"]), 404, "RecordNotFound")


# -- faults ------------------------------------------------------------------------------


def test_fault_429_has_retry_after_and_oauth_is_spared(sandbox_factory: Any) -> None:
    sandbox = sandbox_factory(fault_rate=1.0, extra_args=["--fault-kinds", "429"])
    granted = sandbox.grant()
    response = Api(sandbox, granted["access_token"]).get("/contacts")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"
    assert response.headers["x_request_id"]
    refreshed = requests.post(
        sandbox.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": granted["refresh_token"],
            "client_id": granted["client_id"],
            "client_secret": granted["client_secret"],
        },
        timeout=TIMEOUT,
    )
    assert refreshed.status_code == 200


def test_fault_drop_closes_the_connection(sandbox_factory: Any) -> None:
    sandbox = sandbox_factory(fault_rate=1.0, extra_args=["--fault-kinds", "drop"])
    with pytest.raises(requests.ConnectionError):
        Api(sandbox).get("/contacts")


def test_fault_commit500_commits_then_fails(sandbox_factory: Any) -> None:
    sandbox = sandbox_factory(fault_rate=1.0, extra_args=["--fault-kinds", "commit500"])
    api = Api(sandbox)
    response = api.post(
        "/contacts", {"contact": {"name": "Ghost Writer Ltd", "contact_type_ids": ["CUSTOMER"]}}
    )
    sage_error(response, 500, "UnexpectedError")
    conn = sqlite3.connect(sandbox.db)
    try:
        found = conn.execute(
            "SELECT count(*) FROM records WHERE resource = 'contacts' "
            "AND data LIKE '%Ghost Writer Ltd%'"
        ).fetchone()[0]
    finally:
        conn.close()
    assert found == 1


def test_fault_sequence_is_repeatable_with_a_seed(sandbox_factory: Any) -> None:
    runs = []
    for _ in range(2):
        sandbox = sandbox_factory(
            fault_rate=0.5, extra_args=["--fault-seed", "42", "--fault-kinds", "500,503,429"]
        )
        api = Api(sandbox)
        runs.append([api.get("/contacts").status_code for _ in range(20)])
    assert runs[0] == runs[1]
    assert {200, 500, 503, 429} & set(runs[0]) >= {200}
    assert len(set(runs[0])) > 1


def test_oauth_fault_rate_burns_refresh_token(sandbox_factory: Any) -> None:
    sandbox = sandbox_factory(extra_args=["--oauth-fault-rate", "1", "--fault-kinds", "commitdrop"])
    granted = sandbox.grant()
    form = {
        "grant_type": "refresh_token",
        "refresh_token": granted["refresh_token"],
        "client_id": granted["client_id"],
        "client_secret": granted["client_secret"],
    }
    with pytest.raises(requests.ConnectionError):
        requests.post(sandbox.token_url, data=form, timeout=TIMEOUT)
    assert Api(sandbox, granted["access_token"]).get("/contacts").status_code == 200
    conn = sqlite3.connect(sandbox.db)
    try:
        used = conn.execute(
            "SELECT used FROM tokens WHERE hash = ?", (token_hash(granted["refresh_token"]),)
        ).fetchone()[0]
    finally:
        conn.close()
    assert used == 1  # the answer was lost but the refresh token is spent


def test_max_concurrent_answers_429(sandbox_factory: Any) -> None:
    sandbox = sandbox_factory(latency_ms=1500, extra_args=["--max-concurrent", "1"])
    api = Api(sandbox)
    barrier = threading.Barrier(3)
    statuses: list[int] = []
    retry_after: list[str | None] = []

    def get() -> None:
        barrier.wait()
        response = api.get("/contacts")
        statuses.append(response.status_code)
        retry_after.append(response.headers.get("Retry-After"))

    threads = [threading.Thread(target=get) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 429, 429]
    assert retry_after.count("1") == 2


def _minimal(api: Api, name: str, schema: dict[str, Any], ids: dict[str, str]) -> Any:
    """The smallest body the write schema accepts, with real ids for ``*_id`` fields."""
    from tap_sage.sandbox.model import ref_resource

    kinds = schema.get("type")
    kinds = [k for k in (kinds if isinstance(kinds, list) else [kinds]) if k != "null"]
    kind = kinds[0] if kinds else "string"
    if kind == "object":
        props = schema.get("properties", {})
        return {
            k: _minimal(api, k, props[k], ids) for k in schema.get("required", []) if k in props
        }
    if kind == "array":
        return [_minimal(api, name.removesuffix("s"), schema.get("items", {}), ids)]
    if kind == "string":
        if name == "file":
            return base64.b64encode(b"hello").decode()
        target = ref_resource(name) if name.endswith("_id") else None
        if target is not None:
            if target not in ids:
                items = api.get("/" + target).json()["$items"]
                ids[target] = items[0]["id"]
            return ids[target]
        if schema.get("format") == "date":
            return "2026-11-01"
        return next((e for e in schema.get("enum", []) if e), "Sandbox")
    return {"number": 1.0, "integer": 1, "boolean": False}.get(kind)


def test_every_create_and_update_accepts_a_minimal_body(api: Api) -> None:
    import jsonschema

    from tap_sage.sage import catalogue

    checker = jsonschema.FormatChecker(formats=["date"])
    ids: dict[str, str] = {}
    problems: list[str] = []
    for name, res in catalogue.resources().items():
        if not res.available_in("GB", "Plus") or not (res.create or res.update):
            continue
        if res.create:
            body = _minimal(api, "", catalogue.write_schema(name, "post") or {}, ids)
            response = api.post(res.path, body)
            if response.status_code != 201:
                problems.append(f"POST {name}: {response.status_code} {response.text[:200]}")
                continue
            record = response.json()
            validator = jsonschema.Draft7Validator(
                catalogue.list_schema(name), format_checker=checker
            )
            # the answer is on Sage's wire; the tap's record handling makes it a valid record
            converted = wire.Shape.of(catalogue.list_schema(name)).to_record(copy.deepcopy(record))
            problems += [f"{name}: {e.message}" for e in validator.iter_errors(converted)]
            path = record["$path"]
        elif res.singleton:
            path = res.path
        else:
            path = api.get(res.path).json()["$items"][0]["$path"]
        if res.update:
            response = api.put(path, {res.wrapper: {}})
            if response.status_code != 200:
                problems.append(f"PUT {name}: {response.status_code} {response.text[:200]}")
    assert problems == []


def test_contact_reference_quirks(api: Api) -> None:
    """Integrators' notes (NOTES.md, "Validation quirks"): a contact's ``reference`` is at most
    10 characters, and a deleted contact's reference stays taken."""
    body = {"contact": {"name": "Quirk Ltd", "contact_type_ids": ["CUSTOMER"]}}
    too_long = api.post("/contacts", {"contact": {**body["contact"], "reference": "R" * 11}})
    assert sage_error(too_long, 422, "RecordInvalid")["$source"] == "reference"
    first = api.post("/contacts", {"contact": {**body["contact"], "reference": "R" * 10}})
    assert first.status_code == 201, first.text
    again = api.post("/contacts", {"contact": {**body["contact"], "reference": "R" * 10}})
    assert "taken" in sage_error(again, 422, "RecordInvalid")["$message"]
    assert api.delete(first.json()["$path"]).status_code == 204
    after_delete = api.post("/contacts", {"contact": {**body["contact"], "reference": "R" * 10}})
    assert sage_error(after_delete, 422, "RecordInvalid")["$source"] == "reference"
    other = api.post("/contacts", {"contact": {**body["contact"], "reference": "QUIRK2"}})
    assert other.status_code == 201, other.text
    renamed = api.put(other.json()["$path"], {"contact": {"reference": "R" * 10}})
    assert sage_error(renamed, 422, "RecordInvalid")["$source"] == "reference"
    same = api.put(other.json()["$path"], {"contact": {"reference": "QUIRK2", "notes": "x"}})
    assert same.status_code == 200, same.text  # its own reference is not "taken"


def test_amounts_stay_exact_through_writes(api: Api) -> None:
    """A write's decimals are taken as the digits sent (no float on the way) and answered in
    Sage's Rails form: 0.1 + 0.2 is 0.3, and 1.005 x 3 rounds to 3.02 (half-even on 3.015)."""
    body = invoice_body(api)
    line = dict(body["sales_invoice"]["invoice_lines"][0])
    line.update(unit_price=0.1, quantity=1, tax_amount=0.2)
    second = dict(line, unit_price=1.005, quantity=3, tax_amount=0)
    body["sales_invoice"]["invoice_lines"] = [line, second]
    response = api.post("/sales_invoices", body)
    assert response.status_code == 201, response.text
    invoice = response.json()
    assert [x["net_amount"] for x in invoice["invoice_lines"]] == ["0.1", "3.02"]
    assert invoice["invoice_lines"][0]["total_amount"] == "0.3"
    assert invoice["net_amount"] == "3.12" and invoice["total_amount"] == "3.32"
