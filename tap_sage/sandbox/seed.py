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
import functools
import hashlib
import random
import sqlite3
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from tap_sage.sage import catalogue, wire
from tap_sage.sandbox import store
from tap_sage.sandbox.model import (
    BUSINESS_CYCLE,
    COUNTRIES,
    EDITION_SUBSCRIPTIONS,
    complete,
    display_of,
    filter_to_schema,
    lines_field,
    link,
    number_field,
    ref_resource,
    search_text,
    utc_date,
    utc_ts,
    web_links,
    wire_shape,
)

DEFAULT_END = datetime(2026, 11, 1, tzinfo=timezone.utc)
SPAN_SECONDS = 730 * 86400
DEFAULT_CLIENT_ID = "sandbox-client"
USER_EMAIL = "sandbox.user@example.com"

FIRST = [
    "Olivia",
    "Amelia",
    "Isla",
    "Ava",
    "Mia",
    "Ivy",
    "Lily",
    "Sophia",
    "Grace",
    "Freya",
    "Noah",
    "Oliver",
    "George",
    "Arthur",
    "Leo",
    "Harry",
    "Oscar",
    "Archie",
    "Henry",
    "Theodore",
    "Jack",
    "Charlie",
    "Thomas",
    "James",
    "William",
    "Lucas",
    "Emma",
    "Chloe",
    "Ella",
    "Ruby",
    "Alice",
    "Jacob",
    "Ethan",
    "Daniel",
    "Sofia",
    "Elena",
    "Marie",
    "Pierre",
    "Lucia",
    "Pablo",
    "Carmen",
    "Hugo",
    "Louise",
]
LAST = [
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Williams",
    "Wilson",
    "Johnson",
    "Davies",
    "Robinson",
    "Wright",
    "Thompson",
    "Evans",
    "Walker",
    "White",
    "Roberts",
    "Green",
    "Hall",
    "Wood",
    "Jackson",
    "Clarke",
    "Murphy",
    "Kelly",
    "Byrne",
    "Garcia",
    "Martin",
    "Lopez",
    "Bernard",
    "Dubois",
    "Moreau",
    "Tremblay",
    "Roy",
    "Gagnon",
    "Miller",
    "Davis",
    "Moore",
    "Anderson",
    "Thomas",
]
COMPANY_A = [
    "Acme",
    "Apex",
    "Blue",
    "Bright",
    "Cedar",
    "Crown",
    "Delta",
    "Eagle",
    "Falcon",
    "Granite",
    "Harbour",
    "Iron",
    "Juniper",
    "Kestrel",
    "Lime",
    "Maple",
    "Nova",
    "Oak",
    "Pioneer",
    "Quartz",
    "River",
    "Summit",
    "Thistle",
    "Union",
    "Vertex",
    "Willow",
    "Zenith",
    "Atlas",
    "Beacon",
    "Copper",
    "Emerald",
    "Golden",
    "Highland",
    "Meadow",
    "Northern",
    "Orchard",
    "Silver",
    "Stone",
]
COMPANY_B = [
    "Trading",
    "Logistics",
    "Consulting",
    "Bakery",
    "Builders",
    "Engineering",
    "Foods",
    "Garage",
    "Interiors",
    "Media",
    "Plumbing",
    "Print",
    "Software",
    "Studio",
    "Supplies",
    "Textiles",
    "Timber",
    "Travel",
    "Ventures",
    "Wholesale",
    "Design",
    "Electrical",
    "Motors",
    "Farms",
    "Florists",
    "Health",
    "Hotels",
    "Joinery",
    "Labs",
    "Marine",
    "Optics",
    "Roofing",
]
COMPANY_C = ("Ltd", "Limited", "& Co", "Group", "LLP", "Partners", "Inc", "Services")
CITIES: dict[str, tuple[tuple[str, str], ...]] = {
    "GB": (
        ("London", "EC1A 1BB"),
        ("Manchester", "M1 1AE"),
        ("Leeds", "LS1 4AP"),
        ("Bristol", "BS1 5TR"),
        ("Newcastle", "NE1 7RU"),
        ("Glasgow", "G1 1XQ"),
    ),
    "US": (
        ("Atlanta", "30303"),
        ("Austin", "78701"),
        ("Denver", "80202"),
        ("Boston", "02108"),
        ("Seattle", "98101"),
        ("Chicago", "60601"),
    ),
    "IE": (
        ("Dublin", "D02 X285"),
        ("Cork", "T12 RW26"),
        ("Galway", "H91 E2K3"),
        ("Limerick", "V94 T9PX"),
    ),
    "CA": (
        ("Toronto", "M5H 2N2"),
        ("Vancouver", "V6B 1A1"),
        ("Montreal", "H2Y 1C6"),
        ("Calgary", "T2P 1J9"),
    ),
    "ES": (
        ("Madrid", "28013"),
        ("Barcelona", "08002"),
        ("Valencia", "46002"),
        ("Sevilla", "41004"),
    ),
    "FR": (("Paris", "75001"), ("Lyon", "69002"), ("Marseille", "13001"), ("Bordeaux", "33000")),
    "DE": (("Berlin", "10117"), ("Hamburg", "20095"), ("München", "80331"), ("Köln", "50667")),
}
STREETS = (
    "High Street",
    "Station Road",
    "Church Lane",
    "Market Square",
    "Mill Road",
    "Park Avenue",
    "Main Street",
    "King Street",
    "Queens Road",
    "Victoria Street",
)
PRODUCT_WORDS = (
    "Widget",
    "Bracket",
    "Panel",
    "Cable",
    "Valve",
    "Lamp",
    "Chair",
    "Desk",
    "Printer Paper",
    "Toner",
    "Bolt Set",
    "Hinge",
    "Sensor",
    "Adapter",
    "Filter",
)
PRODUCT_ADJ = ("Standard", "Deluxe", "Compact", "Heavy Duty", "Premium", "Eco", "Mini", "Large")
SERVICES = (
    "Consulting",
    "Installation",
    "Maintenance",
    "Training",
    "Design",
    "Support",
    "Delivery",
    "Repair",
    "Audit",
    "Cleaning",
    "Bookkeeping",
    "Inspection",
)

