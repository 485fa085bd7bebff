"""Exactly once and the latest version, under every crash, replay and clock (issue 10).

The matrix: a history of several runs over a handful of source records, each with several
versions and deletes, applied to a resource with idempotency in Sage (``contacts``) and one
without (``analysis_type_categories``: intent and lookup). The target is SIGKILLed at every
kill point of ``TARGET_SAGE_KILL_AT`` of one run, the run is repeated, the history goes on, and
Sage's final state is checked record by record: exists once with the latest content, or gone.
A replay of the whole history then sends nothing.

The regular suite runs the five reproduced failures of the issue and a sample of the matrix;
``TARGET_MATRIX=full`` (``make test-target-matrix``) runs every kill point, with commit faults.

The target's clock is skewed by running it under a shifted ``time.time`` (``CLOCK_HOOK``): the
hook lives here, the production code reads the clock as it always does.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.checkpoint_support import TARGET_CLI
from tests.test_target_helpers import (
    SageAPI,
    faulty_connection,
    killed_run,
    record_msg,
    run_cli,
    schema_msg,
    singer,
    state_msg,
)

FULL = os.environ.get("TARGET_MATRIX") == "full"

CONTACT_SCHEMA = {
    "type": "object",
    "properties": {
        "code": {"type": "string"},
        "name": {"type": ["string", "null"]},
        "contact_type_ids": {"type": ["array", "null"], "items": {"type": "string"}},
        "notes": {"type": ["string", "null"]},
        "_sdc_deleted_at": {"type": ["string", "null"], "format": "date-time"},
    },
}
CATEGORY_SCHEMA = {
    "type": "object",
    "properties": {
        "code": {"type": "string"},
        "name": {"type": ["string", "null"]},
        "_sdc_deleted_at": {"type": ["string", "null"], "format": "date-time"},
    },
}

#: Runs the target CLI with ``time.time`` shifted by TARGET_TEST_CLOCK_SKEW seconds.
CLOCK_HOOK = (
    "import os, time\n"
    "_skew = float(os.environ.get('TARGET_TEST_CLOCK_SKEW', '0'))\n"
    "_real = time.time\n"
    "time.time = lambda: _real() + _skew\n" + TARGET_CLI
)


@dataclass(frozen=True)
class Kind:
    """A Sage resource the matrix writes to, and how a version of a record looks there."""

    name: str
    resource: str
    schema: dict[str, Any]

    def record(self, tag: str, key: str, version: int) -> dict[str, Any]:
        if self.resource == "contacts":
            return {
                "code": key,
                "name": f"{tag} {key}",
                "contact_type_ids": ["CUSTOMER"],
                "notes": f"v{version}",
            }
        return {"code": f"{key}{version}", "name": f"{tag} {key} v{version}"}

    def find(self, api: SageAPI, tag: str, key: str) -> list[str]:
        """The versions Sage holds for one source record (one entry per Sage record)."""
        if self.resource == "contacts":
            return [
                str(c.get("notes"))
                for c in api.all("/contacts")
                if c.get("name") == f"{tag} {key}" and not c.get("deleted_at")
            ]
        prefix = f"{tag} {key} v"
        return [
            "v" + str(c["name"])[len(prefix) :]
            for c in api.all("/analysis_type_categories")
            if str(c.get("name", "")).startswith(prefix)
        ]


IDEM = Kind("idem", "contacts", CONTACT_SCHEMA)
NOIDEM = Kind("noidem", "analysis_type_categories", CATEGORY_SCHEMA)

# One source record's history: (key, version) to send, or (key, None) for a delete.
Step = tuple[str, int | None]


def run_input(
    kind: Kind, tag: str, steps: list[Step], *, stamp: int | None = None, state: int = 1
) -> str:
    """Singer input of ``steps`` for ``kind``; ``stamp`` sets ``time_extracted`` per message
    (minutes after a fixed time, growing along the steps), as SDK taps write it."""
    msgs: list[dict[str, Any]] = [schema_msg("items", kind.schema, ["code"])]
    for i, (key, version) in enumerate(steps):
        if version is None:
            rec: dict[str, Any] = {"code": key, "_sdc_deleted_at": "2025-01-01T00:00:00Z"}
        else:
            rec = kind.record(tag, key, version)
            rec["code"] = key
        msg = record_msg("items", rec)
        if stamp is not None:
            minute = stamp + i
            msg["time_extracted"] = f"2025-03-01T{minute // 60:02d}:{minute % 60:02d}:00Z"
        msgs.append(msg)
    msgs.append(state_msg({"run": state}))
    return singer(msgs)


def expected(history: list[list[Step]]) -> dict[str, int | None]:
    """The latest version of each key over the whole history (None: gone)."""
    out: dict[str, int | None] = {}
    for steps in history:
        for key, version in steps:
            out[key] = version
    return out


def config_for(
    connection_config: dict[str, Any], tmp_path: Path, api: SageAPI, kind: Kind, **extra: Any
) -> dict[str, Any]:
    return {
        **connection_config,
        "business_id": api.business_id,
        "ledger_path": str(tmp_path / "ledger.sqlite"),
        "results_path": str(tmp_path / "results.jsonl"),
        "dead_letter_path": str(tmp_path / "dead-letter.singer"),
        "stream_resources": {"items": kind.resource},
        **extra,
    }


def cli(
    config: dict[str, Any],
    text: str,
    tmp_path: Path,
    *,
    kill_at: str | None = None,
    skew: float = 0,
    may_finish: bool = False,
) -> subprocess.CompletedProcess[str]:
    """One target run with its clock ``skew`` seconds off; with ``kill_at``, a run that must
    die there (``killed_run``)."""
    env = {"TARGET_TEST_CLOCK_SKEW": str(skew)}
    if kill_at:
        return killed_run(
            config, text, tmp_path, kill_at, may_finish=may_finish, env=env, code=CLOCK_HOOK,
            timeout=180,
        )  # fmt: skip
    return run_cli(config, text, tmp_path, env, timeout=180, code=CLOCK_HOOK)


def play(
    api: SageAPI,
    kind: Kind,
    tag: str,
    config: dict[str, Any],
    inputs: list[str],
    tmp_path: Path,
    kill: tuple[int, str],
) -> None:
    """Run the history's inputs in turn, killing run ``kill[0]`` at ``kill[1]`` first (the
    point may come after its last write); after each, Sage holds the history so far."""
    for i, text in enumerate(inputs):
        if i == kill[0]:
            cli(config, text, tmp_path, kill_at=kill[1], may_finish=True)
        done = cli(config, text, tmp_path)
        assert done.returncode == 0, f"run {i}: {done.stderr[-3000:]}"
        assert_sage_holds(api, kind, tag, expected(HISTORY[: i + 1]))


def results(config: dict[str, Any]) -> list[dict[str, Any]]:
    path = Path(config["results_path"])
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_sage_holds(api: SageAPI, kind: Kind, tag: str, want: dict[str, int | None]) -> None:
    problems = []
    for key, version in sorted(want.items()):
        found = kind.find(api, tag, key)
        wanted = [] if version is None else [f"v{version}"]
        if found != wanted:
            problems.append(f"{key}: Sage holds {found or 'nothing'}, expected {wanted or 'gone'}")
    assert not problems, "; ".join(problems)


def writes_of(lines: list[dict[str, Any]]) -> list[str]:
    return [x["outcome"] for x in lines if x["outcome"] not in ("skipped",)]


# -- the five reproduced failures -------------------------------------------------------------


def test_case1_idempotent_replay_answered_with_old_content_is_updated_to_the_new(
    sandbox, connection_config, tmp_path
):
    """Killed after Sage answered the POST; the rerun's record has changed: Sage answers the
    idempotent POST with the first version, so the target must follow with the update."""
    api = SageAPI(sandbox)
    config = config_for(connection_config, tmp_path, api, IDEM)
    tag = "Idem1"
    cli(config, run_input(IDEM, tag, [("K1", 1)]), tmp_path, kill_at="after_request:1")
    assert_sage_holds(api, IDEM, tag, {"K1": 1})
    again = cli(config, run_input(IDEM, tag, [("K1", 2)]), tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert_sage_holds(api, IDEM, tag, {"K1": 2})
    third = cli(config, run_input(IDEM, tag, [("K1", 2)]), tmp_path)
    assert third.returncode == 0
    assert_sage_holds(api, IDEM, tag, {"K1": 2})


def test_case2_delete_answered_then_killed_is_not_stuck(sandbox, connection_config, tmp_path):
    """K-1 v1, v2, then its delete killed right after Sage answered; every rerun of the whole
    input must end with the contact gone, not PUT v1 to it for ever."""
    api = SageAPI(sandbox)
    config = config_for(connection_config, tmp_path, api, IDEM, max_parallel_writes=1)
    tag = "Stuck2"
    for steps in ([("K1", 1)], [("K1", 2)]):
        assert cli(config, run_input(IDEM, tag, steps), tmp_path).returncode == 0
    cli(config, run_input(IDEM, tag, [("K1", None)]), tmp_path, kill_at="after_request:1")
    assert_sage_holds(api, IDEM, tag, {"K1": None})
    text = run_input(IDEM, tag, [("K1", 1), ("K1", 2), ("K1", None)])
    for _ in range(2):
        again = cli(config, text, tmp_path)
        assert again.returncode == 0, again.stderr[-2000:]
    assert_sage_holds(api, IDEM, tag, {"K1": None})


@pytest.mark.parametrize("kind", [IDEM, NOIDEM], ids=lambda k: k.name)
def test_case3_a_record_deleted_and_sent_again_is_created_again(
    sandbox, connection_config, tmp_path, kind
):
    api = SageAPI(sandbox)
    config = config_for(connection_config, tmp_path, api, kind)
    tag = "Restore3"
    history: list[list[Step]] = [[("K1", 1)], [("K1", None)], [("K1", 1)]]
    for steps in history:
        done = cli(config, run_input(kind, tag, steps), tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
    assert_sage_holds(api, kind, tag, {"K1": 1})
    assert results(config)[-1]["outcome"] == "created"


def test_case4_a_replay_never_goes_back_in_time(sandbox, connection_config, tmp_path):
    """Several versions of several records in one input: a replay sends nothing; a replay
    killed midway leaves no record at an older version."""
    api = SageAPI(sandbox)
    config = config_for(connection_config, tmp_path, api, IDEM, max_parallel_writes=2)
    tag = "Replay4"
    steps: list[Step] = [(f"K{k}", v) for v in (1, 2, 3) for k in range(4)]
    text = run_input(IDEM, tag, steps)
    first = cli(config, text, tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    want = expected([steps])
    assert_sage_holds(api, IDEM, tag, want)
    before = len(results(config))
    replay = cli(config, text, tmp_path)
    assert replay.returncode == 0
    assert writes_of(results(config)[before:]) == []  # nothing sent
    # Newer input, then a replay of the older one killed midway, then finished.
    newer: list[Step] = [(f"K{k}", 4) for k in range(4)]
    assert cli(config, run_input(IDEM, tag, newer), tmp_path).returncode == 0
    cli(config, text, tmp_path, kill_at="after_request:3", may_finish=True)
    assert_sage_holds(api, IDEM, tag, expected([steps, newer]))
    assert cli(config, text, tmp_path).returncode == 0
    assert_sage_holds(api, IDEM, tag, expected([steps, newer]))


@pytest.mark.parametrize("skew", [-300, 300], ids=["behind5min", "ahead5min"])
def test_case5_reconciliation_never_trusts_the_local_clock(
    sandbox_factory, connection_config, tmp_path, skew
):
    """No idempotency in Sage, commit faults (Sage applied the POST, then answered 500 or
    dropped the connection), the target's clock minutes off: every record once."""
    _faulty, api, conn = faulty_connection(
        sandbox_factory,
        connection_config,
        0.35,
        "--fault-seed",
        "7",
        "--fault-kinds",
        "commit500,commitdrop",
    )
    config = config_for(conn, tmp_path, api, NOIDEM)
    tag = f"Clock5{'a' if skew > 0 else 'b'}"
    steps: list[Step] = [(f"K{k}", 1) for k in range(8)]
    done = cli(config, run_input(NOIDEM, tag, steps), tmp_path, skew=skew)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_sage_holds(api, NOIDEM, tag, expected([steps]))
    # A crash after Sage created one, then a changed record: adopted and updated, not doubled.
    cli(config, run_input(NOIDEM, tag, [("K9", 1)]), tmp_path, kill_at="after_request:1", skew=skew)
    again = cli(config, run_input(NOIDEM, tag, [("K9", 2)]), tmp_path, skew=-skew)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_sage_holds(api, NOIDEM, tag, {"K9": 2})


