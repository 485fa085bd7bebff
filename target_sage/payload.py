"""Record -> request body: serialisation, field selection, validation, keys and hashes.

Pure functions, no I/O: they are what runs before any HTTP call.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jsonschema
import simplejson

from tap_sage.sage import catalogue

#: Fields that steer the target and never go to Sage.
CONTROL_PREFIX = "_sdc_"


class RecordError(Exception):
    """A record cannot be written. Names the stream, the source key and the field."""

    def __init__(self, stream: str, source_key: str, field: str | None, problem: str) -> None:
        self.stream = stream
        self.source_key = source_key
        self.field = field
        self.problem = problem
        where = f", field `{field}`" if field else ""
        super().__init__(f"Stream `{stream}`, source key {source_key}{where}: {problem}")


def to_json_value(value: Any) -> Any:
    """A record value as JSON: datetimes (parsed by the SDK) back to ISO strings, etc.

    Decimals stay ``Decimal`` (the SDK reads JSON numbers with ``parse_float=Decimal``): money
    never passes through a binary float; ``dumps`` writes them digit for digit."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None and value.utcoffset() == dt.timedelta(0):
            return value.replace(tzinfo=None).isoformat() + "Z"
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return int(value) if value.is_finite() and value == value.to_integral_value() else value
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """JSON text with decimals written exactly as they are (``10.50`` stays ``10.50``)."""
    return str(simplejson.dumps(to_json_value(value), use_decimal=True, default=str, **kwargs))


def _normal(value: Any) -> Any:
    if isinstance(value, decimal.Decimal) and value.is_finite():
        return value.normalize()
    if isinstance(value, Mapping):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def canonical(value: Any) -> str:
    """Compact, key-sorted JSON: the text form of keys and the input of hashes. Decimals are
    compared by value (``10.50`` and ``10.5`` are one content), never through a float."""
    return dumps(_normal(to_json_value(value)), sort_keys=True, separators=(",", ":"))


def digest(*parts: str) -> str:
    """32 lowercase hex characters (the shape of Sage's ``idempotency_id``)."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()


def content_fields(record: Mapping[str, Any], sage_id_field: str | None) -> dict[str, Any]:
    """The record without control fields (``_sdc_*`` and the Sage id field)."""
    return {
        k: v
        for k, v in record.items()
        if not k.startswith(CONTROL_PREFIX) and (sage_id_field is None or k != sage_id_field)
    }


def source_key(record: Mapping[str, Any], key_properties: Sequence[str]) -> tuple[str, bool]:
    """The canonical source key and whether it came from key properties.

    With key properties: JSON list of their values (``["C-001"]``). Without: ``#`` and a hash
    of the content, so that the same record sent again is recognised.
    """
    if key_properties:
        return canonical([record.get(k) for k in key_properties]), True
    return "#" + digest(canonical(content_fields(record, None))), False


def key_text(value: Any) -> str:
    """The canonical key of a reference value (a scalar or a list of key values)."""
    if isinstance(value, (list, tuple)):
        return canonical(list(value))
    return canonical([value])


def idempotency_id(business_id: str, stream: str, key: str, generation: int) -> str:
    """Derived from the stream and the source key (and the generation after a delete)."""
    return digest("target-sage/1", business_id, stream, key, str(generation))


def _date_only(value: Any, field: str, stream: str, key: str) -> Any:
    if isinstance(value, dt.datetime):
        if value.time() != dt.time(0) and value.tzinfo is None:
            raise RecordError(stream, key, field, f"{value.isoformat()} is not a date")
        return value.date().isoformat()
    return value


_NUMERIC = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _number(value: Any, schema: Mapping[str, Any]) -> Any:
    """A value for a field Sage types ``number`` or ``integer``, exactly as the source gave it:
    a ``Decimal`` (or a decimal string, as Sage itself writes them) stays those digits; a
    binary float is taken by its shortest text (what the source wrote), never rounded."""
    raw = schema.get("type")
    types = {raw} if isinstance(raw, str) else set(raw or ())
    if isinstance(value, bool) or not types & {"number", "integer"}:
        return value
    if isinstance(value, str) and _NUMERIC.fullmatch(value.strip()):
        value = decimal.Decimal(value.strip())
    elif isinstance(value, float) and value == value and abs(value) != float("inf"):
        value = decimal.Decimal(repr(value))
    if isinstance(value, decimal.Decimal) and value.is_finite():
        if "number" not in types and value == value.to_integral_value():
            return int(value)
        return value
    return value


def _serialise(value: Any, schema: Mapping[str, Any], path: str, stream: str, key: str) -> Any:
    value = _number(value, schema)
    if isinstance(value, decimal.Decimal):
        return value
    if schema.get("format") == "date":
        value = _date_only(value, path, stream, key)
    if isinstance(value, Mapping) and isinstance(schema.get("properties"), Mapping):
        props = schema["properties"]
        return {
            k: _serialise(v, props.get(k, {}), f"{path}.{k}", stream, key) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)) and isinstance(schema.get("items"), Mapping):
        return [
            _serialise(v, schema["items"], f"{path}[{i}]", stream, key) for i, v in enumerate(value)
        ]
    return to_json_value(value)


@functools.cache
def _validator(resource: str, verb: str) -> jsonschema.Draft7Validator | None:
    schema = catalogue.write_schema(resource, verb)
    if schema is None:
        return None
    schema = json.loads(json.dumps(schema))
    if verb == "put":
        # PUT changes only the fields sent: nothing at the top of the body is required.
        for inner in schema.get("properties", {}).values():
            if isinstance(inner, dict):
                inner.pop("required", None)
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker(["date"]))


def write_fields(resource: str, verb: str) -> Mapping[str, Any]:
    """The properties (name -> schema) a write body of ``resource`` may carry."""
    res = catalogue.resource(resource)
    schema = catalogue.write_schema(resource, verb) or {}
    wrapped = schema.get("properties", {}).get(res.wrapper or "", {})
    props: Mapping[str, Any] = wrapped.get("properties", {})
    return props


def _error_path(error: jsonschema.ValidationError) -> str:
    out = ""
    for part in list(error.absolute_path)[1:]:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_body(
    resource: str,
    verb: str,
    fields: Mapping[str, Any],
    *,
    stream: str,
    key: str,
    extra: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The wrapped, validated body of a write, and the record fields Sage does not take.

    Raises ``RecordError`` naming the first bad field.
    """
    res = catalogue.resource(resource)
    assert res.wrapper, resource
    props = write_fields(resource, verb)
    inner: dict[str, Any] = {}
    ignored: list[str] = []
    for name, value in fields.items():
        if name in props:
            inner[name] = _serialise(value, props[name], name, stream, key)
        else:
            ignored.append(name)
    if extra:
        inner.update(extra)
    body = {res.wrapper: inner}
    validator = _validator(resource, verb)
    if validator is not None:
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        if errors:
            err = errors[0]
            field = _error_path(err)
            if err.validator == "required" and isinstance(err.instance, Mapping):
                missing = [r for r in err.validator_value if r not in err.instance]
                prefix = f"{field}." if field else ""
                field = prefix + (missing[0] if missing else "")
                raise RecordError(stream, key, field, "is required by Sage and missing")
            raise RecordError(stream, key, field or None, _short(err.message))
    return body, ignored


