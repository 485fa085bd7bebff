"""List pages that seek (``serve --paging seek``, the default) answer exactly what LIMIT/OFFSET
paging answers over the sorted list, writes interleaved with the reads included (records
shift between pages as they do at Sage).

Over HTTP: two servers on one database file, one seeking and one with ``--paging offset`` (the
reference); random writes through either (the generation that invalidates what a server
remembered crosses processes through the file) between page reads, every page asked of both
and compared byte for byte. Reproducible: ``SANDBOX_PAGING_SEED=N`` replays one seed. A unit
part runs the page query itself on a table with NULL sort values, both directions."""

from __future__ import annotations

import os
import random
import sqlite3
from typing import Any

import pytest
import requests

from tap_sage.sandbox.lists import Cursors, ListQueries, Query, _page_keys
from tap_sage.sandbox.runner import SandboxProcess

TIMEOUT = 20
SEEDS = [int(os.environ["SANDBOX_PAGING_SEED"])] if "SANDBOX_PAGING_SEED" in os.environ else [1, 2]
#: (resource, parameters) of the lists read: every kind of order and filter the tap uses
SHAPES: tuple[tuple[str, dict[str, str]], ...] = (
    ("contacts", {}),
    ("contacts", {"attributes": "all"}),
    ("contacts", {"updated_or_created_since": "2025-06-01T00:00:00Z"}),
    ("sales_invoices", {"sort": "updated_at", "attributes": "all"}),
    ("sales_invoices", {"sort": "updated_at", "updated_or_created_since": "2025-01-01T00:00:00Z"}),
    ("sales_invoices", {"sort": "updated_at:desc"}),
    ("sales_invoices", {"sort": "created_at"}),
    ("sales_invoices", {"sort": "date:desc", "from_date": "2025-03-01"}),
    ("sales_invoices", {"sort": "due_date"}),
    ("sales_invoices", {"deleted_since": "2020-01-01T00:00:00Z"}),
    ("contacts", {"deleted_since": "2020-01-01T00:00:00Z"}),
)


class Client:
    def __init__(self, sandbox: SandboxProcess, token: str) -> None:
        self.base = sandbox.api_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, params: dict[str, Any] | None = None) -> requests.Response:
        return self.session.get(self.base + path, params=params, timeout=TIMEOUT)

    def send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.base + path, timeout=TIMEOUT, **kwargs)


def _write(rng: random.Random, client: Client, step: int) -> str:
    """One random write that moves records in or out of the lists above."""
    kind = rng.choice(("new contact", "touch contact", "delete contact", "touch invoice", "void"))
    if kind == "new contact":
        body = {"contact": {"name": f"Paging {step}", "contact_type_ids": ["CUSTOMER"]}}
        response = client.send("POST", "/contacts", json=body)
        assert response.status_code == 201, response.text
        return kind
    resource = "contacts" if "contact" in kind else "sales_invoices"
    page = client.get(f"/{resource}", {"page": rng.randint(1, 10), "items_per_page": 20})
    target = rng.choice(page.json()["$items"])["$path"]
    if kind == "delete contact":
        response = client.send("DELETE", target)
        assert response.status_code == 204, response.text
    elif kind == "void":
        response = client.send("DELETE", target, params={"void_reason": "paging test"})
        assert response.status_code in (200, 204, 422), response.text  # 422: already void
    else:
        wrapper = "contact" if resource == "contacts" else "sales_invoice"
        body = {wrapper: {"notes": f"step {step}"}}
        response = client.send("PUT", target, json=body)
        assert response.status_code == 200, response.text
    return kind


