"""Execute procedures against the sandbox: void, release, reissue, convert, attachments."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tap_sage.sage import catalogue
from target_sage.procedures import PROCEDURES, about_text
from target_sage.work import TargetFailure
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


@pytest.fixture
def api(sandbox) -> SageAPI:
    return SageAPI(sandbox)


@pytest.fixture
def config(connection_config, tmp_path, api) -> dict[str, Any]:
    return target_config(connection_config, tmp_path, api)


def proc_input(stream: str, records: list[dict[str, Any]], keys: tuple[str, ...] = ("id",)) -> str:
    props = {k: {"type": ["string", "boolean", "null"]} for r in records for k in r}
    return singer(
        [schema_msg(stream, {"type": "object", "properties": props}, list(keys))]
        + [record_msg(stream, r) for r in records]
    )


def with_status(api: SageAPI, path: str, status: str) -> str:
    return next(i["id"] for i in api.all(path) if (i.get("status") or {}).get("id") == status)


def test_every_procedure_lists_inputs_and_outputs_in_about():
    text = about_text()
    for name, proc in PROCEDURES.items():
        assert f"`{name}`" in text
        for inp in proc.inputs:
            assert f"`{inp.name}`" in text
    assert "Outputs:" in text
    from target_sage.target import TargetSage

    assert "void_sales_invoices" in (TargetSage.__doc__ or "")


def test_void_invoice_and_credit_note_once(config, api):
    invoice = with_status(api, "/sales_invoices", "UNPAID")
    note = with_status(api, "/sales_credit_notes", "UNPAID")
    run_target(
        config, proc_input("void_sales_invoices", [{"id": invoice, "void_reason": "Duplicate"}])
    )
    run_target(
        {**config, "default_void_reason": "Wrong customer"},
        proc_input("void_sales_credit_notes", [{"id": note}]),
    )
    assert [(line["stream"], line["outcome"]) for line in results(config)] == [
        ("void_sales_invoices", "voided"),
        ("void_sales_credit_notes", "voided"),
    ]
    assert api.get(f"/sales_invoices/{invoice}")["void_reason"] == "Duplicate"
    assert api.get(f"/sales_credit_notes/{note}")["status"]["id"] == "VOID"
    run_target(
        config, proc_input("void_sales_invoices", [{"id": invoice, "void_reason": "Duplicate"}])
    )
    assert results(config)[-1]["outcome"] == "skipped"


def test_release_a_draft_once_and_skip_a_non_draft(config, api):
    contact_id = api.first_id("/contacts", contact_type_id="CUSTOMER")
    account = api.first_id("/ledger_accounts")
    draft = api.post(
        "/sales_invoices",
        {
            "sales_invoice": {
                "contact_id": contact_id,
                "date": "2025-02-01",
                "status_id": "DRAFT",
                "invoice_lines": [
                    {"description": "x", "ledger_account_id": account, "unit_price": 5}
                ],
            }
        },
    )
    assert draft["status"]["id"] == "DRAFT"
    paid = with_status(api, "/sales_invoices", "PAID")
    run_target(config, proc_input("release_sales_invoices", [{"id": draft["id"]}, {"id": paid}]))
    outcomes = {line["sage_id"]: line["outcome"] for line in results(config)}
    assert outcomes == {draft["id"]: "executed", paid: "skipped"}
    assert api.get(f"/sales_invoices/{draft['id']}")["status"]["id"] == "UNPAID"
    run_target(config, proc_input("release_sales_invoices", [{"id": draft["id"]}]))
    assert results(config)[-1]["outcome"] == "skipped"


def test_reissue_journal_killed_after_the_post_then_rerun_reissues_once(config, api, tmp_path):
    journal = api.get("/journals", items_per_page=1, attributes="all")["$items"][0]
    text = proc_input("reissue_journals", [{"id": journal["id"]}])
    # The first write is the reissue POST (reads are not kill points).
    killed_run(config, text, tmp_path, "after_request:1")
    again = run_cli(config, text, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    line = results(config)[-1]
    assert line["outcome"] == "executed"
    assert line["output"]["original_journal_id"] == journal["id"]
    same = [j for j in api.all("/journals") if j.get("reference") == journal["reference"]]
    assert [j["id"] for j in same] == [line["sage_id"]]  # the original is gone, one copy


@pytest.mark.parametrize("kind", ["sales_quotes", "sales_estimates"])
def test_convert_quote_or_estimate_to_invoice_once(config, api, kind):
    source = (
        with_status(api, f"/{kind}", "PENDING")
        if kind == "sales_quotes"
        else next(
            i["id"]
            for i in api.all(f"/{kind}")
            if (i.get("status") or {}).get("id") not in ("INVOICED", "DECLINED")
        )
    )
    stream = f"convert_{kind}"
    text = proc_input(stream, [{"id": source, "date": "2025-04-01"}])
    run_target(config, text)
    line = results(config)[-1]
    assert line["outcome"] == "executed", line
    invoice = api.get(f"/sales_invoices/{line['sage_id']}")
    assert invoice["original_quote_estimate"]["id"] == source
    assert invoice["date"] == "2025-04-01"
    assert line["output"] == {"sales_invoice_id": line["sage_id"]}
    assert api.get(f"/{kind}/{source}")["status"]["id"] == "INVOICED"
    run_target(config, text)
    again = results(config)[-1]
    assert again["outcome"] == "skipped"
    assert again["sage_id"] == line["sage_id"]
    assert again["output"] == {"sales_invoice_id": line["sage_id"]}
    assert again["$message"] == "already invoiced (ledger)"


def test_upload_from_path_and_base64_then_download(config, api, tmp_path, monkeypatch):
    from tap_sage.sage.client import SageClient

    sent: list[dict[str, Any]] = []
    original = SageClient.request

    def spy(client, method, path, **kwargs):
        if method == "POST" and path == "/attachments":
            sent.append(kwargs["json_body"]["attachment"])
        return original(client, method, path, **kwargs)

    monkeypatch.setattr(SageClient, "request", spy)
    contact_id = api.first_id("/contacts")
    invoice_id = api.first_id("/sales_invoices")
    file = tmp_path / "contract.pdf"
    file.write_bytes(b"%PDF-1.4 sandbox contract")
    records = [
        {
            "ref": "up-1",
            "file_path": str(file),
            "contact_id": contact_id,
            "description": "Signed contract",
        },
        {
            "ref": "up-2",
            "file_base64": base64.b64encode(b"hello, receipt").decode(),
            "file_name": "receipt.txt",
            "sales_invoice_id": invoice_id,
        },
    ]
    text = proc_input("upload_attachments", records, keys=("ref",))
    config = {**config, "upload_folder": str(tmp_path)}
    run_target(config, text)
    lines = {line["source_key"]["ref"]: line for line in results(config)}
    assert {k: v["outcome"] for k, v in lines.items()} == {"up-1": "executed", "up-2": "executed"}
    first = api.get(f"/attachments/{lines['up-1']['sage_id']}")
    assert first["file_name"] == "contract.pdf"
    assert first["file_size"] == len(b"%PDF-1.4 sandbox contract")
    links = {
        b["file_name"]: (b["attachment_context_type_id"], b["attachment_context_id"]) for b in sent
    }
    assert links == {
        "contract.pdf": ("CONTACT", contact_id),
        "receipt.txt": ("SALES_INVOICE", invoice_id),
    }
    # Attachments are not in Sage's idempotency guide: no idempotency_id, intent and lookups.
    assert (
        not any("idempotency_id" in b for b in sent)
        or catalogue.resource("attachments").idempotency
    )
    run_target(config, text)  # again: nothing uploaded twice
    assert [line["outcome"] for line in results(config)[2:]] == ["skipped", "skipped"]

    folder = tmp_path / "downloads"
    run_target(
        config,
        proc_input(
            "download_attachments",
            [
                {"id": lines["up-1"]["sage_id"], "folder": str(folder)},
                {"id": lines["up-2"]["sage_id"], "folder": str(folder)},
            ],
        ),
    )
    assert (folder / "contract.pdf").read_bytes() == b"%PDF-1.4 sandbox contract"
    assert (folder / "receipt.txt").read_bytes() == b"hello, receipt"
    assert results(config)[-1]["output"]["path"].startswith(str(folder))


@pytest.mark.parametrize(
    ("stream", "record", "field"),
    [
        ("void_sales_invoices", {"void_reason": "x"}, "id"),
        ("upload_attachments", {"file_name": "a.txt", "contact_id": "c"}, "file_path"),
        ("upload_attachments", {"file_path": "/nonexistent/file", "contact_id": "c"}, "file_path"),
        ("upload_attachments", {"file_base64": "bm90", "file_name": "a.txt"}, "contact_id"),
        (
            "upload_attachments",
            {"file_base64": "###", "file_name": "a", "contact_id": "c"},
            "file_base64",
        ),
        ("reissue_journals", {"id": "no-such-journal"}, None),
    ],
)
def test_bad_procedure_inputs_are_clear_errors(config, stream, record, field):
    text = proc_input(stream, [{"key": "k1", **record}], keys=("key",))
    with pytest.raises(TargetFailure) as failure:
        run_target(config, text)
    assert stream in str(failure.value) and "k1" in str(failure.value)
    line = results(config)[-1]
    assert line["outcome"] == "failed"
    if field:
        assert line["$source"] == field
    else:
        assert line["http_status"] == 404


def test_dead_letter_of_a_procedure_is_replayable(config, api, tmp_path):
    cfg = {**config, "on_error": "continue"}
    run_target(cfg, proc_input("void_sales_invoices", [{"id": "missing"}]))
    dead = Path(cfg["dead_letter_path"]).read_text().splitlines()
    assert [json.loads(x)["type"] for x in dead] == ["SCHEMA", "RECORD"]


def test_upload_reads_local_files_only_inside_upload_folder(config, api, tmp_path):
    contact_id = api.first_id("/contacts")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "ok.txt").write_bytes(b"inside")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"outside")
    (allowed / "link.txt").symlink_to(secret)
    (allowed / "sub").symlink_to(tmp_path)
    records = [
        {"ref": "a", "file_path": "ok.txt", "contact_id": contact_id},
        {"ref": "b", "file_path": str(secret), "contact_id": contact_id},
        {"ref": "c", "file_path": "link.txt", "contact_id": contact_id},
        {"ref": "d", "file_path": "sub/secret.txt", "contact_id": contact_id},
        {"ref": "e", "file_path": "../secret.txt", "contact_id": contact_id},
    ]
    text = proc_input("upload_attachments", records, keys=("ref",))
    # No upload_folder: file_path is refused, whatever the path.
    run_target({**config, "on_error": "continue"}, text)
    refused = results(config)
    assert {x["outcome"] for x in refused} == {"failed"}
    assert all("upload_folder" in x["$message"] for x in refused)
    run_target({**config, "on_error": "continue", "upload_folder": str(allowed)}, text)
    lines = {x["source_key"]["ref"]: x for x in results(config)[len(refused) :]}
    assert lines["a"]["outcome"] == "executed"
    for ref in "bcde":
        assert lines[ref]["outcome"] == "failed", ref
        assert "outside `upload_folder`" in lines[ref]["$message"], ref
    sizes = {
        a.get("file_size")
        for a in api.all("/attachments")
        if a.get("file_name") in ("ok.txt", "secret.txt", "link.txt")
    }
    assert sizes == {len(b"inside")}


def test_download_makes_hostile_names_plain_and_fails_only_that_record(config, api, tmp_path):
    import base64

    from target_sage.procedures import safe_file_name

    assert safe_file_name("..", "x") == "x"
    assert safe_file_name("", "x") == "x"
    assert safe_file_name("../../etc/passwd", "x") == "passwd"
    assert safe_file_name("a\\b\x00c.txt", "x") == "bc.txt"
    assert safe_file_name(".hidden", "x") == "hidden"
    contact_id = api.first_id("/contacts")
    up = proc_input(
        "upload_attachments",
        [
            {
                "ref": "h1",
                "file_base64": base64.b64encode(b"payload").decode(),
                "file_name": "report.txt",
                "contact_id": contact_id,
            }
        ],
        keys=("ref",),
    )
    run_target(config, up)
    attachment = results(config)[-1]["sage_id"]
    folder = tmp_path / "dl"
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    down = proc_input(
        "download_attachments",
        [
            {"id": attachment, "folder": str(folder), "file_name": "../../escape.txt"},
            {"id": attachment, "folder": str(folder), "file_name": ".."},
            {"id": attachment, "folder": str(blocker), "file_name": "x.txt"},
            {"id": attachment, "folder": str(folder), "file_name": "fine.txt"},
        ],
        keys=("id", "file_name"),
    )
    before = len(results(config))
    run_target({**config, "on_error": "continue"}, down)
    outcomes = {x["source_key"]["file_name"]: x["outcome"] for x in results(config)[before:]}
    assert outcomes == {
        "../../escape.txt": "executed",
        "..": "executed",
        "x.txt": "failed",  # its folder is a file: that record fails, the run goes on
        "fine.txt": "executed",
    }
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["escape.txt", f"attachment-{attachment}", "fine.txt"]
    )
    assert not (tmp_path / "escape.txt").exists()
    assert (folder / "fine.txt").read_bytes() == b"payload"