# -- the matrix --------------------------------------------------------------------------------

#: The history: run 1 creates, run 2 updates through several versions and deletes, run 3
#: restores one deleted record and updates another.
HISTORY: list[list[Step]] = [
    [("A", 1), ("B", 1), ("C", 1), ("A", 2)],
    [("A", 3), ("B", None), ("C", 2), ("C", 3), ("D", 1), ("D", None)],
    [("B", 2), ("C", 4), ("A", 3)],
]

KILL_POINTS = ["before_request", "after_request", "after_ledger"]


def _matrix_cases() -> list[tuple[str, int, str, int, bool]]:
    """(kind, run index, point, n, stamped). Full: every point of every run (n up to more
    writes than a run makes), plain and with time_extracted; sample: a create, an update and a
    delete killed, on both kinds."""
    if FULL:
        return [
            (kind, run, point, n, stamped)
            for kind in ("idem", "noidem")
            for run in range(len(HISTORY))
            for point in KILL_POINTS
            for n in range(1, 7)
            for stamped in (False, True)
        ]
    return [
        ("idem", 1, "after_ledger", 3, True),
        ("noidem", 0, "after_request", 2, False),
    ]


@pytest.mark.parametrize(
    ("kind_name", "run", "point", "n", "stamped"),
    _matrix_cases(),
    ids=lambda v: str(v),
)
def test_matrix_kill_rerun_and_replay(
    sandbox, connection_config, tmp_path, kind_name, run, point, n, stamped
):
    kind = IDEM if kind_name == "idem" else NOIDEM
    api = SageAPI(sandbox)
    config = config_for(connection_config, tmp_path, api, kind)
    tag = f"M{kind_name[:2]}{run}{point[:3]}{n}{'s' if stamped else ''}"
    inputs = [
        run_input(kind, tag, steps, stamp=(100 * i if stamped else None), state=i)
        for i, steps in enumerate(HISTORY)
    ]
    play(api, kind, tag, config, inputs, tmp_path, (run, f"{point}:{n}"))
    before = len(results(config))
    replay = cli(config, inputs[-1], tmp_path)
    assert replay.returncode == 0
    assert writes_of(results(config)[before:]) == [], "a replay of applied input sent writes"
    if stamped:
        # With time_extracted, a replay of the whole history goes nowhere back in time.
        for text in inputs:
            assert cli(config, text, tmp_path).returncode == 0
        assert writes_of(results(config)[before:]) == []
    assert_sage_holds(api, kind, tag, expected(HISTORY))


