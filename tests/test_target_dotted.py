"""Dotted field names (``main_address.city``) built into the nested objects of Sage's write
bodies: the rules (units), and bad names through target-sage against the sandbox: one clear
error naming the input line, the stream, the source key and the field, nothing else lost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from target_sage.payload import DottedFieldError, nest_dotted, nested_fields
from tests.test_target_helpers import (
    SageAPI,
    record_msg,
    results,
    run_cli,
    schema_msg,
    target_config,
)
from tests.test_target_input import line

FLAT_SCHEMA = {
    "type": "object",
    "properties": {
        "code": {"type": "string"},
        "name": {"type": "string"},
        "contact_type_ids.0": {"type": "string"},
        "main_address": {"type": ["string", "null"]},
        "main_address.address_line_1": {"type": ["string", "null"]},
        "main_address.city": {"type": ["string", "null"]},
        "main_contact_person.email": {"type": ["string", "null"]},
    },
}


def flat(code: str, **extra: Any) -> dict[str, Any]:
    return {
        "code": code,
        "name": f"Dotted {code}",
        "contact_type_ids.0": "CUSTOMER",
        "main_address.address_line_1": f"{code} Street",
        "main_address.city": "Leeds",
        "main_contact_person.email": f"{code.lower()}@dotted.example",
        **extra,
    }


def test_dotted_names_become_objects_and_lists() -> None:
    built = nest_dotted(flat("D-1", **{"_sdc_x.y": 1}))
    assert built == {
        "code": "D-1",
        "name": "Dotted D-1",
        "_sdc_x.y": 1,
        "contact_type_ids": ["CUSTOMER"],
        "main_address": {"address_line_1": "D-1 Street", "city": "Leeds"},
        "main_contact_person": {"email": "d-1@dotted.example"},
    }
    # several levels and indexes in order; null values kept beside others
    assert nest_dotted({"a.b.1": "y", "a.b.0": "x", "a.c": None, "a.d.e": 1}) == {
        "a": {"b": ["x", "y"], "c": None, "d": {"e": 1}}
    }


def test_an_object_or_list_of_nulls_is_left_out() -> None:
    row = {"name": "N", "main_address": None, "main_address.city": None, "t.0": None, "u.v.w": None}
    assert nest_dotted(row) == {"name": "N"}
    assert nest_dotted({"t.0": None, "t.1": "x"}) == {"t": ["x"]}
    assert nest_dotted({"plain": 1}) == {"plain": 1}


@pytest.mark.parametrize(
    ("record", "field", "says"),
    [
        ({"a": "x", "a.b": 1}, "a.b", "`a.b` and `a` are both set"),
        ({"a.b": 1, "a": {"b": 2}}, "a.b", "`a.b` and `a` are both set"),
        ({"a.b": 1, "a.b.c": 2}, "a.b.c", "`a.b.c` and `a.b` conflict"),
        ({"a.b.c": 1, "a.b": 2}, "a.b", "`a.b` and `a.b.c` conflict"),
        ({"a.0": 1, "a.b": 2}, "a.b", "both list indexes (a.0) and names (a.b)"),
        ({"a.0": 1, "a.2": 2}, "a.2", "list `a` has no `a.1`"),
        ({"a..b": 1}, "a..b", "empty part"),
        ({".a": 1}, ".a", "empty part"),
    ],
)
def test_names_that_make_no_object_are_an_error_naming_the_field(
    record: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(DottedFieldError) as error:
        nest_dotted(record)
    assert error.value.field == field
    assert says in str(error.value)


@pytest.fixture
def api(sandbox: Any) -> SageAPI:
    return SageAPI(sandbox)


def _input(bad: dict[str, Any]) -> bytes:
    """SCHEMA (line 1), a good record (2), the bad one (3), a good record (4)."""
    return (
        line(schema_msg("crm", FLAT_SCHEMA, ["code"]))
        + line(record_msg("crm", flat("DOT-1")))
        + line(record_msg("crm", bad))
        + line(record_msg("crm", flat("DOT-2")))
    )


@pytest.mark.parametrize("on_error", ["fail", "continue"])
def test_dotted_records_reach_sage_and_a_bad_name_names_line_stream_key_and_field(
    connection_config: dict[str, Any], tmp_path: Path, api: SageAPI, on_error: str
) -> None:
    config = target_config(
        connection_config, tmp_path, api, on_error=on_error, stream_resources={"crm": "contacts"}
    )
    bad = flat("DOT-9", main_address="1 Flat Row")  # `main_address` and `main_address.*`
    done = run_cli(config, _input(bad), tmp_path)
    assert "Traceback" not in done.stderr
    want = 'Input line 3, stream `crm`, source key ["DOT-9"], field `main_address.address_line_1`'
    first = api.contacts_named("Dotted DOT-1")
    assert len(first) == 1
    assert first[0]["main_address"]["address_line_1"] == "DOT-1 Street"
    assert first[0]["main_address"]["city"] == "Leeds"
    assert first[0]["main_contact_person"]["email"] == "dot-1@dotted.example"
    assert [t["id"] for t in first[0]["contact_types"]] == ["CUSTOMER"]
    assert api.contacts_named("Dotted DOT-9") == []
    if on_error == "fail":
        assert done.returncode == 1
        (stopped,) = [x for x in done.stderr.splitlines() if "target-sage stopped" in x]
        assert want in stopped
        assert "`main_address.address_line_1` and `main_address` are both set" in stopped
        return
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(api.contacts_named("Dotted DOT-2")) == 1
    dead = json.loads(Path(config["dead_letter_path"]).read_text().splitlines()[-1])
    assert dead["input_line"] == 3 and dead["record"]["code"] == "DOT-9"
    (failed,) = [x for x in results(config) if x["outcome"] == "failed"]
    assert want in failed["$message"]
    assert failed["$source"] == "main_address.address_line_1"


def test_double_underscores_nest_only_object_and_list_fields_of_the_resource() -> None:
    """``__`` (what a stream map in meltano.yml can name: Meltano nests dotted keys) nests where
    the name before it is an object or list field of the resource's write body."""
    heads = nested_fields("contacts")
    assert {"main_address", "main_contact_person", "contact_type_ids"} <= heads
    assert "name" not in heads
    row = {
        "name": "N",
        "main_address__address_line_1": "1 Row",
        "main_contact_person__contact_person_type_ids__0": "ACCOUNTS",
        "contact_type_ids__0": "CUSTOMER",
        "notes__kept": "a field Sage does not nest",
        "_sdc_main_address__x": 1,
    }
    assert nest_dotted(row, heads) == {
        "name": "N",
        "notes__kept": "a field Sage does not nest",
        "_sdc_main_address__x": 1,
        "main_address": {"address_line_1": "1 Row"},
        "main_contact_person": {"contact_person_type_ids": ["ACCOUNTS"]},
        "contact_type_ids": ["CUSTOMER"],
    }
    assert nest_dotted(row) == row  # without the resource's fields, `__` is a plain name
    with pytest.raises(DottedFieldError) as error:
        nest_dotted({"main_address__city": "A", "main_address.city": "B"}, heads)
    assert error.value.field == "main_address__city"
    assert "name the same field" in str(error.value)
