"""Issue 15: STATE proportional to the output, and a sync killed anywhere resumes without loss.

Against the sandbox over HTTP (2 businesses, so every stream has two partitions): one full sync
at ``max_concurrency`` 4 is cut after many lines (chosen from a seed, plus the first record of
each first read with a deletion feed, where only the deletion floor of ``tap_sage.state``
covers the records out), as if killed there; the records it emitted up to the cut are then
changed and deleted over HTTP, and a run resumes from the last STATE before the cut. Applied in
order (a record replaces its key, a deletion record removes it), the cut output and the resumed
run hold exactly the sandbox's live records: none lost, none left that was deleted, the changed
one in its new version. Cutting the output is what a SIGKILL does to a consumer of stdout (the
tap writes nothing else); ``tests/test_tap_sync.py`` kills a real process too.

The units: the cadence (``Cadence.due``) and the floors (``lower_floors``, ``drop_floor``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tap_sage import state
from tap_sage.sandbox.runner import SandboxProcess
from tap_sage.sync import epoch
from tests.tap_helpers import TIMEOUT, Run, live_records, run_tap, tap_command
from tests.test_tap_readahead import _check_state_never_ahead
from tests.test_tap_sync import Api, business_ids, with_settings

#: incremental lists (in creation order and sorted by updated_at) with a deletion feed
STREAMS = ("contacts", "products", "sales_invoices", "contact_payments")
SEED = int(os.environ.get("TAP_SAGE_TEST_SEED", "15"))
CUTS = 5  # cut points drawn from the seed, besides the first record of each first read


def _apply(target: dict[tuple[str, str, str], dict[str, Any]], run: Run) -> None:
    """A target's view: RECORD messages in order, a deletion record removing its key."""
    for message in run.messages:
        if message["type"] != "RECORD":
            continue
        record = message["record"]
        key = (message["stream"], str(record["business_id"]), str(record["id"]))
        if record.get("_sdc_deleted_at"):
            target.pop(key, None)
        else:
            target[key] = record


def _cut_points(lines: list[str], rng: random.Random) -> list[int]:
    """Lines after which the sync is cut: the first record of each (stream, business)
    partition of contacts (a first read with a deletion feed, in creation order) and of
    sales_invoices (sorted by updated_at), then ``CUTS`` drawn from ``rng``."""
    firsts: dict[tuple[str, str], int] = {}
    for index, line in enumerate(lines):
        message = json.loads(line)
        if message["type"] == "RECORD" and message["stream"] in ("contacts", "sales_invoices"):
            key = (message["stream"], str(message["record"]["business_id"]))
            firsts.setdefault(key, index + 1)
    drawn = sorted(rng.sample(range(1, len(lines)), CUTS))
    return sorted(set(firsts.values())) + drawn


def _live(db: Path) -> set[tuple[str, str, str]]:
    return {(stream, business, record_id) for stream in STREAMS for business in business_ids(db)
            for record_id in live_records(db, stream, business)}  # fmt: skip


def _resume(
    tmp_path: Path, config: dict[str, Any], killed: Run, tag: str
) -> tuple[Run, dict[tuple[str, str, str], dict[str, Any]]]:
    """The run after ``killed`` (from its last STATE), and what a target holds once it has
    applied both outputs in order."""
    resumed = run_tap(tmp_path, config, STREAMS, state=killed.state if killed.states else None,
                      tag=tag)  # fmt: skip
    target: dict[tuple[str, str, str], dict[str, Any]] = {}
    _apply(target, killed)
    _apply(target, resumed)
    return resumed, target