@pytest.mark.parametrize("kind", [IDEM, NOIDEM], ids=lambda k: k.name)
@pytest.mark.parametrize("seed", [3, 8] if FULL else [3])
def test_matrix_under_commit_faults(sandbox_factory, connection_config, tmp_path, kind, seed):
    """The history through a sandbox that applies a third of the writes and then answers 500
    or drops the connection (and fails reads likewise), then a kill in the middle run: every
    record once, at its newest, or gone; a replay sends nothing."""
    faulty, api, conn = faulty_connection(
        sandbox_factory,
        connection_config,
        0.3,
        "--fault-seed",
        str(seed),
        "--fault-kinds",
        "commit500,commitdrop",
    )
    config = config_for(conn, tmp_path, api, kind)
    tag = f"F{kind.name[:2]}{seed}"
    inputs = [run_input(kind, tag, steps, state=i) for i, steps in enumerate(HISTORY)]
    play(api, kind, tag, config, inputs, tmp_path, (1, "after_request:2"))
    before = len(results(config))
    assert cli(config, inputs[-1], tmp_path).returncode == 0
    assert writes_of(results(config)[before:]) == []
    assert_sage_holds(api, kind, tag, expected(HISTORY))
    assert '" 500' in faulty.log_path.read_text()  # faults were injected


