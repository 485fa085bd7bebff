"""Stored records: one record read, saved or inserted as a row of ``records``."""

from __future__ import annotations

import sqlite3
from typing import Any

from tap_sage.sage import catalogue
from tap_sage.sage.catalogue import Resource
from tap_sage.sandbox import store
from tap_sage.sandbox.answers import SageError
from tap_sage.sandbox.model import link, search_text, wire_shape


def load(conn: sqlite3.Connection, biz: str, res: Resource, key: str) -> tuple[dict[str, Any], str]:
    """A live record and its stored text (404 ``RecordNotFound`` if none)."""
    row = conn.execute(
        "SELECT data FROM records WHERE business = ? AND resource = ? AND id = ? "
        "AND deleted_at IS NULL",
        (biz, res.name, key),
    ).fetchone()
    if row is None:
        raise SageError(404, "RecordNotFound", f"{res.title} {key} was not found", "id")
    return store.loads(row[0]), str(row[0])


def singleton_text(conn: sqlite3.Connection, biz: str, res: Resource) -> str | None:
    """The stored text of a singleton, None when there is none."""
    row = conn.execute(
        "SELECT data FROM records WHERE business = ? AND resource = ? ORDER BY seq LIMIT 1",
        (biz, res.name),
    ).fetchone()
    return None if row is None else str(row[0])


def save(
    conn: sqlite3.Connection,
    biz: str,
    resource: str,
    record: dict[str, Any],
    *,
    deleted_at: str | None = None,
    record_id: str | None = None,
) -> None:
    """Write an existing record back (on the wire), in the caller's transaction."""
    res = catalogue.resources().get(resource)
    wire_shape(resource).to_wire(record, singleton=bool(res and res.singleton))
    conn.execute(
        "UPDATE records SET updated_at = ?, deleted_at = ?, doc_date = ?, search = ?, "
        "data = ? WHERE business = ? AND resource = ? AND id = ?",
        (
            record.get("updated_at"),
            deleted_at,
            record.get("date") if isinstance(record.get("date"), str) else None,
            search_text(record),
            store.dumps(record),
            biz,
            resource,
            record_id or record.get("id"),
        ),
    )
    # in the same transaction: a reader that sees the change sees the new generation too
    store.bump_generation(conn)


def insert(
    conn: sqlite3.Connection,
    biz: str,
    resource: str,
    record: dict[str, Any],
    now: str,
    doc_date: Any,
) -> None:
    """A new live row (``record`` already on the wire), created and updated ``now``, in the
    caller's transaction."""
    conn.execute(
        "INSERT INTO records (business, resource, id, created_at, updated_at, deleted_at, "
        "doc_date, search, data) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?)",
        (
            biz,
            resource,
            record["id"],
            now,
            now,
            doc_date,
            search_text(record),
            store.dumps(record),
        ),
    )
    store.bump_generation(conn)


def status_link(status: str) -> dict[str, Any]:
    """The link of an artefact status (``DRAFT`` -> ``Draft``)."""
    return link("artefact_statuses", status, status.replace("_", " ").title())
