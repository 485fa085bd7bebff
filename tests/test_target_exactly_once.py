"""Exactly once: SIGKILL the target at several points, run it again, count what Sage holds."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.test_target_helpers import (
    CONTACT_SCHEMA,
    SageAPI,
    contact,
    faulty_connection,
    killed_run,
    record_msg,
    results,
    run_cli,
    run_target,
    schema_msg,
    singer,
    state_msg,
    target_config,
)

PRICE_SCHEMA = {
    "type": "object",
    "properties": {
        "code": {"type": "string"},
        "name": {"type": "string"},
        "active": {"type": "boolean"},
    },
}


def mixed_input(tag: str) -> str:
    """6 contact creates (sequential POSTs, idempotency_id), 2 price types (no idempotency in
    Sage: intent + reconcile), an update and a delete; STATE after each part."""
    msgs: list[dict[str, Any]] = [schema_msg("customers", CONTACT_SCHEMA, ["code"])]
    msgs += [record_msg("customers", contact(f"{tag}-{i}", f"{tag} Contact {i}")) for i in range(6)]
    msgs.append(state_msg({"part": 1}))
    msgs.append(schema_msg("price_types", PRICE_SCHEMA, ["code"]))
    msgs += [
        record_msg("price_types", {"code": c, "name": f"{tag} price {c}", "active": True})
        for c in "AB"
    ]
    msgs.append(state_msg({"part": 2}))
    msgs.append(record_msg("customers", contact(f"{tag}-0", f"{tag} Contact 0 renamed")))
    msgs.append(
        record_msg("customers", {"code": f"{tag}-5", "_sdc_deleted_at": "2025-01-01T00:00:00Z"})
    )
    msgs.append(state_msg({"part": 3}))
    # time_extracted on every RECORD, as SDK taps write it: it orders the versions of a record
    # across batches, so a replay of the delete's input does not re-create contact 5 first.
    for minute, msg in enumerate(m for m in msgs if m["type"] == "RECORD"):
        msg["time_extracted"] = f"2025-03-01T10:{minute:02d}:00Z"
    return singer(msgs)


def assert_exactly_once(api: SageAPI, tag: str) -> None:
    names = sorted(c["name"] for c in api.contacts_named(f"{tag} Contact"))
    assert names == [f"{tag} Contact 0 renamed"] + [f"{tag} Contact {i}" for i in range(1, 5)]
    prices = sorted(
        p["name"]
        for p in api.all("/product_sales_price_types")
        if str(p.get("name", "")).startswith(tag)
    )
    assert prices == [f"{tag} price A", f"{tag} price B"]


@pytest.mark.parametrize(
    "kill_at",
    [
        "before_request:2",  # a contact POST about to go out
        "after_request:3",  # Sage created a contact, the ledger does not know yet
        "after_ledger:4",  # the ledger knows, results/STATE do not
        "after_request:7",  # a price type (no idempotency_id) created, not recorded
        "after_request:9",  # the update applied, not recorded
        "after_request:10",  # the delete applied, not recorded
    ],
)
def test_sigkill_anywhere_then_rerun_leaves_each_record_once(
    sandbox, connection_config, tmp_path, kill_at
):
    api = SageAPI(sandbox)
    point, n = kill_at.split(":")
    # Short: the contact reference (`<tag>-<i>`) is at most 10 characters in Sage.
    tag = "EO" + "".join(word[0] for word in point.split("_")) + n
    config = target_config(
        connection_config,
        tmp_path,
        api,
        max_parallel_writes=4,
        stream_resources={"customers": "contacts", "price_types": "product_sales_price_types"},
    )
    text = mixed_input(tag)
    killed = killed_run(config, text, tmp_path, kill_at)
    states = [json.loads(x)["part"] for x in killed.stdout.splitlines() if x.startswith("{")]
    assert 3 not in states  # never a STATE past what was applied

    again = run_cli(config, text, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout.splitlines()[-1]) == {"part": 3}
    assert_exactly_once(api, tag)
    # A third run of the same input sends nothing: every record is at its newest already.
    before = len(results(config))
    assert run_cli(config, text, tmp_path).returncode == 0
    third = results(config)[before:]
    assert {line["outcome"] for line in third} == {"skipped"}
    assert_exactly_once(api, tag)


def test_faults_and_committed_500s_still_exactly_once(sandbox_factory, connection_config, tmp_path):
    faulty, api, conn = faulty_connection(
        sandbox_factory, connection_config, 0.3, "--fault-seed", "11"
    )
    config = target_config(
        conn,
        tmp_path,
        api,
        max_parallel_writes=4,
        stream_resources={"customers": "contacts", "price_types": "product_sales_price_types"},
    )
    tag = "FAULT"
    run_target(config, mixed_input(tag))
    assert_exactly_once(api, tag)
    log = faulty.log_path.read_text()
    assert " 500 " in log or "500" in log  # faults were injected


def test_a_second_process_waits_for_the_run_holding_the_ledger(
    sandbox, connection_config, tmp_path
):
    import os
    import subprocess
    import sys

    from filelock import FileLock

    api = SageAPI(sandbox)
    config = target_config(connection_config, tmp_path, api)
    config_path = tmp_path / "c.json"
    config_path.write_text(json.dumps(config))
    input_path = tmp_path / "in.singer"
    input_path.write_text(
        singer(
            [
                schema_msg("customers", CONTACT_SCHEMA, ["code"]),
                record_msg("customers", contact("LK-1", "LK waiter")),
            ]
        )
    )
    held = FileLock(config["ledger_path"] + ".lock")
    held.acquire()
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from target_sage.target import TargetSage; TargetSage.cli()",
                "--config",
                str(config_path),
                "--input",
                str(input_path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        assert proc.stderr is not None
        for line in proc.stderr:
            if "Another target-sage run" in line:
                break
        assert api.contacts_named("LK waiter") == []  # blocked before its first write
    finally:
        held.release()
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert len(api.contacts_named("LK waiter")) == 1


@pytest.mark.parametrize("seed", [5, 9, 13])
def test_procedures_under_faults_act_once(sandbox_factory, connection_config, tmp_path, seed):
    """Release, convert, reissue and upload through a sandbox that fails 30% of requests
    (including writes committed and then answered 500, and dropped connections)."""
    import base64

    _faulty, api, conn = faulty_connection(
        sandbox_factory, connection_config, 0.3, "--fault-seed", str(seed)
    )
    config = target_config(conn, tmp_path, api)
    account = api.first_id("/ledger_accounts")
    customer = api.first_id("/contacts", contact_type_id="CUSTOMER")
    draft = api.post(
        "/sales_invoices",
        {
            "sales_invoice": {
                "contact_id": customer,
                "date": "2025-02-01",
                "status_id": "DRAFT",
                "invoice_lines": [
                    {"description": "x", "ledger_account_id": account, "unit_price": 5}
                ],
            }
        },
    )
    quote = next(q for q in api.all("/sales_quotes") if q["status"]["id"] == "PENDING")
    journal = api.get("/journals", items_per_page=1, attributes="all")["$items"][0]
    any_schema = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "ref": {"type": "string"},
            "file_base64": {"type": "string"},
            "file_name": {"type": "string"},
            "contact_id": {"type": "string"},
        },
    }
    text = singer(
        [
            schema_msg("release_sales_invoices", any_schema, ["id"]),
            record_msg("release_sales_invoices", {"id": draft["id"]}),
            schema_msg("convert_sales_quotes", any_schema, ["id"]),
            record_msg("convert_sales_quotes", {"id": quote["id"]}),
            schema_msg("reissue_journals", any_schema, ["id"]),
            record_msg("reissue_journals", {"id": journal["id"]}),
            schema_msg("upload_attachments", any_schema, ["ref"]),
            record_msg(
                "upload_attachments",
                {
                    "ref": "F1",
                    "file_name": "fault-proof.txt",
                    "file_base64": base64.b64encode(b"x").decode(),
                    "contact_id": customer,
                },
            ),
        ]
    )
    run_target(config, text)
    run_target(config, text)  # and once more: nothing happens twice
    assert api.get(f"/sales_invoices/{draft['id']}")["status"]["id"] == "UNPAID"
    invoiced = [
        i
        for i in api.all("/sales_invoices")
        if (i.get("original_quote_estimate") or {}).get("id") == quote["id"]
    ]
    assert len(invoiced) == 1
    assert len([j for j in api.all("/journals") if j.get("reference") == journal["reference"]]) == 1
    assert len([a for a in api.all("/attachments") if a.get("file_name") == "fault-proof.txt"]) == 1
    assert {line["outcome"] for line in results(config)} <= {"executed", "skipped"}


def test_reconciliation_never_adopts_an_older_lookalike(sandbox, connection_config, tmp_path):
    """A pending intent (a run killed just before its POST) for a price type called "Trade",
    which the business has had for long: the re-run creates ours instead of adopting theirs."""
    from pathlib import Path

    from target_sage.ledger import Ledger

    api = SageAPI(sandbox)
    config = target_config(
        connection_config,
        tmp_path,
        api,
        stream_resources={"price_types": "product_sales_price_types"},
    )
    before = [p for p in api.all("/product_sales_price_types") if p["name"] == "Trade"]
    assert len(before) == 1
    ledger = Ledger(Path(config["ledger_path"]))
    ledger.record_intent(api.business_id, "price_types", '["T"]', "product_sales_price_types", "h")
    ledger.close()
    run_target(
        config,
        singer(
            [
                schema_msg("price_types", PRICE_SCHEMA, ["code"]),
                record_msg("price_types", {"code": "T", "name": "Trade", "active": True}),
            ]
        ),
    )
    (line,) = results(config)
    assert line["outcome"] == "created"
    assert line["sage_id"] != before[0]["id"]
    assert len([p for p in api.all("/product_sales_price_types") if p["name"] == "Trade"]) == 2
