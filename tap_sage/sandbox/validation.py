"""Write bodies: read with their decimals exact, checked against the catalogue's write schemas
(one 422 item per problem), and the rules of contact references."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from decimal import Decimal
from typing import Any

from werkzeug.wrappers import Request

from tap_sage.sage import wire
from tap_sage.sandbox.answers import SageError

#: Longest contact reference Sage takes (integrators' notes, v3.1; NOTES.md "Validation quirks").
CONTACT_REFERENCE_MAX = 10


class Validators:
    """Draft 7 validators of the write schemas, built once each."""

    def __init__(self) -> None:
        self._validators: dict[int, Any] = {}
        self._lock = threading.Lock()

    def _validator(self, schema: dict[str, Any]) -> Any:
        """A cached Draft 7 validator (``jsonschema`` is imported on the first write)."""
        with self._lock:
            found = self._validators.get(id(schema))
            if found is None:
                import jsonschema  # slow import kept off the start-up path

                checker = jsonschema.FormatChecker(formats=["date"])
                found = jsonschema.Draft7Validator(schema, format_checker=checker)
                self._validators[id(schema)] = found
            return found

    def validate(self, schema: dict[str, Any], body: dict[str, Any], wrapper: str) -> None:
        """422 ``RecordInvalid`` with one item per problem, ``$source`` the field path."""
        validator = self._validator(schema)
        errors = sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.path)))
        if not errors:
            return
        items: list[dict[str, str]] = []
        for error in errors:
            path = [str(p) for p in error.absolute_path]
            if path and path[0] == wrapper:
                path = path[1:]
            if error.validator == "required":
                match = re.match(r"'(.+)' is a required property", error.message)
                if match:
                    path.append(match.group(1))
                message = f"{'.'.join(path)} is required"
            else:
                message = f"{'.'.join(path) or wrapper}: {error.message}"
            items.append(
                {
                    "$severity": "error",
                    "$dataCode": "RecordInvalid",
                    "$message": message,
                    "$source": ".".join(path) or wrapper,
                }
            )
        exc = SageError(422, "RecordInvalid", "")
        exc.items = items
        raise exc

    def wrapped_body(
        self, request: Request, wrapper: str, schema: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The object inside ``wrapper`` of a JSON body (validated when a schema is given)."""
        if request.mimetype != "application/json":
            raise SageError(415, "UnsupportedMediaType", "Content-Type must be application/json")
        try:
            body = parse_body(request)
        except ValueError:
            raise SageError(400, "InvalidJSON", "The body is not valid JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get(wrapper), dict):
            raise SageError(
                422, "RecordInvalid", f"param is missing or the value is empty: {wrapper}", wrapper
            )
        if schema is not None:
            self.validate(schema, body, wrapper)
        return dict(body[wrapper])


def peek(request: Request, wrapper: str) -> dict[str, Any]:
    """The object inside ``wrapper``, not validated yet."""
    try:
        body = parse_body(request)
    except ValueError:
        raise SageError(400, "InvalidJSON", "The body is not valid JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get(wrapper), dict):
        raise SageError(
            422, "RecordInvalid", f"param is missing or the value is empty: {wrapper}", wrapper
        )
    return dict(body[wrapper])


def parse_body(request: Request) -> Any:
    """A JSON body with its decimals as ``Decimal`` (never a float); ``ValueError`` if bad."""
    return json.loads(request.get_data(as_text=True) or "null", parse_float=Decimal)


def amount(value: Any, name: str, default: Decimal | None = None) -> Decimal:
    """A body or stored amount as ``Decimal`` (``default``, else 0, when unset); a value that
    is no decimal answers 422 naming the field."""
    try:
        number = wire.as_decimal(value, name)
    except wire.WireValueError as exc:
        raise SageError(422, "RecordInvalid", str(exc), name) from None
    if number is None:
        return default if default is not None else Decimal(0)
    return number


def check_contact_reference(
    conn: sqlite3.Connection, biz: str, raw: dict[str, Any], own_id: str | None
) -> None:
    """A contact's ``reference``: at most 10 characters, and unique among the business's
    contacts, deleted ones included (a deleted contact's reference stays taken)."""
    reference = raw.get("reference")
    if not isinstance(reference, str) or not reference:
        return
    if len(reference) > CONTACT_REFERENCE_MAX:
        raise SageError(
            422,
            "RecordInvalid",
            f"Reference is too long (maximum is {CONTACT_REFERENCE_MAX} characters)",
            "reference",
        )
    taken = conn.execute(
        "SELECT 1 FROM records WHERE business = ? AND resource = 'contacts' AND id != ? "
        "AND json_extract(data, '$.reference') = ? LIMIT 1",
        (biz, own_id or "", reference),
    ).fetchone()
    if taken is not None:
        raise SageError(422, "RecordInvalid", "Reference has already been taken", "reference")
