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

- ``Shape.to_record(item)`` (the tap) turns Sage's item into a Singer record: a decimal stays
  the string Sage sent, digit for digit (checked to be a finite decimal; a JSON number there
  becomes its exact text), typed ``DECIMAL_SCHEMA``; ``""`` in a decimal, date or date-time
  becomes ``None``;
- ``Shape.to_wire(record)`` (the sandbox) writes a record as Sage does: decimals as Rails
  strings, and for a settings singleton unset strings and dates as ``""``.

No binary float is ever made from a decimal here: a float met on the way (a JSON decoder that
was not told to make decimals) is read back through its shortest ``repr``, which is the text
the JSON had.

This module imports nothing from singer-sdk (the shared layer's rule).
"""

from __future__ import annotations

import functools
import itertools
import operator
import re
import typing as t
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import msgspec

#: How the read schemas (and so the tap's records) type a decimal: the string Sage sent, with the
#: format singer-sdk's SQL loaders map to NUMERIC / DECIMAL (``x-singer.decimal``; README,
#: "Decimals"). No ``precision``/``scale``: Sage documents none, and with them PostgreSQL pads
#: ``10.0`` and rounds longer values. Not ``singer.decimal`` (what ``th.SingerDecimalType``
#: writes): target-postgres types that ``text``.
DECIMAL_FORMAT = "x-singer.decimal"
DECIMAL_SCHEMA: dict[str, Any] = {"type": ["string", "null"], "format": DECIMAL_FORMAT}

#: Fields the spec types ``string`` that Sage sends as JSON numbers, and what they are. Sources:
#: ledgerscope/SageOneApi commit 86e4de3 ("Treat AuditTrailId as number": ``audit_trail_id``,
#: "Documentation says this is a string, but API returns numbers") and its ``Transaction`` model
#: (``int NumberOfAttachments`` since commit 7586a97); ``inverse_exchange_rate`` is a decimal
#: (``number``) in every definition of the spec but ``PurchaseCreditNote`` and
#: ``PurchaseCorrectiveInvoice``, where it says ``string``, and the same client reads it as a
#: decimal there (``ControlTransaction.InverseExchangeRate``). ``TEXT``: a JSON number becomes
#: its exact decimal text (the field stays a string); ``DECIMAL``: the field is a decimal
#: (``fix_spec_types`` types it ``DECIMAL_SCHEMA``).
NUMBERS_IN_STRING_FIELDS: dict[str, str] = {
    "audit_trail_id": "text",
    "number_of_attachments": "text",
    "inverse_exchange_rate": "decimal",
}

#: The kinds of leaf ``Shape`` knows.
DECIMAL = "decimal"
DATE = "date"  # a date or date-time: "" means unset
STRING = "string"  # a plain string (only settings singletons write "" for it)
TEXT = "text"  # a string field Sage may send as a JSON number: kept as its exact text


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
    return types == {"string"} and node.get("format") in (DECIMAL_FORMAT, "singer.decimal")


def fix_spec_types(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (a read schema, changed in place) with the spec's string-typed decimals of
    ``NUMBERS_IN_STRING_FIELDS`` typed ``DECIMAL_SCHEMA``, at every depth."""
    for key, node in (schema.get("properties") or {}).items():
        if not isinstance(node, dict):
            continue
        types = _types(node)
        if NUMBERS_IN_STRING_FIELDS.get(key) == "decimal" and types == {"string"}:
            node.clear()
            node.update(DECIMAL_SCHEMA)
        elif "object" in types:
            fix_spec_types(node)
        elif "array" in types and isinstance(node.get("items"), dict):
            fix_spec_types(node["items"])
    return schema


def number_text(value: Any) -> Any:
    """A JSON number met in a string field as its exact decimal text (``Decimal("12.50")`` ->
    ``"12.50"``, ``7`` -> ``"7"``); a string, ``None`` or a boolean as it is."""
    cls = value.__class__
    if cls is int:
        return str(value)
    if cls is Decimal:
        return format(value, "f")
    if cls is float:
        return format(Decimal(repr(value)), "f")  # the JSON text the float came from
    return value


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


def decimal_text(value: Any, path: str) -> str | None:
    """A decimal as the record carries it: Sage's plain string (``-430035.84``) unchanged; any
    other decimal text (``1e5``, `` 2.50``) or a JSON number as its plain fixed-point text;
    ``None`` for ``None`` or ``""``; ``WireValueError`` naming ``path`` for what is no finite
    decimal."""
    if value.__class__ is str:
        if not value:
            return None
        if _PLAIN_DECIMAL(value):  # the usual case costs one regex match
            return value
    number = as_decimal(value, path)
    return None if number is None else format(number, "f")


_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?").fullmatch


# A plan is a tuple of steps ``(key, op, sub)``; ``sub`` is the plan of a nested object.
_DEC, _DATE, _STR, _OBJ, _ARR_OBJ, _ARR_DEC, _TXT = range(7)


class Plan:
    """The fields of one object schema that need wire work: ``steps`` in schema order, and
    the same sorted by kind for the record reader (``_record``), which checks all the
    decimals of an object at once."""

    __slots__ = (
        "arrays", "dates", "decimal_lists", "decimals", "keys", "objects", "steps", "texts"
    )  # fmt: skip

    def __init__(self, steps: tuple[tuple[str, int, Plan | None], ...]) -> None:
        self.steps = steps
        self.keys = frozenset(key for key, _, _ in steps)
        self.decimals = tuple(key for key, op, _ in steps if op == _DEC)
        self.dates = tuple(key for key, op, _ in steps if op == _DATE)
        self.objects: tuple[tuple[str, Plan], ...] = tuple(
            (key, sub) for key, op, sub in steps if op == _OBJ and sub is not None
        )
        self.arrays: tuple[tuple[str, Plan], ...] = tuple(
            (key, sub) for key, op, sub in steps if op == _ARR_OBJ and sub is not None
        )
        self.decimal_lists = tuple(key for key, op, _ in steps if op == _ARR_DEC)
        self.texts = tuple(key for key, op, _ in steps if op == _TXT)

    def __iter__(self) -> Any:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)


