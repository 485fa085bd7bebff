"""Record conventions shared by the seeder and the server: links, references, timestamps."""

from __future__ import annotations

import functools
import time
from datetime import datetime, timezone
from typing import Any

from tap_sage.sage import catalogue, wire

#: Position (1-based, cycling) -> (country, edition) of seeded businesses.
BUSINESS_CYCLE: tuple[tuple[str, str], ...] = (
    ("GB", "Plus"),
    ("US", "Start"),
    ("IE", "Standard"),
    ("CA", "Plus"),
    ("ES", "Plus"),
    ("FR", "Start"),
    ("DE", "Plus"),
)

#: country -> (name, currency, locale, tax label)
COUNTRIES: dict[str, tuple[str, str, str, str]] = {
    "GB": ("United Kingdom", "GBP", "en-GB", "VAT"),
    "US": ("United States", "USD", "en-US", "Sales Tax"),
    "IE": ("Ireland", "EUR", "en-IE", "VAT"),
    "CA": ("Canada", "CAD", "en-CA", "GST"),
    "ES": ("Spain", "EUR", "es-ES", "IVA"),
    "FR": ("France", "EUR", "fr-FR", "TVA"),
    "DE": ("Germany", "EUR", "de-DE", "USt"),
}

#: Reference fields whose resource is not found by the naming rule of ``ref_resource``.
SPECIAL_REFS: dict[str, str] = {
    "status": "artefact_statuses",
    "usual_supplier": "contacts",
    "original_quote_estimate": "sales_quotes",
    "from_bank_account": "bank_accounts",
    "to_bank_account": "bank_accounts",
    "base_currency": "currencies",
    "artefact": "sales_invoices",
    "original_invoice": "sales_invoices",
    "invoice": "sales_invoices",
    "payment_bank_account": "bank_accounts",
}

#: Edition -> the subscription name shown in ``/businesses`` (``subscriptions[0].displayed_as``).
EDITION_NAMES = {
    "Start": "Accounting Start",
    "Standard": "Accounting Standard",
    "Plus": "Accounting Plus",
}

#: Edition -> the ids of Sage's subscriptions of that edition (NOTES.md, "Editions": Sage tells
#: editions by subscription id: START/MICRO are Start, ACCOUNTS/ACCOUNTING_10 Standard,
#: ACCOUNTING Plus, displayed as "Accounting"). Seeded businesses take them in turn.
EDITION_SUBSCRIPTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "Start": (("START", "Accounting Start"), ("MICRO", "Accounting Start")),
    "Standard": (("ACCOUNTS", "Accounting Standard"), ("ACCOUNTING_10", "Accounting Standard")),
    "Plus": (("ACCOUNTING", "Accounting"),),
}
#: Fields a live record does not carry although its schema has them.
ABSENT_WHEN_LIVE = frozenset({"deleted_at"})