@pytest.mark.parametrize("skew", [-180, 180], ids=["behind3min", "ahead3min"])
def test_a_killed_reissue_is_found_whatever_the_local_clock(
    sandbox, connection_config, tmp_path, skew
):
    """Journal reissue has no idempotency: killed after Sage answered, the rerun (its clock
    minutes off, the other way) finds the reissued journal instead of being stuck on 404."""
    api = SageAPI(sandbox)
    config = config_for(connection_config, tmp_path, api, NOIDEM)
    config["stream_resources"] = {}
    journal = api.get("/journals", items_per_page=1, attributes="all")["$items"][0]
    schema = {"type": "object", "properties": {"id": {"type": "string"}}}
    text = singer(
        [
            schema_msg("reissue_journals", schema, ["id"]),
            record_msg("reissue_journals", {"id": journal["id"]}),
        ]
    )
    cli(config, text, tmp_path, kill_at="after_request:1", skew=skew)
    again = cli(config, text, tmp_path, skew=-skew)
    assert again.returncode == 0, again.stderr[-2000:]
    (line,) = [x for x in results(config) if x["stream"] == "reissue_journals"]
    assert line["outcome"] == "executed" and "interrupted run" in str(line["$message"])
    same = [j for j in api.all("/journals") if j.get("reference") == journal["reference"]]
    assert [j["id"] for j in same] == [line["sage_id"]]