def _plan(schema: dict[str, Any], *, strings: bool) -> Plan:
    steps: list[tuple[str, int, Plan | None]] = []
    for key, node in (schema.get("properties") or {}).items():
        types = _types(node)
        if is_decimal(node):
            steps.append((key, _DEC, None))
        elif types == {"string"} and node.get("format") in ("date", "date-time"):
            steps.append((key, _DATE, None))
        elif types == {"string"} and NUMBERS_IN_STRING_FIELDS.get(key) == TEXT:
            steps.append((key, _TXT, None))
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
    return Plan(tuple(steps))


#: Many plain decimals at once: Sage's decimals of one object (or of every object of a page at
#: one level) joined by commas, checked by one regular-expression call in C instead of one call
#: per value (``_plain_decimals``).
_PLAIN_DECIMALS = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:,-?[0-9]+(?:\.[0-9]+)?)*").fullmatch


def _plain_decimals(values: list[str]) -> bool:
    """Whether every string of ``values`` is a plain decimal (``-?[0-9]+(\\.[0-9]+)?``, what
    ``decimal_text`` keeps as it is): joined by commas and matched once, a comma inside a
    value being caught by the count. A value that is no string raises ``TypeError``."""
    if not values:
        return True
    joined = ",".join(values)
    return joined.count(",") == len(values) - 1 and _PLAIN_DECIMALS(joined) is not None