#: Tax rates per country: (suffix, name, percentage).
TAX_RATES: dict[str, tuple[tuple[str, str, float], ...]] = {
    "GB": (
        ("STANDARD", "Standard 20.00%", 20.0),
        ("LOWER", "Lower 5.00%", 5.0),
        ("ZERO", "Zero 0.00%", 0.0),
        ("EXEMPT", "Exempt 0.00%", 0.0),
        ("NO_TAX", "No VAT", 0.0),
    ),
    "IE": (
        ("STANDARD", "Standard 23.00%", 23.0),
        ("REDUCED", "Reduced 13.50%", 13.5),
        ("ZERO", "Zero 0.00%", 0.0),
        ("EXEMPT", "Exempt 0.00%", 0.0),
    ),
    "US": (
        ("STATE", "State Sales Tax 6.00%", 6.0),
        ("CITY", "City Tax 1.50%", 1.5),
        ("NO_TAX", "No Tax", 0.0),
    ),
    "CA": (
        ("GST", "GST 5.00%", 5.0),
        ("HST", "HST 13.00%", 13.0),
        ("PST", "PST 7.00%", 7.0),
        ("ZERO", "Zero 0.00%", 0.0),
    ),
    "ES": (
        ("STANDARD", "General 21.00%", 21.0),
        ("REDUCED", "Reducido 10.00%", 10.0),
        ("SUPER_REDUCED", "Superreducido 4.00%", 4.0),
        ("EXEMPT", "Exento 0.00%", 0.0),
    ),
    "FR": (
        ("STANDARD", "Normal 20.00%", 20.0),
        ("INTERMEDIATE", "Intermédiaire 10.00%", 10.0),
        ("REDUCED", "Réduit 5.50%", 5.5),
        ("EXEMPT", "Exonéré 0.00%", 0.0),
    ),
    "DE": (
        ("STANDARD", "Regelsatz 19.00%", 19.0),
        ("REDUCED", "Ermäßigt 7.00%", 7.0),
        ("EXEMPT", "Steuerfrei 0.00%", 0.0),
    ),
}

#: Chart of accounts: (nominal code, name, ledger account type id).
CHART: tuple[tuple[int, str, str], ...] = (
    (1100, "Trade Debtors", "CURRENT_ASSETS"),
    (1200, "Current Account", "BANK"),
    (1210, "Savings Account", "BANK"),
    (1230, "Petty Cash", "BANK"),
    (1001, "Stock", "CURRENT_ASSETS"),
    (1020, "Office Equipment", "FIXED_ASSETS"),
    (1030, "Motor Vehicles", "FIXED_ASSETS"),
    (2100, "Trade Creditors", "CURRENT_LIABILITY"),
    (2200, "Sales Tax Control", "CURRENT_LIABILITY"),
    (2201, "Purchase Tax Control", "CURRENT_LIABILITY"),
    (2210, "PAYE", "CURRENT_LIABILITY"),
    (2300, "Loans", "FUTURE_LIABILITY"),
    (3000, "Share Capital", "EQUITY"),
    (3200, "Retained Earnings", "EQUITY"),
    (4000, "Sales - Products", "SALES"),
    (4010, "Sales - Services", "SALES"),
    (4020, "Sales - Consulting", "SALES"),
    (4900, "Other Income", "OTHER_INCOME"),
    (4905, "Carriage on Sales", "OTHER_INCOME"),
    (5000, "Cost of Sales - Goods", "DIRECT_EXPENSES"),
    (5010, "Cost of Sales - Subcontractors", "DIRECT_EXPENSES"),
    (5100, "Carriage", "DIRECT_EXPENSES"),
    (6000, "Wages and Salaries", "OVERHEADS"),
    (7100, "Rent and Rates", "OVERHEADS"),
    (7200, "Electricity", "OVERHEADS"),
    (7300, "Motor Expenses", "OVERHEADS"),
    (7400, "Travel", "OVERHEADS"),
    (7500, "Printing and Stationery", "OVERHEADS"),
    (7502, "Telephone and Internet", "OVERHEADS"),
    (7600, "Legal Fees", "OVERHEADS"),
    (7601, "Accountancy Fees", "OVERHEADS"),
    (7700, "Equipment Hire", "OVERHEADS"),
    (7800, "Repairs", "OVERHEADS"),
    (7900, "Bank Charges", "OVERHEADS"),
    (8000, "Depreciation", "DEPRECIATION"),
    (8200, "Donations", "OVERHEADS"),
    (9998, "Suspense Account", "CURRENT_LIABILITY"),
)

