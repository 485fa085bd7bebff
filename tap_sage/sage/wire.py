"""Sage's JSON wire types, in one place: which fields are decimals, dates and the like, and how
Sage writes them. The generator, the sandbox, the tap and the target all go through here, so
reading, writing and emulating cannot disagree.

What Sage sends (``../shared/sage-api/NOTES.md``, "The wire, as recorded"; the recordings in
``../shared/sage-api/recorded/``), where it differs from its own spec:

- every field the spec types ``number`` (``format: double``) is a decimal, sent as a JSON string
  in Rails' BigDecimal form: ``"-430035.84"``, ``"10.0"``, ``"0.0"`` (recorded:
  ``bank_accounts.balance``, ``products.cost_price``, ``products.sales_prices[].price``,
  ``financial_settings.default_irpf_rate``); the spec's ``integer`` fields are JSON numbers;
- an unset date, date-time or string of a settings singleton may be ``""``
  (``financial_settings.mtd_authenticated_date: ""``); booleans and codes may be ``null``
  (``products.active: null``, ``bank_accounts.nominal_code: null``): every field is nullable.

The read schemas (``scripts/generate_catalogue.py`` builds them with ``leaf_schema``) mark
decimals as ``DECIMAL_SCHEMA``; ``Shape.of(schema)`` compiles a schema into the few paths that
need work, and then:

- ``Shape.to_record(item)`` (the tap) turns Sage's item into a Singer record: decimals become
  ``decimal.Decimal`` (exact; the SDK's msgspec writer emits them as JSON numbers with Sage's
  digits), ``""`` in a decimal, date or date-time becomes ``None``;
- ``Shape.to_wire(record)`` (the sandbox) writes a record as Sage does: decimals as Rails
  strings, and for a settings singleton unset strings and dates as ``""``.

No binary float is ever made from a decimal here: a float met on the way (a JSON decoder that
was not told to make decimals) is read back through its shortest ``repr``, which is the text
the JSON had.

This module imports nothing from singer-sdk (the shared layer's rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

#: How the read schemas type a decimal: a JSON number (see README, "Decimals"). Loaders parse
#: JSON numbers as ``Decimal`` and map ``number`` to NUMERIC / DECIMAL.
DECIMAL_SCHEMA: dict[str, Any] = {"type": ["number", "null"]}

#: The kinds of leaf ``Shape`` knows.
DECIMAL = "decimal"
DATE = "date"  # a date or date-time: "" means unset
STRING = "string"  # a plain string (only settings singletons write "" for it)


class WireValueError(ValueError):
    """A value Sage sent that its field's wire type cannot hold; ``path`` names the field."""

    def __init__(self, path: str, value: Any, expected: str, context: str = "") -> None:
        text = f"field {path}: {value!r} is not {expected}"
        super().__init__(f"{context}: {text}" if context else text)
        self.path = path
        self.value = value
        self.expected = expected

    def within(self, context: str) -> WireValueError:
        """The same error, its message prefixed by ``context`` (stream and record)."""
        return WireValueError(self.path, self.value, self.expected, context)


def _types(node: dict[str, Any]) -> set[str]:
    raw = node.get("type", [])
    return set(raw if isinstance(raw, list) else [raw]) - {"null"}


def leaf_schema(spec_node: dict[str, Any]) -> dict[str, Any]:
    """The read-schema leaf (nullable) for a spec leaf of type ``spec_node["type"]``: a decimal
    for ``number``, ``integer`` and ``boolean`` as they are, strings with their ``date`` /
    ``date-time`` format kept. A spec ``enum`` becomes ``examples`` (Sage sends ``""`` and
    values the spec does not list, so an enum would refuse real records)."""
    typ = spec_node.get("type", "string")
    if typ == "number":
        return dict(DECIMAL_SCHEMA)
    out: dict[str, Any] = {"type": [typ, "null"]}
    fmt = spec_node.get("format")
    if typ == "string" and fmt in ("date", "date-time"):
        out["format"] = fmt
    if "enum" in spec_node:
        out["examples"] = list(spec_node["enum"])
    return out


def is_decimal(node: dict[str, Any]) -> bool:
    """Whether a schema node is a decimal (a JSON ``number``, or a string of decimal format)."""
    types = _types(node)
    if "number" in types:
        return True
    return types == {"string"} and node.get("format") in ("x-singer.decimal", "singer.decimal")


def rails_decimal(value: Any) -> str:
    """``value`` as Rails writes a BigDecimal (``to_s("F")``): plain digits, no exponent, at
    least one digit after the point, no trailing zeros beyond it: ``10`` -> ``"10.0"``,
    ``Decimal("30.00")`` -> ``"30.0"``, ``"-430035.84"`` unchanged."""
    number = as_decimal(value, "value")
    if number is None:
        msg = "rails_decimal needs a value"
        raise ValueError(msg)
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0")
        if text.endswith("."):
            text += "0"
    else:
        text += ".0"
    return "0.0" if text == "-0.0" else text


