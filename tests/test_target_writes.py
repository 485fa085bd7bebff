"""target-sage against the sandbox over HTTP: routing, operations, ledger, results, errors."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from tap_sage.sage.client import SageClient
from tap_sage.sage.errors import SageConfigError
from target_sage.ledger import Ledger
from target_sage.routing import RoutingError
from target_sage.work import TargetFailure
from tests.test_target_helpers import (
    CONTACT_SCHEMA,
    SageAPI,
    contact,
    contacts_input,
    record_msg,
    results,
    run_target,
    schema_msg,
    singer,
    state_msg,
    target_config,
)


@pytest.fixture
def api(sandbox) -> SageAPI:
    return SageAPI(sandbox)


@pytest.fixture
def config(connection_config, tmp_path, api) -> dict[str, Any]:
    return target_config(connection_config, tmp_path, api)


def by_key(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {json.dumps(line["source_key"]): line for line in lines}


def test_create_then_same_records_again_update_instead_of_duplicating(config, api):
    records = [contact(f"W1-{i}", f"W1 Contact {i}") for i in range(3)]
    states = run_target(config, contacts_input(records, state={"bookmark": 1}))
    assert states == [{"bookmark": 1}]
    first = results(config)
    assert [line["outcome"] for line in first] == ["created"] * 3
    assert all(line["http_status"] == 201 and line["x_request_id"] for line in first)
    assert {c["name"] for c in api.contacts_named("W1 Contact")} == {
        "W1 Contact 0",
        "W1 Contact 1",
        "W1 Contact 2",
    }

    records[1]["name"] = "W1 Contact 1 renamed"
    run_target(config, contacts_input(records, state={"bookmark": 2}))
    second = by_key(results(config)[3:])
    assert {k: v["outcome"] for k, v in second.items()} == {
        '{"code": "W1-0"}': "skipped",
        '{"code": "W1-1"}': "updated",
        '{"code": "W1-2"}': "skipped",
    }
    changed = second['{"code": "W1-1"}']
    assert changed["sage_id"] == by_key(first)['{"code": "W1-1"}']["sage_id"]
    assert changed["operation"] == "update"
    names = sorted(c["name"] for c in api.contacts_named("W1 Contact"))
    assert names == ["W1 Contact 0", "W1 Contact 1 renamed", "W1 Contact 2"]


def test_results_line_has_every_field(config):
    run_target(config, contacts_input([contact("W2-1")]))
    (line,) = results(config)
    for field in (
        "stream",
        "operation",
        "source_key",
        "sage_id",
        "outcome",
        "http_status",
        "$dataCode",
        "$message",
        "$source",
        "x_request_id",
    ):
        assert field in line
    assert line["source_key"] == {"code": "W2-1"}
    assert line["stream"] == "customers"


def test_tombstone_deletes_and_a_replay_changes_nothing(config, api):
    created = contact("W3-1", "W3 gone")
    run_target(config, contacts_input([created]))
    tombstone = {"code": "W3-1", "_sdc_deleted_at": "2025-01-01T00:00:00Z"}
    run_target(config, contacts_input([tombstone]))
    lines = results(config)
    assert [(line["operation"], line["outcome"]) for line in lines] == [
        ("create", "created"),
        ("delete", "deleted"),
    ]
    assert api.contacts_named("W3 gone") == []
    # Both versions in one input, as a replay: only the newest counts, and it is applied.
    run_target(config, contacts_input([created, tombstone]))
    assert [line["outcome"] for line in results(config)[2:]] == ["skipped", "skipped"]
    assert "superseded" in str(results(config)[2]["$message"])
    assert api.contacts_named("W3 gone") == []


def test_delete_of_unknown_record_is_skipped(config):
    run_target(
        config, contacts_input([{"code": "nobody", "_sdc_deleted_at": "2025-01-01T00:00:00Z"}])
    )
    (line,) = results(config)
    assert line["outcome"] == "skipped"
    assert "no Sage record known" in line["$message"]


def test_sage_id_field_updates_a_record_directly(config, api):
    existing = api.first_id("/contacts")
    text = contacts_input([{"code": "X", "sage_id": existing, "notes": "set by target"}])
    run_target(config, text)
    (line,) = results(config)
    assert (line["operation"], line["outcome"], line["sage_id"]) == ("update", "updated", existing)
    assert api.get(f"/contacts/{existing}")["notes"] == "set by target"


def test_operations_setting_forces_the_operation(config, api):
    run_target(config, contacts_input([contact("W4-1", "W4 one")]))
    sage_id = results(config)[0]["sage_id"]
    forced = {**config, "operations": {"customers": "delete"}}
    run_target(forced, contacts_input([contact("W4-1", "W4 one")]))
    assert results(config)[-1]["outcome"] == "deleted"
    assert api.contacts_named("W4 one") == []
    update_only = {**config, "operations": {"customers": "update"}, "on_error": "continue"}
    run_target(update_only, contacts_input([contact("W4-2")]))
    line = results(config)[-1]
    assert line["outcome"] == "failed" and "no Sage id is known" in line["$message"]
    assert sage_id


def test_validation_error_names_stream_key_and_field_and_stops(config, api):
    records = [
        contact("W5-1", "W5 first"),
        {"code": "W5-2", "name": "W5 bad"},
        contact("W5-3", "W5 third"),
    ]
    with pytest.raises(TargetFailure) as failure:
        run_target(
            {**config, "max_parallel_writes": 1}, contacts_input(records, state={"after": "all"})
        )
    text = str(failure.value)
    assert "customers" in text and "W5-2" in text and "contact_type_ids" in text
    lines = results(config)
    assert [line["outcome"] for line in lines] == ["created", "failed"]
    assert lines[1]["$source"] == "contact_type_ids"
    assert lines[1]["http_status"] is None  # refused before any HTTP call
    assert [c["name"] for c in api.contacts_named("W5")] == ["W5 first"]


def test_no_state_beyond_a_failure(config):
    text = singer(
        [
            schema_msg("customers", CONTACT_SCHEMA, ["code"]),
            record_msg("customers", contact("W6-1")),
            state_msg({"n": 1}),
            record_msg("customers", {"code": "W6-2", "name": 5}),
            state_msg({"n": 2}),
        ]
    )
    import contextlib
    import io

    from target_sage.target import TargetSage

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(Exception):  # noqa: B017, PT011
        TargetSage(config={**config, "validate_records": False}).listen(
            file_input=io.StringIO(text)
        )
    assert [json.loads(x) for x in out.getvalue().splitlines()] == [{"n": 1}]


def test_on_error_continue_dead_letter_replays(config, api, tmp_path):
    ledger_account = api.first_id("/ledger_accounts", visible_in_sales=True)
    invoice_schema = {
        "type": "object",
        "properties": {
            "number": {"type": "string"},
            "contact_id": {"type": "string"},
            "date": {"type": "string", "format": "date-time"},
            "due_date": {"type": "string", "format": "date"},
            "invoice_lines": {"type": "array", "items": {"type": "object"}},
        },
    }
    invoice = {
        "number": "INV-W7",
        "contact_id": "W7-C",
        "date": "2025-03-01T00:00:00Z",
        "due_date": "2025-03-31",
        "invoice_lines": [
            {
                "description": "Work",
                "ledger_account_id": ledger_account,
                "unit_price": 10.5,
                "quantity": 2,
            }
        ],
    }
    cfg = {
        **config,
        "on_error": "continue",
        "stream_resources": {"customers": "contacts", "invoices": "sales_invoices"},
        "references": {"invoices": {"contact_id": "customers"}},
    }
    text = singer(
        [
            schema_msg("invoices", invoice_schema, ["number"]),
            record_msg("invoices", invoice),
            state_msg({"s": 1}),
        ]
    )
    assert run_target(cfg, text) == [{"s": 1}]  # recorded as failed: STATE goes on
    (line,) = results(cfg)
    assert line["outcome"] == "failed" and line["$source"] == "contact_id"
    assert "W7-C" in line["$message"] and "customers" in line["$message"]
    dead = Path(cfg["dead_letter_path"]).read_text()
    assert [json.loads(x)["type"] for x in dead.splitlines()] == ["SCHEMA", "RECORD"]

    # The customer arrives, then the dead letter is replayed as it is.
    run_target(cfg, contacts_input([contact("W7-C", "W7 customer")]))
    run_target({**cfg, "dead_letter_path": str(tmp_path / "dead-2.singer")}, dead)
    last = results(cfg)[-1]
    assert last["outcome"] == "created"
    created = api.get(f"/sales_invoices/{last['sage_id']}")
    customer = results(cfg)[-2]["sage_id"]
    assert created["contact"]["id"] == customer
    assert created["date"] == "2025-03-01"  # a date-time parsed by the SDK, sent as a date
    assert created["due_date"] == "2025-03-31"


def test_void_through_tombstone_uses_default_void_reason(config, api):
    invoice_id = next(
        i["id"] for i in api.all("/sales_invoices") if (i.get("status") or {}).get("id") == "UNPAID"
    )
    schema = {
        "type": "object",
        "properties": {"ref": {"type": "string"}, "sage_id": {"type": "string"}},
    }
    text = singer(
        [
            schema_msg("sales_invoices", schema, ["ref"]),
            record_msg(
                "sales_invoices",
                {"ref": "V1", "sage_id": invoice_id, "_sdc_deleted_at": "2025-01-01T00:00:00Z"},
            ),
        ]
    )
    with pytest.raises(TargetFailure, match="void_reason"):
        run_target(config, text)
    run_target({**config, "default_void_reason": "Raised in error"}, text)
    line = results(config)[-1]
    assert (line["operation"], line["outcome"]) == ("delete", "voided")
    voided = api.get(f"/sales_invoices/{invoice_id}")
    assert voided["status"]["id"] == "VOID" and voided["void_reason"] == "Raised in error"


def test_dry_run_writes_nothing(config, api, tmp_path):
    cfg = {**config, "dry_run": True}
    with pytest.raises(TargetFailure, match="dry run: 1 record"):
        run_target(
            cfg, contacts_input([contact("W8-1", "W8 dry"), {"code": "W8-2", "name": "W8 no type"}])
        )
    lines = sorted(results(cfg), key=lambda line: line["source_key"]["code"])
    assert [(line["operation"], line["outcome"], line.get("dry_run")) for line in lines] == [
        ("create", "skipped", True),
        ("create", "failed", None),
    ]
    assert lines[1]["$source"] == "contact_type_ids"
    assert api.contacts_named("W8") == []
    assert Ledger(Path(cfg["ledger_path"])).count() == 0


def test_unmapped_stream_is_an_error_before_any_write(config, api):
    text = singer(
        [
            schema_msg("customers", CONTACT_SCHEMA, ["code"]),
            record_msg("customers", contact("W9-1", "W9 never")),
            schema_msg("orders", {"type": "object", "properties": {}}, []),
        ]
    )
    with pytest.raises(RoutingError, match=r"orders.*stream_resources"):
        run_target({**config, "batch_size_rows": 10}, text)
    assert api.contacts_named("W9") == []


@pytest.mark.parametrize(
    ("setting", "value", "match"),
    [
        ("stream_resources", {"x": "countries"}, "stream_resources.x.*cannot be written"),
        ("stream_resources", {"x": "nothing"}, "stream_resources.x.*neither"),
        ("operations", {"x": "merge"}, "'operations'.*'x'"),
        ("on_error", "ignore", "on_error"),
        ("max_parallel_writes", 99, "max_parallel_writes"),
        ("references", {"x": {"contact_id": 3}}, "references"),
    ],
)
def test_bad_settings_name_the_setting(config, setting, value, match):
    import re

    from target_sage.target import TargetSage

    with pytest.raises(Exception) as failure:  # noqa: PT011 - SageConfigError or the SDK's
        TargetSage(config={**config, setting: value})
    text = str(failure.value) + " ".join(map(str, getattr(failure.value, "errors", [])))
    assert re.search(match, text), text
    assert isinstance(failure.value, SageConfigError) or "config" in text.lower()


class ConcurrencyProbe:
    """Counts requests in flight per (method, resource) through the shared client."""

    def __init__(self, monkeypatch) -> None:
        self.lock = threading.Lock()
        self.now: dict[tuple[str, str], int] = {}
        self.peak: dict[tuple[str, str], int] = {}
        self.order: list[tuple[str, str]] = []
        original = SageClient.request

        def request(client, method, path, **kwargs):
            key = (method.upper(), "/" + path.strip("/").split("/")[0])
            with self.lock:
                self.now[key] = self.now.get(key, 0) + 1
                self.peak[key] = max(self.peak.get(key, 0), self.now[key])
                self.order.append((method.upper(), path))
            try:
                return original(client, method, path, **kwargs)
            finally:
                with self.lock:
                    self.now[key] -= 1

        monkeypatch.setattr(SageClient, "request", request)


def test_sequential_posts_parallel_updates_and_per_record_order(
    sandbox_factory, connection_config, tmp_path, monkeypatch
):
    slow = sandbox_factory(latency_ms=25)
    api = SageAPI(slow)
    grant = slow.grant()
    conn = {
        **connection_config,
        "access_token": grant["access_token"],
        "refresh_token": grant["refresh_token"],
        "advanced_config": {
            **connection_config["advanced_config"],
            "api_url": slow.api_url,
            "token_url": slow.token_url,
        },
    }
    config = target_config(conn, tmp_path, api, max_parallel_writes=8)
    probe = ConcurrencyProbe(monkeypatch)
    records = [contact(f"P-{i}", f"P contact {i}") for i in range(16)]
    run_target(config, contacts_input(records))
    assert probe.peak[("POST", "/contacts")] == 1  # Sage forbids parallel POSTs here

    # Updates run in parallel; five successive versions of one record keep their order.
    updates = [contact(f"P-{i}", f"P contact {i} v2") for i in range(16)]
    for version in range(5):
        updates.append(contact("P-0", f"P contact 0 v{3 + version}"))
    run_target(config, contacts_input(updates))
    assert probe.peak[("PUT", "/contacts")] > 1
    assert sorted(c["name"] for c in api.contacts_named("P contact 0")) == ["P contact 0 v7"]
    assert len(api.contacts_named("P contact")) == 16


def test_secrets_never_written(config, connection_config, capfd):
    run_target(
        {**config, "on_error": "continue"},
        contacts_input([contact("W10-1"), {"code": "W10-2"}], state={"a": 1}),
    )
    captured = capfd.readouterr()
    files = Path(config["results_path"]).read_text() + Path(config["dead_letter_path"]).read_text()
    for secret in ("access_token", "refresh_token", "client_secret"):
        value = connection_config[secret]
        assert value not in files
        assert value not in captured.out + captured.err


def test_cli_on_the_sample_file(config, api, tmp_path):
    """`target-sage --config ... --input tests/data/target/customers.singer`, twice."""
    from tests.test_target_helpers import DATA, run_cli

    text = (DATA / "customers.singer").read_text()
    for _ in range(2):
        done = run_cli(config, text, tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        states = [json.loads(x) for x in done.stdout.splitlines()]
        assert states[-1]["bookmarks"]["customers"]["replication_key_value"] == (
            "2025-01-11T11:00:00Z"
        )
        assert "target-sage summary" in done.stderr
    names = sorted(c["name"] for c in api.contacts_named("Demo "))
    assert names == ["Demo Bakery Limited", "Demo Florists"]
    bakery = api.contacts_named("Demo Bakery")[0]
    assert bakery["credit_limit"] == "7500.0"  # Sage sends decimals as Rails strings
    outcomes = [line["outcome"] for line in results(config)]
    assert outcomes[:3] == ["created", "created", "created"]
    assert sorted(outcomes[3:5]) == ["deleted", "updated"]
    assert "created" not in outcomes[5:] and "deleted" not in outcomes[5:]


def test_sdk_stream_maps_route_and_shape_records(config, api):
    """An SDK stream map renames the stream to a Sage resource and builds a field."""
    schema = {
        "type": "object",
        "properties": {"id": {"type": "string"}, "company": {"type": "string"}},
    }
    cfg = {
        **config,
        "stream_resources": {},
        "stream_maps": {
            "crm_accounts": {"__alias__": "contacts", "name": "company", "company": "__NULL__"}
        },
        "on_error": "continue",
    }
    text = singer(
        [
            schema_msg("crm_accounts", schema, ["id"]),
            record_msg("crm_accounts", {"id": "A1", "company": "Mapped Co"}),
        ]
    )
    run_target(cfg, text)
    (line,) = results(cfg)
    assert line["stream"] == "contacts"
    # `contact_type_ids` is required by Sage and absent: a clear failure, not a crash.
    assert line["outcome"] == "failed" and line["$source"] == "contact_type_ids"


def test_references_resolve_within_one_input_whatever_the_stream_order(config, api):
    """Invoices refer to customers by source key; the customer arrives in the same input,
    after the invoices' SCHEMA: it is applied first, and its Sage id goes into the invoice."""
    account = api.first_id("/ledger_accounts")
    invoice_schema = {
        "type": "object",
        "properties": {
            "number": {"type": "string"},
            "customer": {"type": "string"},
            "date": {"type": "string"},
            "invoice_lines": {"type": "array"},
        },
    }
    cfg = {
        **config,
        "stream_resources": {"customers": "contacts", "invoices": "sales_invoices"},
        "references": {"invoices": {"contact_id": "customers"}},
        "stream_maps": {"invoices": {"contact_id": "customer", "customer": "__NULL__"}},
    }
    text = singer(
        [
            schema_msg("invoices", invoice_schema, ["number"]),
            schema_msg("customers", CONTACT_SCHEMA, ["code"]),
            record_msg("customers", contact("R-1", "R customer")),
            record_msg(
                "invoices",
                {
                    "number": "R-INV-1",
                    "customer": "R-1",
                    "date": "2025-05-01",
                    "invoice_lines": [
                        {"description": "Service", "ledger_account_id": account, "unit_price": 100}
                    ],
                },
            ),
            state_msg({"done": True}),
        ]
    )
    assert run_target(cfg, text) == [{"done": True}]
    lines = {line["stream"]: line for line in results(cfg)}
    assert lines["customers"]["outcome"] == "created"
    assert lines["invoices"]["outcome"] == "created"
    invoice = api.get(f"/sales_invoices/{lines['invoices']['sage_id']}")
    assert invoice["contact"]["id"] == lines["customers"]["sage_id"]


