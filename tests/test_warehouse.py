"""tap-sage into real warehouses: the sandbox over HTTP -> tap-sage -> a real loader -> a real
database, a full and then an incremental sync, validation on in the loader.

- PostgreSQL: ``meltanolabs-target-postgres`` (its own venv, scripts/loader_venvs.py) into the
  session's private server (the ``pg_server`` fixture, scripts/pgserver.py).
- DuckDB: ``target-duckdb`` 0.8.0 with duckdb 1.2.2, the pins of meltano.yml.

Checked: rows per table equal the sandbox's ``$total`` per stream (live rows, after the
incremental run too), every decimal equal digit for digit to the text the sandbox sent (never
through a float), and the column types of amounts, dates and date-times.

Streams: a handful that covers every kind of column the checks care about, so the module stays
within a minute (`make warehouse-all` takes all 84 streams that read without a filter, about
three times as long):
``contacts`` (the biggest list after invoices, several pages, deletions, balance/credit_limit),
``products`` and ``bank_accounts`` (the decimals the real recordings show as strings:
``cost_price``, ``balance``), ``sales_invoices`` (dates, due dates, many amounts, sorted
incremental, the longest list, amounts in its lines too) and ``ledger_accounts`` (incremental without deletions).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from scripts import loader_venvs
from tap_sage import duckdb_views, partitioning
from tap_sage.sage import catalogue
from tap_sage.sandbox.runner import SandboxProcess
from tests.tap_helpers import TIMEOUT, Run, run_tap, write_json
from tests.warehouse_helpers import (
    Key,
    Wire,
    as_text,
    decimal_columns,
    duckdb_query,
    duckdb_run,
    format_columns,
    key_columns,
    run_loader,
    schemas,
)

SCHEMA = "sage"


def _streams() -> tuple[str, ...]:
    """The streams of these tests: five by default; ``WAREHOUSE_STREAMS=all`` (``make
    warehouse-all``, about two minutes more) takes every stream that reads without a filter."""
    chosen = os.environ.get("WAREHOUSE_STREAMS", "")
    if chosen == "all":
        # (tax_determinations reads once per `usage`: its own test, tests/test_tap_progress.py)
        return tuple(n for n, r in sorted(catalogue.resources().items()) if not partitioning.needs_filters(r) and not partitioning.enumerated(r) and r.list)  # fmt: skip
    if chosen:
        return tuple(chosen.split(","))
    return ("contacts", "products", "bank_accounts", "sales_invoices", "ledger_accounts")


STREAMS = _streams()


# -- reading the warehouses ------------------------------------------------------------------
class Postgres:
    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url)

    def close(self) -> None:
        self.engine.dispose()

    def column_types(self, table: str) -> dict[str, str]:
        sql = sa.text(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = :s AND table_name = :t"
        )
        with self.engine.connect() as conn:
            return {str(n): str(t) for n, t in conn.execute(sql, {"s": SCHEMA, "t": table})}

    def rows(self, table: str, columns: list[str], cast: str = "::text") -> dict[Key, dict[str, Any]]:  # fmt: skip
        """key -> {column: value}, of the live rows (``cast`` "::text": as PostgreSQL prints
        them; "": as the driver returns them). A table the loader never made has none."""
        if not self.column_types(table):
            return {}
        keys = key_columns(table)
        cols = ", ".join([*keys, *(f'"{c}"{cast}' for c in columns)])
        sql = f'SELECT {cols} FROM {SCHEMA}."{table}" WHERE _sdc_deleted_at IS NULL'  # noqa: S608 (our names)
        with self.engine.connect() as conn:
            found = conn.execute(sa.text(sql)).all()
        n = len(keys)
        return {tuple(r[:n]): dict(zip(columns, r[n:], strict=True)) for r in found}

    def texts(self, table: str, columns: list[str]) -> dict[Key, dict[str, Any]]:
        return self.rows(table, columns)

    def values(self, table: str, columns: list[str]) -> dict[Key, dict[str, Any]]:
        return self.rows(table, columns, cast="")


def utc_naive(value: str) -> dt.datetime:
    """A wire date-time as loaders store it: converted to UTC, without a zone."""
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture
def postgres(pg_database: str) -> Iterator[Postgres]:
    db = Postgres(pg_database)
    yield db
    db.close()


def postgres_config(url: str) -> dict[str, Any]:
    return {
        "sqlalchemy_url": url,
        "default_target_schema": SCHEMA,
        "load_method": "upsert",
        "validate_records": True,
        "add_record_metadata": True,
    }


class Api:
    """Changes made by another Sage client between the two runs."""

    def __init__(self, sandbox: SandboxProcess, business: str) -> None:
        self.url = sandbox.api_url
        self.headers = {
            "Authorization": f"Bearer {sandbox.grant()['access_token']}",
            "Accept": "application/json",
            "Content-Type": "application/json",
            "X-Business": business,
        }

    def send(self, method: str, path: str, body: str | None = None) -> requests.Response:
        return requests.request(
            method, self.url + path, data=body, headers=self.headers, timeout=TIMEOUT
        )


def change_the_sandbox(sandbox: SandboxProcess, wire: Wire) -> dict[str, str]:
    """An update of an amount, a new contact and a deleted contact; returns their ids."""
    business = wire.business_ids[0]
    api = Api(sandbox, business)
    products = sorted(k[1] for k in wire.items("products") if k[0] == business)
    contacts = sorted(k[1] for k in wire.items("contacts") if k[0] == business)
    # the amount is written as a JSON number (the spec's type); the sandbox answers in its own
    # form, and the warehouse must hold what it answers, digit for digit
    changed = api.send("PUT", f"/products/{products[0]}", '{"product": {"cost_price": 98765.4321}}')
    assert changed.status_code == 200, changed.text
    created = api.send(
        "POST", "/contacts", json.dumps({"contact": {"name": "Warehouse Ltd", "contact_type_ids": ["CUSTOMER"]}})
    )  # fmt: skip
    assert created.status_code == 201, created.text
    deleted = api.send("DELETE", f"/contacts/{contacts[0]}")
    assert deleted.status_code == 204, deleted.text
    return {"product": products[0], "created": created.json()["id"], "deleted": contacts[0]}


# -- checks ----------------------------------------------------------------------------------
def check_postgres(db: Postgres, wire: Wire, tap: Run) -> None:
    totals = wire.totals(STREAMS)
    counts = {stream: len(db.rows(stream, [])) for stream in STREAMS}
    assert counts == totals
    checked_amounts = 0
    for stream, schema in schemas(tap).items():
        types = db.column_types(stream)
        items = wire.items(stream)
        if not types:  # no table: the loader had no record of it (the counts say it had none)
            continue
        amounts = decimal_columns(schema)
        dates = format_columns(schema, "date")
        stamps = format_columns(schema, "date-time")
        assert {types[c] for c in amounts} <= {"numeric"}, {c: types[c] for c in amounts}
        assert {types[c] for c in dates} <= {"date"}, stream
        assert {types[c] for c in stamps} <= {"timestamp without time zone"}, stream
        stored = db.texts(stream, amounts + dates)
        assert set(stored) == set(items), stream
        for key, row in stored.items():
            for column in amounts:
                assert row[column] == as_text(items[key].get(column)), (stream, key, column)
                checked_amounts += row[column] is not None
            for column in dates:
                assert row[column] == (items[key].get(column) or None), (stream, key, column)
        for key, row in db.values(stream, stamps).items():
            for column in stamps:
                sent = items[key].get(column)
                assert row[column] == (utc_naive(sent) if sent else None), (stream, key, column)
    assert checked_amounts > 1000  # the check above saw real amounts, not only nulls
    if "sales_invoices" in STREAMS:
        check_nested_amounts(db, wire, tap)


def check_nested_amounts(db: Postgres, wire: Wire, tap: Run) -> None:
    """Amounts inside arrays of objects (invoice lines, a ``jsonb[]`` column) keep their text."""
    schema = schemas(tap)["sales_invoices"]["properties"]["invoice_lines"]["items"]
    amounts = decimal_columns(schema)
    assert db.column_types("sales_invoices")["invoice_lines"] == "ARRAY"  # of jsonb
    items = wire.items("sales_invoices")
    stored = db.texts("sales_invoices", [])  # keys only
    sql = sa.text(
        f'SELECT business_id, id, to_jsonb(invoice_lines)::text FROM {SCHEMA}."sales_invoices"'  # noqa: S608
    )
    with db.engine.connect() as conn:
        rows = conn.execute(sql).all()
    checked = 0
    for business, key, text in rows:
        lines = json.loads(text, parse_float=str) if text else []
        sent = items[(business, key)].get("invoice_lines") or []
        assert len(lines) == len(sent), key
        for got, line in zip(lines, sent, strict=True):
            for column in amounts:
                assert as_text(got.get(column)) == as_text(line.get(column)), (key, column)
                checked += line.get(column) is not None
    assert len(rows) == len(stored)
    assert checked > 1000


def test_full_then_incremental_sync_into_postgres(
    sandbox: SandboxProcess, connection_config, postgres: Postgres, pg_database: str, tmp_path: Path
) -> None:
    wire = Wire(sandbox)
    config = postgres_config(pg_database)
    full = run_tap(tmp_path, connection_config, STREAMS, tag="full")
    states = run_loader("target-postgres", tmp_path, config, full, "full")
    check_postgres(postgres, wire, full)
    types = postgres.column_types("contacts")
    assert (types["main_address"], types["contact_types"]) == ("jsonb", "ARRAY")

    ids = change_the_sandbox(sandbox, wire)
    incremental = run_tap(tmp_path, connection_config, STREAMS, state=states[-1], tag="incr")
    assert 0 < len(incremental.records()) < len(full.records()) / 4  # only what changed
    run_loader("target-postgres", tmp_path, config, incremental, "incr")
    check_postgres(postgres, wire, incremental)
    business = wire.business_ids[0]
    product = postgres.texts("products", ["cost_price"])[(business, ids["product"])]
    assert product["cost_price"] == as_text(
        wire.items("products")[(business, ids["product"])]["cost_price"]
    )
    assert Decimal(product["cost_price"]) == Decimal("98765.4321")
    contacts = postgres.texts("contacts", [])
    assert (business, ids["created"]) in contacts
    assert (business, ids["deleted"]) not in contacts


def test_the_loader_venvs_are_pinned_like_meltano_yml() -> None:
    """The DuckDB loader of the tests is the one the demo's meltano.yml installs."""
    text = (Path(__file__).resolve().parent.parent / "meltano.yml").read_text(encoding="utf-8")
    pins = " ".join(loader_venvs.LOADERS["target-duckdb"][0])
    assert f"pip_url: {pins}" in text