def as_decimal(value: Any, path: str) -> Decimal | None:
    """``value`` (a Sage decimal string, a JSON number or ``Decimal``) as a finite ``Decimal``;
    ``None`` for ``None`` or ``""``; ``WireValueError`` naming ``path`` for anything else."""
    cls = value.__class__
    number: Decimal
    if cls is Decimal:
        number = value
    elif cls is str:
        if not value:
            return None
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise WireValueError(path, value, "a decimal") from None
    elif cls is int:
        return Decimal(value)
    elif cls is float:
        number = Decimal(repr(value))  # the JSON text the float came from
    elif value is None:
        return None
    else:
        raise WireValueError(path, value, "a decimal")
    if not number.is_finite():
        raise WireValueError(path, value, "a finite decimal")
    return number


# A plan is a tuple of steps ``(key, op, sub)``; ``sub`` is the plan of a nested object.
_DEC, _DATE, _STR, _OBJ, _ARR_OBJ, _ARR_DEC = range(6)
Plan = tuple[tuple[str, int, "Plan | None"], ...]


def _plan(schema: dict[str, Any], *, strings: bool) -> Plan:
    steps: list[tuple[str, int, Plan | None]] = []
    for key, node in (schema.get("properties") or {}).items():
        types = _types(node)
        if is_decimal(node):
            steps.append((key, _DEC, None))
        elif types == {"string"} and node.get("format") in ("date", "date-time"):
            steps.append((key, _DATE, None))
        elif types == {"string"} and strings:
            steps.append((key, _STR, None))
        elif "object" in types:
            sub = _plan(node, strings=False)
            if sub:
                steps.append((key, _OBJ, sub))
        elif "array" in types:
            items = node.get("items") or {}
            if is_decimal(items):
                steps.append((key, _ARR_DEC, None))
            elif "object" in _types(items):
                sub = _plan(items, strings=False)
                if sub:
                    steps.append((key, _ARR_OBJ, sub))
    return tuple(steps)


def _read(plan: Plan, obj: dict[str, Any], where: str) -> None:
    for key, op, sub in plan:
        value = obj.get(key)
        if value is None:
            continue
        if op == _DEC:
            if value.__class__ is not int:
                obj[key] = as_decimal(value, where + key)
        elif op == _DATE:
            if value == "":
                obj[key] = None
        elif op == _OBJ:
            if value.__class__ is dict:
                _read(sub or (), value, f"{where}{key}.")
        elif op == _ARR_OBJ:
            if value.__class__ is list:
                for i, item in enumerate(value):
                    if item.__class__ is dict:
                        _read(sub or (), item, f"{where}{key}.{i}.")
        elif op == _ARR_DEC and value.__class__ is list:
            obj[key] = [as_decimal(v, f"{where}{key}.{i}") for i, v in enumerate(value)]


def _write(plan: Plan, obj: dict[str, Any], *, blank: bool) -> None:
    for key, op, sub in plan:
        value = obj.get(key)
        if value is None:
            if blank and op in (_DATE, _STR):
                obj[key] = ""
            continue
        if op == _DEC:
            obj[key] = rails_decimal(value) if value != "" else None
        elif op == _OBJ:
            if isinstance(value, dict):
                _write(sub or (), value, blank=False)
        elif op == _ARR_OBJ:
            if isinstance(value, list):
                for item in value:
                    if isinstance(item, dict):
                        _write(sub or (), item, blank=False)
        elif op == _ARR_DEC and isinstance(value, list):
            obj[key] = [None if v is None else rails_decimal(v) for v in value]


@dataclass(frozen=True)
class Shape:
    """The wire work one item schema needs (see the module docstring)."""

    plan: Plan
    blank_plan: Plan  # with the top-level plain strings, for settings singletons

    @classmethod
    def of(cls, schema: dict[str, Any]) -> Shape:
        """Compile a read schema (an object schema with ``properties``)."""
        return cls(_plan(schema, strings=False), _plan(schema, strings=True))

    def to_record(self, item: dict[str, Any], where: str = "") -> dict[str, Any]:
        """Sage's item as a record, in place: decimals as ``Decimal``, ``""`` dates as ``None``.
        ``WireValueError`` names the field (prefixed by ``where``) of a value that is no
        decimal."""
        _read(self.plan, item, where)
        return item

    def to_wire(self, record: dict[str, Any], *, singleton: bool = False) -> dict[str, Any]:
        """A record as Sage sends it, in place: decimals as Rails strings; in a settings
        ``singleton`` unset (``None`` or missing) top-level strings and dates as ``""``."""
        if singleton:
            _write(self.blank_plan, record, blank=True)
        else:
            _write(self.plan, record, blank=False)
        return record

    @property
    def decimal_paths(self) -> list[str]:
        """Every decimal field, as dotted paths (``sales_prices[].price``), for reports."""
        out: list[str] = []

        def walk(plan: Plan, prefix: str) -> None:
            for key, op, sub in plan:
                if op == _DEC:
                    out.append(prefix + key)
                elif op == _ARR_DEC:
                    out.append(f"{prefix}{key}[]")
                elif op == _OBJ:
                    walk(sub or (), f"{prefix}{key}.")
                elif op == _ARR_OBJ:
                    walk(sub or (), f"{prefix}{key}[].")

        walk(self.plan, "")
        return out
