"""Two "machines" write one Sage business through one database ledger: each record once.

Each machine is a group of processes with its own HOME, XDG_STATE_HOME, TMPDIR and working
folder; the machines share only the database URL (the token store and the ledger are both in
it) and the store's key. Against the sandbox:

- two targets, one per machine, are fed overlapping inputs drawn from one random timeline
  (the same records, several versions of a record, deletes, re-creations after a delete,
  price types that Sage cannot deduplicate). They start together; one of them SIGKILLs
  itself at a random kill point (``TARGET_SAGE_KILL_AT``) and is run again. Sage then holds
  every record exactly once, at its latest version (a record whose latest event is a delete:
  not at all; one re-created after a delete: once), and a further run of both sends nothing.
  ``LEDGER_MACHINES_SEEDS`` (e.g. ``"1 2 3 4 5 6 7 8"``) runs more seeds than make test's.
- the database is stopped in the middle of a target run and started again: the run stops
  with a clear error naming ``ledger_path``; once it is back, the rerun (and the other
  machine's run) completes and each record is in Sage exactly once.

A failure names the seed; the same seed gives the same inputs and kill point (the order in
which the two machines get the business's run lock is up to the machines, as it would be).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from scripts.pgserver import PostgresServer
from tap_sage.sage.token_store_db import new_key
from target_sage.ledger_db import LOCK_NAMESPACE, TABLE
from tests.checkpoint_support import TARGET_CLI
from tests.connection_helpers import ROOT, sandbox_config
from tests.test_target_helpers import (
    CONTACT_SCHEMA,
    SageAPI,
    contact,
    record_msg,
    schema_msg,
    singer,
    state_msg,
)

SEEDS = [int(s) for s in (os.environ.get("LEDGER_MACHINES_SEEDS") or "3 8").split()]
PRICE_SCHEMA = {
    "type": "object",
    "properties": {
        "code": {"type": "string"},
        "name": {"type": "string"},
        "active": {"type": "boolean"},
    },
}
#: target-sage with the tests' checkpoints installed (TARGET_SAGE_KILL_AT acts on them).
TARGET = [sys.executable, "-c", TARGET_CLI]


@dataclass
class Machine:
    """A folder of its own (home, state, temp) and the environment of its processes."""

    name: str
    root: Path
    env: dict[str, str]
    config: Path

    def start(self, text: str, kill_at: str | None = None) -> subprocess.Popen[str]:
        source = self.root / "input.singer"
        source.write_text(text)
        env = {**self.env, **({"TARGET_SAGE_KILL_AT": kill_at} if kill_at else {})}
        return subprocess.Popen(
            [*TARGET, "--config", str(self.config), "--input", str(source)],
            cwd=self.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def run(self, text: str) -> subprocess.CompletedProcess[str]:
        proc = self.start(text)
        out, err = proc.communicate(timeout=300)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def results(self) -> list[dict[str, Any]]:
        path = self.root / "results.jsonl"
        if not path.exists():
            return []
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def machines(tmp_path: Path, sandbox: Any, url: str, **target: Any) -> list[Machine]:
    key = new_key()
    api = SageAPI(sandbox)
    base = sandbox_config(sandbox, Path("unused"), access_token=None)
    base["oauth_settings_location"] = url
    base["advanced_config"].update(lock_timeout=60, max_retries=5, max_backoff=1, timeout=4)
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("TAP_SAGE_", "TARGET_SAGE_", "SAGE_TOKEN_STORE"))}  # fmt: skip
    out = []
    for name in ("a", "b"):
        root = tmp_path / f"machine-{name}"
        for sub in ("home", "state", "tmp"):
            (root / sub).mkdir(parents=True)
        env = {**clean, "HOME": str(root / "home"), "XDG_STATE_HOME": str(root / "state"),
               "TMPDIR": str(root / "tmp"), "SAGE_TOKEN_STORE_KEY": key,
               "PYTHONPATH": str(ROOT)}  # fmt: skip
        config = {
            **base,
            "business_id": api.business_id,
            "ledger_path": url,
            "results_path": str(root / "results.jsonl"),
            "stream_resources": {
                "customers": "contacts",
                "price_types": "product_sales_price_types",
            },
            **target,
        }
        path = root / "config.json"
        path.write_text(json.dumps(config))
        out.append(Machine(name, root, env, path))
    return out


@dataclass
class Timeline:
    """One history of a few source records, and the two overlapping inputs drawn from it."""

    tag: str
    inputs: dict[str, str]
    latest: dict[str, str | None]  # contact code -> the name Sage must hold (None: deleted)
    prices: dict[str, str]  # price type code -> name
    writes: dict[str, int]  # machine -> writes it sends at least when it runs first


def timeline(seed: int) -> Timeline:
    rng = random.Random(seed)
    tag = f"LM{seed % 100:02d}"
    events: list[tuple[str, str, dict[str, Any], set[str]]] = []  # (stream, code, record, to)
    latest: dict[str, str | None] = {}
    only: dict[str, int] = {}
    codes = [f"{tag}-{i}" for i in range(rng.randint(6, 9))]
    history: list[tuple[str, int]] = [(c, v) for c in codes for v in range(rng.randint(1, 4))]
    rng.shuffle(history)
    history.sort(key=lambda cv: cv[1])  # versions of one record in order, records interleaved
    for number, (code, version) in enumerate(history):
        # the first record of each machine is its own: it has writes to send (and be killed at)
        to = {"a"} if number == 0 else {"b"} if number == 1 else rng.choice([{"a"}, {"b"}, {"a", "b"}])  # fmt: skip
        if version > 0 and rng.random() < 0.35:
            record: dict[str, Any] = {"code": code, "_sdc_deleted_at": "2025-06-01T00:00:00Z"}
            latest[code] = None
        else:
            name = f"{tag} {code[len(tag) + 1 :]} v{version}"
            # a deleted contact's reference stays taken (NOTES.md): each version has its own
            record = contact(code, name, reference=f"{code}.{version}")
            latest[code] = name
        events.append(("customers", code, record, to))
    prices = {c: f"{tag} price {c}" for c in "PQ"}
    for code, name in prices.items():  # Sage cannot deduplicate these: intent + lookup
        price = {"code": code, "name": name, "active": True}
        events.insert(rng.randint(0, len(events)), ("price_types", code, price, {"a", "b"}))
    for m in ("a", "b"):  # writes a machine sends when it runs first: each record last live
        last = {code: record for stream, code, record, to in events if m in to}
        only[m] = sum(1 for record in last.values() if "_sdc_deleted_at" not in record)
    inputs = {}
    for m in ("a", "b"):
        msgs = [schema_msg("customers", CONTACT_SCHEMA, ["code"]),
                schema_msg("price_types", PRICE_SCHEMA, ["code"])]  # fmt: skip
        for number, (stream, _code, record, to) in enumerate(events):
            if m in to:
                msg = record_msg(stream, record)
                # time_extracted, as SDK taps write it: one clock for both machines' inputs
                msg["time_extracted"] = f"2025-03-01T10:{number // 60:02d}:{number % 60:02d}Z"
                msgs.append(msg)
                if rng.random() < 0.2:
                    msgs.append(state_msg({"machine": m, "at": number}))
        msgs.append(state_msg({"machine": m, "at": "end"}))
        inputs[m] = singer(msgs)
    return Timeline(tag, inputs, latest, prices, only)


def check_sage(api: SageAPI, line: Timeline, where: str) -> None:
    contacts = api.contacts_named(line.tag + " ")
    by_code: dict[str, list[str]] = {}
    for c in contacts:  # "<tag> <i> v<version>" is a version of contact <tag>-<i>
        number = str(c["name"])[len(line.tag) + 1 :].split(" v")[0]
        by_code.setdefault(f"{line.tag}-{number}", []).append(str(c["name"]))
    for code, name in sorted(line.latest.items()):
        held = by_code.get(code, [])
        if name is None:
            assert held == [], f"{where}: {code} was deleted last, Sage holds {held}"
        else:
            assert held == [name], f"{where}: {code} must be once as {name!r}, Sage holds {held}"
    assert set(by_code) <= set(line.latest), where
    prices = sorted(
        p["name"]
        for p in api.all("/product_sales_price_types")
        if str(p.get("name", "")).startswith(line.tag)
    )
    assert prices == sorted(line.prices.values()), f"{where}: price types {prices}"


def wait_for_run_lock(url: str, proc: subprocess.Popen[str]) -> None:
    """Until some session holds a run lock of the ledger (or ``proc`` ended: it may take the
    lock and reach its kill point between two looks)."""
    engine = sa.create_engine(url)
    query = sa.text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND classid::int = :a AND objid::int != 0"
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            with engine.connect() as conn:
                if conn.execute(query, {"a": LOCK_NAMESPACE}).scalar():
                    return
            time.sleep(0.05)
    finally:
        engine.dispose()
    if proc.poll() is None:
        raise AssertionError("the first target never took the ledger's run lock")


def ledger_text(url: str) -> str:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT * FROM {TABLE}")).all()  # noqa: S608
    finally:
        engine.dispose()
    return json.dumps([list(map(str, r)) for r in rows])


@pytest.mark.parametrize("seed", SEEDS)
def test_two_machines_one_killed_leave_each_record_once(
    sandbox: Any, pg_database: str, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(f"machines {seed}")
    parallel = rng.choice([1, 4])
    a, b = machines(tmp_path, sandbox, pg_database, max_parallel_writes=parallel)
    line = timeline(seed)
    killed, other = (a, b) if rng.random() < 0.5 else (b, a)
    point = rng.choice(["before_request", "after_request", "after_ledger"])
    kill_at = f"{point}:{rng.randint(1, max(1, line.writes[killed.name]))}"
    where = f"seed {seed} (kill {killed.name} at {kill_at}, max_parallel_writes {parallel})"

    first = killed.start(line.inputs[killed.name], kill_at=kill_at)
    wait_for_run_lock(pg_database, first)  # it runs first, so it reaches its kill point
    time.sleep(rng.uniform(0, 1.0))  # the other machine starts while the first one writes
    second = other.start(line.inputs[other.name])
    _out, first_err = first.communicate(timeout=300)
    second_out, second_err = second.communicate(timeout=300)
    assert first.returncode == -signal.SIGKILL, f"{where}: {first_err[-3000:]}"
    assert second.returncode == 0, f"{where}: {second_err[-3000:]}"
    assert json.loads(second_out.splitlines()[-1])["at"] == "end", where

    again = killed.run(line.inputs[killed.name])
    assert again.returncode == 0, f"{where}: {again.stderr[-3000:]}"
    check_sage(SageAPI(sandbox), line, where)

    # Each machine once more: everything is at its newest, nothing is sent.
    for machine in (a, b):
        before = len(machine.results())
        done = machine.run(line.inputs[machine.name])
        assert done.returncode == 0, f"{where}: {done.stderr[-3000:]}"
        outcomes = {r["outcome"] for r in machine.results()[before:]}
        assert outcomes == {"skipped"}, f"{where}: machine {machine.name}: {outcomes}"
    check_sage(SageAPI(sandbox), line, where)

    # The ledger holds business data, never a token or a secret.
    text = ledger_text(pg_database)
    config = json.loads(a.config.read_text())
    for secret in (config["client_secret"], config["refresh_token"]):
        assert secret not in text


def test_a_database_that_goes_away_mid_run_loses_nothing(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    """The server stops while a target writes (latency makes the run last): the run stops
    with an error naming ``ledger_path``; once it is back, both machines' runs complete."""
    sandbox = sandbox_factory(latency_ms=100)  # 36 writes still to go take seconds
    server = PostgresServer.create()
    try:
        url = server.create_database("sage")
        a, b = machines(tmp_path, sandbox, url, max_parallel_writes=2)
        tag = "LMDOWN"
        records = [contact(f"LD-{i}", f"{tag} {i}") for i in range(40)]
        msgs = [schema_msg("customers", CONTACT_SCHEMA, ["code"])]
        for i, record in enumerate(records):
            msgs.append(record_msg("customers", record))
            if i % 4 == 3:
                msgs.append(state_msg({"done": i}))
        text = singer(msgs)
        running = a.start(text)
        deadline = time.monotonic() + 120
        while len(a.results()) < 4 and running.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        server.stop()
        try:
            _out, err = running.communicate(timeout=300)
        finally:
            server.start()
        assert running.returncode == 1, err[-3000:]
        (stopped,) = [x for x in err.splitlines() if "target-sage stopped" in x]
        assert "`ledger_path`" in stopped and "went away during this run" in stopped, stopped
        assert "Traceback" not in err
        assert 4 <= len(a.results()) < len(records)

        api = SageAPI(sandbox)
        # back: the other machine (half the records, in another order) and the rerun complete
        half = [schema_msg("customers", CONTACT_SCHEMA, ["code"])]
        half += [record_msg("customers", r) for r in reversed(records[::2])]
        assert b.run(singer(half)).returncode == 0
        again = a.run(text)
        assert again.returncode == 0, again.stderr[-3000:]
        names = sorted(c["name"] for c in api.contacts_named(tag + " "))
        assert names == sorted(r["name"] for r in records)
    finally:
        server.close()


def test_a_delete_read_first_outranks_an_older_version_read_later(
    sandbox: Any, pg_database: str, tmp_path: Path
) -> None:
    """Machine a's input deletes a record Sage never had (its creation is only in b's input,
    read earlier); a runs first. b's older version must not bring the record back."""
    a, b = machines(tmp_path, sandbox, pg_database)
    schema = schema_msg("customers", CONTACT_SCHEMA, ["code"])
    gone = record_msg("customers", {"code": "LT-1", "_sdc_deleted_at": "2025-01-01T00:00:00Z"})
    gone["time_extracted"] = "2025-03-01T10:00:02Z"
    older = record_msg("customers", contact("LT-1", "LT tombstone"))
    older["time_extracted"] = "2025-03-01T10:00:01Z"
    assert a.run(singer([schema, gone])).returncode == 0
    done = b.run(singer([schema, older]))
    assert done.returncode == 0, done.stderr[-3000:]
    assert SageAPI(sandbox).contacts_named("LT tombstone") == []
    (line,) = b.results()
    assert line["outcome"] == "skipped" and "older than the version" in line["$message"]
