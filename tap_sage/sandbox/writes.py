"""Writes: POST, PUT and DELETE of a resource (status rules, numbering, quotes turned into
invoices, voids, idempotency)."""

from __future__ import annotations

import base64
import binascii
import copy
import json
import sqlite3
import uuid
from decimal import Decimal
from typing import Any

from werkzeug.wrappers import Request, Response

from tap_sage.sage import catalogue
from tap_sage.sage.catalogue import Resource
from tap_sage.sandbox import records, store
from tap_sage.sandbox.answers import SageError, json_response
from tap_sage.sandbox.derive import convert, finish_lines, line_to_write
from tap_sage.sandbox.idempotency import idempotent_answer, remember
from tap_sage.sandbox.model import (
    complete,
    display_of,
    filter_to_schema,
    lines_field,
    link,
    now_ts,
    number_field,
    schema_props,
    wire_shape,
)
from tap_sage.sandbox.records import status_link
from tap_sage.sandbox.settings import IDEMPOTENCY_TTL, Settings
from tap_sage.sandbox.validation import Validators, check_contact_reference, peek

QUOTE_RESOURCES = frozenset({"sales_quotes", "sales_estimates"})


class Writes:
    """The write endpoints of a resource."""

    def __init__(self, settings: Settings, validators: Validators) -> None:
        self.settings = settings
        self.validators = validators

    @property
    def _ttl(self) -> float:
        return self.settings.idempotency_ttl or IDEMPOTENCY_TTL

    def post(self, request: Request, conn: sqlite3.Connection, biz: str, res: Resource) -> Response:
        """Create a record: 201 with it."""
        wrapper = res.wrapper or ""
        schema = catalogue.write_schema(res.name, "post")
        if request.mimetype != "application/json":
            raise SageError(415, "UnsupportedMediaType", "Content-Type must be application/json")
        raw = peek(request, wrapper)
        original = raw.get("original_quote_estimate_id") if res.name == "sales_invoices" else None
        idem = raw.get("idempotency_id") if res.idempotency else None
        with store.transaction(conn):
            if idem:  # a repeat gets the first answer, before anything else is looked at
                again = idempotent_answer(conn, self._ttl, biz, res, str(idem), 201)
                if again is not None:
                    return again
            quote = _fill_from_quote(conn, biz, raw, str(original)) if original else None
            if schema is not None:
                self.validators.validate(schema, {wrapper: raw}, wrapper)
            if res.name == "contacts":  # a replay (answered above) comes before this check
                check_contact_reference(conn, biz, raw, None)
            record = _create(conn, biz, res, raw, quote)
            if idem:
                remember(conn, biz, res, str(idem), str(record["id"]), record)
        return json_response(201, record)

    def put(
        self, request: Request, conn: sqlite3.Connection, biz: str, res: Resource, key: str | None
    ) -> Response:
        """Update the fields sent (objects merged, lists replaced); ``key`` None: a singleton."""
        wrapper = res.wrapper or ""
        schema = catalogue.write_schema(res.name, "put")
        raw = self.validators.wrapped_body(request, wrapper, schema)
        idem = raw.get("idempotency_id") if res.idempotency else None
        with store.transaction(conn):
            if idem:
                again = idempotent_answer(conn, self._ttl, biz, res, str(idem), 200)
                if again is not None:
                    return again
            row_id, current = _current(conn, biz, res, key)
            if res.name == "contacts":
                check_contact_reference(conn, biz, raw, key)
            current = _apply_changes(conn, biz, res, raw, current, key)
            records.save(conn, biz, res.name, current, record_id=row_id)
            if idem:
                remember(conn, biz, res, str(idem), str(row_id), current)
        return json_response(200, current)

    def delete(
        self, request: Request, conn: sqlite3.Connection, biz: str, res: Resource, key: str
    ) -> Response:
        """204 and a tombstone; on ``void`` resources a void unless the document is a draft."""
        with store.transaction(conn):
            record, _ = records.load(conn, biz, res, key)
            now = now_ts()
            status = (record.get("status") or {}).get("id")
            if res.void and status != "DRAFT":
                reason = request.args.get("void_reason", "").strip()
                if not reason:
                    raise SageError(
                        422,
                        "RecordInvalid",
                        "void_reason is required to void this document",
                        "void_reason",
                    )
                if status == "VOID":
                    raise SageError(422, "RecordInvalid", "The document is already void", "status")
                record["status"] = status_link("VOID")
                record["void_reason"] = reason
                record["outstanding_amount"] = Decimal(0)
                record["editable"] = False
                record["updated_at"] = now
                records.save(conn, biz, res.name, record)
                return json_response(200, record)
            record["deleted_at"] = now
            record["updated_at"] = now
            records.save(conn, biz, res.name, record, deleted_at=now)
        return Response(status=204)


def _current(
    conn: sqlite3.Connection, biz: str, res: Resource, key: str | None
) -> tuple[str | None, dict[str, Any]]:
    """(row id, record) a PUT changes: the record ``key``, or the singleton."""
    if key is not None:
        current, _ = records.load(conn, biz, res, key)
        return key, current
    row = conn.execute(
        "SELECT id, data FROM records WHERE business = ? AND resource = ? ORDER BY seq LIMIT 1",
        (biz, res.name),
    ).fetchone()
    if row is None:
        raise SageError(404, "RecordNotFound", f"{res.title} not found")
    return str(row[0]), json.loads(row[1])


