"""What a write derives from its body: ``*_id`` fields turned into links, line ids, and the
totals of the lines (``Decimal`` throughout)."""

from __future__ import annotations

import sqlite3
import uuid
from decimal import Decimal
from typing import Any

from tap_sage.sandbox.answers import SageError
from tap_sage.sandbox.model import lines_field, link, ref_resource, schema_props
from tap_sage.sandbox.validation import amount


def convert(
    conn: sqlite3.Connection, biz: str, body: dict[str, Any], *, nested: bool = False
) -> dict[str, Any]:
    """A write body as a read record: every ``*_id``/``*_ids`` field a link or list of links."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        resolved = _resolve(conn, biz, key, value)
        if resolved is not None:
            out[resolved[0]] = resolved[1]
            continue
        if isinstance(value, dict):
            out[key] = convert(conn, biz, value, nested=True)
        elif isinstance(value, list):
            out[key] = [
                convert(conn, biz, v, nested=True) if isinstance(v, dict) else v for v in value
            ]
        else:
            out[key] = value
    return out


def _resolve(conn: sqlite3.Connection, biz: str, key: str, value: Any) -> tuple[str, Any] | None:
    """``contact_id: X`` -> ``("contact", link)``; ``contact_type_ids`` -> list of links."""
    if key.endswith("_ids") and isinstance(value, list):
        target = ref_resource(key)
        if target is None:
            return None
        return key[:-4] + "s", [_ref_link(conn, biz, target, str(v)) for v in value]
    if key.endswith("_id") and (isinstance(value, str) or value is None):
        target = ref_resource(key)
        if target is None:
            return None
        name = key[:-3]
        if value is None or value == "":
            return name, None
        if name == "contact":
            found = _ref_link(conn, biz, target, value, required=True)
        else:
            found = _ref_link(conn, biz, target, value)
        return name, found
    return None


def _ref_link(
    conn: sqlite3.Connection, biz: str, target: str, value: str, *, required: bool = False
) -> dict[str, Any]:
    row = conn.execute(
        "SELECT json_extract(data, '$.displayed_as') FROM records "
        "WHERE business = ? AND resource = ? AND id = ? AND deleted_at IS NULL",
        (biz, target, value),
    ).fetchone()
    if row is None and required:
        raise SageError(
            422,
            "RecordInvalid",
            f"{target} {value} was not found",
            f"{target.removesuffix('s')}_id",
        )
    return link(target, value, row[0] if row else value)


def finish_lines(conn: sqlite3.Connection, biz: str, resource: str, record: dict[str, Any]) -> None:
    """Line ids, net/tax/total of each line and of the document."""
    key = lines_field(resource)
    if key is None or not isinstance(record.get(key), list):
        return
    # Decimal arithmetic throughout: money never passes through a binary float.
    net_total = tax_total = qty_total = Decimal(0)
    for line in record[key]:
        if not isinstance(line, dict):
            continue
        net, tax, qty = _finish_line(conn, biz, line)
        net_total += net
        tax_total += tax
        qty_total += qty
    if "total_amount" in schema_props(resource) and key != "journal_lines":
        record["net_amount"] = round(net_total, 2)
        record["tax_amount"] = round(tax_total, 2)
        record["total_amount"] = round(net_total + tax_total, 2)
        record["total_quantity"] = qty_total
        paid = amount(record.get("total_paid"), "total_paid")
        record["total_paid"] = paid
        record["outstanding_amount"] = round(net_total + tax_total - paid, 2)
        record["base_currency_net_amount"] = record["net_amount"]
        record["base_currency_tax_amount"] = record["tax_amount"]
        record["base_currency_total_amount"] = record["total_amount"]


def _finish_line(
    conn: sqlite3.Connection, biz: str, line: dict[str, Any]
) -> tuple[Decimal, Decimal, Decimal]:
    """Complete one line; its (net, tax, quantity) for the document's totals."""
    qty_part = Decimal(0)
    line.setdefault("id", uuid.uuid4().hex)
    line.setdefault("displayed_as", line.get("description") or line.get("details"))
    if "unit_price" in line or "quantity" in line:
        qty = amount(line.get("quantity"), "quantity", Decimal(1))
        unit = amount(line.get("unit_price"), "unit_price")
        net = round(qty * unit - amount(line.get("discount_amount"), "discount_amount"), 2)
        line["quantity"] = qty
        line["net_amount"] = net
        qty_part = qty
    else:
        net = amount(line.get("net_amount") or line.get("debit"), "net_amount")
    if line.get("tax_amount") is None and isinstance(line.get("tax_rate"), dict):
        pct_row = conn.execute(
            "SELECT json_extract(data, '$.percentage') FROM records WHERE business = ? "
            "AND resource = 'tax_rates' AND id = ?",
            (biz, line["tax_rate"]["id"]),
        ).fetchone()
        pct = amount(pct_row[0] if pct_row else None, "percentage")
        line["tax_amount"] = round(net * pct / 100, 2)
    tax = amount(line.get("tax_amount"), "tax_amount")
    if "unit_price" in line:
        line["total_amount"] = round(net + tax, 2)
    return net, tax, qty_part


def line_to_write(line: dict[str, Any]) -> dict[str, Any]:
    """A read line (with link objects) as a write line (with ``*_id`` fields)."""
    out: dict[str, Any] = {}
    for key, value in line.items():
        if key in ("id", "displayed_as", "$path"):
            continue
        if isinstance(value, dict) and "id" in value and ref_resource(key):
            out[f"{key}_id"] = value["id"]
        elif not isinstance(value, (dict, list)):
            out[key] = value
    return out
