#!/usr/bin/env python3
"""Generate the Sage resource catalogue and its JSON schemas from Sage's public v3.1 spec.

Usage:
    python scripts/generate_catalogue.py --spec ../shared/sage-api/swagger-v3.1.json \
        [--businesses-spec ../shared/sage-api/swagger-v3.1-user-businesses.json] [--check]

Writes ``tap_sage/sage/resources.json`` and ``tap_sage/sage/schemas/{read,write}/*.json``.
With ``--check`` it writes nothing and exits 1 when the committed files differ from what the
spec gives. The spec itself is read, never copied into the repository.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tap_sage" / "sage"
sys.path.insert(0, str(ROOT))

from tap_sage.sage import wire  # noqa: E402  (the wire types: one place, shared with the code)

# Sage asks for no parallel POSTs to these (sequential numbering); NOTES.md, "Writes".
SEQUENTIAL_POSTS = {
    "contacts",
    "products",
    "services",
    "stock_items",
    "sales_invoices",
    "sales_credit_notes",
    "sales_corrective_invoices",
    "sales_quotes",
    "sales_estimates",
    "sales_quick_entries",
    "purchase_invoices",
    "purchase_credit_notes",
    "purchase_corrective_invoices",
    "purchase_quick_entries",
}

# The resources whose POST and PUT take ``idempotency_id`` inside the wrapper. The spec does not
# say which; this is the list of Sage's idempotency guide, as it names them (singular), from
# https://developer.sage.com/accounting/guides/concepts/idempotency/ ("These resources support
# idempotency: address, bank_account, ..."). Sage remembers an id for 7 days; reusing it on
# another resource is an ``IdempotencyResourceMismatch`` error. Names map to the resource of the
# same name in the plural (``tax_profile`` -> ``tax_profiles``, which has a PUT only).
IDEMPOTENCY_GUIDE = (
    "address", "bank_account", "bank_deposit", "bank_opening_balance", "bank_reconciliation",
    "bank_transfer", "business_exchange_rate", "contact", "contact_allocation",
    "contact_opening_balance", "contact_payment", "contact_person",
    "hosted_artefact_payment_setting", "journal", "journal_code", "ledger_account",
    "ledger_account_opening_balance", "migration_tax_return", "opening_balance_journal",
    "other_payment", "product", "product_sales_price_type", "purchase_credit_note",
    "purchase_invoice", "purchase_quick_entry", "sales_credit_note", "sales_estimate",
    "sales_invoice", "sales_quick_entry", "sales_quote", "service", "service_rate_type",
    "stock_item", "stock_movement", "tax_profile",
)  # fmt: skip
_PLURAL = {"address": "addresses", "business_exchange_rate": "business_exchange_rates"}
IDEMPOTENT_RESOURCES = {
    _PLURAL.get(n) or (n[:-1] + "ies" if n.endswith("y") else n + "s") for n in IDEMPOTENCY_GUIDE
}

#: Item attributes Sage sends that its spec's definitions lack (the recordings show them):
#: ``recorded/products_list_attributes_all.json`` has ``links`` on every product.
RECORDED_PROPERTIES: dict[str, dict[str, Any]] = {
    "Product": {"links": {"type": "array", "items": {"$ref": "#/definitions/Link"}}},
}

MAX_DEPTH = 2  # nested definitions deeper than this become a generic link object

LINK_PROPERTIES = {
    "id": {"type": ["string", "null"]},
    "displayed_as": {"type": ["string", "null"]},
    "$path": {"type": ["string", "null"]},
}

_FLAG = re.compile("([\U0001f1e6-\U0001f1ff]{2})")
_EDITION = re.compile(r"\* Accounting (\w+):([^\n]*)")


def _flags_to_countries(text: str) -> list[str]:
    return ["".join(chr(ord(c) - 0x1F1E6 + ord("A")) for c in flag) for flag in _FLAG.findall(text)]


def parse_availability(description: str) -> dict[str, list[str]]:
    """Editions and countries from an operation's 'Endpoint Availability' section."""
    out: dict[str, list[str]] = {}
    for edition, flags in _EDITION.findall(description or ""):
        out[edition] = sorted(_flags_to_countries(flags))
    return out


