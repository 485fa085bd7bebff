"""The seeder's business: generation state of one business (its random generator, ids,
timelines, links to earlier records) and ``add``, which turns a record into a stored row."""

from __future__ import annotations

import functools
import random
from decimal import Decimal
from typing import Any, Protocol

from tap_sage.sage import catalogue
from tap_sage.sandbox import store
from tap_sage.sandbox.model import (
    BUSINESS_CYCLE,
    COUNTRIES,
    complete,
    display_of,
    filter_to_schema,
    link,
    search_text,
    utc_ts,
    web_links,
    wire_shape,
)
from tap_sage.sandbox.seed_data import (
    CITIES,
    COMPANY_A,
    COMPANY_B,
    COMPANY_C,
    FIRST,
    LAST,
    SPAN_SECONDS,
    STREETS,
    VOLUMES,
)

#: Resources whose whole records the generator keeps for later references.
KEEP_RECORDS = frozenset({"ledger_accounts", "contacts"})
FLUSH_ROWS = 20000
#: Keys every stored record starts with, in Sage's order.
HEAD_KEYS = ("id", "displayed_as", "$path", "created_at", "updated_at")

Row = tuple[str, str, str, str | None, str | None, str | None, str | None, str, str]


@functools.cache
def _info(resource: str) -> tuple[frozenset[str], bool, bool, bool]:
    """(read-schema fields, singleton, has deleted_since, has search) of a resource."""
    res = catalogue.resource(resource)
    props = frozenset(catalogue.list_schema(resource).get("properties", {}))
    return props, res.singleton, res.deletions, "search" in res.param_names


def _plain_address(address: dict[str, Any] | None) -> dict[str, Any] | None:
    """An address as embedded in a document: the address fields and its link, no more."""
    if not address:
        return None
    keys = (
        "id",
        "displayed_as",
        "$path",
        "address_line_1",
        "address_line_2",
        "city",
        "postal_code",
        "region",
        "country",
    )
    return {k: address.get(k) for k in keys}


class SeederLike(Protocol):
    """What a business generator needs of the ``Seeder`` that runs it."""

    seed: int
    scale: int
    end: int
    files: list[tuple[str, str, bytes]]

    def flush(self, rows: list[Row]) -> None:
        """Insert queued rows."""