# -- DuckDB --------------------------------------------------------------------------------------
# What target-duckdb 0.8.0 types a column (db_sync.column_type): date-time -> TIMESTAMP, any
# "number" -> DOUBLE (a float: never for money), every other string, `date` included -> VARCHAR.
FLOATS = {"DOUBLE", "FLOAT", "REAL"}


def check_duckdb(db: Path, wire: Wire, tap: Run) -> None:
    queries: dict[str, str] = {}
    columns: dict[str, tuple[list[str], list[str], list[str]]] = {}
    for stream, schema in schemas(tap).items():
        amounts = decimal_columns(schema)
        dates = format_columns(schema, "date")
        # _sdc_deleted_at: target-duckdb adds its own metadata column (VARCHAR) over the tap's
        stamps = [c for c in format_columns(schema, "date-time") if c != "_sdc_deleted_at"]
        columns[stream] = (amounts, dates, stamps)
        texts = "".join(f', CAST("{c}" AS VARCHAR)' for c in amounts + dates + stamps)
        exact = "".join(f', CAST(CAST("{c}" AS DECIMAL(38, 10)) AS VARCHAR)' for c in amounts)
        live = f'FROM {SCHEMA}."{stream}" WHERE _sdc_deleted_at IS NULL'
        queries[f"{stream} types"] = (
            "SELECT column_name, data_type FROM information_schema.columns"  # noqa: S608
            f" WHERE table_schema = '{SCHEMA}' AND table_name = '{stream}'"
        )
        keys = ", ".join(key_columns(stream))
        queries[f"{stream} rows"] = f"SELECT {keys}{texts} {live}"
        queries[f"{stream} decimals"] = f"SELECT {keys}{exact} {live}"
    result = duckdb_query(db, queries)

    totals = wire.totals(STREAMS)
    assert {s: len(result[f"{s} rows"]) for s in STREAMS} == totals
    checked_amounts = 0
    for stream, (amounts, dates, stamps) in columns.items():
        types = dict(result[f"{stream} types"])
        if not types:  # no table: the loader had no record of it (the counts say it had none)
            continue
        for column in amounts:  # exact text (VARCHAR) or DECIMAL: never a float
            assert types[column] == "VARCHAR" or types[column].startswith("DECIMAL"), (stream, column, types[column])  # fmt: skip
        assert {types[c] for c in dates} <= {"VARCHAR"}, stream
        assert {types[c] for c in stamps} <= {"TIMESTAMP"}, stream
        items = wire.items(stream)
        n = len(key_columns(stream))
        rows = {tuple(r[:n]): r[n:] for r in result[f"{stream} rows"]}
        assert set(rows) == set(items), stream
        for key, row in rows.items():
            item = items[key]
            values = dict(zip(amounts + dates + stamps, row, strict=True))
            for column in amounts:
                assert values[column] == as_text(item.get(column)), (stream, key, column)
                checked_amounts += values[column] is not None
            for column in dates:
                assert values[column] == (item.get(column) or None), (stream, key, column)
            for column in stamps:
                sent, got = item.get(column), values[column]
                assert (dt.datetime.fromisoformat(got) if got else None) == (utc_naive(sent) if sent else None), (stream, key, column)  # fmt: skip
        # and each one becomes a DECIMAL in SQL without losing a digit
        for r in result[f"{stream} decimals"]:
            for column, value in zip(amounts, r[n:], strict=True):
                sent = as_text(items[tuple(r[:n])].get(column))
                assert (Decimal(value) if value else None) == (Decimal(sent) if sent else None)
    assert checked_amounts > 1000