def test_a_sync_cut_anywhere_resumes_without_loss(sandbox: SandboxProcess, connection_config, tmp_path: Path) -> None:  # fmt: skip
    config = with_settings(connection_config, page_size=20, max_concurrency=4)
    full = run_tap(tmp_path, config, STREAMS, tag="full")
    assert _check_state_never_ahead(full, "full sync") > 0
    lines = [line for line in full.stdout.splitlines() if line.strip()]
    rng = random.Random(SEED)
    apis = {b: Api(sandbox, b) for b in business_ids(sandbox.db)}
    for number, cut in enumerate(_cut_points(lines, rng)):
        where = f"seed {SEED}, cut after line {cut} of {len(lines)}"
        killed = Run("\n".join(lines[:cut]), "", -9)
        # what the killed run emitted changes before the next run: one contact deleted, one
        # renamed (records still live in the sandbox)
        out = [r for r in killed.records("contacts")
               if r["id"] in live_records(sandbox.db, "contacts", r["business_id"])]  # fmt: skip
        renamed: tuple[str, str, str] | None = None
        if len(out) >= 2:
            gone, changed = rng.sample(out, 2)
            api = apis[gone["business_id"]]
            assert api.delete(f"/contacts/{gone['id']}").status_code == 204, where
            api = apis[changed["business_id"]]
            name = f"Renamed {number} Ltd"
            answer = api.put(f"/contacts/{changed['id']}", {"contact": {"name": name}})
            assert answer.status_code == 200, (where, answer.text)
            renamed = ("contacts", changed["business_id"], changed["id"])
        resumed, target = _resume(tmp_path, config, killed, f"resumed{number}")
        live = _live(sandbox.db)
        missing, stale = live - set(target), set(target) - live
        assert not missing, (where, "lost", sorted(missing)[:3])
        assert not stale, (where, "deleted but kept", sorted(stale)[:3])
        if renamed is not None:
            assert target[renamed]["name"] == f"Renamed {number} Ltd", where
        # a finished sync leaves no deletion floor behind
        for entry in resumed.state["bookmarks"].values():
            assert state.FLOOR not in entry, where


def test_a_sync_killed_anywhere_resumes_without_loss(sandbox: SandboxProcess, connection_config, tmp_path: Path) -> None:  # fmt: skip
    """The same with real SIGKILLs, at lines drawn from the seed (the tap waits on a full pipe
    once its reader stops reading, so the kill lands about there)."""
    config = with_settings(connection_config, page_size=20, max_concurrency=4)
    rng = random.Random(SEED + 1)
    for number in range(2):
        after = rng.randrange(2, 400)
        where = f"seed {SEED + 1}, killed after line {after}"
        proc = subprocess.Popen(tap_command(tmp_path, config, STREAMS, tag=f"kill{number}"),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
        assert proc.stdout is not None
        lines: list[bytes] = []
        for line in proc.stdout:
            lines.append(line)
            if len(lines) >= after:
                break
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=TIMEOUT) == -signal.SIGKILL, where  # killed mid-sync
        proc.stdout.close()
        killed = Run(b"".join(lines).decode(errors="replace"), "", -9)
        _, target = _resume(tmp_path, config, killed, f"after-kill{number}")
        live = _live(sandbox.db)
        assert live == set(target), (where, sorted(live ^ set(target))[:3])


def test_state_is_a_small_share_of_the_output(sandbox: SandboxProcess, connection_config, tmp_path: Path) -> None:  # fmt: skip
    """Each STATE that records progress follows at least ``STATE_RATIO`` times its size of
    output; only the floor's and the last one are written regardless."""
    config = with_settings(connection_config, page_size=20, max_concurrency=4)
    run = run_tap(tmp_path, config, (*STREAMS, "ledger_accounts", "tax_rates", "bank_accounts",
                                     "business_settings"), tag="share")  # fmt: skip
    lines = [line.encode() for line in run.stdout.splitlines()]
    states = [len(line) + 1 for line in lines if line.startswith(b'{"type":"STATE"')]
    total = sum(len(line) + 1 for line in lines)
    floors = sum(1 for s in run.states if any(state.FLOOR in e for e in s["bookmarks"].values()))
    assert states
    assert sum(states) <= total / state.STATE_RATIO + (floors + 2) * max(states), (
        len(states), sum(states), total,
    )  # fmt: skip
    # every first read with a deletion feed was covered before its first record
    assert floors >= 1
    assert state.FLOOR not in json.dumps(run.state)


# -- units ----------------------------------------------------------------------------------------


def test_the_cadence_waits_for_ratio_times_the_last_state() -> None:
    cadence = state.Cadence(ratio=10)
    assert cadence.due(0)  # nothing written yet: the first may go
    cadence.wrote(100, 150)  # a STATE of 50 bytes, ending at byte 150
    assert not cadence.pending
    assert not cadence.due(150 + 499)
    assert cadence.due(150 + 500)
    assert state.Cadence(ratio=0).due(151)  # 0: every STATE
    assert state.Cadence(ratio=10).due(None)  # output not counted: every STATE