class BusinessBase:
    """Generation state of one business and the helpers every generator uses."""

    def __init__(self, seeder: SeederLike, position: int, business_id: str) -> None:
        self.seeder = seeder
        self.position = position
        self.id = business_id
        self.country, self.edition = BUSINESS_CYCLE[(position - 1) % len(BUSINESS_CYCLE)]
        self.country_name, self.currency, self.locale, self.tax_label = COUNTRIES[self.country]
        self.rng = random.Random(f"{seeder.seed}:{position}")
        self.weight = 1.0 if position == 1 else 0.5
        self.links: dict[str, list[dict[str, Any]]] = {}
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.rows: list[Row] = []
        self.start = seeder.end - SPAN_SECONDS
        self.tax_rates: list[tuple[dict[str, Any], Decimal]] = []
        self.counter = 0
        self.seen: set[str] = set()
        self._ledger_cache: dict[tuple[int, ...], dict[str, Any]] = {}
        self._customer_cache: dict[bool, list[dict[str, Any]]] = {}

    # -- helpers ------------------------------------------------------------------------
    def available(self, resource: str) -> bool:
        return catalogue.resource(resource).available_in(self.country, self.edition)

    def count(self, resource: str) -> int:
        return max(1, round(VOLUMES[resource] * self.seeder.scale * self.weight))

    def new_id(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def pick(self, resource: str) -> dict[str, Any] | None:
        options = self.links.get(resource)
        return self.rng.choice(options) if options else None

    def timeline(self, n: int, *, bulk: int = 0, clump: float = 0.25) -> list[tuple[int, int]]:
        """(created, updated) epoch seconds, creation-ordered, clumped."""
        rng = self.rng
        end = self.seeder.end
        created = sorted(rng.randint(self.start + 86400, end - 3600) for _ in range(n))
        for i in range(1, n):
            if rng.random() < clump:
                created[i] = created[i - 1]
        bulk_range = range(0)
        if bulk and n > bulk:
            first = n // 3
            bulk_range = range(first, first + bulk)
            for i in bulk_range:
                created[i] = created[first]
        pool = sorted(rng.randint(self.start, end) for _ in range(max(3, n // 50)))
        out: list[tuple[int, int]] = []
        for i, c in enumerate(created):
            r = rng.random()
            if i in bulk_range or r < 0.6:
                u = c
            elif r < 0.8:
                u = max(c, rng.choice(pool))
            else:
                u = c + rng.randint(0, max(0, end - c))
            out.append((c, u))
        return out

    def add(
        self,
        resource: str,
        record: dict[str, Any],
        created: int | None,
        updated: int | None,
        *,
        deletable: bool = True,
    ) -> dict[str, Any]:
        """Finish a record (display, path, timestamps, schema filter) and queue its row."""
        rid = record.setdefault("id", self.new_id())
        props, singleton, deletions, searchable = _info(resource)
        if created is not None and "created_at" in props:
            record["created_at"] = utc_ts(created)
        if updated is not None and "updated_at" in props:
            record["updated_at"] = utc_ts(updated)
        record = self._shaped(resource, record, rid, props, singleton)
        complete(resource, record)
        wire_shape(resource).to_wire(record, singleton=singleton)
        deleted_at: str | None = None
        if deletable and deletions and updated is not None and self.rng.random() < 0.02:
            gone = updated + self.rng.randint(0, max(0, self.seeder.end - updated))
            deleted_at = utc_ts(gone)
            record["deleted_at"] = deleted_at
            record["updated_at"] = deleted_at
        else:
            self.links.setdefault(resource, []).append(
                link(resource, rid, record.get("displayed_as"))
            )
            if resource in KEEP_RECORDS:
                self.records.setdefault(resource, []).append(record)
            self.seen.add(resource)
        record = {**{k: record[k] for k in HEAD_KEYS if k in record}, **record}
        doc_date = record.get("date") if isinstance(record.get("date"), str) else None
        self.rows.append(
            (
                self.id,
                resource,
                rid,
                record.get("created_at"),
                record.get("updated_at"),
                deleted_at,
                doc_date,
                search_text(record) if searchable else "",
                store.dumps(record),
            )
        )
        if len(self.rows) >= FLUSH_ROWS:
            self.seeder.flush(self.rows)
            self.rows = []
        return record

    def _shaped(
        self,
        resource: str,
        record: dict[str, Any],
        rid: str,
        props: frozenset[str],
        singleton: bool,
    ) -> dict[str, Any]:
        """The record with its path, display and web links, cut to its read schema."""
        if singleton:
            res = catalogue.resource(resource)
            record.pop("id", None)
            record["$path"] = res.path
            return {k: v for k, v in record.items() if k in props or k == "$path"}
        record.setdefault("displayed_as", display_of(resource, record))
        record["$path"] = f"/{resource}/{rid}"
        record = filter_to_schema(resource, record)
        if "links" in props and "links" not in record:
            record["links"] = web_links(resource, self.counter)
            self.counter += 1
        return record

    def company(self) -> str:
        rng = self.rng
        return f"{rng.choice(COMPANY_A)} {rng.choice(COMPANY_B)} {rng.choice(COMPANY_C)}"

    def person(self) -> str:
        return f"{self.rng.choice(FIRST)} {self.rng.choice(LAST)}"

    def address(self) -> dict[str, Any]:
        rng = self.rng
        city, postcode = rng.choice(CITIES[self.country])
        region = self.pick("address_regions")
        return {
            "address_line_1": f"{rng.randint(1, 250)} {rng.choice(STREETS)}",
            "address_line_2": rng.choice(("", "", f"Unit {rng.randint(1, 30)}")),
            "city": city,
            "postal_code": postcode,
            "region": region["displayed_as"] if region else None,
            "country": link("countries", self.country, self.country_name),
        }

    def money(self, low: float, high: float) -> Decimal:
        """A random amount with two decimals (a ``Decimal``: money never becomes a float)."""
        return Decimal(f"{self.rng.uniform(low, high):.2f}")

    def factor(self, low: float, high: float) -> Decimal:
        """A random multiplier (its float's shortest text, as a ``Decimal``)."""
        return Decimal(repr(self.rng.uniform(low, high)))

    # -- generation -----------------------------------------------------------------------