#: Lookups with fixed ids: resource -> (id, displayed_as) pairs.
LOOKUPS: dict[str, tuple[tuple[str, str], ...]] = {
    "contact_types": (("CUSTOMER", "Customer"), ("VENDOR", "Supplier")),
    "artefact_statuses": (
        ("DRAFT", "Draft"),
        ("UNPAID", "Unpaid"),
        ("PART_PAID", "Part Paid"),
        ("PAID", "Paid"),
        ("VOID", "Void"),
        ("DISPUTED", "Disputed"),
        ("PENDING", "Pending"),
        ("ACCEPTED", "Accepted"),
        ("DECLINED", "Declined"),
        ("INVOICED", "Invoiced"),
        ("EXPIRED", "Expired"),
    ),
    "address_types": (
        ("DELIVERY", "Delivery"),
        ("ACCOUNTS", "Accounts"),
        ("SALES", "Sales"),
        ("PURCHASING", "Purchasing"),
    ),
    "bank_account_types": (
        ("CHECKING", "Current"),
        ("SAVINGS", "Savings"),
        ("CASH_IN_HAND", "Cash in Hand"),
        ("CREDIT_CARD", "Credit Card"),
        ("LOAN", "Loan"),
        ("OTHER", "Other"),
    ),
    "payment_methods": (
        ("BACS", "Bank Transfer"),
        ("CASH", "Cash"),
        ("CHEQUE", "Cheque"),
        ("CREDIT_DEBIT", "Credit/Debit Card"),
        ("ALTERNATIVE_PAYMENT", "PayPal"),
    ),
    "catalog_item_types": (
        ("STOCK_ITEM", "Stock"),
        ("NON_STOCK_ITEM", "Non-stock"),
        ("SERVICE", "Service"),
    ),
    "contact_person_types": (
        ("ACCOUNTS", "Accounts"),
        ("SALES", "Sales"),
        ("PURCHASING", "Purchasing"),
        ("CONTACT", "Contact"),
    ),
    "transaction_types": (
        ("SALES_INVOICE", "Sales Invoice"),
        ("SALES_CREDIT_NOTE", "Sales Credit Note"),
        ("SALES_CORRECTIVE_INVOICE", "Sales Corrective Invoice"),
        ("SALES_QUICK_ENTRY_INVOICE", "Sales QE Invoice"),
        ("PURCHASE_INVOICE", "Purchase Invoice"),
        ("PURCHASE_CREDIT_NOTE", "Purchase Credit Note"),
        ("PURCHASE_CORRECTIVE_INVOICE", "Purchase Corrective Invoice"),
        ("PURCHASE_QUICK_ENTRY_INVOICE", "Purchase QE Invoice"),
        ("CUSTOMER_RECEIPT", "Customer Receipt"),
        ("VENDOR_PAYMENT", "Supplier Payment"),
        ("OTHER_RECEIPT", "Other Receipt"),
        ("OTHER_PAYMENT", "Other Payment"),
        ("BANK_TRANSFER", "Bank Transfer"),
        ("BANK_DEPOSIT", "Bank Deposit"),
        ("JOURNAL", "Journal"),
        ("CUSTOMER_ALLOCATION", "Customer Allocation"),
        ("VENDOR_ALLOCATION", "Supplier Allocation"),
        ("OPENING_BALANCE", "Opening Balance"),
    ),
    "ledger_account_types": (
        ("SALES", "Sales"),
        ("OTHER_INCOME", "Other Income"),
        ("DIRECT_EXPENSES", "Direct Expenses"),
        ("OVERHEADS", "Overheads"),
        ("DEPRECIATION", "Depreciation"),
        ("CURRENT_ASSETS", "Current Assets"),
        ("FIXED_ASSETS", "Fixed Assets"),
        ("BANK", "Bank"),
        ("CURRENT_LIABILITY", "Current Liability"),
        ("FUTURE_LIABILITY", "Future Liability"),
        ("EQUITY", "Equity"),
    ),
    "ledger_account_classifications": (
        ("ASSETS", "Assets"),
        ("LIABILITIES", "Liabilities"),
        ("INCOME", "Income"),
        ("EXPENSES", "Expenses"),
        ("EQUITY", "Equity"),
    ),
    "contact_opening_balance_types": (("INVOICE", "Invoice"), ("CREDIT_NOTE", "Credit Note")),
    "quick_entry_types": (("INVOICE", "Invoice"), ("CREDIT_NOTE", "Credit Note")),
    "attachment_context_types": (
        ("SALES_INVOICE", "Sales Invoice"),
        ("PURCHASE_INVOICE", "Purchase Invoice"),
        ("CONTACT", "Contact"),
        ("BANK_TRANSFER", "Bank Transfer"),
        ("JOURNAL", "Journal"),
        ("BUSINESS", "Business"),
    ),
    "country_groups": (
        ("EU", "European Union"),
        ("ROW", "Rest of World"),
        ("UK", "United Kingdom"),
    ),
    "business_types": (
        ("SOLE_TRADER", "Sole Trader"),
        ("PARTNERSHIP", "Partnership"),
        ("LIMITED_COMPANY", "Limited Company"),
        ("CHARITY", "Charity"),
    ),
    "eu_goods_services_types": (("GOODS", "Goods"), ("SERVICES", "Services")),
    "eu_sales_descriptions": (
        ("GOODS", "Goods"),
        ("SERVICES", "Services"),
        ("TRIANGULATION", "Triangulation"),
    ),
    "tax_return_frequencies": (
        ("MONTHLY", "Monthly"),
        ("QUARTERLY", "Quarterly"),
        ("ANNUALLY", "Annually"),
    ),
    "tax_schemes": (
        ("STANDARD", "Standard"),
        ("CASH_BASED", "Cash Accounting"),
        ("FLAT_RATE_INVOICE", "Flat Rate - Invoice Based"),
    ),
    "journal_code_types": (
        ("SALES", "Sales"),
        ("PURCHASES", "Purchases"),
        ("BANK", "Bank"),
        ("OTHER", "Other"),
    ),
    "corrective_reason_codes": (
        ("R1", "Error fundado en derecho"),
        ("R2", "Concurso de acreedores"),
        ("R3", "Créditos incobrables"),
        ("R4", "Resto de causas"),
    ),
    "legal_form_types": (("SARL", "SARL"), ("SAS", "SAS"), ("EI", "Entreprise individuelle")),
    "business_activity_types": (
        ("COMMERCIAL", "Commerciale"),
        ("LIBERAL", "Libérale"),
        ("ARTISANAL", "Artisanale"),
    ),
    "tax_offices": (("1101", "Finanzamt Berlin Mitte"), ("2201", "Finanzamt Hamburg")),
    "countries_of_registration": (
        ("GB-ENG", "England and Wales"),
        ("GB-SCT", "Scotland"),
        ("GB-NIR", "Northern Ireland"),
    ),
    "coa_templates": (("STANDARD", "Standard chart"), ("CHARITY", "Charity chart")),
    "service_rate_types": (("HOURLY", "Hourly"), ("DAILY", "Daily"), ("FIXED", "Fixed")),
    "product_sales_price_types": (
        ("SELLING_PRICE", "Selling Price"),
        ("TRADE", "Trade"),
        ("WHOLESALE", "Wholesale"),
    ),
    "analysis_types": (("DEPARTMENT", "Department"), ("PROJECT", "Project"), ("REGION", "Region")),
}
CURRENCIES = (
    ("GBP", "Pound Sterling"),
    ("EUR", "Euro"),
    ("USD", "US Dollar"),
    ("CAD", "Canadian Dollar"),
    ("AUD", "Australian Dollar"),
    ("CHF", "Swiss Franc"),
    ("JPY", "Japanese Yen"),
    ("SEK", "Swedish Krona"),
)
EXTRA_COUNTRIES = (
    ("AU", "Australia"),
    ("NL", "Netherlands"),
    ("BE", "Belgium"),
    ("IT", "Italy"),
    ("PT", "Portugal"),
    ("CH", "Switzerland"),
    ("JP", "Japan"),
)
REGIONS = {
    "US": (
        ("US-GA", "Georgia"),
        ("US-TX", "Texas"),
        ("US-CO", "Colorado"),
        ("US-MA", "Massachusetts"),
        ("US-WA", "Washington"),
        ("US-IL", "Illinois"),
    ),
    "CA": (
        ("CA-ON", "Ontario"),
        ("CA-BC", "British Columbia"),
        ("CA-QC", "Quebec"),
        ("CA-AB", "Alberta"),
    ),
}

#: Volume resources: base count at scale 1 for business 1 (others get half).
VOLUMES: dict[str, int] = {
    "contacts": 300,
    "products": 80,
    "services": 30,
    "stock_items": 40,
    "sales_quotes": 100,
    "sales_estimates": 60,
    "sales_invoices": 1000,
    "sales_credit_notes": 60,
    "sales_corrective_invoices": 30,
    "sales_quick_entries": 60,
    "purchase_invoices": 400,
    "purchase_credit_notes": 30,
    "purchase_corrective_invoices": 15,
    "purchase_quick_entries": 60,
    "contact_payments": 400,
    "contact_allocations": 60,
    "other_payments": 150,
    "bank_transfers": 40,
    "bank_deposits": 30,
    "journals": 60,
    "transactions": 500,
    "ledger_entries": 600,
    "attachments": 40,
    "stock_movements": 40,
}

#: Resources whose whole records the generator keeps for later references.
KEEP_RECORDS = frozenset({"ledger_accounts", "contacts"})
FLUSH_ROWS = 20000
#: Keys every stored record starts with, in Sage's order.
HEAD_KEYS = ("id", "displayed_as", "$path", "created_at", "updated_at")

Row = tuple[str, str, str, str | None, str | None, str | None, str | None, str, str]


def client_secret_for(seed: int, client_id: str = DEFAULT_CLIENT_ID) -> str:
    """The deterministic secret of the default client for ``--seed``."""
    return hashlib.sha256(f"sage-sandbox:{client_id}:{seed}".encode()).hexdigest()[:40]


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