@pytest.mark.parametrize("kind", [IDEM, NOIDEM], ids=lambda k: k.name)
def test_a_record_gone_in_sage_ends_in_a_defined_outcome(
    sandbox, connection_config, tmp_path, kind
):
    """Deleted in Sage behind the target's back: an update creates it anew (the ledger learns
    it was gone), a delete is done; each once, no loop."""
    api = SageAPI(sandbox)
    config = config_for(connection_config, tmp_path, api, kind)
    tag = f"Gone{kind.name}"
    assert cli(config, run_input(kind, tag, [("G1", 1), ("G2", 1)]), tmp_path).returncode == 0
    path = "/" + kind.resource
    for item in api.all(path):
        if str(item.get("name", "")).startswith(tag):
            api.session.delete(f"{sandbox.api_url}{path}/{item['id']}").raise_for_status()
    done = cli(config, run_input(kind, tag, [("G1", 2), ("G2", None)]), tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_sage_holds(api, kind, tag, {"G1": 2, "G2": None})
    lines = {x["source_key"]["code"]: x for x in results(config)[-2:]}
    assert lines["G1"]["outcome"] == "created" and "gone" in lines["G1"]["$message"]
    assert lines["G2"]["outcome"] == "deleted"
    before = len(results(config))
    assert cli(config, run_input(kind, tag, [("G1", 2), ("G2", None)]), tmp_path).returncode == 0
    assert writes_of(results(config)[before:]) == []