class SchemaBuilder:
    """Turns Swagger 2.0 definitions into self-contained JSON schemas."""

    def __init__(self, definitions: dict[str, Any]) -> None:
        self.definitions = definitions

    def read(self, name: str) -> dict[str, Any]:
        """Schema of one item as Sage returns it: every field nullable, leaves as the wire has
        them (``wire.leaf_schema``: decimals as ``wire.DECIMAL_SCHEMA``, formats kept, enums
        as examples)."""
        schema = self._convert(self.definitions[name], stack=(name,), nullable_all=True)
        schema["type"] = "object"
        return schema

    def write(self, name: str) -> dict[str, Any]:
        """Schema of a write body: required fields kept, optional ones nullable."""
        schema = self._convert(self.definitions[name], stack=(name,), nullable_all=False)
        schema["type"] = "object"
        return schema

    def _convert(self, node: dict[str, Any], stack: tuple[str, ...], *, nullable_all: bool,
                 required: bool = False) -> dict[str, Any]:  # fmt: skip
        if "$ref" in node:
            ref = node["$ref"].rsplit("/", 1)[-1]
            if ref in stack or len(stack) > MAX_DEPTH:
                return {"type": ["object", "null"], "properties": dict(LINK_PROPERTIES)}
            return self._convert(
                self.definitions[ref], (*stack, ref), nullable_all=nullable_all, required=required
            )
        typ = node.get("type", "object" if "properties" in node else "string")
        out: dict[str, Any]
        if typ == "object":
            req = set(node.get("required", [])) if not nullable_all else set()
            props = {
                key: self._convert(sub, stack, nullable_all=nullable_all, required=key in req)
                for key, sub in node.get("properties", {}).items()
            }
            out = {"type": "object", "properties": props}
            if req:
                out["required"] = sorted(req)
        elif typ == "array":
            items = node.get("items", {"type": "string"})
            out = {"type": "array", "items": self._convert(items, stack, nullable_all=nullable_all)}
        elif nullable_all:
            return wire.leaf_schema(node)
        else:
            out = {"type": typ}
            fmt = node.get("format")
            if fmt in {"date-time", "date"}:
                out["format"] = fmt
            if "enum" in node:
                out["enum"] = node["enum"]
        if nullable_all or not required:
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        return out


def _body_definition(op: dict[str, Any]) -> tuple[str | None, str | None]:
    """(definition name, wrapper) of a POST/PUT body."""
    for prm in op.get("parameters", []):
        if prm.get("in") == "body":
            ref = prm["schema"]["$ref"].rsplit("/", 1)[-1]
            return ref, None
    return None, None