class _Business:
    """Generation state of one business."""

    def __init__(self, seeder: Seeder, position: int, business_id: str) -> None:
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
        if singleton:
            res = catalogue.resource(resource)
            record.pop("id", None)
            record["$path"] = res.path
            record = {k: v for k, v in record.items() if k in props or k == "$path"}
        else:
            record.setdefault("displayed_as", display_of(resource, record))
            record["$path"] = f"/{resource}/{rid}"
            record = filter_to_schema(resource, record)
            if "links" in props and "links" not in record:
                record["links"] = web_links(resource, self.counter)
                self.counter += 1
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
    def generate(self) -> None:
        self.lookups()
        steps: tuple[tuple[str, Callable[[], None]], ...] = (
            ("ledger_accounts", self.ledger_accounts),
            ("tax_rates", self.tax_rates_),
            ("bank_accounts", self.bank_accounts),
            ("contacts", self.contacts),
            ("products", self.products),
            ("services", self.services),
            ("stock_items", self.stock_items),
        )
        for name, step in steps:
            if self.available(name):
                step()
        for name in (
            "sales_quotes",
            "sales_estimates",
            "sales_invoices",
            "sales_credit_notes",
            "sales_corrective_invoices",
            "purchase_invoices",
            "purchase_credit_notes",
            "purchase_corrective_invoices",
        ):
            if self.available(name):
                self.artefacts(name)
        for name in ("sales_quick_entries", "purchase_quick_entries"):
            if self.available(name):
                self.quick_entries(name)
        later: tuple[tuple[str, Callable[[], None]], ...] = (
            ("contact_payments", self.contact_payments),
            ("contact_allocations", self.contact_allocations),
            ("other_payments", self.other_payments),
            ("bank_transfers", self.bank_transfers),
            ("bank_deposits", self.bank_transfers),
            ("journals", self.journals),
            ("transactions", self.transactions),
            ("ledger_entries", self.ledger_entries),
            ("attachments", self.attachments),
            ("stock_movements", self.stock_movements),
        )
        for name, step in later:
            if self.available(name):
                if name == "bank_deposits":
                    self.bank_deposits()
                else:
                    step()
        self.settings()
        for name, res in catalogue.resources().items():
            if res.list and not res.singleton and name not in self.seen and self.available(name):
                self.generic(name, 3)

    def lookups(self) -> None:
        t0 = self.start
        if self.available("countries"):
            seen = {self.country}
            self.add(
                "countries",
                {
                    "id": self.country,
                    "displayed_as": self.country_name,
                    "name": self.country_name,
                    "code": self.country,
                },
                t0,
                t0,
            )
            for code, (name, *_rest) in COUNTRIES.items():
                if code not in seen:
                    seen.add(code)
                    self.add(
                        "countries",
                        {"id": code, "displayed_as": name, "name": name, "code": code},
                        t0,
                        t0,
                    )
            for code, name in EXTRA_COUNTRIES:
                self.add(
                    "countries",
                    {"id": code, "displayed_as": name, "name": name, "code": code},
                    t0,
                    t0,
                )
        if self.available("currencies"):
            for code, name in CURRENCIES:
                self.add(
                    "currencies",
                    {"id": code, "displayed_as": f"{name} ({code})", "name": name, "code": code},
                    t0,
                    t0,
                )
        if self.available("address_regions"):
            for code, name in REGIONS.get(self.country, ((f"{self.country}-X", "Default"),)):
                self.add(
                    "address_regions",
                    {"id": code, "displayed_as": name, "name": name, "code": code},
                    t0,
                    t0,
                )
        if self.available("tax_types"):
            for code, name in (
                (f"{self.country}_{self.tax_label.upper().replace(' ', '_')}", self.tax_label),
                (f"{self.country}_EXEMPT", "Exempt"),
            ):
                self.add("tax_types", {"id": code, "displayed_as": name, "name": name}, t0, t0)
        for resource, pairs in LOOKUPS.items():
            if not self.available(resource):
                continue
            for code, name in pairs:
                lookup: dict[str, Any] = {
                    "id": code,
                    "displayed_as": name,
                    "name": name,
                    "code": code,
                }
                self.fill(resource, lookup)
                self.add(resource, lookup, t0, t0, deletable=False)
        for resource in ("exchange_rates", "live_exchange_rates", "business_exchange_rates"):
            if not self.available(resource):
                continue
            for code, name in CURRENCIES:
                if code == self.currency:
                    continue
                rate = Decimal(f"{self.rng.uniform(0.5, 1.6):.4f}")
                record: dict[str, Any] = {
                    "id": code,
                    "displayed_as": f"{name} ({code})",
                    "currency": link("currencies", code, f"{name} ({code})"),
                    "rate": rate,
                    "inverse_rate": round(1 / rate, 4),
                    "base_currency": link("currencies", self.currency, self.currency),
                    "retrieved_at": utc_ts(self.seeder.end),
                }
                self.add(resource, record, t0, t0, deletable=False)

    def ledger_accounts(self) -> None:
        times = self.timeline(len(CHART), clump=0.8)
        for (code, name, type_id), (c, u) in zip(CHART, times, strict=True):
            record = {
                "name": name,
                "display_name": name,
                "nominal_code": code,
                "ledger_account_type": link(
                    "ledger_account_types", type_id, type_id.replace("_", " ").title()
                ),
                "included_in_chart": True,
                "visible_in_banking": type_id == "BANK",
                "visible_in_sales": type_id in ("SALES", "OTHER_INCOME"),
                "visible_in_expenses": type_id in ("DIRECT_EXPENSES", "OVERHEADS"),
                "visible_in_journals": True,
                "visible_in_other_payments": True,
                "visible_in_other_receipts": True,
                "visible_in_reporting": True,
                "is_control_account": code in (1100, 2100, 2200, 2201),
                "display_formatted": f"{code} - {name}",
                "fixed_tax_rate": False,
                "tax_recoverable": True,
                "cis_materials": False,
                "cis_labour": False,
                "tax_instalment": False,
            }
            self.add("ledger_accounts", record, c, u)

    def ledger(self, *codes: int) -> dict[str, Any] | None:
        cached = self._ledger_cache.get(codes)
        if cached is not None:
            return cached
        found = None
        for rec in self.records.get("ledger_accounts", ()):
            if rec.get("nominal_code") in codes:
                found = link("ledger_accounts", rec["id"], rec["displayed_as"])
                break
        if found is None:
            return self.pick("ledger_accounts")
        self._ledger_cache[codes] = found
        return found

    def tax_rates_(self) -> None:
        t0 = self.start
        for suffix, name, pct in TAX_RATES[self.country]:
            record = {
                "id": f"{self.country}_{suffix}",
                "name": name,
                "displayed_as": name,
                "percentage": pct,
                "percentages": [{"percentage": pct, "from_date": "2020-01-01", "to_date": None}],
                "agency": self.tax_label,
                "is_visible": True,
                "retailer": False,
                "editable": self.country == "US",
                "deletable": False,
                "is_combined_rate": False,
            }
            rec = self.add("tax_rates", record, t0, t0, deletable=False)
            self.tax_rates.append((link("tax_rates", rec["id"], name), Decimal(repr(pct))))

    def tax(self) -> tuple[dict[str, Any] | None, Decimal]:
        if not self.tax_rates:
            return None, Decimal(0)
        weights = [6] + [1] * (len(self.tax_rates) - 1)
        return self.rng.choices(self.tax_rates, weights=weights)[0]

    def bank_accounts(self) -> None:
        specs = (
            ("Business Current Account", "CHECKING", 1200),
            ("Business Savings", "SAVINGS", 1210),
            ("Petty Cash", "CASH_IN_HAND", 1230),
        )
        for (name, type_id, code), (c, u) in zip(specs, self.timeline(3), strict=True):
            record = {
                "bank_account_details": {
                    "account_name": name,
                    "account_number": f"{self.rng.randint(10**7, 10**8 - 1)}",
                    "sort_code": f"{self.rng.randint(10, 99)}-"
                    f"{self.rng.randint(10, 99)}-{self.rng.randint(10, 99)}",
                    # as recorded (bank_accounts_list_full.json): set on bank accounts, null on cash
                    "bic": None if type_id == "CASH_IN_HAND" else "HLFXGB21F08",
                    "iban": None if type_id == "CASH_IN_HAND" else "GB29 NWBK 6016 1331 9268 19",
                },
                "ledger_account": self.ledger(code),
                "bank_account_type": link("bank_account_types", type_id, type_id.title()),
                "balance": self.money(100, 50000),
                "nominal_code": code,
                "editable": True,
                "deletable": False,
                "is_active": True,
                "currency": link("currencies", self.currency, self.currency),
                "default_payment_method": link("payment_methods", "BACS", "Bank Transfer"),
                "displayed_as": f"{name} ({code})",
                "main_address": {
                    **link("addresses", self.new_id(), self.country_name),
                    **self.address(),
                },
                "main_contact_person": link("contact_persons", self.new_id(), "Main Contact"),
            }
            self.add("bank_accounts", record, c, u, deletable=False)

    def contacts(self) -> None:
        n = self.count("contacts")
        bulk = 60 if n >= 240 else 0
        times = self.timeline(n, bulk=bulk)
        rng = self.rng
        with_addresses = self.available("addresses")
        with_persons = self.available("contact_persons")
        for i, (c, u) in enumerate(times):
            vendor = rng.random() < 0.3
            name = self.company() if rng.random() < 0.8 else self.person()
            ref = f"{'SUP' if vendor else 'CUS'}{i + 1:05d}"
            type_link = (
                link("contact_types", "VENDOR", "Supplier")
                if vendor
                else link("contact_types", "CUSTOMER", "Customer")
            )
            cid = self.new_id()
            address = self.address()
            address_id = self.new_id()
            address_rec = {
                "id": address_id,
                **address,
                "contact": link("contacts", cid, f"{name} ({ref})"),
                "address_type": link("address_types", "ACCOUNTS", "Accounts"),
                "is_main_address": True,
                "name": "Main Address",
            }
            address_rec["displayed_as"] = display_of("addresses", address_rec)
            contact_name = self.person()
            email = f"{contact_name.split()[0].lower()}@{name.split()[0].lower()}.example.com"
            person_id = self.new_id()
            person = {
                "id": person_id,
                "displayed_as": contact_name,
                "name": contact_name,
                "job_title": rng.choice(("Director", "Accounts", "Owner", "Buyer", "Manager")),
                "telephone": f"0{rng.randint(1000000000, 1999999999)}",
                "mobile": f"07{rng.randint(100000000, 999999999)}",
                "email": email,
                "fax": None,
                "is_main_contact": True,
                "is_preferred_contact": True,
                "contact_person_types": [link("contact_person_types", "ACCOUNTS", "Accounts")],
                "address": link("addresses", address_id, address_rec["displayed_as"]),
            }
            tax_link, _ = self.tax()
            record = {
                "id": cid,
                "name": name,
                "reference": ref,
                "contact_types": [type_link],
                "email": email,
                "notes": rng.choice((None, "Prefers e-mail invoices", "Key account", None)),
                "locale": self.locale.split("-")[0],
                "tax_number": f"{self.country}{rng.randint(100000000, 999999999)}",
                "balance": self.money(0, 20000) if rng.random() < 0.6 else 0.0,
                "credit_limit": Decimal(rng.choice((0, 1000, 5000, 10000))),
                "credit_days": rng.choice((14, 30, 30, 60)),
                "credit_terms": "date_from_invoice",
                "currency": link("currencies", self.currency, self.currency),
                "main_address": {**address_rec, "$path": f"/addresses/{address_id}"},
                "delivery_address": None,
                "main_contact_person": {**person, "$path": f"/contact_persons/{person_id}"},
                "default_sales_ledger_account": None if vendor else self.ledger(4000),
                "default_purchase_ledger_account": self.ledger(5000) if vendor else None,
                "default_sales_tax_rate": tax_link,
                "is_active": rng.random() > 0.05,
                "system": False,
                "deletable": True,
                "gdpr_obfuscated": False,
                "has_unfinished_recurring_invoices": False,
                "cis_registered": False,
                "ni_based": False,
                "gb_based": self.country == "GB",
                "destination_vat_blocking": False,
                "tax_treatment": {
                    "home_tax": True,
                    "eu_tax_registered": False,
                    "eu_not_tax_registered": False,
                    "rest_of_world_tax": False,
                    "is_importer": False,
                },
            }
            self.add("contacts", record, c, u)
            if with_addresses:
                self.add("addresses", address_rec, c, u)
            if with_persons:
                self.add("contact_persons", person, c, u)

    def items(
        self,
        resource: str,
        n: int,
        names: Callable[[int], str],
        price: tuple[float, float],
        item_type: str,
    ) -> None:
        rng = self.rng
        for i, (c, u) in enumerate(self.timeline(n)):
            tax_link, _ = self.tax()
            cost = self.money(*price)
            name = names(i)
            record: dict[str, Any] = {
                "item_code": f"{resource[:3].upper()}-{i + 1:04d}",
                "description": name,
                "purchase_description": name if i % 3 else "",
                "notes": "",  # Sage sends "" for an unset note (recorded, products list)
                "sales_ledger_account": self.ledger(4000 if item_type != "SERVICE" else 4010),
                "purchase_ledger_account": self.ledger(5000),
                "sales_tax_rate": tax_link,
                "purchase_tax_rate": tax_link,
                "usual_supplier": None,
                "cost_price": cost,
                # Sage sends ``active: null`` for some items (recorded, products list)
                "active": (rng.random() > 0.08) if i % 17 != 5 else None,
                "deletable": True,
                "deactivatable": True,
                "used_on_recurring_invoice": False,
                "catalog_item_type": link("catalog_item_types", item_type, item_type.title()),
                "displayed_as": name,
            }
            price_entry = {
                "id": self.new_id(),
                "displayed_as": "Selling Price",
                "created_at": utc_ts(c),
                "updated_at": utc_ts(u),
                "price_name": "Selling Price",
                "price": round(cost * self.factor(1.2, 2.0), 2),
                "price_includes_tax": False,
                "product_sales_price_type": link(
                    "product_sales_price_types", "SELLING_PRICE", "Selling Price"
                ),
            }
            if item_type == "SERVICE":
                record["sales_rates"] = [
                    {
                        **price_entry,
                        "rate_name": "Hourly",
                        "rate": price_entry["price"],
                        "rate_includes_tax": False,
                    }
                ]
            else:
                record["sales_prices"] = [price_entry]
            if resource == "stock_items":
                record.update(
                    {
                        "reorder_level": Decimal(rng.randint(0, 20)),
                        "reorder_quantity": Decimal(rng.randint(10, 100)),
                        "location": f"Aisle {rng.randint(1, 12)}",
                        "barcode": f"{rng.randint(10**12, 10**13 - 1)}",
                        "quantity_in_stock": Decimal(rng.randint(0, 500)),
                        "last_cost_price": cost,
                        "average_cost_price": cost,
                    }
                )
            self.add(resource, record, c, u)

    def products(self) -> None:
        rng = self.rng
        self.items(
            "products",
            self.count("products"),
            lambda i: f"{rng.choice(PRODUCT_ADJ)} {rng.choice(PRODUCT_WORDS)}",
            (2, 400),
            "NON_STOCK_ITEM",
        )

    def services(self) -> None:
        rng = self.rng
        self.items(
            "services",
            self.count("services"),
            lambda i: f"{rng.choice(SERVICES)} ({rng.choice(('Hourly', 'Daily', 'Fixed'))})",
            (30, 900),
            "SERVICE",
        )

    def stock_items(self) -> None:
        rng = self.rng
        self.items(
            "stock_items",
            self.count("stock_items"),
            lambda i: f"{rng.choice(PRODUCT_ADJ)} {rng.choice(PRODUCT_WORDS)} (stock)",
            (1, 150),
            "STOCK_ITEM",
        )

    def customers(self, vendor: bool) -> list[dict[str, Any]]:
        if vendor in self._customer_cache:
            return self._customer_cache[vendor]
        wanted = "VENDOR" if vendor else "CUSTOMER"
        found = [
            r for r in self.records.get("contacts", ()) if r["contact_types"][0]["id"] == wanted
        ]
        result = found or list(self.records.get("contacts", ()))
        self._customer_cache[vendor] = result
        return result

    def artefacts(self, resource: str) -> None:
        rng = self.rng
        n = self.count(resource)
        purchase = resource.startswith("purchase")
        quote = resource in ("sales_quotes", "sales_estimates")
        bulk = 0
        if resource == "sales_invoices":
            bulk = max(201, n // 4) if n >= 400 else n // 4
        contacts = self.customers(purchase)
        lines_key = lines_field(resource) or "invoice_lines"
        number_key = number_field(resource)
        prefix = {
            "sales_invoices": "SI-",
            "sales_credit_notes": "SCN-",
            "sales_quotes": "SQ-",
            "sales_estimates": "SE-",
            "sales_corrective_invoices": "SCI-",
        }.get(resource, "")
        items: list[dict[str, Any] | None] = [
            *self.links.get("services", []),
            *self.links.get("products", []),
        ] or [None]
        type_id = resource.upper().removesuffix("S")
        for i, (c, u) in enumerate(self.timeline(n, bulk=bulk)):
            contact = rng.choice(contacts) if contacts else None
            lines = []
            net_total = tax_total = Decimal(0)
            for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
                qty = Decimal(rng.choice((1, 1, 2, 3, 5, 10)))
                unit = self.money(5, 800)
                net = round(qty * unit, 2)
                tax_link, pct = self.tax()
                tax_amount = round(net * pct / 100, 2)
                item = rng.choice(items)
                description = item["displayed_as"] if item else "Goods"
                line: dict[str, Any] = {
                    "id": self.new_id(),
                    "displayed_as": description,
                    "description": description,
                    "ledger_account": self.ledger(5000 if purchase else 4000),
                    "quantity": qty,
                    "unit_price": unit,
                    "net_amount": net,
                    "tax_rate": tax_link,
                    "tax_amount": tax_amount,
                    "total_amount": round(net + tax_amount, 2),
                    "discount_amount": 0.0,
                    "unit_price_includes_tax": False,
                }
                if item:
                    kind = item["$path"].split("/")[1]
                    line["product" if kind != "services" else "service"] = item
                lines.append(line)
                net_total += net
                tax_total += tax_amount
            total = round(net_total + tax_total, 2)
            if quote:
                status = rng.choice(("DRAFT", "PENDING", "PENDING", "ACCEPTED", "DECLINED"))
            else:
                status = rng.choices(
                    ("DRAFT", "UNPAID", "PART_PAID", "PAID", "VOID"), weights=(3, 25, 7, 60, 5)
                )[0]
            paid = (
                total
                if status == "PAID"
                else (
                    round(total * self.factor(0.1, 0.9), 2) if status == "PART_PAID" else Decimal(0)
                )
            )
            date = utc_date(c)
            due = utc_date(c + 30 * 86400)
            number = f"{prefix}{i + 1}" if prefix else None
            status_name = next(v for k, v in LOOKUPS["artefact_statuses"] if k == status)
            record: dict[str, Any] = {
                "contact": link("contacts", contact["id"], contact["displayed_as"])
                if contact
                else None,
                "contact_name": contact["name"] if contact else None,
                "contact_reference": contact["reference"] if contact else None,
                "date": date,
                "due_date": due,
                "expiry_date": due,
                "reference": f"PO{rng.randint(1000, 99999)}" if rng.random() < 0.5 else None,
                "vendor_reference": f"INV-{rng.randint(10000, 99999)}" if purchase else None,
                "notes": None,
                "net_amount": round(net_total, 2),
                "tax_amount": round(tax_total, 2),
                "total_amount": total,
                "total_quantity": sum(line["quantity"] for line in lines),
                "total_paid": paid,
                "outstanding_amount": round(total - paid, 2) if status != "VOID" else 0.0,
                "currency": link("currencies", self.currency, self.currency),
                "exchange_rate": 1.0,
                "inverse_exchange_rate": 1.0,
                "base_currency_net_amount": round(net_total, 2),
                "base_currency_tax_amount": round(tax_total, 2),
                "base_currency_total_amount": total,
                "base_currency_outstanding_amount": round(total - paid, 2),
                "status": link("artefact_statuses", status, status_name),
                "sent": status != "DRAFT",
                "sent_by_email": False,
                "editable": status in ("DRAFT", "UNPAID", "PENDING"),
                "void_reason": "Raised in error" if status == "VOID" else None,
                "transaction_type": link(
                    "transaction_types", type_id, type_id.replace("_", " ").title()
                ),
                "main_address": _plain_address(contact.get("main_address")) if contact else None,
                lines_key: lines,
            }
            if number_key:
                record[number_key] = number
                record[f"{number_key}_prefix"] = prefix
            if resource == "sales_corrective_invoices":
                record["corrective_reason_code"] = link(
                    "corrective_reason_codes", "R4", "Resto de causas"
                )
            if not number_key and not record.get("reference"):
                record["reference"] = f"{resource[:2].upper()}{i + 1:06d}"
            record["displayed_as"] = display_of(resource, record)
            self.add(resource, record, c, u, deletable=quote or status == "DRAFT" or purchase)

    def quick_entries(self, resource: str) -> None:
        rng = self.rng
        purchase = resource.startswith("purchase")
        contacts = self.customers(purchase)
        for i, (c, u) in enumerate(self.timeline(self.count(resource))):
            contact = rng.choice(contacts) if contacts else None
            tax_link, pct = self.tax()
            net = self.money(10, 2000)
            tax_amount = round(net * pct / 100, 2)
            record = {
                "quick_entry_type": link("quick_entry_types", "INVOICE", "Invoice"),
                "contact": link("contacts", contact["id"], contact["displayed_as"])
                if contact
                else None,
                "contact_name": contact["name"] if contact else None,
                "contact_reference": contact["reference"] if contact else None,
                "date": utc_date(c),
                "due_date": utc_date(c + 30 * 86400),
                "reference": f"QE{i + 1:05d}",
                "ledger_account": self.ledger(5000 if purchase else 4000),
                "details": rng.choice(SERVICES),
                "net_amount": net,
                "tax_rate": tax_link,
                "tax_amount": tax_amount,
                "total_amount": round(net + tax_amount, 2),
                "outstanding_amount": round(net + tax_amount, 2),
                "currency": link("currencies", self.currency, self.currency),
                "exchange_rate": 1.0,
                "status": link("artefact_statuses", "UNPAID", "Unpaid"),
                "trade_of_asset": False,
                "migrated": False,
            }
            self.add(resource, record, c, u)

    def payment_common(self, c: int, purchase: bool) -> dict[str, Any]:
        contacts = self.customers(purchase)
        contact = self.rng.choice(contacts) if contacts else None
        return {
            "contact": link("contacts", contact["id"], contact["displayed_as"])
            if contact
            else None,
            "bank_account": self.pick("bank_accounts"),
            "payment_method": self.pick("payment_methods"),
            "date": utc_date(c),
            "currency": link("currencies", self.currency, self.currency),
            "exchange_rate": 1.0,
            "editable": True,
            "deletable": True,
        }

    def contact_payments(self) -> None:
        rng = self.rng
        invoices = self.links.get("sales_invoices", [])
        for i, (c, u) in enumerate(self.timeline(self.count("contact_payments"))):
            purchase = rng.random() < 0.3
            amount = self.money(20, 5000)
            record = self.payment_common(c, purchase)
            type_id = "VENDOR_PAYMENT" if purchase else "CUSTOMER_RECEIPT"
            record.update(
                {
                    "transaction_type": link("transaction_types", type_id, type_id.title()),
                    "net_amount": amount,
                    "tax_amount": 0.0,
                    "total_amount": amount,
                    "base_currency_net_amount": amount,
                    "base_currency_total_amount": amount,
                    "reference": f"PAY{i + 1:06d}",
                    "payment_on_account": None,
                    "allocated_artefacts": [
                        {
                            "id": self.new_id(),
                            "artefact": rng.choice(invoices),
                            "amount": amount,
                            "discount": 0.0,
                        }
                    ]
                    if invoices and not purchase
                    else [],
                }
            )
            self.add("contact_payments", record, c, u)

    def contact_allocations(self) -> None:
        for i, (c, u) in enumerate(self.timeline(self.count("contact_allocations"))):
            record = self.payment_common(c, False)
            invoice = self.pick("sales_invoices")
            note = self.pick("sales_credit_notes")
            amount = self.money(10, 500)
            record.update(
                {
                    "transaction_type": link(
                        "transaction_types", "CUSTOMER_ALLOCATION", "Customer Allocation"
                    ),
                    "allocated_artefacts": [
                        a
                        for a in (
                            {"id": self.new_id(), "artefact": invoice, "amount": amount},
                            {"id": self.new_id(), "artefact": note, "amount": -amount},
                        )
                        if a["artefact"]
                    ],
                    "displayed_as": f"Allocation {i + 1}",
                }
            )
            self.add("contact_allocations", record, c, u)

    def other_payments(self) -> None:
        rng = self.rng
        for i, (c, u) in enumerate(self.timeline(self.count("other_payments"))):
            receipt = rng.random() < 0.3
            record = self.payment_common(c, not receipt)
            tax_link, pct = self.tax()
            net = self.money(5, 1500)
            tax_amount = round(net * pct / 100, 2)
            type_id = "OTHER_RECEIPT" if receipt else "OTHER_PAYMENT"
            record.update(
                {
                    "transaction_type": link("transaction_types", type_id, type_id.title()),
                    "net_amount": net,
                    "tax_amount": tax_amount,
                    "total_amount": round(net + tax_amount, 2),
                    "reference": f"OP{i + 1:05d}",
                    "payment_lines": [
                        {
                            "id": self.new_id(),
                            "ledger_account": self.ledger(7200, 7400, 7500),
                            "details": rng.choice(("Electricity", "Train tickets", "Stationery")),
                            "tax_rate": tax_link,
                            "net_amount": net,
                            "tax_amount": tax_amount,
                            "total_amount": round(net + tax_amount, 2),
                        }
                    ],
                }
            )
            self.add("other_payments", record, c, u)

    def bank_transfers(self) -> None:
        for i, (c, u) in enumerate(self.timeline(self.count("bank_transfers"))):
            banks = self.links.get("bank_accounts", [])
            record = {
                "transaction_type": link("transaction_types", "BANK_TRANSFER", "Bank Transfer"),
                "from_bank_account": banks[0] if banks else None,
                "to_bank_account": banks[1 % len(banks)] if banks else None,
                "date": utc_date(c),
                "reference": f"TRF{i + 1:04d}",
                "amount": self.money(100, 10000),
                "description": "Transfer to savings",
            }
            self.add("bank_transfers", record, c, u)

    def bank_deposits(self) -> None:
        for i, (c, u) in enumerate(self.timeline(self.count("bank_deposits"))):
            banks = self.links.get("bank_accounts", [])
            cash = self.money(0, 800)
            cheque = self.money(0, 3000)
            record = {
                "transaction_type": link("transaction_types", "BANK_DEPOSIT", "Bank Deposit"),
                "from_bank_account": banks[-1] if banks else None,
                "to_bank_account": banks[0] if banks else None,
                "date": utc_date(c),
                "reference": f"DEP{i + 1:04d}",
                "cash_amount": cash,
                "cheque_amount": cheque,
                "total_amount": round(cash + cheque, 2),
            }
            self.add("bank_deposits", record, c, u)

    def journals(self) -> None:
        for i, (c, u) in enumerate(self.timeline(self.count("journals"))):
            amount = self.money(50, 5000)
            record = {
                "transaction_type": link("transaction_types", "JOURNAL", "Journal"),
                "date": utc_date(c),
                "reference": f"JNL{i + 1:04d}",
                "description": self.rng.choice(
                    ("Depreciation", "Accrual", "Prepayment", "Wages", "Correction")
                ),
                "total": amount,
                "journal_code": self.pick("journal_codes"),
                "migrated": False,
                "journal_lines": [
                    {
                        "id": self.new_id(),
                        "ledger_account": self.ledger(8000, 6000),
                        "debit": amount,
                        "credit": 0.0,
                        "details": "Debit",
                        "include_on_tax_return": False,
                    },
                    {
                        "id": self.new_id(),
                        "ledger_account": self.ledger(9998),
                        "debit": 0.0,
                        "credit": amount,
                        "details": "Credit",
                        "include_on_tax_return": False,
                    },
                ],
            }
            self.add("journals", record, c, u)

    def transactions(self) -> None:
        rng = self.rng
        types = [k for k, _ in LOOKUPS["transaction_types"]]
        for i, (c, u) in enumerate(self.timeline(self.count("transactions"))):
            type_id = rng.choice(types)
            total = self.money(5, 5000)
            record = {
                "date": utc_date(c),
                "deleted": False,
                "reference": f"TX{i + 1:06d}",
                "total": total,
                "total_in_transaction_currency": total,
                "contact": self.pick("contacts"),
                "transaction_type": link(
                    "transaction_types", type_id, type_id.replace("_", " ").title()
                ),
                "audit_trail_id": str(i + 1),
                "number_of_attachments": "0",
            }
            self.add("transactions", record, c, u)

    def ledger_entries(self) -> None:
        rng = self.rng
        for i, (c, u) in enumerate(self.timeline(self.count("ledger_entries"))):
            amount = self.money(5, 5000)
            debit = rng.random() < 0.5
            record = {
                "date": utc_date(c),
                "credit": 0.0 if debit else amount,
                "debit": amount if debit else 0.0,
                "ledger_account": self.pick("ledger_accounts"),
                "transaction": self.pick("transactions"),
                "contact": self.pick("contacts") if rng.random() < 0.7 else None,
                "deleted": False,
                "tax_rate": self.tax()[0],
                "description": rng.choice(("Sales", "Purchase", "Receipt", "Payment", "Journal")),
                "displayed_as": f"Ledger entry {i + 1}",
            }
            self.add("ledger_entries", record, c, u)

    def attachments(self) -> None:
        for i, (c, u) in enumerate(self.timeline(self.count("attachments"))):
            content = f"Sandbox attachment {i + 1} of business {self.position}\n".encode()
            invoice = self.pick("sales_invoices")
            record = {
                "file_name": f"receipt-{i + 1:04d}.txt",
                "mime_type": "text/plain",
                "description": "Scanned receipt",
                "file_extension": ".txt",
                "file_size": len(content),
                "attachment_context_type": link(
                    "attachment_context_types", "SALES_INVOICE", "Sales Invoice"
                ),
                "attachment_context": invoice,
                "is_public": False,
            }
            rec = self.add("attachments", record, c, u)
            rec_id = rec["id"]
            self.seeder.files.append((self.id, rec_id, base64.b64encode(content)))

    def stock_movements(self) -> None:
        for i, (c, u) in enumerate(self.timeline(self.count("stock_movements"))):
            record = {
                "date": utc_date(c),
                "details": f"Stock count adjustment {i + 1}",
                "quantity": Decimal(self.rng.randint(-20, 50)),
                "cost_price": self.money(1, 100),
                "stock_item": self.pick("stock_items"),
                "movement_number": i + 1,
            }
            self.add("stock_movements", record, c, u)

    def settings(self) -> None:
        for name, res in catalogue.resources().items():
            if not res.singleton or not self.available(name):
                continue
            record: dict[str, Any] = {"id": name}
            self.fill(name, record)
            if name == "financial_settings":
                record.update(
                    {
                        "base_currency": link("currencies", self.currency, self.currency),
                        "year_end_date": "2026-12-31",
                        "accounts_start_date": utc_date(self.start),
                        "multi_currency_enabled": False,
                        "accounting_type": "accrual",
                    }
                )
            if name == "business_settings":
                record["business_created_at"] = utc_ts(self.start)
            self.add(name, record, None, self.start, deletable=False)

    def generic(self, resource: str, n: int) -> None:
        for c, u in self.timeline(n):
            record: dict[str, Any] = {}
            self.fill(resource, record)
            self.add(resource, record, c, u)

    def fill(self, resource: str, record: dict[str, Any]) -> None:
        """Fill top-level fields the record lacks from their schema type and name."""
        props = catalogue.list_schema(resource).get("properties", {})
        rng = self.rng
        for key, spec in props.items():
            if key in record or key in (
                "id",
                "displayed_as",
                "$path",
                "created_at",
                "updated_at",
                "deleted_at",
                "links",
            ):
                continue
            types = spec.get("type", [])
            kinds = [t for t in (types if isinstance(types, list) else [types]) if t != "null"]
            kind = kinds[0] if kinds else None
            value: Any = None
            if wire.is_decimal(spec):
                value = self.money(0, 1000)
            elif kind == "object" and "id" in spec.get("properties", {}):
                target = ref_resource(key)
                value = self.pick(target) if target else None
            elif kind == "string":
                if "examples" in spec:
                    value = rng.choice([e for e in spec["examples"] if e is not None] or [None])
                elif spec.get("format") == "date":
                    value = utc_date(rng.randint(self.start, self.seeder.end))
                elif spec.get("format") == "date-time":
                    value = utc_ts(rng.randint(self.start, self.seeder.end))
                elif key.endswith("name"):
                    value = self.company()
                elif key in ("reference", "code") or key.endswith("_code"):
                    value = f"{key[:3].upper()}{rng.randint(100, 999)}"
                elif key in ("description", "details", "notes"):
                    value = rng.choice(SERVICES)
                elif key.endswith("number"):
                    value = str(rng.randint(100000, 999999))
            elif kind == "boolean":
                value = key.startswith(("is_", "active", "visible", "enabled")) or key == "active"
            elif kind == "integer":
                value = rng.randint(0, 30)
            if value is not None:
                record[key] = value
        if "name" in props and "name" not in record:
            record["name"] = self.company()


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
                    biz = _Business(self, position, business_id)
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

    def _insert_business(self, conn: sqlite3.Connection, biz: _Business) -> None:
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
