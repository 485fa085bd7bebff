"""The seeder's parties and items: contacts (with addresses and contact people), products,
services and stock items."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from tap_sage.sandbox.model import (
    display_of,
    link,
    utc_ts,
)
from tap_sage.sandbox.seed_data import (
    PRODUCT_ADJ,
    PRODUCT_WORDS,
    SERVICES,
)
from tap_sage.sandbox.seed_lookups import LookupGenerator


class PartyGenerator(LookupGenerator):
    """Contacts (with addresses and contact people), products, services, stock items."""

    def contacts(self) -> None:
        n = self.count("contacts")
        bulk = 60 if n >= 240 else 0
        times = self.timeline(n, bulk=bulk)
        with_addresses = self.available("addresses")
        with_persons = self.available("contact_persons")
        for i, (c, u) in enumerate(times):
            record, address_rec, person = self._contact(i)
            self.add("contacts", record, c, u)
            if with_addresses:
                self.add("addresses", address_rec, c, u)
            if with_persons:
                self.add("contact_persons", person, c, u)

    def _contact(self, i: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """The ``i``-th contact, its main address and its main contact person."""
        rng = self.rng
        vendor = rng.random() < 0.3
        name = self.company() if rng.random() < 0.8 else self.person()
        ref = f"{'SUP' if vendor else 'CUS'}{i + 1:05d}"
        type_link = (
            link("contact_types", "VENDOR", "Supplier")
            if vendor
            else link("contact_types", "CUSTOMER", "Customer")
        )
        cid = self.new_id()
        address_id, address_rec = self._contact_address(cid, name, ref)
        person, email = self._contact_person(name, address_id, address_rec)
        tax_link, _ = self.tax()
        head = {
            "id": cid,
            "name": name,
            "reference": ref,
            "contact_types": [type_link],
            "email": email,
        }
        record = self._contact_record(head, vendor, address_rec, person, tax_link)
        return record, address_rec, person

    def _contact_record(
        self,
        head: dict[str, Any],
        vendor: bool,
        address_rec: dict[str, Any],
        person: dict[str, Any],
        tax_link: dict[str, Any] | None,
    ) -> dict[str, Any]:
        rng = self.rng
        return {
            **head,
            "notes": rng.choice((None, "Prefers e-mail invoices", "Key account", None)),
            "locale": self.locale.split("-")[0],
            "tax_number": f"{self.country}{rng.randint(100000000, 999999999)}",
            "balance": self.money(0, 20000) if rng.random() < 0.6 else 0.0,
            "credit_limit": Decimal(rng.choice((0, 1000, 5000, 10000))),
            "credit_days": rng.choice((14, 30, 30, 60)),
            "credit_terms": "date_from_invoice",
            "currency": link("currencies", self.currency, self.currency),
            "main_address": {**address_rec, "$path": f"/addresses/{address_rec['id']}"},
            "delivery_address": None,
            "main_contact_person": {**person, "$path": f"/contact_persons/{person['id']}"},
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

    def _contact_address(self, cid: str, name: str, ref: str) -> tuple[str, dict[str, Any]]:
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
        return address_id, address_rec

    def _contact_person(
        self, name: str, address_id: str, address_rec: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        rng = self.rng
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
        return person, email

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
            self._prices(record, item_type, cost, c, u)
            if resource == "stock_items":
                self._stock_fields(record, cost)
            self.add(resource, record, c, u)

    def _prices(
        self, record: dict[str, Any], item_type: str, cost: Decimal, c: int, u: int
    ) -> None:
        """The selling price (services: an hourly rate) of an item."""
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

    def _stock_fields(self, record: dict[str, Any], cost: Decimal) -> None:
        rng = self.rng
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