def test_lost_connection_stops_even_under_continue_and_a_rerun_completes(
    sandbox_factory, connection_config, tmp_path
):
    from tap_sage.sage.errors import SageNetworkError
    from tap_sage.sandbox.runner import SandboxProcess

    first = sandbox_factory()
    api = SageAPI(first)
    grant = first.grant()
    conn = {
        **connection_config,
        "access_token": grant["access_token"],
        "refresh_token": grant["refresh_token"],
        "advanced_config": {
            "api_url": first.api_url,
            "token_url": first.token_url,
            "max_retries": 1,
            "max_backoff": 0.1,
        },
    }
    config = target_config(conn, tmp_path, api, on_error="continue")
    text = contacts_input([contact(f"L-{i}", f"L contact {i}") for i in range(4)], state={"end": 1})
    first.stop()
    import contextlib
    import io

    from target_sage.target import TargetSage

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SageNetworkError):
        TargetSage(config=config).listen(file_input=io.StringIO(text))
    assert out.getvalue() == ""  # no STATE
    assert not Path(config["dead_letter_path"]).exists()  # nothing blamed on the records

    with SandboxProcess(first.db) as again:
        api_again = SageAPI(again)
        config["advanced_config"] = {
            **config["advanced_config"],
            "api_url": again.api_url,
            "token_url": again.token_url,
        }
        assert run_target(config, text) == [{"end": 1}]
        assert len(api_again.contacts_named("L contact")) == 4


