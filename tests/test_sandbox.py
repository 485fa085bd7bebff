"""The sandbox over real HTTP: OAuth, businesses, lists (a sandbox subprocess per test)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tap_sage.sage import catalogue, wire
from tap_sage.sandbox.runner import SandboxProcess, grant, seed_db

TIMEOUT = 10
RECORDED = Path(__file__).resolve().parent.parent.parent / "shared" / "sage-api" / "recorded"


class Api:
    """A tiny client: bearer token, optional X-Business."""

    def __init__(self, sandbox: SandboxProcess, token: str | None = None) -> None:
        self.sandbox = sandbox
        self.token = token or sandbox.grant()["access_token"]
        self.business: str | None = None

    def headers(self, **extra: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if self.business:
            headers["X-Business"] = self.business
        headers.update(extra)
        return headers

    def get(self, path: str, **params: Any) -> requests.Response:
        return requests.get(
            self.sandbox.api_url + path,
            params=params or None,
            headers=self.headers(),
            timeout=TIMEOUT,
        )

    def post(self, path: str, body: Any = None) -> requests.Response:
        return requests.post(
            self.sandbox.api_url + path, json=body, headers=self.headers(), timeout=TIMEOUT
        )

    def put(self, path: str, body: Any) -> requests.Response:
        return requests.put(
            self.sandbox.api_url + path, json=body, headers=self.headers(), timeout=TIMEOUT
        )

    def delete(self, path: str, **params: Any) -> requests.Response:
        return requests.delete(
            self.sandbox.api_url + path,
            params=params or None,
            headers=self.headers(),
            timeout=TIMEOUT,
        )

    def all_items(self, path: str, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        response = self.get(path, **params)
        while True:
            assert response.status_code == 200, response.text
            body = response.json()
            items += body["$items"]
            if not body["$next"]:
                return items
            response = requests.get(
                self.sandbox.api_url + body["$next"], headers=self.headers(), timeout=TIMEOUT
            )


def sage_error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body, list)
    assert body[0]["$severity"] == "error"
    assert body[0]["$dataCode"] == code
    assert set(body[0]) == {"$severity", "$dataCode", "$message", "$source"}
    return dict(body[0])


@pytest.fixture
def api(sandbox: SandboxProcess) -> Api:
    return Api(sandbox)


@pytest.fixture(scope="module")
def ro_sandbox(
    seeded_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SandboxProcess]:
    """One sandbox shared by the tests that only read (they may issue grants)."""
    db = tmp_path_factory.mktemp("sandbox-ro") / "ro.db"
    db.write_bytes(seeded_db.read_bytes())
    with SandboxProcess(db) as process:
        yield process


@pytest.fixture
def ro_api(ro_sandbox: SandboxProcess) -> Api:
    return Api(ro_sandbox)


def businesses(api: Api) -> list[dict[str, Any]]:
    """Every reachable business with all its attributes: ``/businesses`` lists only the three
    base fields (as Sage does), ``/businesses/{id}`` has the rest."""
    response = api.get("/businesses")
    assert response.status_code == 200
    return [api.get(item["$path"]).json() for item in response.json()["$items"]]


def token(sandbox: SandboxProcess, **form: str) -> requests.Response:
    return requests.post(sandbox.token_url, data=form, timeout=TIMEOUT)


def authorize(sandbox: SandboxProcess, **params: str) -> requests.Response:
    query = {
        "response_type": "code",
        "client_id": "sandbox-client",
        "redirect_uri": "http://localhost:9999/callback",
        "state": "xyz",
        **params,
    }
    return requests.get(sandbox.authorize_url, params=query, allow_redirects=False, timeout=TIMEOUT)


# -- CLI ---------------------------------------------------------------------------------


def test_grant_command_prints_one_json_object(sandbox_db: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tap_sage.sandbox.cli", "grant", "--db", str(sandbox_db)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    body = json.loads(lines[0])
    assert set(body) == {
        "access_token",
        "refresh_token",
        "expires_in",
        "client_id",
        "client_secret",
        "token_type",
        "scope",
    }
    assert body["client_id"] == "sandbox-client"
    assert body["scope"] == "full_access"
    other = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tap_sage.sandbox.cli",
                "grant",
                "--db",
                str(sandbox_db),
                "--client-id",
                "another-app",
                "--scope",
                "readonly",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert other["client_id"] == "another-app"
    assert other["client_secret"] and other["client_secret"] != body["client_secret"]
    assert other["scope"] == "readonly"
    first_business = businesses_in(sandbox_db)[0]
    limited = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tap_sage.sandbox.cli",
                "grant",
                "--db",
                str(sandbox_db),
                "--business-ids",
                first_business,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert limited["client_secret"] == body["client_secret"]
    with SandboxProcess(sandbox_db) as sandbox:
        reached = Api(sandbox, limited["access_token"]).get("/businesses").json()["$items"]
    assert [b["id"] for b in reached] == [first_business]
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "tap_sage.sandbox.cli",
            "grant",
            "--db",
            str(sandbox_db),
            "--business-ids",
            "nope",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0 and bad.stdout == ""


def businesses_in(db: Path) -> list[str]:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT id FROM businesses ORDER BY position")]
    finally:
        conn.close()


def test_help_documents_every_flag() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tap_sage.sandbox.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for flag in (
        "--host",
        "--port",
        "--db",
        "--latency-ms",
        "--fault-rate",
        "--token-ttl",
        "--oauth-fault-rate",
        "--fault-seed",
        "--fault-kinds",
        "--max-concurrent",
    ):
        assert flag in result.stdout


def test_seed_is_deterministic_and_resets(tmp_path: Path) -> None:
    import sqlite3

    first, second = tmp_path / "a.db", tmp_path / "b.db"
    seed_db(first, businesses=1, scale=1, seed=7)
    seed_db(second, businesses=1, scale=1, seed=7)
    result = subprocess.run(  # reseeding resets, no duplicates
        [
            sys.executable,
            "-m",
            "tap_sage.sandbox.cli",
            "seed",
            "--db",
            str(second),
            "--businesses",
            "1",
            "--scale",
            "1",
            "--seed",
            "7",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.startswith(f"seeded {second}")

    def dump(db: Path) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(db)
        try:
            return conn.execute(
                "SELECT resource, id, updated_at, data FROM records ORDER BY seq"
            ).fetchall()
        finally:
            conn.close()

    assert dump(first) == dump(second)
    assert grant(first)["client_secret"] == grant(second)["client_secret"]


def test_seed_covers_every_list_resource_with_clumped_timestamps(seeded_db: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(seeded_db)
    try:
        present = {r[0] for r in conn.execute("SELECT DISTINCT resource FROM records")}
        run = conn.execute(
            "SELECT resource, updated_at, count(*) AS n FROM records GROUP BY business, "
            "resource, updated_at ORDER BY n DESC LIMIT 1"
        ).fetchone()
        invoices = conn.execute(
            "SELECT count(*) FROM records WHERE resource = 'sales_invoices'"
        ).fetchone()[0]
    finally:
        conn.close()
    reachable = {
        name
        for name, res in catalogue.resources().items()
        if res.list and (res.available_in("GB", "Plus") or res.available_in("US", "Start"))
    }
    assert reachable - present == set()
    assert catalogue.resource(run[0]).sortable
    assert run[2] > 200
    assert run[1].endswith("Z") and len(run[1]) == 20
    assert invoices >= 1000


# -- OAuth -------------------------------------------------------------------------------


def test_authorize_code_exchange_and_single_use(sandbox: SandboxProcess) -> None:
    secret = sandbox.grant()["client_secret"]
    response = authorize(sandbox)
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    query = parse_qs(location.query)
    assert location.path == "/callback"
    assert query["state"] == ["xyz"]
    assert query["country"] == ["GB"]
    code = query["code"][0]
    assert code.startswith("GB/")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": "sandbox-client",
        "client_secret": secret,
        "redirect_uri": "http://localhost:9999/callback",
    }
    first = token(sandbox, **form)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 300
    assert body["refresh_token_expires_in"] == 2678400
    assert body["scope"] == "full_access"
    assert body["requested_by_id"]
    assert Api(sandbox, body["access_token"]).get("/user").status_code == 200
    again = token(sandbox, **form)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_refresh_rotates_and_used_token_is_dead(sandbox: SandboxProcess) -> None:
    granted = sandbox.grant()
    form = {
        "grant_type": "refresh_token",
        "client_id": granted["client_id"],
        "client_secret": granted["client_secret"],
    }
    first = token(sandbox, refresh_token=granted["refresh_token"], **form)
    assert first.status_code == 200
    new = first.json()
    assert new["refresh_token"] != granted["refresh_token"]
    assert new["access_token"] != granted["access_token"]
    replay = token(sandbox, refresh_token=granted["refresh_token"], **form)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    basic = requests.post(
        sandbox.token_url,
        data={"grant_type": "refresh_token", "refresh_token": new["refresh_token"]},
        auth=(granted["client_id"], granted["client_secret"]),
        timeout=TIMEOUT,
    )
    assert basic.status_code == 200
    assert Api(sandbox, basic.json()["access_token"]).get("/contacts").status_code == 200


def test_wrong_client_answers_invalid_client(sandbox: SandboxProcess) -> None:
    granted = sandbox.grant()
    wrong_secret = token(
        sandbox,
        grant_type="refresh_token",
        refresh_token=granted["refresh_token"],
        client_id="sandbox-client",
        client_secret="nope",
    )
    assert wrong_secret.status_code == 400
    assert wrong_secret.json()["error"] == "invalid_client"
    unknown = requests.post(
        sandbox.token_url,
        data={"grant_type": "refresh_token", "refresh_token": granted["refresh_token"]},
        auth=("who", "ever"),
        timeout=TIMEOUT,
    )
    assert unknown.status_code == 401
    assert unknown.json()["error"] == "invalid_client"
    # the refresh token was not burnt by the failed attempts
    ok = token(
        sandbox,
        grant_type="refresh_token",
        refresh_token=granted["refresh_token"],
        client_id="sandbox-client",
        client_secret=granted["client_secret"],
    )
    assert ok.status_code == 200


def test_access_token_expires_after_ttl(sandbox_factory: Any) -> None:
    sandbox = sandbox_factory(token_ttl=1)
    granted = sandbox.grant()
    api = Api(sandbox, granted["access_token"])
    assert api.get("/contacts").status_code == 200
    time.sleep(1.2)
    error = sage_error(api.get("/contacts"), 401, "AuthorizationFailure")
    assert error["$source"] == ""
    refreshed = token(
        sandbox,
        grant_type="refresh_token",
        refresh_token=granted["refresh_token"],
        client_id=granted["client_id"],
        client_secret=granted["client_secret"],
    )
    assert refreshed.json()["expires_in"] == 1
    assert Api(sandbox, refreshed.json()["access_token"]).get("/contacts").status_code == 200


def test_grant_uses_the_server_ttl(sandbox_factory: Any, sandbox_db: Path) -> None:
    granted = grant(sandbox_db)
    sandbox = sandbox_factory(db=sandbox_db, token_ttl=1)
    api = Api(sandbox, granted["access_token"])
    assert api.get("/user").status_code == 200
    time.sleep(1.2)
    assert api.get("/user").status_code == 401
    assert sandbox.grant()["expires_in"] == 1


def test_authorization_code_expires_after_60_seconds(sandbox: SandboxProcess) -> None:
    import sqlite3

    secret = sandbox.grant()["client_secret"]
    code = parse_qs(urlsplit(authorize(sandbox).headers["Location"]).query)["code"][0]
    conn = sqlite3.connect(sandbox.db)
    try:
        rows = conn.execute(
            "SELECT expires_at - issued_at FROM tokens WHERE kind = 'code'"
        ).fetchall()
        assert [round(r[0]) for r in rows] == [60]
        conn.execute("UPDATE tokens SET expires_at = expires_at - 61 WHERE kind = 'code'")
        conn.commit()
    finally:
        conn.close()
    expired = token(
        sandbox,
        grant_type="authorization_code",
        code=code,
        client_id="sandbox-client",
        client_secret=secret,
    )
    assert expired.status_code == 400
    assert expired.json()["error"] == "invalid_grant"


def test_revoke_ends_the_grant_and_leaves_access_tokens_alive(sandbox: SandboxProcess) -> None:
    """Sage's revoke answers ``{"success": "ok"}`` (recorded/revoke_response.json); the refresh
    token dies at once, an access token already handed out lives until it expires."""
    granted = sandbox.grant()
    api = Api(sandbox, granted["access_token"])
    assert api.get("/user").status_code == 200
    response = requests.post(
        sandbox.revoke_url,
        data={
            "client_id": granted["client_id"],
            "client_secret": granted["client_secret"],
            "token": granted["access_token"],
        },
        timeout=TIMEOUT,
    )
    assert response.status_code == 200
    assert response.json() == {"success": "ok"}
    assert api.get("/user").status_code == 200
    dead = token(
        sandbox,
        grant_type="refresh_token",
        refresh_token=granted["refresh_token"],
        client_id=granted["client_id"],
        client_secret=granted["client_secret"],
    )
    assert dead.status_code == 400
    assert dead.json()["error"] == "invalid_grant"


def test_readonly_scope_cannot_write(sandbox: SandboxProcess) -> None:
    api = Api(sandbox, sandbox.grant(scope="readonly")["access_token"])
    assert api.get("/contacts").status_code == 200
    body = {"contact": {"name": "Read Only", "contact_type_ids": ["CUSTOMER"]}}
    sage_error(api.post("/contacts", body), 403, "AccessDenied")


def test_missing_token_and_request_id(ro_sandbox: SandboxProcess) -> None:
    sandbox = ro_sandbox
    response = requests.get(sandbox.api_url + "/contacts", timeout=TIMEOUT)
    sage_error(response, 401, "AuthorizationFailure")
    assert uuid.UUID(response.headers["x_request_id"])


def test_secrets_never_in_the_log(sandbox: SandboxProcess) -> None:
    granted = sandbox.grant()
    code = parse_qs(urlsplit(authorize(sandbox).headers["Location"]).query)["code"][0]
    token(
        sandbox,
        grant_type="authorization_code",
        code=code,
        client_id="sandbox-client",
        client_secret=granted["client_secret"],
    )
    token(
        sandbox,
        grant_type="refresh_token",
        refresh_token=granted["refresh_token"],
        client_id="sandbox-client",
        client_secret=granted["client_secret"],
    )
    Api(sandbox, granted["access_token"]).get("/contacts")
    log = sandbox.log_path.read_text()
    assert "/oauth/token" in log
    for secret in (
        granted["client_secret"],
        granted["refresh_token"],
        granted["access_token"],
        code.split("/")[1],
    ):
        assert secret not in log


# -- businesses --------------------------------------------------------------------------


def test_businesses_user_and_lead(ro_api: Api) -> None:
    api = ro_api
    response = api.get("/businesses")
    body = response.json()
    # recorded/businesses_list.json: one page with every business, whatever is asked
    assert list(body) == ["$total", "$page", "$next", "$back", "$items_per_page", "$items"]
    assert body["$total"] == 2 and body["$page"] == 1
    assert body["$next"] is None and body["$back"] is None
    assert body["$items_per_page"] == 2147483647
    assert [set(i) for i in body["$items"]] == [{"id", "displayed_as", "$path"}] * 2
    assert api.get("/businesses", attributes="all", items_per_page=1, page=2).json() == body
    assert "X-Business" not in response.headers
    full = businesses(api)
    assert [b["country"]["id"] for b in full] == ["GB", "US"]
    # editions by subscription id (NOTES.md, "Editions"): ACCOUNTING is Plus, START is Start
    assert [
        (s["id"], s["displayed_as"], s["status"]) for b in full for s in b["subscriptions"]
    ] == [
        ("ACCOUNTING", "Accounting", "paying"),
        ("START", "Accounting Start", "paying"),
    ]
    lead = api.get("/businesses/lead").json()
    assert lead["id"] == full[0]["id"]
    assert api.get(f"/businesses/{full[1]['id']}").json()["name"] == full[1]["name"]
    user = api.get("/user")
    assert user.json()["email"] and "X-Business" not in user.headers


def test_x_business_selects_and_restricts(ro_sandbox: SandboxProcess) -> None:
    sandbox = ro_sandbox
    api = Api(sandbox)
    gb, us = (b["id"] for b in businesses(api))
    api.business = us
    us_contacts = api.get("/contacts").json()["$total"]
    api.business = None
    default_contacts = api.get("/contacts").json()["$total"]
    api.business = gb
    answer = api.get("/contacts")
    assert answer.json()["$total"] == default_contacts != us_contacts
    assert answer.headers["X-Business"] == gb  # Sage names the business it answered for
    api.business = None
    assert api.get("/business_settings").headers["X-Business"] == gb  # the lead business
    limited = Api(sandbox, sandbox.grant(business_ids=[us])["access_token"])
    assert [b["id"] for b in limited.get("/businesses").json()["$items"]] == [us]
    limited.business = gb
    error = sage_error(limited.get("/contacts"), 403, "MultiUserAccessDenied")
    recorded = json.loads((RECORDED / "error_403_multi_user_access_denied.json").read_text())
    assert error == recorded[0]
    limited.business = None
    assert limited.get("/contacts").json()["$total"] == us_contacts  # lead reachable = US


def test_unavailable_resource_answers_403(ro_api: Api) -> None:
    api = ro_api
    api.business = businesses(api)[1]["id"]  # US, Accounting Start
    sage_error(api.get("/stock_items"), 403, "FeatureUnavailable")
    sage_error(api.get("/cis_settings"), 403, "FeatureUnavailable")
    api.business = None
    assert api.get("/stock_items").status_code == 200
    assert api.get("/cis_settings").status_code == 200


# -- lists -------------------------------------------------------------------------------


def test_envelope_relative_links_and_last_page(ro_api: Api) -> None:
    api = ro_api
    body = api.get("/contacts", items_per_page=25, page=2, search="a").json()
    assert set(body) == {"$total", "$page", "$next", "$back", "$itemsPerPage", "$items"}
    assert body["$page"] == 2 and body["$itemsPerPage"] == 25
    assert body["$next"].startswith("/contacts?page=3&items_per_page=25")
    assert "search=a" in body["$next"]
    assert body["$back"].startswith("/contacts?page=1&items_per_page=25")
    assert not body["$next"].startswith("/v3.1")
    total = body["$total"]
    last = -(-total // 25)
    past = api.get("/contacts", items_per_page=25, page=last + 5).json()
    at_last = api.get("/contacts", items_per_page=25, page=last).json()
    assert past["$items"] == at_last["$items"] and past["$items"]
    assert past["$next"] is None
    first = api.get("/contacts").json()
    assert first["$itemsPerPage"] == 20 and first["$back"] is None
    assert api.get("/contacts", items_per_page=500).json()["$itemsPerPage"] == 200


def test_walking_next_yields_every_record_once(ro_api: Api) -> None:
    api = ro_api
    items = api.all_items("/contacts", items_per_page=37)
    ids = [i["id"] for i in items]
    assert len(ids) == len(set(ids)) == api.get("/contacts").json()["$total"]


def test_attributes(ro_api: Api) -> None:
    api = ro_api
    base = api.get("/contacts", items_per_page=3).json()["$items"]
    assert all(set(i) == {"id", "displayed_as", "$path"} for i in base)
    assert base[0]["$path"] == f"/contacts/{base[0]['id']}"
    some = api.get("/contacts", items_per_page=3, attributes="name,email").json()["$items"]
    assert all(set(i) == {"id", "displayed_as", "$path", "name", "email"} for i in some)
    full = api.get("/contacts", items_per_page=3, attributes="all").json()["$items"]
    assert {"created_at", "updated_at", "main_address", "contact_types"} <= set(full[0])
    single = api.get(base[0]["$path"]).json()
    assert single == full[0]


def test_updated_or_created_since_is_inclusive(ro_api: Api) -> None:
    api = ro_api
    items = api.all_items("/sales_invoices", items_per_page=200, attributes="updated_at")
    stamps = sorted(i["updated_at"] for i in items)
    pivot = stamps[len(stamps) // 2]
    expected = sum(1 for s in stamps if s >= pivot)
    body = api.get("/sales_invoices", updated_or_created_since=pivot).json()
    assert body["$total"] == expected
    assert sum(1 for s in stamps if s > pivot) < expected


def test_sort_by_updated_at(ro_api: Api) -> None:
    api = ro_api
    asc = api.all_items(
        "/sales_invoices", items_per_page=200, attributes="updated_at", sort="updated_at"
    )
    stamps = [i["updated_at"] for i in asc]
    assert stamps == sorted(stamps)
    desc = api.get(
        "/sales_invoices", items_per_page=200, attributes="updated_at", sort="updated_at:desc"
    ).json()["$items"]
    assert desc[0]["updated_at"] == stamps[-1]
    error = sage_error(api.get("/contacts", sort="updated_at"), 400, "InvalidParameter")
    assert error["$source"] == "sort"
    error = sage_error(api.get("/sales_invoices", sort="total_amount"), 400, "InvalidParameter")
    assert error["$source"] == "sort"


def test_sort_by_date_and_due_date(ro_api: Api) -> None:
    """``sort`` takes the document ``date`` (and ``due_date``) too (NOTES.md, "sort")."""
    api = ro_api
    for field_name in ("date", "due_date"):
        asc = api.all_items(
            "/sales_invoices", items_per_page=200, attributes=field_name, sort=field_name
        )
        values = [i[field_name] for i in asc]
        assert len(values) > 200 and values == sorted(values)
        desc = api.get(
            "/sales_invoices", items_per_page=5, attributes=field_name, sort=f"{field_name}:desc"
        ).json()["$items"]
        assert [i[field_name] for i in desc] == sorted(values, reverse=True)[:5]


def test_a_required_list_parameter_is_refused_when_missing(ro_api: Api) -> None:
    """The spec marks ``usage`` required on ``/tax_determinations``: without it, no list."""
    api = ro_api
    error = sage_error(api.get("/tax_determinations"), 400, "InvalidParameter")
    assert error["$source"] == "usage"
    assert api.get("/tax_determinations", usage="sales").status_code == 200


def test_date_and_id_filters(ro_api: Api) -> None:
    api = ro_api
    body = api.get(
        "/sales_invoices",
        from_date="2025-06-01",
        to_date="2025-06-30",
        attributes="date",
        items_per_page=200,
    ).json()
    assert body["$total"] > 0
    assert all("2025-06-01" <= i["date"] <= "2025-06-30" for i in body["$items"])
    contact = api.get("/sales_invoices", attributes="contact").json()["$items"][0]["contact"]
    mine = api.all_items("/sales_invoices", contact_id=contact["id"], attributes="contact")
    assert mine and all(i["contact"]["id"] == contact["id"] for i in mine)
    paid = api.get("/sales_invoices", status_id="PAID", attributes="status").json()
    assert paid["$total"] > 0 and all(i["status"]["id"] == "PAID" for i in paid["$items"])
    vendors = api.get("/contacts", contact_type_id="VENDOR", attributes="contact_types").json()
    assert 0 < vendors["$total"] < api.get("/contacts").json()["$total"]
    assert all(i["contact_types"][0]["id"] == "VENDOR" for i in vendors["$items"])
    name = api.get("/contacts", attributes="name").json()["$items"][0]["name"]
    found = api.get("/contacts", search=name.lower(), attributes="name").json()["$items"]
    assert found and all(name.lower() in i["name"].lower() for i in found)
    ignored = api.get("/contacts", no_such_param="x").json()["$total"]
    assert ignored == api.get("/contacts").json()["$total"]


def test_deleted_since_lists_tombstones_exclusively(ro_api: Api) -> None:
    api = ro_api
    body = api.get("/contacts", deleted_since="2000-01-01T00:00:00Z", items_per_page=200).json()
    seeded = body["$items"]
    assert seeded and all(set(t) == {"id", "displayed_as", "$path", "deleted_at"} for t in seeded)
    newest = max(t["deleted_at"] for t in seeded)
    after = api.get("/contacts", deleted_since=newest).json()
    assert all(t["deleted_at"] > newest for t in after["$items"])
    assert newest not in [t["deleted_at"] for t in after["$items"]]
    live = {i["id"] for i in api.all_items("/contacts", items_per_page=200)}
    assert not live & {t["id"] for t in seeded}


def test_delete_during_page_scan_shifts_pages(api: Api) -> None:
    page1 = api.get("/contacts", items_per_page=10, page=1).json()["$items"]
    page2 = api.get("/contacts", items_per_page=10, page=2).json()["$items"]
    assert api.delete(page1[0]["$path"]).status_code == 204
    shifted = api.get("/contacts", items_per_page=10, page=2).json()["$items"]
    assert shifted[0]["id"] == page2[1]["id"]  # page2[0] moved to page 1: a naive scan skips it


def test_singleton_get_and_put(api: Api) -> None:
    settings = api.get("/invoice_settings").json()
    assert "$items" not in settings and "$path" in settings
    updated = api.put("/invoice_settings", {"invoice_settings": {"next_invoice_number": 4242}})
    assert updated.status_code == 200, updated.text
    assert api.get("/invoice_settings").json()["next_invoice_number"] == 4242


def test_pkce_is_checked(sandbox: SandboxProcess) -> None:
    import base64
    import hashlib

    secret = sandbox.grant()["client_secret"]
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    response = authorize(
        sandbox, code_challenge=challenge.decode().rstrip("="), code_challenge_method="S256"
    )
    code = parse_qs(urlsplit(response.headers["Location"]).query)["code"][0]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": "sandbox-client",
        "client_secret": secret,
    }
    wrong = token(sandbox, code_verifier="w" * 50, **form)
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert token(sandbox, code_verifier=verifier, **form).status_code == 200


def test_authorize_rejects_unknown_client(sandbox: SandboxProcess) -> None:
    response = authorize(sandbox, client_id="nobody")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client"


def test_business_by_key_errors(ro_sandbox: SandboxProcess) -> None:
    sandbox = ro_sandbox
    api = Api(sandbox)
    gb, us = (b["id"] for b in businesses(api))
    sage_error(api.get("/businesses/" + "0" * 32), 404, "RecordNotFound")
    limited = Api(sandbox, sandbox.grant(business_ids=[gb])["access_token"])
    sage_error(limited.get(f"/businesses/{us}"), 403, "MultiUserAccessDenied")
    assert limited.get(f"/businesses/{gb}").status_code == 200
    limited.business = "f" * 32
    sage_error(limited.get("/contacts"), 403, "MultiUserAccessDenied")


def test_every_list_serves_items_that_match_the_read_schema(ro_api: Api) -> None:
    """Every list's items, on Sage's wire (decimals as Rails strings) and, once through the
    tap's record handling (``wire.Shape.to_record``), valid against the read schema."""
    api = ro_api
    import jsonschema

    checker = jsonschema.FormatChecker(formats=["date"])

    @checker.checks("date-time")
    def _stamp(value: object) -> bool:
        return not isinstance(value, str) or bool(
            re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", value)
        )

    problems: list[str] = []
    empty: list[str] = []
    for name, res in catalogue.resources().items():
        if not res.list or not res.available_in("GB", "Plus"):
            continue
        required = {p.name: "sales" for p in res.params if p.required}
        response = api.get(res.path, attributes="all", items_per_page=50, **required)
        assert response.status_code == 200, (name, response.text)
        body = response.json()
        items = [body] if res.singleton else body["$items"]
        if not items:
            empty.append(name)
        validator = jsonschema.Draft7Validator(catalogue.list_schema(name), format_checker=checker)
        shape = wire.Shape.of(catalogue.list_schema(name))
        for item in items:
            # on the wire every decimal is a Rails BigDecimal string (NOTES.md, "The wire")
            problems += [f"{name}: {p}" for p in not_rails_decimals(shape, item)]
            record = shape.to_record(item)  # what the tap makes of it
            problems += [
                f"{name}: {list(e.absolute_path)} {e.message}"
                for e in validator.iter_errors(record)
            ]
    assert problems == []
    assert empty == []