def test_full_then_incremental_sync_into_duckdb(
    sandbox: SandboxProcess, connection_config, tmp_path: Path
) -> None:
    wire = Wire(sandbox)
    db = tmp_path / "warehouse.duckdb"
    config = {
        "filepath": str(db),
        "default_target_schema": SCHEMA,
        "validate_records": True,
        "add_metadata_columns": True,
    }
    full = run_tap(tmp_path, connection_config, STREAMS, tag="full")
    states = run_loader("target-duckdb", tmp_path, config, full, "full")
    check_duckdb(db, wire, full)

    ids = change_the_sandbox(sandbox, wire)
    incremental = run_tap(tmp_path, connection_config, STREAMS, state=states[-1], tag="incr")
    assert 0 < len(incremental.records()) < len(full.records()) / 4
    run_loader("target-duckdb", tmp_path, config, incremental, "incr")
    check_duckdb(db, wire, incremental)
    business = wire.business_ids[0]
    product = (
        f"SELECT CAST(cost_price AS VARCHAR) FROM {SCHEMA}.products WHERE id = '{ids['product']}'"  # noqa: S608
    )
    contacts = f"SELECT id FROM {SCHEMA}.contacts WHERE business_id = '{business}' AND _sdc_deleted_at IS NULL"  # noqa: S608
    got = duckdb_query(db, {"product": product, "contacts": contacts})
    assert Decimal(got["product"][0][0]) == Decimal("98765.4321")
    live = {r[0] for r in got["contacts"]}
    assert ids["created"] in live
    assert ids["deleted"] not in live
    check_duckdb_decimal_views(db, wire, incremental)


