"""One connection on two "machines" that share only a PostgreSQL token store.

Each machine is a group of processes with its own HOME, XDG_STATE_HOME, TMPDIR and working
folder; they share the database URL and the key, nothing else (so a file store could not
work: each machine's default store would be its own). Against the sandbox with
``--token-ttl 1``, every tap run refreshes at least once:

- machine A runs the tap over and over and a worker process that calls the API from a thread;
  machine B runs the tap over and over and a ``sage-auth refresh`` loop; both run target-sage
  over and over, with the ledger in the same database (``ledger_path`` = the URL), on the same
  contacts. No invalid_grant, no lost connection, every refresh Sage made is the one in the
  store, and each contact the targets wrote is in Sage once.
- the same, while the database is stopped and started again: the runs that needed it meanwhile
  end with a clear ``store_unreachable`` error, none spends a token it cannot keep, and once it
  is back every run connects and nothing was lost.

``make test`` runs them for ``SAGE_MACHINES_SECONDS`` (default 12); ``make store-soak`` for 60.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tap_sage.sage.token_store_db import new_key
from tests.checkpoint_support import TARGET_CLI
from tests.connection_helpers import (
    ROOT,
    SAGE_AUTH,
    WORKER,
    forget_clients,
    sandbox_config,
    used_refresh_tokens,
    write_config,
)
from tests.tap_helpers import catalog_for, write_json
from tests.test_target_helpers import (
    CONTACT_SCHEMA,
    SageAPI,
    contact,
    record_msg,
    schema_msg,
    singer,
)

SECONDS = float(os.environ.get("SAGE_MACHINES_SECONDS") or 12)
#: Contacts each target run writes (the same ones on both machines).
TARGET_CONTACTS = 5
LOST = ("invalid_grant", "refresh_interrupted", "refresh_unsaved", "refresh_unconfirmed")


@dataclass
class Machine:
    """A folder of its own (home, state, temp) and the environment of its processes."""

    name: str
    root: Path
    env: dict[str, str]
    config: Path
    catalog: Path
    target_config: Path
    runs: list[tuple[str, int, str]] = field(default_factory=list)  # (what, rc, stderr)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, what: str, args: list[str]) -> None:
        proc = subprocess.run(args, cwd=self.root, env=self.env, capture_output=True,
                              text=True, timeout=120, check=False)  # fmt: skip
        detail = proc.stderr
        if what == "tap":
            records = sum(1 for line in proc.stdout.splitlines() if '"type":"RECORD"' in line.replace(" ", ""))  # fmt: skip
            if proc.returncode == 0 and records == 0:
                detail += "\n(no record)"
                proc.returncode = 99
        with self.lock:
            self.runs.append((what, proc.returncode, detail))

    def tap(self) -> list[str]:
        return [sys.executable, "-m", "tap_sage.tap", "--config", str(self.config),
                "--catalog", str(self.catalog)]  # fmt: skip

    def refresh(self) -> list[str]:
        return [*SAGE_AUTH, "refresh", "--config", str(self.config)]

    def target(self) -> list[str]:
        """target-sage on the same contacts as the other machine's, at a newer version."""
        with self.lock:
            turn = sum(1 for r in self.runs if r[0] == "target")
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1e6) % 10**6:06d}Z"  # fmt: skip
        msgs = [schema_msg("customers", CONTACT_SCHEMA, ["code"])]
        for i in range(TARGET_CONTACTS):
            msg = record_msg("customers", contact(f"MT-{i}", f"MT {i} {self.name}{turn}"))
            msg["time_extracted"] = stamp
            msgs.append(msg)
        source = self.root / f"input-{turn}.singer"
        source.write_text(singer(msgs))
        return [sys.executable, "-c", TARGET_CLI, "--config", str(self.target_config),
                "--input", str(source)]  # fmt: skip