def _record(plan: Plan, obj: dict[str, Any]) -> None:
    """The tap's per-record work, kept cheap (it runs on every record): the decimals of an
    object are checked all at once (``_plain_decimals``: plain decimal strings stay as they
    are, no copy, no parse); only an object with an empty string, a non-string decimal or a
    decimal in another form (``1e5``, `` 2.5``, ``1-2``) goes field by field
    (``decimal_text``: written in plain digits, or an error).
    Names no path (``Shape.to_record`` finds it again on an error)."""
    get = obj.get
    if plan.decimals:
        values = list(map(get, plan.decimals))
        try:  # every value None or a plain decimal string? (a number makes join raise, a 0 is
            # caught by ``0 in``; an empty string, list or object by the other ``in``: what
            # ``filter`` drops must be None only)
            plain = (
                "" not in values
                and 0 not in values
                and [] not in values
                and {} not in values
                and _plain_decimals(list(filter(None, values)))
            )
        except TypeError:
            plain = False
        if not plain:
            for key, value in zip(plan.decimals, values, strict=True):
                if value is not None:
                    obj[key] = decimal_text(value, key)
    if plan.dates and "" in list(map(get, plan.dates)):
        for key in plan.dates:
            if get(key) == "":
                obj[key] = None
    for key in plan.texts:
        value = get(key)
        if value is not None and value.__class__ is not str:
            obj[key] = number_text(value)
    for key, sub in plan.objects:
        value = get(key)
        # most nested objects are links ({id, displayed_as, $path}): nothing to do there
        if value.__class__ is dict and not sub.keys.isdisjoint(value):
            _record(sub, value)
    for key, sub in plan.arrays:
        value = get(key)
        if value.__class__ is list:
            keys = sub.keys
            for item in value:
                if item.__class__ is dict and not keys.isdisjoint(item):
                    _record(sub, item)
    for key in plan.decimal_lists:
        value = get(key)
        if value.__class__ is list:
            obj[key] = [decimal_text(v, key) for v in value]
        elif value is not None:
            raise WireValueError(key, value, "a list of decimals")


_EMPTY = Plan(())


def _read(plan: Plan, obj: dict[str, Any], where: str, number: Any = None) -> None:
    """``number``: how a decimal is read (``decimal_text`` for records, ``as_decimal`` for
    arithmetic). Names the path of a bad value."""
    convert = number or decimal_text
    for key, op, sub in plan:
        value = obj.get(key)
        if value is None:
            continue
        if op == _DEC:
            obj[key] = convert(value, where + key)
        elif op == _DATE:
            if value == "":
                obj[key] = None
        elif op == _TXT:
            obj[key] = number_text(value)
        elif op == _OBJ:
            if value.__class__ is dict:
                _read(sub or _EMPTY, value, f"{where}{key}.", number)
        elif op == _ARR_OBJ:
            if value.__class__ is list:
                for i, item in enumerate(value):
                    if item.__class__ is dict:
                        _read(sub or _EMPTY, item, f"{where}{key}.{i}.", number)
        elif op == _ARR_DEC:
            if value.__class__ is not list:
                raise WireValueError(where + key, value, "a list of decimals")
            obj[key] = [convert(v, f"{where}{key}.{i}") for i, v in enumerate(value)]


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
                _write(sub or _EMPTY, value, blank=False)
        elif op == _ARR_OBJ:
            if isinstance(value, list):
                for item in value:
                    if isinstance(item, dict):
                        _write(sub or _EMPTY, item, blank=False)
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
        """Sage's item as a record, in place: decimals as checked strings, ``""`` as ``None``.
        ``WireValueError`` names the field (prefixed by ``where``) of a value that is no
        decimal."""
        try:
            _record(self.plan, item)
        except WireValueError:
            pass  # read it again below, to name the field's whole path
        else:
            return item
        _read(self.plan, item, where)  # raises the error, with the path
        return item

    def to_decimals(self, item: dict[str, Any], where: str = "") -> dict[str, Any]:
        """Sage's item with its decimals as ``Decimal``, in place (to compute with them, or to
        send them back in a write body); ``""`` as ``None``."""
        _read(self.plan, item, where, as_decimal)
        return item

    def to_wire(self, record: dict[str, Any], *, singleton: bool = False) -> dict[str, Any]:
        """A record as Sage sends it, in place: decimals as Rails strings; in a settings
        ``singleton`` unset (``None`` or missing) top-level strings and dates as ``""``."""
        if singleton:
            _write(self.blank_plan, record, blank=True)
        else:
            _write(self.plan, record, blank=False)
        return record

    @functools.cached_property
    def record_check(self) -> RecordCheck:
        """The fast path's check of this shape (``RecordCheck``), compiled once."""
        return RecordCheck(self.plan)

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
                    walk(sub or _EMPTY, f"{prefix}{key}.")
                elif op == _ARR_OBJ:
                    walk(sub or _EMPTY, f"{prefix}{key}[].")

        walk(self.plan, "")
        return out


@functools.cache
def read_shape(resource: str) -> Shape:
    """The shape of one item of catalogue resource ``resource`` (its read schema)."""
    from tap_sage.sage import catalogue  # the catalogue is data; imported late, no cycle

    return Shape.of(catalogue.list_schema(resource))