def test_connection_test_flag(config, tmp_path):
    import subprocess
    import sys

    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from target_sage.target import TargetSage; TargetSage.cli()",
            "--config",
            str(path),
            "--test",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["ok"] is True
    assert [b["id"] for b in report["businesses"]] == [config["business_id"]]
    assert config["client_secret"] not in done.stdout + done.stderr


def test_singleton_settings_are_updated_in_place(config, api):
    schema = {
        "type": "object",
        "properties": {
            "default_note_on_invoice": {"type": "string"},
            "sales_invoice_number_prefix": {"type": "string"},
        },
    }
    record = {"default_note_on_invoice": "Thank you!", "sales_invoice_number_prefix": "TGT-"}
    text = singer(
        [schema_msg("invoice_settings", schema, []), record_msg("invoice_settings", record)]
    )
    run_target(config, text)
    line = results(config)[-1]
    assert (line["operation"], line["outcome"], line["http_status"]) == ("update", "updated", 200)
    settings = api.get("/invoice_settings")
    assert settings["default_note_on_invoice"] == "Thank you!"
    assert settings["sales_invoice_number_prefix"] == "TGT-"
    run_target(config, text)
    assert results(config)[-1]["outcome"] == "skipped"  # unchanged content is not sent again


def test_cli_failure_is_one_clear_line_and_exit_1(config, tmp_path):
    from tests.test_target_helpers import run_cli

    done = run_cli(
        config, contacts_input([{"code": "CLI-1", "name": "No type"}], state={"s": 1}), tmp_path
    )
    assert done.returncode == 1
    assert done.stdout == ""  # no STATE
    assert "Traceback" not in done.stderr
    stopped = [x for x in done.stderr.splitlines() if "target-sage stopped" in x]
    assert len(stopped) == 1
    assert "`customers`" in stopped[0] and "CLI-1" in stopped[0]
    assert "`contact_type_ids`" in stopped[0]
