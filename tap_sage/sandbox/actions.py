"""Actions on one record (``/{resource}/{id}/{action}``): release, reissue, an attachment's
file, a bank account's feed."""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

from werkzeug.wrappers import Request, Response

from tap_sage.sage.catalogue import Resource
from tap_sage.sandbox import records, store
from tap_sage.sandbox.answers import SageError, json_response, not_allowed
from tap_sage.sandbox.lists import BASE_FIELDS
from tap_sage.sandbox.model import now_ts
from tap_sage.sandbox.records import status_link

#: Fields a reissued journal does not take from the one it replaces.
REISSUE_DROPS = ("id", "$path", "deleted_at", "created_at", "updated_at", "transaction")


def action(
    request: Request,
    conn: sqlite3.Connection,
    biz: str,
    res: Resource,
    key: str,
    name: str,
) -> Response:
    """Run the action ``name`` of the catalogue on record ``key``."""
    act = res.action(name)
    if act is None:
        raise SageError(404, "RecordNotFound", f"{res.path}/{{key}}/{name} does not exist")
    if request.method != act.method:
        raise not_allowed(request.method, f"{res.path}/{key}/{name}")
    if act.method == "POST" and request.get_data() and request.mimetype != "application/json":
        raise SageError(415, "UnsupportedMediaType", "Content-Type must be application/json")
    if name == "file":
        records.load(conn, biz, res, key)
        row = conn.execute(
            "SELECT content FROM files WHERE business = ? AND id = ?", (biz, key)
        ).fetchone()
        content = bytes(row[0]) if row else b""
        return Response(content, status=200, mimetype="application/octet-stream")
    if name == "bank_feed":
        record, _ = records.load(conn, biz, res, key)
        return json_response(200, {k: record.get(k) for k in BASE_FIELDS})
    with store.transaction(conn):
        record, _ = records.load(conn, biz, res, key)
        if name == "release":
            return json_response(act.success_status, _release(conn, biz, res, record))
        if name == "reissue":
            return json_response(act.success_status, _reissue(conn, biz, res, record))
    raise SageError(404, "RecordNotFound", f"Unknown action {name}")


def _release(
    conn: sqlite3.Connection, biz: str, res: Resource, record: dict[str, Any]
) -> dict[str, Any]:
    """DRAFT -> UNPAID (not a draft: 422)."""
    if (record.get("status") or {}).get("id") != "DRAFT":
        raise SageError(422, "RecordInvalid", "Only a draft can be released", "status")
    record["status"] = status_link("UNPAID")
    record["updated_at"] = now_ts()
    records.save(conn, biz, res.name, record)
    return record


def _reissue(
    conn: sqlite3.Connection, biz: str, res: Resource, record: dict[str, Any]
) -> dict[str, Any]:
    """The journal becomes a tombstone; a copy with a new id (and new line ids) replaces it."""
    now = now_ts()
    record["deleted_at"] = now
    record["updated_at"] = now
    records.save(conn, biz, res.name, record, deleted_at=now)
    copy = {k: v for k, v in record.items() if k not in REISSUE_DROPS}
    rid = uuid.uuid4().hex
    for line in copy.get("journal_lines") or []:
        if isinstance(line, dict):
            line["id"] = uuid.uuid4().hex
    copy.update({"id": rid, "$path": f"{res.path}/{rid}", "created_at": now, "updated_at": now})
    records.insert(conn, biz, res.name, copy, now, copy.get("date"))
    return copy
