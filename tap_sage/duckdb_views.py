"""DuckDB views that give tap-sage's decimals the type ``DECIMAL``, exactly (README, "Decimals in
DuckDB").

No DuckDB loader on PyPI types a column ``DECIMAL``: ``target-duckdb`` 0.8.0 (the only one)
maps a JSON ``number`` to ``DOUBLE`` and every other string to ``VARCHAR`` (its
``db_sync.column_type`` reads neither ``format`` nor ``x-sql-datatype``, and no setting overrides
it), and it renames away any column whose type is not the one it would choose, so a table made
beforehand with ``DECIMAL`` columns does not survive the next load. tap-sage's decimals arrive
there as ``VARCHAR`` holding Sage's exact text. These views cast them::

    python -m tap_sage.duckdb_views --schema sage [--catalog tap.properties.json] > views.sql
    duckdb warehouse.duckdb < views.sql     # then: SELECT ... FROM sage_decimal.products

Each view is ``SELECT * REPLACE (<decimal> AS <column>, ...) FROM <schema>.<stream>``: the same
columns in the same order, the decimals as ``DECIMAL(38, 10)``. A value that does not fit (more
than 28 digits before the point, or non-zero digits past the tenth after it) makes the query
fail with the table, column and value rather than round: a cast never loses a digit silently.
Decimals inside ``JSON`` columns (invoice lines) stay JSON text, exact.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tap_sage.sage import catalogue, wire
from tap_sage.streams import stream_schema

PRECISION, SCALE = 38, 10
SUFFIX = "_decimal"  # the views' schema: <loader's schema>_decimal

# Sage's text that fits DECIMAL(38, 10): tap-sage emits plain fixed-point digits only
# (tap_sage/sage/wire.py); zeros past the tenth decimal are harmless
_FITS = rf"-?[0-9]{{1,{PRECISION - SCALE}}}(\.[0-9]{{0,{SCALE}}}0*)?"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def decimal_columns(schema: dict[str, Any]) -> list[str]:
    """The top-level properties of a stream schema that carry Sage decimals."""
    return [name for name, node in schema.get("properties", {}).items() if wire.is_decimal(node)]


def view_sql(stream: str, schema: dict[str, Any], source: str, target: str) -> str | None:
    """``CREATE OR REPLACE VIEW`` of ``stream`` (None when it has no top-level decimal).
    target-duckdb names tables and columns in lower case."""
    columns = decimal_columns(schema)
    if not columns:
        return None
    table = f"{_ident(source)}.{_ident(stream.lower())}"
    casts = []
    for column in columns:
        col = _ident(column.lower())
        where = _literal(f"{source}.{stream}.{column.lower()}: ")
        casts.append(
            f"    CASE WHEN NOT regexp_full_match({col}, {_literal(_FITS)})\n"
            f"      THEN error({where} || {col} || ' does not fit DECIMAL({PRECISION}, {SCALE})')\n"
            f"      ELSE CAST({col} AS DECIMAL({PRECISION}, {SCALE})) END AS {col}"
        )
    view = f"{_ident(target)}.{_ident(stream.lower())}"
    replaced = ",\n".join(casts)
    # identifiers and literals quoted above
    return f"CREATE OR REPLACE VIEW {view} AS\n  SELECT * REPLACE (\n{replaced}\n  ) FROM {table};"  # noqa: S608


def script(streams: Iterable[tuple[str, dict[str, Any]]], source: str, target: str | None = None) -> str:  # fmt: skip
    """The SQL that makes the views of ``streams`` (name, schema) over tables in ``source``."""
    into = target or source + SUFFIX
    parts = [f"CREATE SCHEMA IF NOT EXISTS {_ident(into)};"]
    for name, schema in streams:
        sql = view_sql(name, schema, source, into)
        if sql is not None:
            parts.append(sql)
    return "\n".join(parts) + "\n"


def _from_catalog(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The selected streams of a Singer catalog (what the tap loads)."""
    catalog = json.loads(path.read_text(encoding="utf-8"))
    chosen = []
    for entry in catalog.get("streams", []):
        top: dict[str, Any] = next(
            (m["metadata"] for m in entry.get("metadata", []) if m.get("breadcrumb") == []), {}
        )
        if top.get("selected", top.get("selected-by-default", False)):
            chosen.append((str(entry["tap_stream_id"]), entry["schema"]))
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tap_sage.duckdb_views",
        description="Print DuckDB views that type tap-sage's decimals DECIMAL(38, 10), exactly.",
    )
    parser.add_argument("--schema", default="sage", help="the loader's default_target_schema")
    parser.add_argument("--into", help="schema of the views (default: <schema>_decimal)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--catalog", type=Path, help="a Singer catalog: its selected streams")
    group.add_argument("--streams", help="comma-separated stream names (default: every stream)")
    args = parser.parse_args(argv)
    if args.catalog is not None:
        streams = _from_catalog(args.catalog)
    else:
        known = catalogue.resources()
        names = args.streams.split(",") if args.streams else sorted(known)
        unknown = [n for n in names if n not in known]
        if unknown:
            parser.error(f"--streams: no stream named {', '.join(unknown)}")
        streams = [
            (n, stream_schema(known[n])) for n in names if known[n].list or known[n].singleton
        ]
    sys.stdout.write(script(streams, args.schema, args.into))
    return 0


if __name__ == "__main__":
    sys.exit(main())
