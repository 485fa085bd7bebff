"""The catalogue and the committed schemas agree with each other (and with the spec when present)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from tap_sage.sage import catalogue

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT.parent / "shared" / "sage-api" / "swagger-v3.1.json"


def test_every_resource_has_its_read_schema() -> None:
    missing = [
        n
        for n in catalogue.resources()
        if not (catalogue.SCHEMAS_DIR / "read" / f"{n}.json").exists()
    ]
    assert missing == []


def test_every_write_has_its_write_schema() -> None:
    problems = []
    for name, res in catalogue.resources().items():
        if res.create and catalogue.write_schema(name, "post") is None:
            problems.append(f"post {name}")
        if res.update and catalogue.write_schema(name, "put") is None:
            problems.append(f"put {name}")
        if (res.create or res.update) and not res.wrapper:
            problems.append(f"wrapper {name}")
    assert problems == []


def test_no_schema_without_a_resource() -> None:
    names = set(catalogue.resources())
    read = {p.stem for p in (catalogue.SCHEMAS_DIR / "read").glob("*.json")}
    write = {p.stem.split("_", 1)[1] for p in (catalogue.SCHEMAS_DIR / "write").glob("*.json")}
    assert read - names == {"_businesses", "_user"}
    assert write - names == set()


def test_known_facts_from_the_notes() -> None:
    res = catalogue.resources()
    assert res["contacts"].wrapper == "contact"
    assert res["contacts"].incremental and res["contacts"].deletions
    assert not res["contacts"].parallel_posts
    assert res["sales_invoices"].void and not res["sales_invoices"].delete
    assert res["sales_invoices"].sortable and res["sales_invoices"].action("release")
    assert res["journals"].action("reissue") is not None
    assert res["business_settings"].singleton and res["business_settings"].key == ""
    assert res["cis_settings"].available_in("GB") and not res["cis_settings"].available_in("US")
    assert sum(r.idempotency for r in res.values()) == 35
    post = catalogue.write_schema("contacts", "post")
    assert post is not None
    assert post["properties"]["contact"]["required"] == ["contact_type_ids", "name"]
    schema = catalogue.list_schema("contacts")
    assert schema["properties"]["updated_at"] == {"type": ["string", "null"], "format": "date-time"}


@pytest.mark.skipif(not SPEC.exists(), reason="Sage's spec is not beside the checkout")
def test_committed_files_match_the_spec() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "generate_catalogue.py"),
            "--spec",
            str(SPEC),
            "--check",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_resources_file_is_sorted_and_unique() -> None:
    data = json.loads(catalogue.RESOURCES_FILE.read_text())
    names = [r["name"] for r in data["resources"]]
    assert names == sorted(set(names))


def test_a_resource_is_decoded_when_first_asked_for_and_kept() -> None:
    """``catalogue.Catalogue``: a sync of one stream decodes one resource of the file."""
    fresh = catalogue.Catalogue(catalogue.RESOURCES_FILE.read_bytes())
    assert len(fresh) == len(catalogue.resources()) > 80
    assert "sales_invoices" in fresh and "no_such_resource" not in fresh
    assert fresh._decoded == {}  # the names and `in` decode nothing
    invoices = fresh["sales_invoices"]
    assert list(fresh._decoded) == ["sales_invoices"]
    assert fresh["sales_invoices"] is invoices
    assert invoices == catalogue.resources()["sales_invoices"]
    with pytest.raises(KeyError):
        fresh["no_such_resource"]
    assert [r.name for r in fresh.values()] == list(fresh)  # every entry decodes, in order


def test_an_unknown_field_in_an_entry_is_refused_when_it_is_decoded() -> None:
    text = catalogue.RESOURCES_FILE.read_bytes().replace(
        b'"name": "bank_accounts",', b'"name": "bank_accounts", "surprise": 1,', 1
    )
    assert text != catalogue.RESOURCES_FILE.read_bytes()
    fresh = catalogue.Catalogue(text)
    assert fresh["contacts"].name == "contacts"
    with pytest.raises(msgspec.ValidationError, match="surprise"):
        fresh["bank_accounts"]
