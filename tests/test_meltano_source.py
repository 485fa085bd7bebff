"""Another system into Sage: a flat PostgreSQL table, read by MeltanoLabs' tap-postgres (the real
executable, in .venv-loaders/tap-postgres), into target-sage with the README's recipe ("From
another system: a SQL table into contacts") and the SDK's record validation on, becomes contacts
with a main contact person and a main address in the sandbox: through `meltano run` (the
pinned Meltano of tests/test_meltano_project.py) and with the two executables piped.

About 50 s once tap-postgres and Meltano are installed (scripts/loader_venvs.py and the
`meltano` fixture; a minute more each the first time).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import yaml

from scripts import loader_venvs
from tap_sage.sandbox.runner import SandboxProcess
from tests.test_meltano_project import meltano  # noqa: F401  (the pinned Meltano, a fixture)
from tests.test_target_helpers import SageAPI

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 300
STREAM = "public-crm_customers"

ROWS = [
    # id, code, company, contact_name, email, street, town, postcode, country
    (
        1,
        "CRM-1001",
        "Harbour Tiles Ltd",
        "Ada Moss",
        "ada@harbour.example",
        "1 Quay St",
        "Hull",
        "HU1 1AA",
        "GB",
    ),
    (
        2,
        "CRM-1002",
        "Fenwick & Daughters",
        "Bo Fenwick",
        "bo@fenwick.example",
        "22 Mill Lane",
        "York",
        "YO1 7HH",
        "GB",
    ),
    (3, "CRM-1003", "No Address Co", "Cy Nobody", "cy@nobody.example", None, None, None, None),
]


def recipe() -> dict[str, Any]:
    """The meltano.yml snippet of the README's recipe."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- recipe: crm-contacts -->\n```yaml\n(.*?)\n```", text, re.DOTALL)
    assert match is not None, "README.md lost its recipe (<!-- recipe: crm-contacts -->)"
    loaded: dict[str, Any] = yaml.safe_load(match.group(1))
    return loaded


