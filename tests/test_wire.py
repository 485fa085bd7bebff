"""Units of the shared wire module (``tap_sage.sage.wire``) and of telling editions apart."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from tap_sage.sage import catalogue, wire
from tap_sage.sage.connection_check import describe_business, edition_of


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("-430035.84"), "-430035.84"),
        ("10.00", "10.0"),
        (10, "10.0"),
        (0, "0.0"),
        (Decimal("-0"), "0.0"),
        (Decimal("1E+2"), "100.0"),
        (Decimal("1E-7"), "0.0000001"),
        (0.1 + 0.2, "0.30000000000000004"),  # a float is read through its shortest repr
        ("1532.21", "1532.21"),
    ],
)
def test_rails_decimal_form(value: object, text: str) -> None:
    assert wire.rails_decimal(value) == text


def test_rails_decimal_round_trips_digit_for_digit() -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    for _ in range(2000):
        digits = rng.randint(0, 10**12)
        scale = rng.randint(1, 6)
        text = f"{'-' if rng.random() < 0.3 else ''}{digits // 10**scale}.{digits % 10**scale:0{scale}d}"
        rails = wire.rails_decimal(text)
        assert Decimal(rails) == Decimal(text), f"seed {seed}: {text} -> {rails}"
        assert wire.rails_decimal(rails) == rails, f"seed {seed}: {rails} is not stable"
        assert not rails.endswith("0") or rails.endswith(".0"), f"seed {seed}: {rails}"


def test_decimal_text_keeps_sage_digits_and_never_floats() -> None:
    assert wire.decimal_text("-430035.84", "x") == "-430035.84"
    assert wire.decimal_text("10.0", "x") == "10.0" and wire.decimal_text("7", "x") == "7"
    assert wire.decimal_text("", "x") is None and wire.decimal_text(None, "x") is None
    assert wire.decimal_text(Decimal("12.50"), "x") == "12.50"  # a JSON number's own digits
    assert wire.decimal_text(3, "x") == "3"
    assert wire.decimal_text("1e2", "x") == "100" and wire.decimal_text(" 2.5", "x") == "2.5"
    with pytest.raises(wire.WireValueError, match=r"field x: '12,5' is not a decimal"):
        wire.decimal_text("12,5", "x")


def test_as_decimal_refuses_what_is_no_decimal() -> None:
    assert wire.as_decimal("", "x") is None and wire.as_decimal(None, "x") is None
    assert wire.as_decimal(3, "x") == Decimal(3)
    for bad in ("abc", "NaN", "Infinity", True, [1]):
        with pytest.raises(wire.WireValueError, match=r"field a\.b"):
            wire.as_decimal(bad, "a.b")


def test_shape_reads_and_writes_nested_decimals_and_dates() -> None:
    shape = wire.Shape.of(catalogue.list_schema("sales_invoices"))
    assert {"total_amount", "invoice_lines[].unit_price", "invoice_lines[].net_amount"} <= set(
        shape.decimal_paths
    )
    item = {
        "total_amount": "290.0",
        "date": "",
        "invoice_lines": [{"unit_price": "100.0", "quantity": "2.0"}, None],
        "created_at": "",
        "reference": "",
    }
    record = shape.to_record(item)
    assert record["total_amount"] == "290.0"  # Sage's text, kept digit for digit
    assert record["invoice_lines"][0] == {"unit_price": "100.0", "quantity": "2.0"}
    assert record["date"] is None and record["created_at"] is None and record["reference"] == ""
    back = shape.to_wire(record)
    assert back["total_amount"] == "290.0" and back["invoice_lines"][0]["quantity"] == "2.0"
    assert back["date"] is None  # only settings singletons write unset dates as ""


def test_settings_singletons_write_unset_strings_and_dates_as_empty() -> None:
    shape = wire.Shape.of(catalogue.list_schema("financial_settings"))
    record = shape.to_wire(
        {"year_end_date": "2026-12-31", "mtd_authenticated_date": None, "default_irpf_rate": 0},
        singleton=True,
    )
    assert record["mtd_authenticated_date"] == "" and record["general_tax_number"] == ""
    assert record["default_irpf_rate"] == "0.0" and record["year_end_date"] == "2026-12-31"
    assert record.get("base_currency") is None  # a link stays null, never ""


def test_leaf_schema_follows_the_spec_types() -> None:
    assert wire.leaf_schema({"type": "number", "format": "double"}) == wire.DECIMAL_SCHEMA
    assert wire.leaf_schema({"type": "integer", "format": "int32"}) == {"type": ["integer", "null"]}
    assert wire.leaf_schema({"type": "string", "format": "date"}) == {
        "type": ["string", "null"],
        "format": "date",
    }
    assert wire.leaf_schema({"type": "string", "enum": ["A", "B"]}) == {
        "type": ["string", "null"],
        "examples": ["A", "B"],
    }


@pytest.mark.parametrize(
    ("sub_id", "name", "edition"),
    [
        ("START", "Accounting Start", "Start"),
        ("MICRO", "Sage One Accounts", "Start"),
        ("ACCOUNTS", "Accounts", "Standard"),
        ("ACCOUNTING_10", "Accounting", "Standard"),
        ("ACCOUNTING", "Accounting", "Plus"),
        ("SOMETHING_NEW", "Accounting Plus", "Plus"),
        ("SOMETHING_NEW", "Payroll", None),
    ],
)
def test_editions_come_from_subscription_ids(sub_id: str, name: str, edition: str | None) -> None:
    """NOTES.md, "Editions": by id, not by name ("Accounting" is Plus by id ACCOUNTING but
    Standard by ACCOUNTING_10); an unknown id falls back to the name."""
    assert edition_of([{"id": sub_id, "displayed_as": name}]) == edition


def test_a_paying_subscription_is_active() -> None:
    raw = {"id": "b", "country": {"id": "gb"}, "subscriptions": [{"id": "ACCOUNTING",
           "displayed_as": "Accounting", "status": "paying"}]}  # fmt: skip
    info = describe_business(raw)
    assert (info["country"], info["edition"], info["active"]) == ("GB", "Plus", True)
    assert info["subscription_id"] == "ACCOUNTING"
    raw["subscriptions"][0]["status"] = "cancelled"  # type: ignore[index]
    assert describe_business(raw)["active"] is False


def test_record_reader_handles_numbers_empties_and_zeros_among_plain_strings() -> None:
    """The fast path checks an object's decimals at once; anything unusual among them (a JSON
    number, a zero, an empty string) still gets its own conversion."""
    shape = wire.Shape.of(catalogue.list_schema("sales_invoices"))
    for odd, expected in ((5, "5"), (Decimal("1.50"), "1.50"), (0, "0"), ("", None)):
        line = {"unit_price": "10.0", "net_amount": odd, "tax_amount": "2.0", "id": "L"}
        record = shape.to_record({"total_amount": "1.0", "invoice_lines": [line]})
        assert record["invoice_lines"][0] == {
            "unit_price": "10.0", "net_amount": expected, "tax_amount": "2.0", "id": "L"
        }, odd  # fmt: skip
        top = shape.to_record({"total_amount": odd, "net_amount": "3.0"})
        assert top == {"total_amount": expected, "net_amount": "3.0"}, odd
    with pytest.raises(wire.WireValueError, match=r"field invoice_lines\.0\.net_amount"):
        shape.to_record({"invoice_lines": [{"net_amount": "1,5"}]})