@pytest.mark.parametrize("seed", SEEDS)
def test_seeking_pages_answer_what_offset_pages_answer_under_writes(seed: int, sandbox_db) -> None:
    seeking = SandboxProcess(sandbox_db, extra_args=["--quiet", "--log-paging"])
    # one log file for both; only the seeking server logs how it read its pages
    reference = SandboxProcess(sandbox_db, extra_args=["--quiet", "--paging", "offset"])
    with seeking, reference:
        token = seeking.grant()["access_token"]
        clients = (Client(seeking, token), Client(reference, token))
        rng = random.Random(seed)
        pages = dict.fromkeys(range(len(SHAPES)), 1)
        sizes = {i: rng.choice((5, 20, 37)) for i in range(len(SHAPES))}
        writes: list[str] = []
        reads = 0
        for step in range(90):
            if rng.random() < 0.3:
                writes.append(_write(rng, rng.choice(clients), step))
                continue
            shape = rng.randrange(len(SHAPES))
            resource, params = SHAPES[shape]
            roll = rng.random()
            if roll < 0.15:  # a jump, past the end sometimes
                pages[shape] = rng.randint(1, 60)
            elif roll < 0.25:  # another page size over the same list
                sizes[shape] = rng.choice((5, 20, 37, 50))
            for _ in range(rng.randint(1, 6)):  # a run of pages of one scan
                query = {**params, "page": pages[shape], "items_per_page": sizes[shape]}
                answers = [client.get(f"/{resource}", query) for client in clients]
                context = f"seed {seed}, step {step}, {resource} {query}, writes so far {writes}"
                assert [a.status_code for a in answers] == [200, 200], context
                assert answers[0].content == answers[1].content, context
                reads += 1
                if answers[0].json()["$next"] is None:
                    pages[shape] = 1  # start the scan again
                else:
                    pages[shape] += 1
        log = seeking.log_path.read_text(encoding="utf-8")
    seeks, offsets = log.count("via seek from"), log.count("via offset")
    # the seeking server did seek, and fell back to OFFSET after writes
    assert seeks >= reads // 3 and offsets > 0, (seed, seeks, offsets, reads, len(writes))
    assert len(writes) >= 20, seed


def _table(rows: list[tuple[int, str | None]]) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE TABLE records (seq INTEGER PRIMARY KEY, business TEXT, resource TEXT, "
        "id TEXT, updated_at TEXT, deleted_at TEXT, data TEXT)"
    )
    conn.executemany(
        "INSERT INTO records VALUES (?, 'b', 'r', ?, ?, NULL, '{}')",
        [(seq, f"id{seq}", value) for seq, value in rows],
    )
    return conn


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("seed", [3, 4, 5])
def test_the_page_query_seeks_through_null_and_tied_sort_values(
    descending: bool, seed: int
) -> None:
    rng = random.Random(seed)
    values = [None, "2026-01-01", "2026-01-02", "2026-01-03"]
    conn = _table([(seq, rng.choice(values)) for seq in range(1, 200)])
    query = Query(where=["business = ?", "resource = ?", "deleted_at IS NULL"], params=["b", "r"])
    query.sort_column, query.descending = "updated_at", descending
    order = sorted(
        conn.execute("SELECT seq, updated_at FROM records").fetchall(),
        key=lambda row: ((row[1] is not None, row[1] or ""), row[0]),
        reverse=descending,
    )  # SQLite's order: NULL first ascending, last descending; ties by seq
    for ipp in (1, 7, 20, 64):
        lists = ListQueries()  # a fresh cache: each page seeks from where the last one ended
        for offset in range(0, 210, ipp):
            expected = [f"id{seq}" for seq, _ in order[offset : offset + ipp]]
            start = lists.cursors.find(query.shape, "g", offset) if lists.cursors else None
            assert (start is not None) == (offset > 0), (seed, descending, ipp, offset)
            got = [row_id for row_id, _ in lists._page(conn, "g", query, ipp, offset)]
            assert got == expected, (seed, descending, ipp, offset)
            skipped = [f"id{key[0]}" for key in _page_keys(conn, query, ipp, offset, None)]
            assert skipped == expected, (seed, descending, ipp, offset)


def test_cursors_are_forgotten_when_the_generation_changes() -> None:
    cursors = Cursors()
    cursors.remember(("shape",), "1", 20, ("2026-01-01", 7))
    cursors.remember(("shape",), "1", 40, ("2026-01-02", 9))
    assert cursors.find(("shape",), "1", 45) == (40, ("2026-01-02", 9))
    assert cursors.find(("shape",), "1", 39) == (20, ("2026-01-01", 7))
    assert cursors.find(("shape",), "1", 19) is None
    assert cursors.find(("shape",), "2", 45) is None
    cursors.remember(("shape",), "2", 60, ("2026-01-03", 11))
    assert cursors.find(("shape",), "2", 45) is None  # the old generation's keys are gone