def _plugin(project: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(p for p in project["plugins"][kind] if p["name"] == name)
    return found


@pytest.fixture(scope="module")
def tap_postgres() -> Path:
    return loader_venvs.ensure("tap-postgres")


def _crm_table(url: str) -> None:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute(
            "CREATE TABLE crm_customers (id integer PRIMARY KEY, code text NOT NULL, "
            "company text NOT NULL, contact_name text, email text, street text, town text, "
            "postcode text, country text)"
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO crm_customers VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", ROWS
            )


def _configs(
    pg_database: str, connection_config: dict[str, Any], api: SageAPI, tmp_path: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The recipe's tap and target config, pointed at the test's PostgreSQL and sandbox."""
    project = recipe()
    tap = _plugin(project, "extractors", "tap-postgres")
    target = _plugin(project, "loaders", "target-sage")
    assert tap["pip_url"] == f"meltanolabs-tap-postgres=={_pinned()}"  # the version tested here
    assert tap["select"] == [f"{STREAM}.*"]
    where = urlsplit(pg_database)
    tap_config = {
        **tap["config"],
        "host": where.hostname,
        "port": where.port,
        "user": where.username,
        "password": where.password or "",  # the test server trusts 127.0.0.1
        "database": where.path.lstrip("/"),
    }
    target_config = {
        **connection_config,
        **target["config"],
        "business_id": api.business_id,
        "ledger_path": str(tmp_path / "ledger.sqlite"),
        "results_path": str(tmp_path / "results.jsonl"),
        "dead_letter_path": str(tmp_path / "dead-letter.singer"),
    }
    assert "validate_records" not in target_config  # the SDK's default: validation on
    return tap_config, target_config


def _check_contacts(api: SageAPI, results_path: Path) -> None:
    """Every row is a created contact, with its person and (where the row has one) address."""
    results = [json.loads(line) for line in results_path.read_text().splitlines()]
    assert [(r["stream"], r["outcome"]) for r in results] == [(STREAM, "created")] * len(ROWS)
    contacts = {c["reference"]: c for c in api.all("/contacts") if c.get("reference", "").startswith("CRM-")}  # fmt: skip
    assert sorted(contacts) == [row[1] for row in ROWS]
    for _id, code, company, person, email, street, town, postcode, country in ROWS:
        contact = contacts[code]
        assert contact["name"] == company
        assert [t["id"] for t in contact["contact_types"]] == ["CUSTOMER"]
        main_person = contact["main_contact_person"]
        assert (main_person["name"], main_person["email"]) == (person, email)
        address = contact.get("main_address") or {}
        if street is None:
            assert not address.get("address_line_1")
        else:
            assert address["address_line_1"] == street
            assert address["city"] == town
            assert address["postal_code"] == postcode
            assert address["country"]["id"] == country


def test_the_recipe_piped_from_tap_postgres_into_target_sage(
    tap_postgres: Path,
    pg_database: str,
    sandbox: SandboxProcess,
    connection_config: dict[str, Any],
    tmp_path: Path,
) -> None:
    """The two executables piped, with the recipe's settings (and its ``select``)."""
    _crm_table(pg_database)
    api = SageAPI(sandbox)
    tap_config, target_config = _configs(pg_database, connection_config, api, tmp_path)
    (tmp_path / "tap.json").write_text(json.dumps(tap_config))
    (tmp_path / "target.json").write_text(json.dumps(target_config))
    tap = _plugin(recipe(), "extractors", "tap-postgres")
    (tmp_path / "catalog.json").write_text(json.dumps(_selected(tap_postgres, tmp_path, tap)))
    target_exe = Path(sys.executable).parent / "target-sage"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    tap_cmd = [str(tap_postgres), "--config", str(tmp_path / "tap.json"),
               "--catalog", str(tmp_path / "catalog.json")]  # fmt: skip
    with (
        (tmp_path / "tap.log").open("w") as tap_err,
        subprocess.Popen(tap_cmd, stdout=subprocess.PIPE, stderr=tap_err, env=env) as tap_proc,
    ):
        written = subprocess.run(
            [str(target_exe), "--config", str(tmp_path / "target.json")],
            stdin=tap_proc.stdout,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
            cwd=tmp_path,
        )
        assert tap_proc.stdout is not None
        tap_proc.stdout.close()
        tap_proc.wait(timeout=TIMEOUT)
    tap_log = (tmp_path / "tap.log").read_text()
    assert tap_proc.returncode == 0, tap_log[-3000:]
    assert written.returncode == 0, written.stderr[-3000:]
    _check_contacts(api, tmp_path / "results.jsonl")


def test_the_recipe_through_meltano_run(
    meltano: Path,  # noqa: F811  (the fixture imported above)
    tap_postgres: Path,
    pg_database: str,
    sandbox: SandboxProcess,
    connection_config: dict[str, Any],
    tmp_path: Path,
) -> None:
    """The recipe's meltano.yml as Meltano reads it (its dotted keys would nest: the recipe uses
    ``__``), `meltano run tap-postgres target-sage`: the plugins run from the executables this
    checkout installed (no `pip_url`), target-sage's definition from hub/."""
    _crm_table(pg_database)
    api = SageAPI(sandbox)
    tap_config, target_config = _configs(pg_database, connection_config, api, tmp_path)
    subprocess.run(
        [str(meltano), "init", "crm", "--no-usage-stats"],
        cwd=tmp_path, env=_meltano_env(), capture_output=True, text=True, timeout=TIMEOUT,
        check=True,
    )  # fmt: skip
    project_dir = tmp_path / "crm"
    project = yaml.safe_load((project_dir / "meltano.yml").read_text())
    snippet = recipe()
    tap = _plugin(snippet, "extractors", "tap-postgres")
    tap.pop("pip_url")
    tap["executable"] = str(tap_postgres)
    tap["config"] = tap_config
    hub = yaml.safe_load((ROOT / "hub" / "target-sage.yml").read_text())
    target = {
        **{k: hub[k] for k in ("namespace", "capabilities", "settings") if k in hub},
        "name": "target-sage",
        "executable": str(Path(sys.executable).parent / "target-sage"),
        "config": target_config,
    }
    project["plugins"] = {"extractors": [tap], "loaders": [target]}
    (project_dir / "meltano.yml").write_text(yaml.safe_dump(project, sort_keys=False))
    run = subprocess.run(
        [str(meltano), "run", "tap-postgres", "target-sage"],
        cwd=project_dir, env=_meltano_env(), capture_output=True, text=True, timeout=TIMEOUT,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    _check_contacts(api, tmp_path / "results.jsonl")


def _meltano_env() -> dict[str, str]:
    prefixes = ("MELTANO_", "TAP_", "TARGET_", "SAGE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(MELTANO_SEND_ANONYMOUS_USAGE_STATS="false", NO_COLOR="1")
    return env


def _selected(tap_postgres: Path, tmp_path: Path, tap: dict[str, Any]) -> dict[str, Any]:
    """The tap's discovered catalog with the recipe's ``select`` applied, as Meltano does
    (``STREAM.*``: the stream and all its properties)."""
    found = subprocess.run(
        [str(tap_postgres), "--config", str(tmp_path / "tap.json"), "--discover"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    catalog: dict[str, Any] = json.loads(found.stdout)
    wanted = {pattern.removesuffix(".*") for pattern in tap["select"]}
    for entry in catalog["streams"]:
        for meta in entry["metadata"]:
            meta["metadata"]["selected"] = entry["tap_stream_id"] in wanted
    assert any(e["tap_stream_id"] in wanted for e in catalog["streams"]), catalog
    return catalog


def _pinned() -> str:
    (requirement,) = loader_venvs.LOADERS["tap-postgres"][0]
    return requirement.split("==", 1)[1]