RAILS_DECIMAL = re.compile(r"^-?\d+\.\d+$")


def not_rails_decimals(shape: wire.Shape, item: dict[str, Any]) -> list[str]:
    """The decimal fields of ``item`` that are not a string in Rails' BigDecimal form."""
    out: list[str] = []
    for path in shape.decimal_paths:
        for where, value in values_at(item, path.split(".")):
            ok = isinstance(value, str) and bool(RAILS_DECIMAL.match(value))
            if value is not None and (not ok or (value.endswith("0") and value[-2] != ".")):
                out.append(f"{where} = {value!r}")
    return out


def values_at(obj: Any, parts: list[str], where: str = "") -> list[tuple[str, Any]]:
    """``(path, value)`` of every value at a dotted path (``a[].b``) inside ``obj``."""
    if not parts:
        return [(where, obj)]
    head, rest = parts[0], parts[1:]
    many = head.endswith("[]")
    key = head.removesuffix("[]")
    if not isinstance(obj, dict) or key not in obj:
        return []
    value = obj[key]
    if not many:
        return values_at(value, rest, f"{where}{key}.")
    if not isinstance(value, list):
        return []
    out: list[tuple[str, Any]] = []
    for i, element in enumerate(value):
        out += values_at(element, rest, f"{where}{key}.{i}.")
    return out