# -- the check of the tap's fast path ------------------------------------------------------------


def _load_scanner() -> Any:
    """``tap_sage.sage._wirescan``, the compiled page scanner, when this install has it (the
    wheel's build hook compiles it where a C compiler is; ``hatch_build.py``) and it is the
    version this module speaks; None otherwise, and pages are read with msgspec alone.
    ``TAP_SAGE_PURE_PYTHON=1`` leaves it unused."""
    import os

    if os.environ.get("TAP_SAGE_PURE_PYTHON") == "1":
        return None
    try:
        from tap_sage.sage import _wirescan
    except ImportError:
        return None
    if getattr(_wirescan, "ABI_VERSION", None) != SCANNER_ABI:
        return None
    # a checkout (an editable install) has the source beside the build: a build older than
    # it (the source changed, the install was not run again) is not used
    source = Path(__file__).with_name("_wirescan.c")
    if source.exists():
        import hashlib

        if hashlib.sha256(source.read_bytes()).hexdigest()[:16] != _wirescan.SOURCE:
            return None
    return _wirescan


#: The version of ``_wirescan``'s interface this module speaks (its ``ABI_VERSION``): a scanner
#: left over from an older build is not used.
SCANNER_ABI = 2
SCANNER: Any = _load_scanner()


#: A decimal ``_record`` keeps as it is: Sage's plain digits.
_PlainDecimal = Annotated[str, msgspec.Meta(pattern=r"\A-?[0-9]+(?:\.[0-9]+)?\Z")]
#: A date ``_record`` keeps as it is: any string but ``""``.
_SetDate = Annotated[str, msgspec.Meta(min_length=1)]
_struct_names = itertools.count()

#: The fields of an item the list reader reads (``tap_sage.sync``); a ``RecordCheck`` keeps them.
READER_FIELDS = ("id", "updated_at", "created_at", "deleted_at")


_Verify = t.Callable[[Any], bool]
#: What ``verify`` must look at in one object: its decimals' attributes, and the nested objects
#: (attribute, their tree, whether a list of them) that hold decimals; None: nothing.
_Tree = tuple[list[str], list[tuple[str, "_Tree", bool]]]


def _check_struct(
    plan: Plan, extra: tuple[str, ...] = (), forbid: tuple[str, ...] = ()
) -> tuple[type, dict[str, str], _Tree | None]:
    """A msgspec Struct type that decodes exactly the values ``_record`` looks at, typed so
    that decoding fails (``msgspec.ValidationError``) wherever ``_record`` would change one
    (``""`` for a decimal or a date, a number for a decimal or in a text field, a nested
    object or array of another shape than the plan expects), and the tree of what
    ``_verifier`` must still check in Python: that the decimals of each object, all at once,
    are plain decimals, as ``_record`` checks them. Every other field of the item is
    skipped by the decoder (in C). Also returns key -> attribute for the ``extra`` keys
    (decoded as they are unless the plan types them). A ``forbid`` key fails the decoding
    wherever it is present, whatever its value."""
    fields: list[tuple[str, Any, Any]] = []
    attrs: dict[str, str] = {}
    rename: dict[str, str] = {}
    decimals: list[str] = []
    nested: list[tuple[str, _Tree, bool]] = []

    def add(key: str, kind: Any) -> str:
        name = f"f{len(fields)}"
        rename[name] = key
        attrs[key] = name
        fields.append((name, kind | None, None))
        return name

    for key, op, sub in plan:
        if op == _DEC:
            decimals.append(add(key, _SetDate))  # a non-empty string, checked by ``verify``
        elif op == _DATE:
            add(key, _SetDate)
        elif op == _TXT:
            add(key, str)
        elif op == _OBJ:
            kind, _, tree = _check_struct(sub or _EMPTY)
            name = add(key, kind)
            if tree is not None:  # a sub-tree without decimals: its types say it all
                nested.append((name, tree, False))
        elif op == _ARR_OBJ:
            element: Any
            element, _, tree = _check_struct(sub or _EMPTY)
            name = add(key, list[element | None])
            if tree is not None:
                nested.append((name, tree, True))
        elif op == _ARR_DEC:
            add(key, list[_PlainDecimal | None])  # ``_record`` reads each with ``decimal_text``
    for key in extra:
        if key not in attrs:
            add(key, Any)
    for key in forbid:
        if key not in attrs:
            name = f"f{len(fields)}"
            rename[name] = key
            fields.append((name, msgspec.UnsetType, msgspec.UNSET))
    kind = msgspec.defstruct(
        f"WireCheck{next(_struct_names)}", fields, rename=rename, gc=False, omit_defaults=True
    )
    tree = (decimals, nested) if decimals or nested else None
    return kind, {key: attrs[key] for key in extra}, tree


