"""``/businesses`` (the list, one business, ``lead``) and ``/user``, as recorded."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from werkzeug.wrappers import Request, Response

from tap_sage.sandbox import oauth, store
from tap_sage.sandbox.answers import SageError, json_response, not_allowed
from tap_sage.sandbox.model import now_ts
from tap_sage.sandbox.validation import Validators

#: ``$items_per_page`` of ``/businesses``: one page holds them all (recorded).
BUSINESSES_PER_PAGE = 2147483647
#: Sage's answer when the user may not use a business (recorded/error_403_...json).
MULTI_USER_DENIED = "The current user is not allowed to access that resource with that method."


def businesses(
    request: Request,
    conn: sqlite3.Connection,
    grant: oauth.AccessGrant,
    rest: list[str],
    validators: Validators,
) -> Response:
    """``/businesses``, ``/businesses/lead``, ``/businesses/{id}`` (GET, PUT)."""
    rows = [
        (str(r[0]), json.loads(r[1]))
        for r in conn.execute("SELECT id, data FROM businesses ORDER BY position")
        if grant.reaches(r[0])
    ]
    if not rest:
        if request.method != "GET":
            raise not_allowed(request.method, "/businesses")
        return json_response(200, _list(rows))
    if len(rest) > 1:
        raise SageError(404, "RecordNotFound", "Unknown path")
    key = rest[0]
    if key == "lead":
        if request.method != "GET":
            raise not_allowed(request.method, "/businesses/lead")
        if not rows:
            raise SageError(403, "MultiUserAccessDenied", MULTI_USER_DENIED)
        return json_response(200, rows[0][1])
    exists = conn.execute("SELECT data FROM businesses WHERE id = ?", (key,)).fetchone()
    if exists is None:
        raise SageError(404, "RecordNotFound", f"Business {key} not found")
    if not grant.reaches(key):
        raise SageError(403, "MultiUserAccessDenied", MULTI_USER_DENIED)
    data = json.loads(exists[0])
    if request.method == "GET":
        return json_response(200, data)
    if request.method == "PUT":
        changes = validators.wrapped_body(request, "business")
        with store.transaction(conn):
            data.update({k: v for k, v in changes.items() if k in data})
            data["updated_at"] = now_ts()
            data["displayed_as"] = data.get("name") or data["displayed_as"]
            conn.execute("UPDATE businesses SET data = ? WHERE id = ?", (store.dumps(data), key))
        return json_response(200, data)
    raise not_allowed(request.method, f"/businesses/{key}")


def _list(rows: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    # recorded/businesses_list.json: no parameters (the spec declares none; any given is
    # ignored), every business in one page, the three base fields only.
    return {
        "$total": len(rows),
        "$page": 1,
        "$next": None,
        "$back": None,
        "$items_per_page": BUSINESSES_PER_PAGE,
        "$items": [{k: data.get(k) for k in ("displayed_as", "id", "$path")} for _, data in rows],
    }


def user(
    request: Request, conn: sqlite3.Connection, rest: list[str], validators: Validators
) -> Response:
    """``/user`` (GET, PUT of the names and locale)."""
    if rest:
        raise SageError(404, "RecordNotFound", "Unknown path")
    data = oauth.user(conn)
    if request.method == "GET":
        return json_response(200, data)
    if request.method == "PUT":
        changes = validators.wrapped_body(request, "user")
        allowed = ("first_name", "last_name", "initials", "locale")
        with store.transaction(conn):
            data.update({k: v for k, v in changes.items() if k in allowed})
            data["updated_at"] = now_ts()
            store.set_meta(conn, "user", store.dumps(data))
        return json_response(200, data)
    raise not_allowed(request.method, "/user")