def utc_ts(epoch: float) -> str:
    """``2025-03-01T10:20:30Z`` (one-second precision)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))


def utc_date(epoch: float) -> str:
    """``2025-03-01``."""
    return time.strftime("%Y-%m-%d", time.gmtime(int(epoch)))


def now_ts() -> str:
    """The current time as Sage writes it."""
    return utc_ts(time.time())


def parse_when(value: str) -> datetime:
    """A date or date-time query value as an aware UTC datetime; ``ValueError`` if invalid."""
    text = value.strip().replace(" ", "+") if "T" in value else value.strip()
    if len(text) == 10:
        parsed = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    else:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def link(resource: str, record_id: str, displayed_as: str | None) -> dict[str, Any]:
    """The link object Sage puts where one record refers to another."""
    return {"id": record_id, "displayed_as": displayed_as, "$path": f"/{resource}/{record_id}"}


@functools.cache
def ref_resource(field: str) -> str | None:
    """The resource a reference field points to: ``contact`` / ``contact_id`` -> ``contacts``,
    ``default_sales_ledger_account_id`` -> ``ledger_accounts``, ``status_id`` ->
    ``artefact_statuses``; ``None`` when no resource matches."""
    name = field.removesuffix("_id").removesuffix("_ids")
    if name in SPECIAL_REFS:
        return SPECIAL_REFS[name]
    names = catalogue.resources()
    parts = name.split("_")
    for start in range(len(parts)):
        base = "_".join(parts[start:])
        candidates = (base + "s", base + "es", base[:-1] + "ies", base)
        for candidate in candidates:
            if candidate in names and not names[candidate].singleton:
                return candidate
    return None


@functools.cache
def schema_props(resource: str) -> frozenset[str]:
    """Top-level property names of one item of ``resource`` as Sage returns it."""
    return frozenset(catalogue.list_schema(resource).get("properties", {}))


@functools.cache
def lines_field(resource: str) -> str | None:
    """``invoice_lines`` / ``credit_note_lines`` / ``quote_lines`` ... or ``None``."""
    return next((p for p in sorted(schema_props(resource)) if p.endswith("_lines")), None)


@functools.cache
def number_field(resource: str) -> str | None:
    """``invoice_number`` / ``credit_note_number`` / ``quote_number`` ... or ``None``."""
    for candidate in ("invoice_number", "credit_note_number", "quote_number", "estimate_number"):
        if candidate in schema_props(resource):
            return candidate
    return None


def display_of(resource: str, record: dict[str, Any]) -> str:
    """The ``displayed_as`` Sage would give a record."""
    number = number_field(resource)
    if number and record.get(number):
        return str(record[number])
    if resource == "contacts" and record.get("name"):
        ref = record.get("reference")
        return f"{record['name']} ({ref})" if ref else str(record["name"])
    if resource == "ledger_accounts" and record.get("name"):
        return f"{record['name']} ({record.get('nominal_code')})"
    for key in ("name", "reference", "description", "file_name", "item_code", "details"):
        value = record.get(key)
        if isinstance(value, str) and value:
            return value
    if record.get("address_line_1"):
        return ", ".join(
            str(record[k]) for k in ("address_line_1", "city", "postal_code") if record.get(k)
        )
    return str(record.get("id", ""))


def search_text(record: dict[str, Any]) -> str:
    """What ``search=`` matches: display text, name, reference, numbers, e-mail."""
    keys = (
        "displayed_as",
        "name",
        "reference",
        "contact_name",
        "email",
        "item_code",
        "description",
        "vendor_reference",
    )
    return " ".join(str(record[k]) for k in keys if isinstance(record.get(k), str)).lower()


@functools.cache
def string_props(resource: str) -> frozenset[str]:
    """Top-level fields the read schema types as strings only (Sage sends some numbers so)."""
    out = set()
    for name, spec in catalogue.list_schema(resource).get("properties", {}).items():
        types = spec.get("type", [])
        types = set(types if isinstance(types, list) else [types]) - {"null"}
        if types == {"string"} and not wire.is_decimal(spec):  # decimals: see wire_shape
            out.add(name)
    return frozenset(out)


def filter_to_schema(resource: str, record: dict[str, Any]) -> dict[str, Any]:
    """Only the top-level fields the resource's read schema knows (``$path`` included), with
    numbers turned into strings where the schema says string."""
    props = schema_props(resource)
    if not props:
        return record
    strings = string_props(resource)
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key in props or key in ("id", "displayed_as", "$path"):
            if key in strings and isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            out[key] = value
    return out


@functools.cache
def wire_shape(resource: str) -> wire.Shape:
    """The wire shape (decimals, dates) of one item of ``resource`` (``tap_sage.sage.wire``)."""
    return wire.read_shape(resource)


def complete(resource: str, record: dict[str, Any]) -> dict[str, Any]:
    """Every top-level attribute of the read schema, ``None`` when unset: Sage's
    ``attributes=all`` items carry them all (recorded: ``source_guid: null``,
    ``usual_supplier: null``), except ``deleted_at`` on a live record."""
    for key in catalogue.list_schema(resource).get("properties", {}):  # in schema order
        if key not in record and key not in ABSENT_WHEN_LIVE:
            record[key] = None
    return record


def web_links(resource: str, number: int) -> list[dict[str, str]]:
    """The ``links`` Sage gives an item: its page in the web app (recorded, products list)."""
    href = f"https://accounts-extra.sageone.com/advanced_uk/{resource}/{20800000 + number}"
    return [{"href": href, "rel": "alternate", "type": "text/html"}]