def paths(record: Mapping[str, Any], dotted: str) -> Iterable[tuple[Any, str]]:
    """(container, attribute) pairs addressed by ``a.b`` (lists are walked)."""
    head, _, rest = dotted.partition(".")
    containers: list[Any] = [record]
    if rest:
        nxt: list[Any] = []
        value = record.get(head)
        items = value if isinstance(value, list) else [value]
        nxt = [i for i in items if isinstance(i, dict)]
        for item in nxt:
            yield from paths(item, rest)
        return
    for c in containers:
        if isinstance(c, dict) and head in c and c[head] is not None:
            yield c, head


class DottedFieldError(ValueError):
    """A record's dotted field names do not make one nested object (``field``: the name)."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(problem)


def _is_index(part: str) -> bool:
    return part.isdigit() and part.isascii()


#: The second separator of nested names: the SDK's flattening separator. Meltano reads a dot
#: in a ``meltano.yml`` key as nesting (``stream_maps: {s: {main_address.city: town}}`` reaches
#: the tap as ``{main_address: {city: town}}``, which an SDK stream map refuses), so a stream map
#: in Meltano names ``main_address__city`` instead.
NESTED_SEPARATOR = "__"


def nested_fields(resource: str) -> frozenset[str]:
    """The fields of ``resource``'s write bodies that hold an object or a list: the only heads
    ``NESTED_SEPARATOR`` nests (a ``__`` elsewhere in a field name is left alone)."""
    out: set[str] = set()
    for verb in ("post", "put"):
        for name, schema in write_fields(resource, verb).items():
            raw = schema.get("type")
            types = {raw} if isinstance(raw, str) else set(raw or ())
            if types & {"object", "array"}:
                out.add(name)
    return frozenset(out)


def _undouble(record: Mapping[str, Any], heads: frozenset[str]) -> Mapping[str, Any]:
    """``main_address__city`` as ``main_address.city`` where ``main_address`` is in ``heads``."""
    if not heads or not any(NESTED_SEPARATOR in k for k in record):
        return record
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = key
        head = key.split(NESTED_SEPARATOR, 1)[0]
        if NESTED_SEPARATOR in key and head in heads and not key.startswith(CONTROL_PREFIX):
            name = key.replace(NESTED_SEPARATOR, ".")
            if name in record:
                raise DottedFieldError(key, f"`{key}` and `{name}` name the same field")
        out[name] = value
    return out


def nest_dotted(record: Mapping[str, Any], heads: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The record with its dotted field names built into nested objects.

    A flat source (a SQL table, a CSV file) cannot hold the objects Sage's write bodies nest
    (``main_address``, ``main_contact_person``), and an object built in an SDK stream map is
    typed as a string and fails the target's validation. So a field named
    ``main_address.address_line_1`` becomes ``{"main_address": {"address_line_1": ...}}``; a
    part that is a number is a list index (``contact_type_ids.0`` -> ``["CUSTOMER"]``; indexes
    start at 0 without gaps). An object or list all of whose values are null is left out (a flat
    row without an address writes no address). Fields without dots pass unchanged; a null field
    ``a`` beside ``a.b`` is dropped. ``_sdc_*`` fields are never nested. Where the head is one
    of ``heads`` (``nested_fields``), ``__`` separates as a dot does: ``main_address__city``.

    Raises ``DottedFieldError`` naming the field: ``a`` and ``a.b`` both set, ``a.0`` beside
    ``a.b``, an empty part (``a..b``), an index gap.
    """
    record = _undouble(record, heads)
    dotted = [k for k in record if "." in k and not k.startswith(CONTROL_PREFIX)]
    if not dotted:
        return dict(record)
    out: dict[str, Any] = {k: v for k, v in record.items() if k not in dotted}
    tree: dict[str, Any] = {}
    names: dict[tuple[str, ...], str] = {}  # leaf path -> the field that set it
    for name in dotted:
        parts = tuple(name.split("."))
        if any(not p for p in parts):
            raise DottedFieldError(name, f"`{name}` has an empty part (a dot at its start or "
                                   "end, or two dots together)")  # fmt: skip
        if parts[0] in out:
            if out[parts[0]] is not None:
                raise DottedFieldError(
                    name,
                    f"`{name}` and `{parts[0]}` are both set: `{name}` builds `{parts[0]}` as "
                    f"an object; give either `{parts[0]}` or its dotted fields",
                )
            del out[parts[0]]
        node = tree
        for depth, part in enumerate(parts):
            here = parts[: depth + 1]
            last = depth == len(parts) - 1
            if part in node and (last or not isinstance(node[part], dict)):
                held = node[part]
                other = names[here] if isinstance(held, _Leaf) else _first_name(here, names)
                raise DottedFieldError(
                    name,
                    f"`{name}` and `{other}` conflict: `{'.'.join(here)}` would be both a "
                    "value and an object",
                )
            if last:
                node[part] = _Leaf(record[name])
                names[here] = name
            else:
                node = node.setdefault(part, {})
    for key, branch in tree.items():
        value = _build(branch, key, names)
        if value is not _NOTHING:
            out[key] = value
    return out