def machines(tmp_path: Path, sandbox: Any, url: str, key: str) -> list[Machine]:
    base = sandbox_config(sandbox, Path("unused"), access_token=None)
    base["oauth_settings_location"] = url
    base["advanced_config"].update(lock_timeout=20, max_retries=3)
    catalog = catalog_for(base, ["contacts"])
    target = {**base, "business_id": SageAPI(sandbox).business_id, "ledger_path": url,
              "stream_resources": {"customers": "contacts"}}  # fmt: skip
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
        out.append(Machine(name, root, env, write_config(root / "config.json", base),
                           write_json(root / "catalog.json", catalog),
                           write_config(root / "target.json", target)))  # fmt: skip
    return out


def loop(machine: Machine, what: str, deadline: float, least: int = 2) -> threading.Thread:
    """Run ``what`` over and over until ``deadline``, and at least ``least`` times (however
    slow the machine is)."""

    def body() -> None:
        done = 0
        while time.monotonic() < deadline or done < least:
            done += 1
            args = {"tap": machine.tap, "refresh": machine.refresh, "target": machine.target}
            machine.run(what, args[what]())

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread


def stored(machine: Machine) -> dict[str, Any]:
    """The store's record, read as the machine's processes read it."""
    from tap_sage.sage.client import SageClient

    forget_clients()
    key = os.environ.get("SAGE_TOKEN_STORE_KEY")
    os.environ["SAGE_TOKEN_STORE_KEY"] = machine.env["SAGE_TOKEN_STORE_KEY"]
    try:
        config = json.loads(machine.config.read_text())
        data: dict[str, Any] = SageClient.for_config(config).tokens.store.read()  # type: ignore[attr-defined]
    finally:
        if key is None:
            os.environ.pop("SAGE_TOKEN_STORE_KEY", None)
        else:
            os.environ["SAGE_TOKEN_STORE_KEY"] = key
        forget_clients()
    return data


def summary(ms: list[Machine]) -> str:
    return "; ".join(
        f"{m.name}: " + ", ".join(f"{w} {sum(1 for r in m.runs if r[0] == w and r[1] == 0)}/"
                                  f"{sum(1 for r in m.runs if r[0] == w)} ok"
                                  for w in ("tap", "refresh", "target")
                                  if any(r[0] == w for r in m.runs))
        for m in ms
    )  # fmt: skip