def check_duckdb_decimal_views(db: Path, wire: Wire, tap: Run) -> None:
    """``python -m tap_sage.duckdb_views`` (README "Decimals in DuckDB"): its views over the
    loader's tables type every amount DECIMAL(38, 10), equal to the text the sandbox sent."""
    streams = sorted(schemas(tap))
    command = [sys.executable, "-m", "tap_sage.duckdb_views", "--schema", SCHEMA]
    command += ["--streams", ",".join(streams)]
    made = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    duckdb_query(db, {"views": made.stdout}, write=True)
    views = f"{SCHEMA}_decimal"
    queries: dict[str, str] = {}
    amounts = {s: decimal_columns(schemas(tap)[s]) for s in streams}
    for stream in streams:
        if not amounts[stream]:
            continue
        keys = ", ".join(key_columns(stream))
        texts = "".join(f', CAST("{c}" AS VARCHAR)' for c in amounts[stream])
        queries[f"{stream} types"] = (
            "SELECT column_name, data_type FROM information_schema.columns"  # noqa: S608
            f" WHERE table_schema = '{views}' AND table_name = '{stream}'"
        )
        queries[f"{stream} rows"] = f'SELECT {keys}{texts} FROM {views}."{stream}" WHERE _sdc_deleted_at IS NULL'  # noqa: S608  # fmt: skip
    result = duckdb_query(db, queries)
    checked = 0
    for stream in streams:
        if not amounts[stream]:
            continue
        types = dict(result[f"{stream} types"])
        assert {types[c] for c in amounts[stream]} == {"DECIMAL(38,10)"}, (stream, types)
        items = wire.items(stream)
        n = len(key_columns(stream))
        rows = result[f"{stream} rows"]
        assert {tuple(r[:n]) for r in rows} == set(items), stream
        for r in rows:
            for column, got in zip(amounts[stream], r[n:], strict=True):
                sent = as_text(items[tuple(r[:n])].get(column))
                assert (Decimal(got) if got is not None else None) == (Decimal(sent) if sent else None), (stream, r[:n], column)  # fmt: skip
                checked += got is not None
    assert checked > 1000


