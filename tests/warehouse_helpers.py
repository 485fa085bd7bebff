"""Helpers of the warehouse tests: feed tap-sage's output to a real loader, read the sandbox's
wire as Sage's client would, and read back what the loader stored."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import requests

from scripts import loader_venvs
from tap_sage.sage import catalogue
from tap_sage.sandbox.runner import SandboxProcess
from tests.tap_helpers import TIMEOUT, Run, businesses, write_json

# Where a stream's schema says "a decimal": the format engineer C's wire change emits (see
# /work/brief/loaders.md and the README's "Warehouse round trip"), or the plain JSON number the
# tap sent before it.
DECIMAL_FORMAT = "x-singer.decimal"


def run_loader(name: str, tmp: Path, config: dict[str, Any], tap: Run, tag: str) -> list[dict[str, Any]]:  # fmt: skip
    """Feed ``tap``'s output to loader ``name`` (its own venv); returns the STATE values it
    emitted (the last one is what Meltano would keep for the next run)."""
    executable = loader_venvs.ensure(name)
    proc = subprocess.run(
        [str(executable), "--config", str(write_json(tmp / f"{tag}-{name}.json", config))],
        input=tap.stdout,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stderr[-4000:]}"
    states = []
    for line in proc.stdout.splitlines():
        if line.strip():
            states.append(json.loads(line))
    return states


def schemas(run: Run) -> dict[str, dict[str, Any]]:
    """stream -> the record schema of its (last) SCHEMA message."""
    return {m["stream"]: m["schema"] for m in run.messages if m["type"] == "SCHEMA"}


def _types(prop: dict[str, Any]) -> set[str]:
    kind = prop.get("type", [])
    return {kind} if isinstance(kind, str) else set(kind)


def decimal_columns(schema: dict[str, Any]) -> list[str]:
    """The top-level properties of ``schema`` that carry Sage decimals."""
    return sorted(
        name
        for name, prop in schema["properties"].items()
        if prop.get("format") == DECIMAL_FORMAT or "number" in _types(prop)
    )


def format_columns(schema: dict[str, Any], fmt: str) -> list[str]:
    """The top-level string properties with JSON-schema ``format`` ``fmt``."""
    return sorted(
        name
        for name, prop in schema["properties"].items()
        if prop.get("format") == fmt and "string" in _types(prop)
    )


Key = tuple[str, ...]  # business_id, then the item's id (none for settings singletons)


class Wire:
    """The sandbox read over HTTP as any Sage client reads it, numbers kept as their JSON text.

    A business whose edition or country lacks a resource (403/404) has none of it, as the tap
    skips it; settings singletons count one per business that has them."""

    def __init__(self, sandbox: SandboxProcess) -> None:
        self.url = sandbox.api_url
        self.token = sandbox.grant()["access_token"]
        self.business_ids = [b["id"] for b in businesses(self.url, self.token)]

    def _get(self, path: str, business: str, **params: Any) -> dict[str, Any] | None:
        response = requests.get(
            self.url + path,
            params=params,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/json",
                "X-Business": business,
            },
            timeout=TIMEOUT,
        )
        if response.status_code in (403, 404):
            return None
        response.raise_for_status()
        # parse_float=str: a JSON number stays the exact text the server wrote
        body: dict[str, Any] = json.loads(response.text, parse_float=str)
        return body

    def total(self, stream: str) -> int:
        """The sandbox's ``$total`` of ``stream``, summed over the businesses that have it."""
        resource = catalogue.resource(stream)
        total = 0
        for business in self.business_ids:
            body = self._get(resource.path, business, items_per_page=1)
            if body is not None:
                total += 1 if resource.singleton else int(body["$total"])
        return total

    def totals(self, streams: Iterable[str]) -> dict[str, int]:
        return {stream: self.total(stream) for stream in streams}

    def items(self, stream: str) -> dict[Key, dict[str, Any]]:
        """key -> the item as the sandbox sends it, every page, all attributes."""
        resource = catalogue.resource(stream)
        found: dict[Key, dict[str, Any]] = {}
        for business in self.business_ids:
            if resource.singleton:
                body = self._get(resource.path, business)
                if body is not None:
                    found[(business,)] = body
                continue
            page = 1
            while True:
                body = self._get(resource.path, business, attributes="all", items_per_page=200, page=page)  # fmt: skip
                if body is None:
                    break
                for item in body["$items"]:
                    found[(business, str(item[resource.key or "id"]))] = item
                if not body.get("$next"):
                    break
                page += 1
        return found


def key_columns(stream: str) -> list[str]:
    """The table's key columns: business_id, and the item's key for list resources."""
    resource = catalogue.resource(stream)
    return ["business_id"] if resource.singleton else ["business_id", resource.key or "id"]


def as_text(value: Any) -> str | None:
    """A wire value as the text a loader should store digit for digit (None stays None)."""
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


# Runs in target-duckdb's own venv (its duckdb reads the file it wrote): queries in, rows out.
_DUCKDB_READER = """
import json, sys
import duckdb
con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "read")
out = {}
for name, sql in json.loads(sys.stdin.read()).items():
    try:
        cursor = con.execute(sql)
    except duckdb.CatalogException:  # a table the loader never made (a stream with no record)
        out[name] = []
        continue
    out[name] = cursor.fetchall() if cursor.description else []
print(json.dumps(out, default=str))
"""


def duckdb_run(db: Path, queries: dict[str, str], write: bool = False) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run ``queries`` (name -> SQL) on the DuckDB file ``db`` with the loader's own duckdb
    (read-only unless ``write``); the finished process, whatever its exit."""
    loader_venvs.ensure("target-duckdb")
    mode = "write" if write else "read"
    return subprocess.run(
        [str(loader_venvs.python("target-duckdb")), "-c", _DUCKDB_READER, str(db), mode],
        input=json.dumps(queries), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def duckdb_query(db: Path, queries: dict[str, str], write: bool = False) -> dict[str, list[list[Any]]]:  # fmt: skip
    """``duckdb_run``'s rows per query; the run must succeed."""
    proc = duckdb_run(db, queries, write)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, list[list[Any]]] = json.loads(proc.stdout)
    return result
