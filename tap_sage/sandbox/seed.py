"""Deterministic, realistic seed data for every list resource of the catalogue.

Same arguments, same data (ids included): every random choice comes from ``random.Random``
seeded with ``--seed`` and the business position, and time is anchored at a fixed end date
(``DEFAULT_END``), not the clock. Records span the two years before that date.

Volumes (business 1; other businesses get half) at ``--scale 1``: 300 contacts (each with an
address and a contact person), 80 products, 30 services, 1000 sales invoices, 400 purchase
invoices, 400 contact payments, 500 transactions, 600 ledger entries, ... ``--scale N``
multiplies them (scale 100: 100,000 sales invoices in business 1). Lookups and settings do not
scale.

Clumping of timestamps: about a quarter of records share their ``created_at`` second with the
previous record, some updates come in batches sharing one ``updated_at`` second, and every
business's sales invoices contain one bulk import: a run of more than 200 invoices (a quarter
of the stream, at least 201 when the stream has 400 or more) created and updated in the same
second. About 2 % of the records of resources with ``deleted_since`` are tombstones.
"""

from __future__ import annotations

import base64
import hashlib
import random
import sqlite3
from datetime import datetime
from pathlib import Path

from tap_sage.sandbox import store
from tap_sage.sandbox.model import (
    BUSINESS_CYCLE,
    EDITION_SUBSCRIPTIONS,
    utc_ts,
)
from tap_sage.sandbox.seed_books import BusinessGenerator
from tap_sage.sandbox.seed_business import Row
from tap_sage.sandbox.seed_data import (
    CITIES,
    DEFAULT_CLIENT_ID,
    DEFAULT_END,
    SPAN_SECONDS,
    USER_EMAIL,
)

__all__ = ["DEFAULT_CLIENT_ID", "Seeder", "client_secret_for", "seed"]


def client_secret_for(seed: int, client_id: str = DEFAULT_CLIENT_ID) -> str:
    """The deterministic secret of the default client for ``--seed``."""
    return hashlib.sha256(f"sage-sandbox:{client_id}:{seed}".encode()).hexdigest()[:40]


class Seeder:
    """Fills a database with ``businesses`` businesses at ``scale``, from ``seed``."""

    def __init__(
        self,
        db: Path,
        *,
        businesses: int = 2,
        scale: int = 1,
        seed: int = 1,
        end: datetime = DEFAULT_END,
    ) -> None:
        self.db = Path(db)
        self.businesses = businesses
        self.scale = scale
        self.seed = seed
        self.end = int(end.timestamp())
        self.files: list[tuple[str, str, bytes]] = []
        self.counts: dict[str, int] = {}
        self._conn: sqlite3.Connection | None = None

    def run(self) -> dict[str, int]:
        """Reset the database and seed it; answers the record count per resource."""
        for suffix in ("", "-wal", "-shm"):
            path = Path(str(self.db) + suffix)
            if path.exists():
                path.unlink()
        # A bulk load into a fresh file: no journal while loading, WAL once done.
        conn = sqlite3.connect(str(self.db), isolation_level=None)
        try:
            conn.execute("PRAGMA page_size=16384")  # records of 1-4 KB pack well
            conn.execute("PRAGMA journal_mode=OFF")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("PRAGMA cache_size=-200000")
            conn.executescript(store.SCHEMA)
            self._conn = conn
            master = random.Random(f"{self.seed}:master")
            with store.transaction(conn):
                self._meta(conn, master)
                for position in range(1, self.businesses + 1):
                    business_id = f"{master.getrandbits(128):032x}"
                    biz = BusinessGenerator(self, position, business_id)
                    biz.generate()
                    self._insert_business(conn, biz)
                    self.flush(biz.rows)
                    biz.rows = []
                conn.executemany(
                    "INSERT INTO files (business, id, content) VALUES (?, ?, ?)",
                    [(b, i, base64.b64decode(c)) for b, i, c in self.files],
                )
            conn.executescript(store.INDEXES)
            conn.execute("PRAGMA journal_mode=WAL")
            return self.counts
        finally:
            conn.close()

    def flush(self, rows: list[Row]) -> None:
        """Insert queued rows (called every ``FLUSH_ROWS`` rows and at the end)."""
        assert self._conn is not None
        self._conn.executemany(
            "INSERT INTO records (business, resource, id, created_at, updated_at, "
            "deleted_at, doc_date, search, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        for row in rows:
            self.counts[row[1]] = self.counts.get(row[1], 0) + 1

    def _meta(self, conn: sqlite3.Connection, master: random.Random) -> None:
        user_id = f"{master.getrandbits(128):032x}"
        start = utc_ts(self.end - SPAN_SECONDS)
        user = {
            "id": user_id,
            "displayed_as": "Sandbox User",
            "first_name": "Sandbox",
            "last_name": "User",
            "initials": "SU",
            "email": USER_EMAIL,
            "locale": "en-GB",
            "created_at": start,
            "updated_at": start,
        }
        store.set_meta(conn, "user", store.dumps(user))
        store.set_meta(conn, "seed", str(self.seed))
        store.set_meta(conn, "scale", str(self.scale))
        store.set_meta(conn, "businesses", str(self.businesses))
        conn.execute(
            "INSERT INTO clients (client_id, client_secret, redirect_uri) VALUES (?, ?, NULL)",
            (DEFAULT_CLIENT_ID, client_secret_for(self.seed)),
        )

    def _insert_business(self, conn: sqlite3.Connection, biz: BusinessGenerator) -> None:
        t = utc_ts(biz.start)
        city, postcode = CITIES[biz.country][0]
        name = f"Sandbox {biz.country_name} {biz.position}"
        choices = EDITION_SUBSCRIPTIONS[biz.edition]
        # the n-th business of an edition takes the edition's n-th subscription id, in turn
        earlier = sum(
            1
            for p in range(1, biz.position)
            if BUSINESS_CYCLE[(p - 1) % len(BUSINESS_CYCLE)][1] == biz.edition
        )
        sub_id, sub_name = choices[earlier % len(choices)]
        data = {
            "id": biz.id,
            "displayed_as": name,
            "$path": f"/businesses/{biz.id}",
            "created_at": t,
            "updated_at": t,
            "name": name,
            "address_line_1": "1 Sandbox Street",
            "address_line_2": None,
            "city": city,
            "postal_code": postcode,
            "country": {"id": biz.country, "displayed_as": biz.country_name},
            "region": None,
            "telephone": "0100 000 0000",
            "mobile": None,
            "website": f"https://business{biz.position}.example.com",
            "is_demo": False,
            "ni_based": False,
            "subscriptions": [
                {
                    "id": sub_id,
                    "displayed_as": sub_name,
                    "active": True,
                    "status": "paying",
                    "created_at": t,
                    "updated_at": t,
                }
            ],
        }
        conn.execute(
            "INSERT INTO businesses (id, position, country, edition, data) VALUES (?, ?, ?, ?, ?)",
            (biz.id, biz.position, biz.country, biz.edition, store.dumps(data)),
        )


def seed(db: Path, *, businesses: int = 2, scale: int = 1, seed: int = 1) -> dict[str, int]:
    """Reset ``db`` and fill it; answers the record count per resource."""
    return Seeder(db, businesses=businesses, scale=scale, seed=seed).run()