def test_put_business_and_user(api: Api) -> None:
    gb = businesses(api)[0]
    response = api.put(gb["$path"], {"business": {"name": "Renamed Ltd", "city": "York"}})
    assert response.status_code == 200, response.text
    assert api.get(gb["$path"]).json()["name"] == "Renamed Ltd"
    assert api.get(gb["$path"]).json()["displayed_as"] == "Renamed Ltd"
    user = api.put("/user", {"user": {"first_name": "Ada"}})
    assert user.status_code == 200 and api.get("/user").json()["first_name"] == "Ada"
    sage_error(api.put("/user", {"first_name": "no wrapper"}), 422, "RecordInvalid")


def test_stop_leaves_one_self_contained_file(sandbox_db: Path, tmp_path: Path) -> None:
    import shutil

    with SandboxProcess(sandbox_db) as sandbox:
        api = Api(sandbox)
        created = api.post(
            "/contacts", {"contact": {"name": "Kept Ltd", "contact_type_ids": ["CUSTOMER"]}}
        )
        assert created.status_code == 201
    assert not Path(str(sandbox_db) + "-wal").exists()
    copy = shutil.copyfile(sandbox_db, tmp_path / "copy.db")
    with SandboxProcess(copy) as again:
        assert Api(again).get(created.json()["$path"]).json()["name"] == "Kept Ltd"