def _verifier(tree: _Tree | None) -> _Verify:
    """``tree`` compiled into one Python function (no call per nested object, no loop over
    the plan at run time): per object, its decimals checked at once (``_plain_decimals``);
    the nested objects and lists that hold decimals, inline."""
    if tree is None:
        return lambda _: True
    lines = ["def verify(o0):"]
    names = itertools.count(1)

    def emit(node: _Tree, var: str, depth: int) -> None:
        pad = "    " * depth
        decimals, nested = node
        if len(decimals) == 1:
            lines.append(f"{pad}v = {var}.{decimals[0]}")
            lines.append(f"{pad}if v is not None and not plain(v): return False")
        elif decimals:
            values = ", ".join(f"{var}.{d}" for d in decimals)
            lines.append(f"{pad}if not plains(list(filter(None, ({values})))): return False")
        for attr, sub, many in nested:
            inner = f"o{next(names)}"
            if many:
                lines.append(f"{pad}for {inner} in {var}.{attr} or ():")
                lines.append(f"{pad}    if {inner} is not None:")
                emit(sub, inner, depth + 2)
            else:
                lines.append(f"{pad}{inner} = {var}.{attr}")
                lines.append(f"{pad}if {inner} is not None:")
                emit(sub, inner, depth + 1)

    emit(tree, "o0", 1)
    lines.append("    return True")
    scope: dict[str, Any] = {"plain": _PLAIN_DECIMAL, "plains": _plain_decimals}
    exec(compile("\n".join(lines), "<wire.RecordCheck>", "exec"), scope)  # noqa: S102 - our own code
    verify: _Verify = scope["verify"]
    return verify


def _page_verifier(tree: _Tree | None) -> t.Callable[[list[Any]], bool]:
    """``tree`` as one check of many decoded items at once (a page): per node of the tree,
    every object of the page at that node is gathered by C iterators (``map``,
    ``attrgetter``, ``chain``, ``filter``) and all their decimals are checked by one
    ``_plain_decimals``; no Python code runs per item. The same verdict as ``_verifier`` on
    each item, all of them passing."""
    if tree is None:
        return lambda _: True
    chain = itertools.chain.from_iterable
    decimals, nested = tree
    values: t.Callable[[list[Any]], list[str]] | None = None
    if len(decimals) > 1:
        many_values = operator.attrgetter(*decimals)

        def values(objs: list[Any]) -> list[str]:
            return list(filter(None, chain(map(many_values, objs))))
    elif decimals:
        one_value = operator.attrgetter(decimals[0])

        def values(objs: list[Any]) -> list[str]:
            return list(filter(None, map(one_value, objs)))

    children: list[t.Callable[[list[Any]], bool]] = []
    for attr, sub, many in nested:
        children.append(_page_child(operator.attrgetter(attr), _page_verifier(sub), many=many))
    plains = _plain_decimals

    def verify(objs: list[Any]) -> bool:
        if not objs:
            return True
        if values is not None and not plains(values(objs)):
            return False
        return all(child(objs) for child in children)

    return verify


def _page_child(
    get: t.Callable[[Any], Any], verify: t.Callable[[list[Any]], bool], *, many: bool
) -> t.Callable[[list[Any]], bool]:
    """The check of one nested object (or list of objects, ``many``) of every item at once."""
    chain = itertools.chain.from_iterable
    if many:
        return lambda objs: verify(list(filter(None, chain(filter(None, map(get, objs))))))
    return lambda objs: verify(list(filter(None, map(get, objs))))