def build(spec: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Catalogue entries and the schema files (relative path -> schema)."""
    paths: dict[str, Any] = spec["paths"]
    defs: dict[str, Any] = dict(spec["definitions"])
    for name, extra in RECORDED_PROPERTIES.items():
        defs[name] = {**defs[name], "properties": {**defs[name]["properties"], **extra}}
    builder = SchemaBuilder(defs)
    resources: list[dict[str, Any]] = []
    files: dict[str, dict[str, Any]] = {}
    for path, ops in paths.items():
        if path.count("/") != 1 or "get" not in ops:
            continue
        name = path[1:]
        get = ops["get"]
        schema = get["responses"]["200"]["schema"]
        singleton = schema.get("type") != "array"
        definition = (schema["items"] if not singleton else schema)["$ref"].rsplit("/", 1)[-1]
        item = paths.get(f"{path}/{{key}}", {})
        post_def, _ = _body_definition(ops.get("post", {}))
        put_op = ops.get("put") if singleton else item.get("put")
        put_def, _ = _body_definition(put_op or {})
        wrapper = None
        for body in (post_def, put_def):
            if body:
                wrapper = next(iter(defs[body]["properties"]))
                break
        delete_op = item.get("delete")
        voids = bool(delete_op) and any(
            p.get("name") == "void_reason" for p in delete_op.get("parameters", [])
        )
        actions = []
        for sub, sub_ops in paths.items():
            if sub.startswith(f"{path}/{{key}}/"):
                for method, op in sub_ops.items():
                    if method in {"get", "post"}:
                        status = int(next(iter(op["responses"])))
                        actions.append(
                            {
                                "name": sub.rsplit("/", 1)[-1],
                                "method": method.upper(),
                                "path": sub,
                                "success_status": status,
                            }
                        )
        params = [
            {
                "name": p["name"],
                "type": p.get("type", "string"),
                "description": (p.get("description") or "").strip().split("\n")[0][:200],
                "format": p.get("format"),
                **({"required": True} if p.get("required") else {}),
                **({"enum": list(p["enum"])} if p.get("enum") else {}),
            }
            for p in get.get("parameters", [])
            if p.get("in") == "query"
        ]
        entry = {
            "name": name,
            "path": path,
            "title": (get.get("tags") or [name])[0],
            "definition": definition,
            "wrapper": wrapper,
            "singleton": singleton,
            "key": "" if singleton else "id",
            "list": True,
            "get": "get" in item,
            "create": "post" in ops,
            "update": put_op is not None,
            "delete": bool(delete_op) and not voids,
            "void": voids,
            "actions": actions,
            "params": params,
            "parallel_posts": name not in SEQUENTIAL_POSTS,
            "idempotency": ("post" in ops or put_op is not None) and name in IDEMPOTENT_RESOURCES,
            "availability": parse_availability(get.get("description", "")),
            "post_definition": post_def,
            "put_definition": put_def,
        }
        resources.append(entry)
        files[f"read/{name}.json"] = builder.read(definition)
        if post_def:
            files[f"write/post_{name}.json"] = builder.write(post_def)
        if put_def:
            files[f"write/put_{name}.json"] = builder.write(put_def)
    resources.sort(key=lambda r: r["name"])
    return resources, files


def build_businesses(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Schemas of ``/businesses`` items and ``/user`` from the user-businesses spec."""
    builder = SchemaBuilder(spec["definitions"])
    return {
        "read/_businesses.json": builder.read("Business"),
        "read/_user.json": builder.read("User"),
    }


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=False, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", required=True, type=Path, help="path of swagger-v3.1.json")
    parser.add_argument("--businesses-spec", type=Path, help="swagger-v3.1-user-businesses.json")
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args(argv)
    spec = json.loads(args.spec.read_text(encoding="utf-8"))
    resources, files = build(spec)
    biz_spec = args.businesses_spec or args.spec.with_name("swagger-v3.1-user-businesses.json")
    if biz_spec.exists():
        files.update(build_businesses(json.loads(biz_spec.read_text(encoding="utf-8"))))
    outputs = {OUT / "resources.json": _dump({"generated_from": "Sage Accounting API v3.1 spec",
                                              "resources": resources})}  # fmt: skip
    outputs.update({OUT / "schemas" / rel: _dump(schema) for rel, schema in files.items()})
    existing = set((OUT / "schemas").rglob("*.json")) if (OUT / "schemas").exists() else set()
    stale = existing - set(outputs)
    if args.check:
        drift = [str(p.relative_to(ROOT)) for p, text in outputs.items()
                 if not p.exists() or p.read_text(encoding="utf-8") != text]  # fmt: skip
        drift += [f"{p.relative_to(ROOT)} (stale)" for p in sorted(stale)]
        for line in drift:
            print(f"drift: {line}", file=sys.stderr)
        return 1 if drift else 0
    for p in stale:
        p.unlink()
    for p, text in outputs.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    print(f"wrote {len(resources)} resources and {len(files)} schemas")
    return 0


if __name__ == "__main__":
    sys.exit(main())
