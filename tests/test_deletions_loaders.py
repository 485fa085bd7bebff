"""Records deleted in Sage, through the real loaders (the setting ``deletions``, README
"Deleted records in a warehouse"): the sandbox over HTTP -> tap-sage -> target-postgres into the
suite's PostgreSQL server, and target-duckdb into a DuckDB file; a full sync, a contact deleted
(and another updated) in the sandbox, an incremental sync, then the rows.

- ``flag``: the deleted contact's row keeps every column it had, ``_sdc_deleted_at`` set to
  when Sage deleted it (target-postgres; target-duckdb), or the row is gone (target-duckdb with
  ``hard_delete: true``); every other row is as the sandbox has it, data and all.
- ``stream``: the contacts table is untouched (the row live, its data intact) and
  ``contacts_deletions`` holds the deletion (both loaders).

One sandbox and one full sync feed every loader; then one incremental sync per mode.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

from scripts.pgserver import PostgresServer
from tap_sage.sandbox.runner import SandboxProcess
from tests.tap_helpers import TIMEOUT, Run, run_tap
from tests.warehouse_helpers import Wire, duckdb_query, run_loader

SCHEMA = "sage"
STREAM = "contacts"
Key = tuple[str, str]


def _api(sandbox: SandboxProcess, business: str, method: str, path: str, body: Any = None) -> requests.Response:  # fmt: skip
    return requests.request(
        method,
        sandbox.api_url + path,
        data=None if body is None else json.dumps(body),
        headers={
            "Authorization": f"Bearer {sandbox.grant()['access_token']}",
            "Accept": "application/json",
            "Content-Type": "application/json",
            "X-Business": business,
        },
        timeout=TIMEOUT,
    )


def _is_meta(column: str) -> bool:
    return column.startswith("_sdc_")


# -- what the loaders stored -----------------------------------------------------------------------
def postgres_rows(url: str, table: str = STREAM) -> dict[Key, dict[str, Any]]:
    """(business_id, id) -> the row as JSON (PostgreSQL's text of every column)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(f'SELECT row_to_json(t)::text FROM {SCHEMA}."{table}" t')).all()  # noqa: S608  # fmt: skip
    finally:
        engine.dispose()
    found = [json.loads(r[0], parse_float=str) for r in rows]
    return {(r["business_id"], r["id"]): r for r in found}


def duckdb_rows(db: Path, table: str = STREAM) -> dict[Key, dict[str, Any]]:
    """(business_id, id) -> the row (every column, as DuckDB's Python values printed)."""
    columns_sql = (
        "SELECT column_name FROM information_schema.columns WHERE table_schema = "  # noqa: S608
        f"'{SCHEMA}' AND table_name = '{table}' ORDER BY ordinal_position"
    )
    got = duckdb_query(db, {"columns": columns_sql, "rows": f'SELECT * FROM {SCHEMA}."{table}"'})  # noqa: S608  # fmt: skip
    names = [c[0] for c in got["columns"]]
    rows = [dict(zip(names, r, strict=True)) for r in got["rows"]]
    return {(r["business_id"], r["id"]): r for r in rows}


def data(row: dict[str, Any]) -> dict[str, Any]:
    """A row without the loaders' own metadata columns."""
    return {k: v for k, v in row.items() if not _is_meta(k)}


def utc_naive(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)


# -- the scenario ----------------------------------------------------------------------------------
class Scenario:
    """A full sync (``full``); then (``change_and_resync``) one contact deleted in the first
    business and one renamed in the last, and an incremental sync per mode (``incremental``).

    The full sync is one run for both modes: a first read emits only the deletions made while
    it reads (none here), so its output is the same in either mode (checked)."""

    def __init__(self, sandbox: SandboxProcess, config: dict[str, Any], tmp: Path) -> None:
        self.sandbox, self.tmp, self.config = sandbox, tmp, config
        self.wire = Wire(sandbox)
        self.full = run_tap(tmp, {**config, "deletions": "flag"}, [STREAM], tag="full")
        assert not self.deletions(self.full)
        assert {m["stream"] for m in self.full.messages if "stream" in m} == {STREAM}
        self.name = "Renamed Ltd"
        self.incremental: dict[str, Run] = {}

    def change_and_resync(self, modes: tuple[str, ...]) -> None:
        first, last = self.wire.business_ids[0], self.wire.business_ids[-1]
        assert first != last  # the full SCHEMA must come back for the next business's records
        items = self.wire.items(STREAM)
        ids = {b: sorted(k[1] for k in items if k[0] == b) for b in (first, last)}
        self.deleted: Key = (first, ids[first][0])
        self.updated: Key = (last, ids[last][0])
        gone = _api(self.sandbox, first, "DELETE", f"/{STREAM}/{self.deleted[1]}")
        assert gone.status_code == 204, gone.text
        body = {"contact": {"name": self.name}}
        renamed = _api(self.sandbox, last, "PUT", f"/{STREAM}/{self.updated[1]}", body)
        assert renamed.status_code == 200, renamed.text
        for mode in modes:
            settings = {**self.config, "deletions": mode}
            self.incremental[mode] = run_tap(self.tmp, settings, [STREAM], state=self.full.state, tag=f"{mode}-incr")  # fmt: skip
        self.live = self.wire.items(STREAM)  # the sandbox now, as Sage's client reads it
        assert self.deleted not in self.live and self.updated in self.live

    @staticmethod
    def deletions(run: Run, stream: str = STREAM) -> dict[Key, str]:
        """(business_id, id) -> the deletion time the tap emitted on ``stream``."""
        found = {}
        for r in run.records(stream):
            when = r.get("_sdc_deleted_at") if stream == STREAM else r.get("deleted_at")
            if when:
                found[(r["business_id"], r["id"])] = when
        return found


def check_live_rows(rows: dict[Key, dict[str, Any]], scenario: Scenario) -> None:
    """Every live contact of the sandbox has its row, unflagged, with its name (the updated one
    renamed)."""
    for key, item in scenario.live.items():
        row = rows[key]
        assert row["_sdc_deleted_at"] is None, key
        assert row["name"] == item["name"], key
    assert rows[scenario.updated]["name"] == scenario.name


def check_flagged(before: dict[Key, dict[str, Any]], after: dict[Key, dict[str, Any]], scenario: Scenario, stamp: Any) -> None:  # fmt: skip
    """The deleted contact keeps its data, flagged; no row lost data; the only rows without a
    name are deletions of records the warehouse never had (Sage tells nothing else of them)."""
    key = scenario.deleted
    assert data(after[key]) == data(before[key])
    assert after[key]["name"]  # not a row of nulls
    emitted = scenario.deletions(scenario.incremental["flag"])
    assert key in emitted
    assert after[key]["_sdc_deleted_at"] == stamp(emitted[key])
    check_live_rows(after, scenario)
    flagged = {k for k, r in after.items() if r["_sdc_deleted_at"] is not None}
    assert flagged == set(emitted)
    for k, row in after.items():
        if k in before and k != scenario.updated:
            assert data(row) == data(before[k]), k  # nothing else changed
        if not row["name"]:
            assert k in flagged and k not in before, k


def check_removed(before: dict[Key, dict[str, Any]], after: dict[Key, dict[str, Any]], scenario: Scenario) -> None:  # fmt: skip
    """The deleted contact's row is gone, every live one kept with its data."""
    assert scenario.deleted in before and scenario.deleted not in after
    assert set(after) == set(scenario.live)  # every flagged row removed, every live one kept
    check_live_rows(after, scenario)
    for key, row in after.items():
        if key != scenario.updated:
            assert data(row) == data(before[key]), key


def check_listed(before: dict[Key, dict[str, Any]], after: dict[Key, dict[str, Any]], listed: dict[Key, dict[str, Any]], scenario: Scenario, stamp: Any) -> None:  # fmt: skip
    """The stream's table untouched but for the rename; the deletions in their own table."""
    emitted = scenario.deletions(scenario.incremental["stream"], f"{STREAM}_deletions")
    assert scenario.deleted in emitted
    assert not scenario.deletions(scenario.incremental["stream"])  # none on the stream itself
    assert set(after) == set(before)  # no row added, none removed
    assert data(after[scenario.deleted]) == data(before[scenario.deleted])
    assert all(r["_sdc_deleted_at"] is None for r in after.values())
    assert after[scenario.updated]["name"] == scenario.name
    assert set(listed) == set(emitted)
    assert listed[scenario.deleted]["deleted_at"] == stamp(emitted[scenario.deleted])
    # the live contacts, as a user's query (or view) finds them
    assert {k for k in after if k not in listed} == set(scenario.live)


def pg_config(url: str) -> dict[str, Any]:
    return {
        "sqlalchemy_url": url,
        "default_target_schema": SCHEMA,
        "load_method": "upsert",
        "validate_records": True,
        "add_record_metadata": True,
    }


def duck_config(db: Path, **more: Any) -> dict[str, Any]:
    return {
        "filepath": str(db),
        "default_target_schema": SCHEMA,
        "validate_records": True,
        "add_metadata_columns": True,
        **more,
    }


def pg_stamp(value: str) -> str:
    """A date-time as row_to_json prints a ``timestamp without time zone`` (UTC)."""
    return utc_naive(value).isoformat()


def duck_stamp(value: str) -> str:
    """target-duckdb keeps ``_sdc_deleted_at`` as the VARCHAR the record carried."""
    return value


def duck_timestamp(value: str) -> str:
    """A ``TIMESTAMP`` column as DuckDB's Python value prints (UTC)."""
    return str(utc_naive(value))


def test_deletions_through_the_real_loaders(
    sandbox: SandboxProcess, connection_config: dict[str, Any], pg_server: PostgresServer, tmp_path: Path
) -> None:  # fmt: skip
    """``flag``: target-postgres and target-duckdb keep the deleted contact's row with its data
    and ``_sdc_deleted_at``; target-duckdb with ``hard_delete: true`` removes it. ``stream``:
    both loaders leave the contacts table alone and load ``contacts_deletions``."""
    urls = {m: pg_server.create_database(f"deletions_{m}_{uuid.uuid4().hex[:8]}") for m in ("flag", "stream")}  # fmt: skip
    files = {name: tmp_path / f"{name}.duckdb" for name in ("flag", "remove", "stream")}
    loads = {  # name -> (mode, loader, config, read the table)
        "postgres-flag": ("flag", "target-postgres", pg_config(urls["flag"])),
        "duckdb-flag": ("flag", "target-duckdb", duck_config(files["flag"])),
        "duckdb-remove": ("flag", "target-duckdb", duck_config(files["remove"], hard_delete=True)),
        "postgres-stream": ("stream", "target-postgres", pg_config(urls["stream"])),
        "duckdb-stream": ("stream", "target-duckdb", duck_config(files["stream"])),
    }

    def read(name: str, table: str = STREAM) -> dict[Key, dict[str, Any]]:
        kind, mode = name.split("-")
        if kind == "postgres":
            return postgres_rows(urls[mode], table)
        return duckdb_rows(files[mode], table)

    scenario = Scenario(sandbox, connection_config, tmp_path)
    before = {}
    for name, (_mode, loader, config) in loads.items():
        run_loader(loader, tmp_path, config, scenario.full, f"{name}-full")
        before[name] = read(name)
        assert set(before[name]) == set(scenario.wire.items(STREAM)), name
    scenario.change_and_resync(("flag", "stream"))
    for name, (mode, loader, config) in loads.items():
        run_loader(loader, tmp_path, config, scenario.incremental[mode], f"{name}-incr")

    check_flagged(before["postgres-flag"], read("postgres-flag"), scenario, pg_stamp)
    check_flagged(before["duckdb-flag"], read("duckdb-flag"), scenario, duck_stamp)
    check_removed(before["duckdb-remove"], read("duckdb-remove"), scenario)
    for name, stamp in (("postgres-stream", pg_stamp), ("duckdb-stream", duck_timestamp)):
        listed = read(name, f"{STREAM}_deletions")
        check_listed(before[name], read(name), listed, scenario, stamp)