def _key_kinds(plan: Plan, kinds: dict[str, int], by_op: dict[int, int]) -> dict[str, int]:
    """Every key of ``plan`` that ``_record`` may change, at any depth, with what it must be
    (``by_op``: a plan step's op -> ``tap_sage.sage._wirescan``'s kind; or-ed where one name
    is several things)."""
    for key, op, sub in plan:
        kind = by_op.get(op, 0)
        if kind:
            kinds[key] = kinds.get(key, 0) | kind
        elif sub is not None:
            _key_kinds(sub, kinds, by_op)
    return kinds


def scan_table(plan: Plan, scanner: Any) -> bytes | None:
    """``plan`` as the key table of ``tap_sage.sage._wirescan.scan``: per key its length, its
    kinds, its reader slot (1 + its place in ``READER_FIELDS``, 0 for none) and its UTF-8
    bytes. ``business_id`` is forbidden at an item's top level (``RecordCheck``). None for a
    schema of more keys than the scanner's table holds."""
    by_op = {_DEC: scanner.DEC, _DATE: scanner.DATE, _TXT: scanner.TEXT, _ARR_DEC: scanner.DECLIST}
    kinds = _key_kinds(plan, {}, by_op)
    kinds["business_id"] = kinds.get("business_id", 0) | scanner.FORBID
    slots = {key: i + 1 for i, key in enumerate(READER_FIELDS)}
    if len(kinds.keys() | slots.keys()) > scanner.MAX_KEYS:
        return None  # more than the scanner's table holds: msgspec reads this stream
    out = bytearray()
    for key in sorted(kinds.keys() | slots.keys()):
        name = key.encode()
        if not 0 < len(name) < 256:
            msg = f"scan_table: key {key!r} cannot be in the scanner's table"
            raise ValueError(msg)
        out += bytes((len(name), kinds.get(key, 0), slots.get(key, 0))) + name
    return bytes(out)


class RecordCheck:
    """Decides, per item or for a whole page at once, whether ``Shape.to_record`` would leave
    Sage's items exactly as they are (the tap's fast path emits such an item's JSON text
    unchanged), in one C pass and a join of the decimals, and keeps the few values the list
    reader needs (``READER_FIELDS``): ``check`` gives them as a tuple, ``attrs`` says where
    each is. ``table``: the same check as ``tap_sage.sage._wirescan``'s key table (None without the
    compiled scanner), which ``tap_sage.records`` tries first on a whole page."""

    __slots__ = ("attrs", "decode", "decode_page", "table", "values", "verify", "verify_all")

    def __init__(self, plan: Plan) -> None:
        self.table = None if SCANNER is None else scan_table(plan, SCANNER)
        # an item with a ``business_id`` of its own goes the ordinary way (``tap_sage.records``)
        kind, names, tree = _check_struct(plan, READER_FIELDS, forbid=("business_id",))
        self.verify = _verifier(tree)
        self.verify_all = _page_verifier(tree)
        self.decode: t.Callable[[bytes], Any] = msgspec.json.Decoder(kind).decode
        page = msgspec.defstruct(
            f"WirePage{next(_struct_names)}",
            [("items", list[kind], msgspec.field(name="$items", default_factory=list))],  # type: ignore[valid-type]
            gc=False,
        )
        self.decode_page: t.Callable[[bytes], Any] = msgspec.json.Decoder(page).decode
        #: reader field -> its place in what ``check`` returns
        self.attrs: dict[str, int] = {key: i for i, key in enumerate(READER_FIELDS)}
        self.values = operator.attrgetter(*(names[key] for key in READER_FIELDS))

    def check(self, raw: bytes) -> tuple[Any, ...] | None:
        """The reader's values of one item's JSON text, or None when ``to_record`` would
        change the item (or it is no JSON object): then it goes the ordinary way. The decoded
        check itself is dropped at once (it holds every decimal of the item)."""
        try:
            meta = self.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        if not self.verify(meta):
            return None
        values: tuple[Any, ...] = self.values(meta)
        return values

    def check_all(self, content: bytes) -> list[tuple[Any, ...]] | None:
        """The reader's values of every item of a list page (compact JSON, ``content``) when
        ``to_record`` would change none of them, in order; None when one item would change
        (or one is no object): then each item is checked on its own (``check``). One decode
        and one check for the whole page instead of one per item."""
        try:
            checks = self.decode_page(content).items
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        if not self.verify_all(checks):
            return None
        return list(map(self.values, checks))