def test_the_ratio_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(state.RATIO_ENV, "5")
    assert state.ratio_from_env() == 5
    monkeypatch.setenv(state.RATIO_ENV, "-1")
    with pytest.raises(ValueError, match=state.RATIO_ENV):
        state.ratio_from_env()


def test_floors_only_move_back_and_go_with_their_stream() -> None:
    tap_state: dict[str, Any] = {"bookmarks": {"contacts": {"partitions": []}}}
    moved = state.lower_floors(tap_state, ["contacts", "products"], "2026-01-01T00:01:00Z", epoch)
    assert moved == ["contacts", "products"]
    assert not state.lower_floors(tap_state, ["contacts"], "2026-01-01T00:02:00Z", epoch)
    assert state.floor_of(tap_state, "contacts") == "2026-01-01T00:01:00Z"
    state.lower_floors(tap_state, ["products"], "2026-01-01T00:00:30Z", epoch)
    assert state.floor_of(tap_state, "products") == "2026-01-01T00:00:30Z"
    state.drop_floor(tap_state, "contacts")
    state.drop_floor(tap_state, "products")
    assert tap_state == {"bookmarks": {"contacts": {"partitions": []}}}


def _tap_with_state(tmp_path: Path, tap_state: dict[str, Any]) -> Any:
    from tap_sage.tap import TapSage

    config = {"connection_name": "unit", "initiate_oauth": "REFRESH", "client_id": "c",
              "client_secret": "s", "access_token": "a", "refresh_token": "r",
              "oauth_settings_location": str(tmp_path / "tokens.json"),
              "business_ids": ["B1", "B2"]}  # fmt: skip
    return TapSage(config=config, validate_config=False, setup_mapper=False, state=tap_state)


def test_a_partition_only_the_floor_covered_keeps_it_when_the_floor_goes(tmp_path: Path) -> None:
    """A killed run began the first read of B1 (covered by the stream's floor only); this run
    does not read B1 again (skipped: 403/404, or not among its businesses). When the stream's
    sync ends and the floor goes, B1's entry keeps the floor as its own bound: the next run's
    deletion pass still reaches back to what the killed run emitted."""
    floor = "2026-01-01T00:00:00Z"
    tap_state = {"bookmarks": {"contacts": {state.FLOOR: floor, "partitions": [
        {"context": {"business_id": "B1"}},
        {"context": {"business_id": "B2"}, "replication_key": "updated_at",
         "replication_key_value": "2026-02-01T00:00:00Z"},
    ]}}}  # fmt: skip
    tap = _tap_with_state(tmp_path, tap_state)
    tap.streams["contacts"]._settle_floor()
    entries = tap.state["bookmarks"]["contacts"]["partitions"]
    assert state.FLOOR not in tap.state["bookmarks"]["contacts"]
    assert entries[0] == {"context": {"business_id": "B1"}, "deleted_since": floor}
    assert "deleted_since" not in entries[1]  # it has its bookmark


def test_a_floor_this_run_moved_still_gives_its_inherited_value(tmp_path: Path) -> None:
    """A killed run left a floor; this run moves it (a clock behind the killed run's can move it
    back past it): the partitions that relied on the inherited floor still start their
    deletion passes there, not from nothing."""
    floor = "2026-01-01T00:00:00Z"
    tap_state = {"bookmarks": {"contacts": {state.FLOOR: floor,
                                            "partitions": [{"context": {"business_id": "B1"}}]}}}  # fmt: skip
    tap = _tap_with_state(tmp_path, tap_state)
    stream = tap.streams["contacts"]
    entry = {"context": {"business_id": "B1"}}
    assert stream._deleted_after(entry, None) == floor
    # B2's first read begins with a bound before the floor (this run's clock is behind): the
    # floor moves back, and this run now counts as having moved it
    stream._on_start({"business_id": "B2"}, None)("2025-12-31T00:00:00Z")
    assert state.floor_of(tap.state, "contacts") < floor
    assert "contacts" in state.cadence_of(tap).floored
    assert stream._deleted_after(entry, None) == floor  # B1 still starts from the old floor
    state.cadence_of(tap).inherited.clear()
    assert stream._deleted_after(entry, None) is None  # a floor this run set moves nothing