_VIEW_TABLE = """
CREATE SCHEMA sage;
CREATE TABLE sage.products (id VARCHAR, cost_price VARCHAR);
INSERT INTO sage.products VALUES ('a', '-430035.84'), ('b', '1.12345678900000'), ('c', NULL);
"""


def test_the_duckdb_views_refuse_what_decimal_38_10_would_round(tmp_path: Path) -> None:
    """A value with more than ten significant decimals, or 29 integer digits, fails the query
    (naming the table, column and value) instead of being rounded; trailing zeros are fine."""
    db = tmp_path / "views.duckdb"
    decimal = {"type": ["string", "null"], "format": "x-singer.decimal"}
    schema = {"properties": {"id": {"type": "string"}, "cost_price": decimal}}
    views = duckdb_views.script([("products", schema)], "sage")
    duckdb_query(db, {"table": _VIEW_TABLE, "views": views}, write=True)
    read = "SELECT id, CAST(cost_price AS VARCHAR) FROM sage_decimal.products ORDER BY id"
    rows = duckdb_query(db, {"rows": read})["rows"]
    assert rows == [["a", "-430035.8400000000"], ["b", "1.1234567890"], ["c", None]]
    for bad in ("1.12345678901", "1" * 29):
        change = f"UPDATE sage.products SET cost_price = '{bad}' WHERE id = 'a'"  # noqa: S608
        duckdb_query(db, {"change": change}, write=True)
        proc = duckdb_run(db, {"rows": read})
        assert proc.returncode != 0
        assert f"sage.products.cost_price: {bad} does not fit DECIMAL(38, 10)" in proc.stderr


@pytest.mark.parametrize("loader", ["target-postgres", "target-duckdb"])
def test_the_loaders_validate_records_as_configured_here(loader: str, pg_database: str, tmp_path: Path) -> None:  # fmt: skip
    """The configurations above really validate: a decimal sent as a JSON number where the
    schema says x-singer.decimal (a string) stops the loader, naming the type."""
    schema = {"id": {"type": "string"}, "cost_price": {"type": ["string", "null"], "format": "x-singer.decimal"}}  # fmt: skip
    lines = [
        {
            "type": "SCHEMA",
            "stream": "products",
            "key_properties": ["id"],
            "schema": {"type": "object", "properties": schema},
        },
        {"type": "RECORD", "stream": "products", "record": {"id": "a", "cost_price": 10.0}},
    ]
    config = (
        postgres_config(pg_database)
        if loader == "target-postgres"
        else {
            "filepath": str(tmp_path / "w.duckdb"),
            "default_target_schema": SCHEMA,
            "validate_records": True,
        }
    )
    proc = subprocess.run(
        [str(loader_venvs.ensure(loader)), "--config", str(write_json(tmp_path / "c.json", config))],
        input="".join(json.dumps(m) + "\n" for m in lines),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "is not of type 'string', 'null'" in proc.stderr
