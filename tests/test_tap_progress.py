"""tap-sage against the sandbox over real HTTP: progress lines during a read, the SDK's METRIC
lines with the stream's name, and ``tax_determinations`` read once per ``usage``."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import msgspec

from tap_sage import partitioning
from tap_sage.progress import INTERVAL_ENV, ReadProgress
from tap_sage.sage import catalogue
from tap_sage.sandbox.runner import SandboxProcess
from tap_sage.sync import Page
from tap_sage.tap import TapSage
from tests.tap_helpers import Run, live_records, tap_command
from tests.test_tap_sync import business_ids, with_settings

PROGRESS = re.compile(
    r"Progress: (?P<stream>\w+) for business (?P<business>[\w-]+)(?: \((?P<label>[^)]*)\))?: "
    r"(?P<records>\d+) records, page (?P<page>\d+) of (?P<pages>\d+|\?), "
    r"(?:(?P<more>\d+) more pages \(repairs, deletions\), )?"
    r"(?P<rate>\d+) records/s(?:, about (?P<left>\d+) s left)?$"
)


def _run(tmp: Path, config: dict[str, Any], streams: list[str], **env: str) -> Run:
    proc = subprocess.run(
        tap_command(tmp, config, streams),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Run(proc.stdout, proc.stderr, proc.returncode)


def _progress(stderr: str) -> list[re.Match[str]]:
    found = []
    for line in stderr.splitlines():
        if "Progress: " not in line:
            continue
        match = PROGRESS.search(line.rstrip())
        assert match is not None, f"a progress line the test cannot read: {line}"
        found.append(match)
    return found


def _metrics(stderr: str) -> list[dict[str, Any]]:
    points = []
    for line in stderr.splitlines():
        _, sep, rest = line.partition("METRIC: ")
        if sep:
            points.append(json.loads(rest))
    return points


def test_a_long_read_logs_its_progress(sandbox_factory: Any, tmp_path: Path) -> None:
    """Every page takes >= 40 ms (the sandbox's latency) and the interval is 20 ms, so every page
    after the first is at least one interval after the line before it: one line per page, read
    one page at a time. Each line has the records so far, the page of the total (``$total`` /
    ``items_per_page``), the rate and the time left."""
    sandbox: SandboxProcess = sandbox_factory(latency_ms=40)
    granted = sandbox.grant()
    config = {
        "connection_name": "progress",
        "initiate_oauth": "REFRESH",
        "client_id": granted["client_id"],
        "client_secret": granted["client_secret"],
        "access_token": granted["access_token"],
        "refresh_token": granted["refresh_token"],
        "oauth_settings_location": str(tmp_path / "tokens.json"),
        "advanced_config": {
            "api_url": sandbox.api_url,
            "token_url": sandbox.token_url,
            "authorize_url": sandbox.authorize_url,
            "revoke_url": sandbox.revoke_url,
        },
    }
    gb, _ = business_ids(sandbox.db)
    config = with_settings(config, page_size=10, business_ids=[gb], max_concurrency=1)
    run = _run(tmp_path, config, ["contacts"], **{INTERVAL_ENV: "0.02"})
    total = len(live_records(sandbox.db, "contacts", gb))
    pages = math.ceil(total / 10)
    assert pages >= 5, f"the seed has {total} contacts: too few pages for this test"
    lines = [m for m in _progress(run.stderr) if m["stream"] == "contacts"]
    assert len(lines) >= pages - 2, run.stderr[-3000:]
    assert {m["business"] for m in lines} == {gb}
    assert {m["pages"] for m in lines if m["page"] != "0"} == {str(pages)}
    seen = [int(m["page"]) for m in lines]
    assert seen == sorted(seen)
    assert seen[-1] >= pages - 1
    counts = [int(m["records"]) for m in lines]
    assert counts == sorted(counts)
    assert 0 < counts[-1] <= total == len(run.records("contacts"))
    assert all(m["left"] is not None for m in lines if int(m["records"]) > 0)
    assert any(int(m["rate"]) > 0 for m in lines)


def test_metric_lines_name_the_stream(sandbox: SandboxProcess, connection_config: dict[str, Any],
                                      tmp_path: Path) -> None:  # fmt: skip
    """The SDK's METRIC lines of a read (record counts, request durations) carry its stream:
    lists, a settings singleton, and a request Sage refuses (cis_settings: GB only)."""
    streams = ["contacts", "ledger_accounts", "business_settings", "cis_settings"]
    run = _run(tmp_path, connection_config, streams)
    gb, us = business_ids(sandbox.db)
    points = _metrics(run.stderr)
    durations = [p for p in points if p["metric"] == "http_request_duration"]
    counts = [p for p in points if p["metric"] == "record_count"]
    assert durations, run.stderr[-3000:]
    assert counts, run.stderr[-3000:]
    assert all(p["tags"].get("stream") in streams for p in durations + counts)
    for stream in streams:
        mine = [p for p in durations if p["tags"]["stream"] == stream]
        assert mine, f"no request duration of {stream}"
        assert {p["tags"]["endpoint"] for p in mine} == {f"/{stream}"}
        assert {p["tags"]["context"]["business_id"] for p in mine} == {gb, us}
        refused = {p["tags"]["context"]["business_id"] for p in mine if p["tags"]["status"] == "failed"}  # fmt: skip
        assert refused == ({us} if stream == "cis_settings" else set())
        counted = sum(p["value"] for p in counts if p["tags"]["stream"] == stream)
        assert counted == len(run.records(stream))


def test_a_bad_progress_interval_names_the_variable(
    sandbox: SandboxProcess, connection_config: dict[str, Any], tmp_path: Path
) -> None:
    proc = subprocess.run(
        tap_command(tmp_path, connection_config, ["contacts"]),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, INTERVAL_ENV: "soon"},
    )
    assert proc.returncode != 0
    assert INTERVAL_ENV in proc.stderr
    assert "'soon'" in proc.stderr


def test_tax_determinations_are_read_once_per_usage(
    sandbox: SandboxProcess, connection_config: dict[str, Any], tmp_path: Path
) -> None:
    """Sage refuses ``/tax_determinations`` without ``usage``: the stream is selected by default
    and reads each business once per value the spec allows; each record says its usage, which
    is part of the key, and each (business, usage) has its own state."""
    catalog = TapSage(config=connection_config, validate_config=False, setup_mapper=False)
    entry = next(s for s in catalog.catalog_dict["streams"] if s["tap_stream_id"] == "tax_determinations")  # fmt: skip
    top = next(m["metadata"] for m in entry["metadata"] if m["breadcrumb"] == [])
    assert top.get("selected-by-default") is True
    assert entry["key_properties"] == ["business_id", "usage", "id"]
    assert entry["schema"]["properties"]["usage"]["enum"] == ["sales", "purchases"]

    gb, us = business_ids(sandbox.db)
    run = _run(tmp_path, connection_config, ["tax_determinations"])
    live = set(live_records(sandbox.db, "tax_determinations", gb))
    assert live
    records = run.records("tax_determinations")
    by_usage = {
        usage: {r["id"] for r in records if r["usage"] == usage} for usage in ("sales", "purchases")
    }
    assert by_usage == {"sales": live, "purchases": live}
    assert {r["business_id"] for r in records} == {gb}  # not documented for the US
    assert len(records) == 2 * len(live)
    partitions = run.state["bookmarks"]["tax_determinations"]["partitions"]
    contexts = sorted((p["context"]["business_id"], p["context"]["usage"]) for p in partitions)
    assert contexts == sorted((b, u) for b in (gb, us) for u in ("sales", "purchases"))

    # a usage set in stream_filters: that one alone
    only = with_settings(connection_config, stream_filters={"tax_determinations": {"usage": "sales"}})  # fmt: skip
    sales = _run(tmp_path, only, ["tax_determinations"])
    assert {r["usage"] for r in sales.records("tax_determinations")} == {"sales"}
    assert {r["id"] for r in sales.records("tax_determinations")} == live


def test_partitions_of_required_parameters() -> None:
    """Units: one read per allowed value, a value set in stream_filters reads alone, and a
    required parameter without values in the spec needs stream_filters."""
    res = catalogue.resource("tax_determinations")
    assert partitioning.values(res, {}) == [{"usage": "sales"}, {"usage": "purchases"}]
    assert partitioning.values(res, {"usage": "sales", "date": "2026-01-01"}) == [
        {"usage": "sales"}
    ]
    assert partitioning.values(catalogue.resource("contacts"), {}) == [{}]
    assert not partitioning.needs_filters(res)
    assert partitioning.label({"business_id": "b", "usage": "sales"}) == "usage sales"
    free = msgspec.structs.replace(res, params=(catalogue.Param("code", "string", required=True),))
    assert partitioning.needs_filters(free)
    assert partitioning.unreadable(free, {}) == ["code"]
    assert partitioning.unreadable(free, {"code": "X"}) == []
    assert partitioning.values(free, {}) == [{}]


def test_a_progress_line_from_a_clock_units() -> None:
    """Units with a clock the test turns: a line only once the interval has passed, the page of
    the total from the scan's first ``$total``, other pages apart, rate and time left."""
    now = [100.0]
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("tests.progress")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(Keep())
    progress = ReadProgress(
        logger, "contacts", "b1", page_size=10, interval=5, clock=lambda: now[0]
    )
    first = Page(1, [{}] * 10, 95, "/contacts?page=2", 0, 0)
    progress.page(first, {"page": "1", "items_per_page": "10"})
    assert lines == []  # the interval has not passed
    for _ in range(10):
        progress.record()
    now[0] = 102.0
    assert progress.line() == (
        "Progress: contacts for business b1: 10 records, page 1 of 10, 5 records/s, about 17 s left"
    )
    now[0] = 106.0
    progress.page(Page(1, [], 0, None, 0, 0), {"deleted_since": "x", "items_per_page": "10"})
    assert lines == [
        "Progress: contacts for business b1: 10 records, page 1 of 10, "
        "1 more pages (repairs, deletions), 2 records/s, about 51 s left"
    ]
    progress.page(first, {"items_per_page": "10"})
    assert len(lines) == 1  # the next line is one interval later
    labelled = ReadProgress(logger, "tax_determinations", "b1", page_size=10, label="usage sales", interval=1)  # fmt: skip
    assert labelled.line().startswith(
        "Progress: tax_determinations for business b1 (usage sales): 0 records, page 0 of ?"
    )