class _Leaf:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


_NOTHING = object()


def _first_name(prefix: tuple[str, ...] | str, names: Mapping[tuple[str, ...], str]) -> str:
    """The first field whose dotted name starts with ``prefix``."""
    parts = tuple(prefix.split(".")) if isinstance(prefix, str) else prefix
    return next((n for p, n in names.items() if p[: len(parts)] == parts), ".".join(parts))


def _build(node: Any, path: str, names: Mapping[tuple[str, ...], str]) -> Any:
    """A tree of dotted parts as JSON: ``_NOTHING`` when every value in it is null."""
    if isinstance(node, _Leaf):
        return node.value
    indexes = [k for k in node if _is_index(k)]
    if indexes and len(indexes) != len(node):
        named = next(k for k in node if not _is_index(k))
        raise DottedFieldError(
            _first_name(f"{path}.{named}", names),
            f"`{path}` is given both list indexes ({path}.{indexes[0]}) and names ({path}.{named})",
        )
    built = {k: _build(v, f"{path}.{k}", names) for k, v in node.items()}
    if indexes:
        order = sorted(built, key=int)
        if [int(k) for k in order] != list(range(len(order))):
            missing = next(i for i in range(len(order) + 1) if str(i) not in built)
            raise DottedFieldError(
                _first_name(f"{path}.{order[-1]}", names),
                f"list `{path}` has no `{path}.{missing}` (indexes start at 0, without gaps)",
            )
        items = [built[k] for k in order if built[k] is not _NOTHING and built[k] is not None]
        return items if items else _NOTHING
    kept = {k: v for k, v in built.items() if v is not _NOTHING}
    if all(v is None for v in kept.values()):
        return _NOTHING
    return kept
