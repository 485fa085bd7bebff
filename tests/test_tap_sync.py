"""tap-sage against the sandbox over real HTTP: full and incremental syncs, deletions,
partitions, filters, skipped streams, concurrency, faults, SIGKILL, secrets, CLI."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests

from tap_sage.sandbox.runner import SandboxProcess
from tests.tap_helpers import TIMEOUT, Run, live_records, run_tap, tap_command

BIG = ("contacts", "sales_invoices")  # multi-page at page_size 50; one incremental without
# sort, one with sort=updated_at and more than a page of invoices sharing one timestamp


def business_ids(db: Path) -> list[str]:
    conn = sqlite3.connect(str(db))
    try:
        return [str(r[0]) for r in conn.execute("SELECT id FROM businesses ORDER BY position")]
    finally:
        conn.close()


def with_settings(config: dict[str, Any], **settings: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(config))
    page_size = settings.pop("page_size", None)
    if page_size:
        out["advanced_config"]["page_size"] = page_size
    out.update(settings)
    return out


def keyed(run: Run, stream: str) -> Counter[tuple[str, str]]:
    return Counter(
        (r["business_id"], r["id"]) for r in run.records(stream) if not r.get("_sdc_deleted_at")
    )


def expected(db: Path, stream: str) -> Counter[tuple[str, str]]:
    return Counter((b, i) for b in business_ids(db) for i in live_records(db, stream, b))


def test_full_then_incremental_sync(sandbox: SandboxProcess, connection_config, tmp_path: Path) -> None:  # fmt: skip
    config = with_settings(connection_config, page_size=50)
    streams = [*BIG, "ledger_accounts", "business_settings", "currencies"]
    first = run_tap(tmp_path, config, streams, tag="first")
    for stream in (*BIG, "ledger_accounts", "currencies"):
        assert keyed(first, stream) == expected(sandbox.db, stream), stream  # all, once each
    settings = first.records("business_settings")
    assert sorted(r["business_id"] for r in settings) == sorted(business_ids(sandbox.db))
    assert all(r["business_id"] in business_ids(sandbox.db) for r in first.records())
    # one bookmark per business partition, for the incremental streams only
    bookmarks = first.state["bookmarks"]
    for stream in (*BIG, "ledger_accounts"):
        parts = bookmarks[stream]["partitions"]
        assert sorted(p["context"]["business_id"] for p in parts) == sorted(
            business_ids(sandbox.db)
        )
        assert all(p["replication_key"] == "updated_at" for p in parts)
        assert all(p["replication_key_value"] for p in parts)
    assert all("replication_key_value" not in p for p in bookmarks["currencies"]["partitions"])

    # nothing changed: the next run reads only the last second of each partition again
    second = run_tap(tmp_path, config, streams, state=first.state, tag="second")
    for stream in BIG:
        again = second.records(stream)
        assert len(again) < len(first.records(stream)) / 4
        for record in again:
            part = next(
                p
                for p in first.state["bookmarks"][stream]["partitions"]
                if p["context"]["business_id"] == record["business_id"]
            )
            assert record["updated_at"] >= part["replication_key_value"]


def test_changes_and_deletions_reach_the_next_run(sandbox: SandboxProcess, connection_config, tmp_path: Path) -> None:  # fmt: skip
    config = with_settings(connection_config, page_size=50)
    first = run_tap(tmp_path, config, ["contacts"], tag="first")
    business = business_ids(sandbox.db)[0]
    api = Api(sandbox, business)
    ids = sorted(live_records(sandbox.db, "contacts", business))
    assert api.put(f"/contacts/{ids[0]}", {"contact": {"name": "Renamed Ltd"}}).status_code == 200
    assert api.delete(f"/contacts/{ids[1]}").status_code == 204
    created = api.post(
        "/contacts", {"contact": {"name": "New Ltd", "contact_type_ids": ["CUSTOMER"]}}
    )
    assert created.status_code == 201, created.text
    new_id = created.json()["id"]

    second = run_tap(tmp_path, config, ["contacts"], state=first.state, tag="second")
    by_id = {r["id"]: r for r in second.records("contacts") if not r.get("_sdc_deleted_at")}
    assert by_id[ids[0]]["name"] == "Renamed Ltd"
    assert new_id in by_id
    tombstones = [r for r in second.records("contacts") if r.get("_sdc_deleted_at")]
    assert [(t["id"], t["business_id"]) for t in tombstones] == [(ids[1], business)]

    # include_deleted off: the deletion is still taken into account, not emitted
    quiet = with_settings(config, include_deleted=False)
    third = run_tap(tmp_path, quiet, ["contacts"], state=first.state, tag="third")
    assert not [r for r in third.records("contacts") if r.get("_sdc_deleted_at")]


def test_a_deletion_moves_the_bookmark(sandbox: SandboxProcess, connection_config, tmp_path: Path) -> None:  # fmt: skip
    """Deletions newer than every update move the bookmark, so later runs do not ask for
    the same tombstones again (only the last second's, the inclusive margin)."""
    first = run_tap(tmp_path, connection_config, ["contacts"], tag="first")
    business = business_ids(sandbox.db)[0]
    api = Api(sandbox, business)
    ids = sorted(live_records(sandbox.db, "contacts", business))
    assert api.delete(f"/contacts/{ids[0]}").status_code == 204
    time.sleep(1.1)  # the two deletions fall in different seconds
    assert api.delete(f"/contacts/{ids[1]}").status_code == 204
    time.sleep(2.1)  # the bookmark is capped at the scan's start (minus a second)

    second = run_tap(tmp_path, connection_config, ["contacts"], state=first.state, tag="second")
    tombs = [r["id"] for r in second.records("contacts") if r.get("_sdc_deleted_at")]
    assert sorted(tombs) == sorted([ids[0], ids[1]])

    third = run_tap(tmp_path, connection_config, ["contacts"], state=second.state, tag="third")
    again = [r["id"] for r in third.records("contacts") if r.get("_sdc_deleted_at")]
    assert ids[0] not in again  # older than the bookmark's last second: not asked for again
    assert set(again) <= {ids[1]}


def test_business_ids_choose_the_partitions(sandbox: SandboxProcess, connection_config, tmp_path: Path) -> None:  # fmt: skip
    first, second = business_ids(sandbox.db)
    run = run_tap(tmp_path, with_settings(connection_config, business_ids=[second]), ["contacts"])
    assert {r["business_id"] for r in run.records()} == {second}
    bad = run_tap(tmp_path, with_settings(connection_config, business_ids=["nope"]),
                  ["contacts"], tag="bad", check=False)  # fmt: skip
    assert bad.returncode != 0
    assert "business_ids" in bad.stderr
    assert "nope" in bad.stderr
    assert first in bad.stderr  # says which businesses it can reach


def test_unreachable_streams_are_skipped_with_one_warning(sandbox: SandboxProcess, connection_config, tmp_path: Path) -> None:  # fmt: skip
    # stock_items: not in Start (business 2 is US Start); cis_settings: GB only
    streams = ["stock_items", "cis_settings", "currencies", "tax_determinations"]
    run = run_tap(tmp_path, connection_config, streams)
    gb, us = business_ids(sandbox.db)
    assert {r["business_id"] for r in run.records("stock_items")} == {gb}
    assert {r["business_id"] for r in run.records("cis_settings")} == {gb}
    assert {r["business_id"] for r in run.records("currencies")} == {gb, us}
    warnings = [line for line in run.stderr.splitlines() if "Skipping stream" in line]
    for stream in ("stock_items", "cis_settings"):
        (line,) = [w for w in warnings if f"'{stream}'" in w]
        assert us in line
        assert "403" in line
        assert "not available" in line
    # listed only with a required `usage`: read once per usage (tests/test_tap_progress.py),
    # and not documented for the US: skipped there, once per usage
    assert {r["business_id"] for r in run.records("tax_determinations")} == {gb}
    needs = [w for w in warnings if "'tax_determinations'" in w]
    assert len(needs) == 2
    assert all(us in w and "403" in w for w in needs)
    assert len(warnings) == 4


def test_stream_filters(sandbox: SandboxProcess, connection_config, tmp_path: Path) -> None:
    config = with_settings(
        connection_config,
        stream_filters={"sales_invoices": {"from_date": "2026-01-01", "status_id": "PAID"}},
    )
    run = run_tap(tmp_path, config, ["sales_invoices"])
    records = run.records("sales_invoices")
    assert records
    assert all(r["date"] >= "2026-01-01" and r["status"]["id"] == "PAID" for r in records)


@pytest.mark.parametrize(
    ("filters", "words"),
    [
        ({"sales_invoices": {"colour": "red"}}, ["stream_filters.sales_invoices.colour", "status_id"]),
        ({"sales_invoice": {"status_id": "PAID"}}, ["stream_filters.sales_invoice", "no list stream"]),
        ({"sales_invoices": {"from_date": "yesterday"}}, ["from_date", "'yesterday'", "date"]),
        ({"contacts": {"sort": "name"}}, ["stream_filters.contacts.sort", "set by the tap"]),
        ({"products": {"active": "maybe"}}, ["stream_filters.products.active", "true or false"]),
    ],
)  # fmt: skip
def test_bad_stream_filters_are_named(connection_config, tmp_path: Path, filters, words) -> None:
    config = with_settings(connection_config, stream_filters=filters)
    run = run_tap(tmp_path, config, ["contacts"], check=False)
    assert run.returncode != 0
    assert not run.records()
    for word in words:
        assert word in run.stderr


def test_concurrency_changes_neither_output_nor_bookmarks(sandbox: SandboxProcess, connection_config, tmp_path: Path) -> None:  # fmt: skip
    runs = []
    for workers in (1, 4):
        config = with_settings(connection_config, page_size=50, max_concurrency=workers)
        run = run_tap(tmp_path, config, BIG, tag=f"c{workers}")
        runs.append(
            ([(m["stream"], m["record"]) for m in run.messages if m["type"] == "RECORD"],
             run.state)
        )  # fmt: skip
    assert runs[0] == runs[1]


def test_faults_do_not_change_the_records(sandbox_factory, connection_config, tmp_path: Path) -> None:  # fmt: skip
    streams = ["contacts", "sales_invoices", "ledger_accounts", "business_settings"]
    clean_box = sandbox_factory()
    faulty_box = sandbox_factory(fault_rate=0.2, extra_args=["--fault-seed", "4"])
    results = []
    for box in (clean_box, faulty_box):
        granted = box.grant()
        config = with_settings(
            connection_config,
            connection_name=f"faults-{box.url.rsplit(':', 1)[1]}",
            access_token=granted["access_token"],
            refresh_token=granted["refresh_token"],
            client_id=granted["client_id"],
            client_secret=granted["client_secret"],
            oauth_settings_location=str(tmp_path / f"{box.url.rsplit(':', 1)[1]}.json"),
            advanced_config={"api_url": box.api_url, "token_url": box.token_url,
                             "page_size": 100, "max_backoff": 2},
        )  # fmt: skip
        run = run_tap(tmp_path, config, streams, tag=box.url.rsplit(":", 1)[1])
        results.append(run)
    clean, faulty = results
    assert "Retrying" in faulty.stderr  # faults did happen
    assert sorted(map(json.dumps, clean.records())) == sorted(map(json.dumps, faulty.records()))


def test_sigkill_then_resume_from_the_last_state(sandbox_factory, connection_config, tmp_path: Path) -> None:  # fmt: skip
    box = sandbox_factory(latency_ms=15)
    granted = box.grant()
    config = with_settings(
        connection_config,
        access_token=granted["access_token"],
        refresh_token=granted["refresh_token"],
        oauth_settings_location=str(tmp_path / "kill.json"),
        advanced_config={"api_url": box.api_url, "token_url": box.token_url, "page_size": 20},
        max_concurrency=2,
    )
    streams = ["contacts", "products", "sales_invoices", "contact_payments"]
    proc = subprocess.Popen(
        tap_command(tmp_path, config, streams, tag="killed"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    lines: list[bytes] = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(b'{"type":"STATE"') and b'"progress"' in line:
            break  # mid-partition: some partitions done, one checkpointed, others not begun
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=TIMEOUT)
    killed = Run(b"".join(lines).decode(), "", -9)
    assert killed.states
    resumed = run_tap(tmp_path, config, streams, state=killed.state, tag="resumed")
    assert "Resuming sales_invoices" in resumed.stderr  # from the checkpoint, not from scratch
    for stream in streams:
        got = keyed(killed, stream) + keyed(resumed, stream)
        missing = set(expected(box.db, stream)) - set(got)
        assert not missing, (stream, sorted(missing)[:3])
    total = sum(expected(box.db, "sales_invoices").values())
    assert len(resumed.records("sales_invoices")) < total


def test_secrets_never_reach_output_state_or_log(sandbox: SandboxProcess, connection_config, tmp_path: Path) -> None:  # fmt: skip
    config = with_settings(connection_config, page_size=50)
    run = run_tap(tmp_path, config, ["contacts", "business_settings"])
    secrets = [config[k] for k in ("client_secret", "access_token", "refresh_token")]
    text = run.stdout + run.stderr
    for secret in secrets:
        assert secret not in text
    # a wrongly typed secret is named in the error, its value is not shown
    bad = with_settings(config, client_secret=12345678987654321)
    failed = run_tap(tmp_path, bad, ["contacts"], tag="bad", check=False)
    assert failed.returncode != 0
    assert "client_secret" in failed.stderr
    assert "12345678987654321" not in failed.stderr


def test_stream_maps_and_flattening(sandbox: SandboxProcess, connection_config, tmp_path: Path) -> None:  # fmt: skip
    config = with_settings(
        connection_config,
        stream_maps={"contacts": {"name_upper": "name.upper()", "email": "__NULL__"}},
        flattening_enabled=True,
        flattening_max_depth=1,
    )
    run = run_tap(tmp_path, config, ["contacts"])
    records = run.records("contacts")
    assert records
    assert all(r["name_upper"] == r["name"].upper() for r in records)
    assert all("email" not in r for r in records)
    assert any(k.startswith("contact_types") or "__" in k for k in records[0])
    schema = next(m for m in run.messages if m["type"] == "SCHEMA")
    assert "name_upper" in schema["schema"]["properties"]


def test_cli_about_discover_and_test(connection_config, tmp_path: Path) -> None:
    about = subprocess.run(
        [sys.executable, "-m", "tap_sage.tap", "--about", "--format", "json"],
        capture_output=True, text=True, check=True, timeout=TIMEOUT,
    )  # fmt: skip
    info = json.loads(about.stdout)
    settings = info["settings"]["properties"]
    for name in ("start_date", "business_ids", "include_deleted", "stream_filters",
                 "max_concurrency", "client_id", "refresh_token", "advanced_config"):  # fmt: skip
        assert settings[name].get("description"), name
    assert settings["max_concurrency"]["maximum"] == 150
    markdown = subprocess.run(
        [sys.executable, "-m", "tap_sage.tap", "--about", "--format", "markdown"],
        capture_output=True, text=True, check=True, timeout=TIMEOUT,
    ).stdout  # fmt: skip
    assert "stream_filters" in markdown

    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(connection_config))
    discover = subprocess.run(
        [sys.executable, "-m", "tap_sage.tap", "--config", str(config_path), "--discover"],
        capture_output=True, text=True, check=True, timeout=TIMEOUT,
    )  # fmt: skip
    catalog = json.loads(discover.stdout)
    entries = {e["tap_stream_id"]: e for e in catalog["streams"]}
    assert entries["contacts"]["key_properties"] == ["business_id", "id"]
    assert entries["contacts"]["replication_key"] == "updated_at"
    assert entries["business_settings"]["key_properties"] == ["business_id"]
    assert entries["currencies"].get("replication_method") == "FULL_TABLE"
    assert "_sdc_deleted_at" in entries["contacts"]["schema"]["properties"]

    # the connection test meltano runs: a RECORD comes out first thing
    proc = subprocess.Popen(
        [sys.executable, "-m", "tap_sage.tap", "--config", str(config_path)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if json.loads(line)["type"] == "RECORD":
                break
        else:
            pytest.fail("no RECORD")
    finally:
        proc.kill()
        proc.wait(timeout=TIMEOUT)
    test = subprocess.run(
        [sys.executable, "-m", "tap_sage.tap", "--config", str(config_path), "--test"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert test.returncode == 0, test.stderr[-2000:]
    assert "Connection 'test' (initiate_oauth REFRESH): OK" in test.stderr
    assert '"type":"RECORD"' in test.stdout


class Api:
    """Writes over HTTP, as another Sage client would make them."""

    def __init__(self, sandbox: SandboxProcess, business: str) -> None:
        self.url = sandbox.api_url
        self.headers = {
            "Authorization": f"Bearer {sandbox.grant()['access_token']}",
            "Accept": "application/json",
            "X-Business": business,
        }

    def put(self, path: str, body: Any) -> requests.Response:
        return requests.put(self.url + path, json=body, headers=self.headers, timeout=TIMEOUT)

    def post(self, path: str, body: Any) -> requests.Response:
        return requests.post(self.url + path, json=body, headers=self.headers, timeout=TIMEOUT)

    def delete(self, path: str, **params: str) -> requests.Response:
        return requests.delete(
            self.url + path, params=params or None, headers=self.headers, timeout=TIMEOUT
        )