def _apply_changes(
    conn: sqlite3.Connection,
    biz: str,
    res: Resource,
    raw: dict[str, Any],
    current: dict[str, Any],
    key: str | None,
) -> dict[str, Any]:
    status_id = raw.pop("status_id", None)
    raw.pop("idempotency_id", None)
    if res.name == "attachments":
        raw.pop("file", None)
    changes = convert(conn, biz, raw)
    for field_name, value in changes.items():
        if isinstance(value, dict) and isinstance(current.get(field_name), dict):
            current[field_name] = {**current[field_name], **value}
        else:
            current[field_name] = value
    if status_id and "status" in current:
        current["status"] = status_link(str(status_id))
    if lines_field(res.name) in changes:
        finish_lines(conn, biz, res.name, current)
    if "updated_at" in schema_props(res.name):
        current["updated_at"] = now_ts()
    if key is not None:
        current["displayed_as"] = display_of(res.name, current)
        current = filter_to_schema(res.name, current)
    return current


def _fill_from_quote(
    conn: sqlite3.Connection, biz: str, raw: dict[str, Any], original: str
) -> tuple[str, dict[str, Any]]:
    """Fill a sales invoice's missing contact, date and lines from a quote or estimate."""
    found = None
    for name in QUOTE_RESOURCES:
        row = conn.execute(
            "SELECT data FROM records WHERE business = ? AND resource = ? AND id = ? "
            "AND deleted_at IS NULL",
            (biz, name, original),
        ).fetchone()
        if row is not None:
            found = (name, json.loads(row[0]))
            break
    if found is None:
        raise SageError(
            422,
            "RecordInvalid",
            f"Quote or estimate {original} was not found",
            "original_quote_estimate_id",
        )
    name, quote = found
    if quote.get("status", {}).get("id") == "INVOICED":
        raise SageError(
            422,
            "RecordInvalid",
            "The quote or estimate is already invoiced",
            "original_quote_estimate_id",
        )
    if not raw.get("contact_id") and quote.get("contact"):
        raw["contact_id"] = quote["contact"]["id"]
    raw.setdefault("date", now_ts()[:10])
    if not raw.get("invoice_lines"):
        key = lines_field(name) or ""
        # the stored lines are on the wire (decimal strings): read them back as decimals
        lines = wire_shape(name).to_decimals({key: copy.deepcopy(quote.get(key) or [])})[key]
        raw["invoice_lines"] = [line_to_write(line) for line in lines]
    quote["status"] = status_link("INVOICED")
    quote["updated_at"] = now_ts()
    return name, quote


def _create(
    conn: sqlite3.Connection,
    biz: str,
    res: Resource,
    raw: dict[str, Any],
    quote: tuple[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Insert the record of a POST; the record as answered."""
    raw.pop("idempotency_id", None)
    file_bytes: bytes | None = None
    if res.name == "attachments":
        try:
            file_bytes = base64.b64decode(str(raw.pop("file", "")), validate=True)
        except (binascii.Error, ValueError):
            raise SageError(422, "RecordInvalid", "file is not valid base64", "file") from None
    status_id = raw.pop("status_id", None) if "status" in schema_props(res.name) else None
    record = convert(conn, biz, raw)
    now = now_ts()
    rid = uuid.uuid4().hex
    record["id"] = rid
    record["created_at"] = now
    record["updated_at"] = now
    _status_and_number(conn, biz, res, record, status_id)
    if record.get("contact") and "contact_name" in schema_props(res.name):
        record.setdefault("contact_name", str(record["contact"].get("displayed_as") or ""))
    if quote is not None:
        qname, qrec = quote
        record["original_quote_estimate"] = link(qname, qrec["id"], qrec.get("displayed_as"))
    finish_lines(conn, biz, res.name, record)
    if file_bytes is not None:
        record["file_size"] = len(file_bytes)
        record["$file_path"] = f"/attachments/{rid}/file"
        conn.execute(
            "INSERT INTO files (business, id, content) VALUES (?, ?, ?)", (biz, rid, file_bytes)
        )
    record["displayed_as"] = display_of(res.name, record)
    record["$path"] = f"{res.path}/{rid}"
    record = filter_to_schema(res.name, record)
    complete(res.name, record)
    wire_shape(res.name).to_wire(record)
    doc_date = record.get("date") if isinstance(record.get("date"), str) else None
    records.insert(conn, biz, res.name, record, now, doc_date)
    if quote is not None:
        qname, qrec = quote
        qrec["invoice"] = link("sales_invoices", rid, record.get("displayed_as"))
        records.save(conn, biz, qname, qrec)
    return record


def _status_and_number(
    conn: sqlite3.Connection, biz: str, res: Resource, record: dict[str, Any], status_id: Any
) -> None:
    """The status rule (artefacts UNPAID unless DRAFT; quotes PENDING) and the next number."""
    if "status" in schema_props(res.name):
        if res.name in QUOTE_RESOURCES:
            status = str(status_id or "PENDING")
        else:
            status = "DRAFT" if str(status_id or "").upper() == "DRAFT" else "UNPAID"
        record["status"] = status_link(status)
    number = number_field(res.name)
    if number and not record.get(number):
        count = conn.execute(
            "SELECT count(*) FROM records WHERE business = ? AND resource = ?",
            (biz, res.name),
        ).fetchone()[0]
        prefix = record.get(f"{number}_prefix") or ""
        record[number] = f"{prefix}{count + 1}"
