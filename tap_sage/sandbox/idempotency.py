"""Idempotency (Sage's guide: POST and PUT, 7 days, one resource per id): the first answer to
an ``idempotency_id``, remembered and given again."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from werkzeug.wrappers import Response

from tap_sage.sage.catalogue import Resource
from tap_sage.sandbox import store
from tap_sage.sandbox.answers import SageError, raw_json


def idempotent_answer(
    conn: sqlite3.Connection, ttl: float, biz: str, res: Resource, idem: str, status: int
) -> Response | None:
    """The first answer again for a repeat of ``idem`` within ``ttl`` seconds, else None.

    The answer is the same as the first (status and body, no extra header: the guide names
    none). An id used before on another resource is ``IdempotencyResourceMismatch`` (the guide
    gives the error body, not the status; 422 as for Sage's other refusals)."""
    cutoff = time.time() - ttl
    conn.execute(
        "DELETE FROM idempotency WHERE business = ? AND idempotency_id = ? "
        "AND created_at IS NOT NULL AND created_at < ?",
        (biz, idem, cutoff),
    )
    row = conn.execute(
        "SELECT resource, record_id, response FROM idempotency WHERE business = ? "
        "AND idempotency_id = ?",
        (biz, idem),
    ).fetchone()
    if row is None:
        return None
    if row[0] != res.name:
        raise SageError(422, "IdempotencyResourceMismatch", "Entity type mismatch", "")
    if row[2] is None:  # remembered by an earlier version: the record as it is now
        found = conn.execute(
            "SELECT data FROM records WHERE business = ? AND resource = ? AND id = ?",
            (biz, res.name, row[1]),
        ).fetchone()
        if found is None:
            return None
        return raw_json(status, str(found[0]))
    return raw_json(status, str(row[2]))


def remember(
    conn: sqlite3.Connection, biz: str, res: Resource, idem: str, record_id: str, answer: Any
) -> None:
    """Keep the answer to ``idem``."""
    conn.execute(
        "INSERT OR REPLACE INTO idempotency (business, resource, idempotency_id, record_id, "
        "created_at, response) VALUES (?, ?, ?, ?, ?, ?)",
        (biz, res.name, idem, record_id, time.time(), store.dumps(answer)),
    )