def test_two_machines_share_one_connection_through_the_database(
    sandbox_factory: Any, pg_database: str, tmp_path: Path
) -> None:
    sandbox = sandbox_factory(token_ttl=1)
    a, b = machines(tmp_path, sandbox, pg_database, new_key())
    deadline = time.monotonic() + SECONDS
    worker_out = a.root / "worker.json"
    worker = subprocess.Popen(
        [sys.executable, str(WORKER), str(a.config), "loop", "--seconds", str(SECONDS),
         "--threads", "1", "--out", str(worker_out)],
        cwd=ROOT, env=a.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    threads = [loop(a, "tap", deadline), loop(b, "tap", deadline), loop(b, "refresh", deadline),
               loop(a, "target", deadline), loop(b, "target", deadline)]  # fmt: skip
    _out, worker_err = worker.communicate(timeout=SECONDS + 120)
    for t in threads:
        t.join(SECONDS + 180)
    result = json.loads(worker_out.read_text())
    data = stored(a)
    print(f"\n{SECONDS:.0f}s: {summary([a, b])}; worker {result['ok']} requests, "
          f"{result['refreshes']} refreshes; {data['refresh_count']} refreshes in all")  # fmt: skip
    for machine in (a, b):
        for what, rc, err in machine.runs:
            assert rc == 0, (machine.name, what, err[-3000:])
            assert not any(code in err for code in LOST), err[-3000:]
        assert sum(1 for r in machine.runs if r[0] == "tap") >= 2
    assert worker.returncode == 0 and result["errors"] == {}, (result, worker_err[-2000:])
    assert sum(1 for r in b.runs if r[0] == "refresh") >= 2
    for machine in (a, b):
        assert any(r[0] == "target" for r in machine.runs), machine.name
    # one ledger for both targets: each contact once, whichever machine wrote it last
    held = sorted(c["name"].split()[1] for c in SageAPI(sandbox).contacts_named("MT "))
    assert held == sorted(str(i) for i in range(TARGET_CONTACTS)), held
    assert data["in_flight"] is None and data["last_error"] is None
    assert data["refresh_count"] == used_refresh_tokens(sandbox.db)  # every refresh was kept
    assert data["refresh_count"] >= SECONDS / 2


def test_database_stopped_and_started_mid_run_loses_nothing(
    sandbox_factory: Any, pg_server: Any, pg_database: str, tmp_path: Path
) -> None:
    sandbox = sandbox_factory(token_ttl=1)
    a, b = machines(tmp_path, sandbox, pg_database, new_key())
    a.run("refresh", a.refresh())  # the store exists before the outage
    seconds = max(SECONDS, 12)
    deadline = time.monotonic() + seconds
    threads = [loop(a, "tap", deadline), loop(b, "tap", deadline), loop(b, "refresh", deadline)]
    try:
        time.sleep(seconds / 4)
        pg_server.stop()
        down_at = len(a.runs) + len(b.runs)
        started = time.monotonic()
        outage = subprocess.run(a.refresh(), cwd=a.root, env=a.env, capture_output=True,
                                text=True, timeout=60, check=False)  # fmt: skip
        time.sleep(max(0.0, seconds / 4 - (time.monotonic() - started)))
    finally:
        pg_server.start()
    for t in threads:
        t.join(seconds + 180)
    runs = [(m.name, *r) for m in (a, b) for r in m.runs]
    failed = [r for r in runs if r[2] != 0]
    print(f"\n{seconds:.0f}s, database down for {seconds / 4:.0f}s: {summary([a, b])}")
    if failed:
        print("a failed run ends with:", failed[0][3].strip().splitlines()[-1][:600])
    assert len(runs) > down_at, "no run met the outage"
    # a run that needs the store while it is down: a clear error at once, nothing spent
    assert outage.returncode == 1, outage.stderr
    assert "Cannot reach the token store database" in outage.stderr
    assert "store_unreachable" in outage.stderr and "no token was spent" in outage.stderr
    for name, what, rc, err in runs:
        assert not any(code in err for code in LOST), (name, what, err[-3000:])
        if rc != 0:
            assert "store_unreachable" in err and "oauth_settings_location" in err, err[-3000:]
    # once it is back, each machine connects again, and every refresh is in the store
    for machine in (a, b):
        machine.runs.clear()
        machine.run("tap", machine.tap())
        assert machine.runs[-1][1] == 0, machine.runs[-1][2][-3000:]
    data = stored(a)
    assert data["in_flight"] is None and data["last_error"] is None
    assert data["refresh_count"] == used_refresh_tokens(sandbox.db)


@pytest.mark.parametrize("restart_after", [1.5])
def test_a_write_under_the_lock_survives_a_database_restart(
    sandbox: Any, pg_server: Any, pg_database: str, restart_after: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The session holding the lock dies with the server: the write is retried on a new
    session, under the lock again, and kept."""
    from tap_sage.sage.client import SageClient

    monkeypatch.setenv("SAGE_TOKEN_STORE_KEY", new_key())
    forget_clients()
    config = sandbox_config(sandbox, Path("unused"), access_token=None)
    config["oauth_settings_location"] = pg_database
    tokens = SageClient.for_config(config).tokens
    tokens.refresh_now()  # type: ignore[attr-defined]
    store = tokens.store  # type: ignore[attr-defined]
    with store.locked():
        data = store.read()
        pg_server.stop()
        restart = threading.Timer(restart_after, pg_server.start)
        restart.start()
        try:
            data["scope"] = "kept-across-the-restart"
            store.write(data)
        finally:
            restart.join(60)
    assert store.read()["scope"] == "kept-across-the-restart"
    forget_clients()
