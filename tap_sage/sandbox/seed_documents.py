"""The seeder's documents: invoices, credit notes, quotes and estimates, quick entries."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tap_sage.sandbox.model import (
    display_of,
    lines_field,
    link,
    number_field,
    utc_date,
)
from tap_sage.sandbox.seed_business import _plain_address
from tap_sage.sandbox.seed_data import (
    LOOKUPS,
    SERVICES,
)
from tap_sage.sandbox.seed_parties import PartyGenerator


class DocumentGenerator(PartyGenerator):
    """Invoices, credit notes, quotes, estimates and quick entries."""

    def artefacts(self, resource: str) -> None:
        rng = self.rng
        n = self.count(resource)
        purchase = resource.startswith("purchase")
        quote = resource in ("sales_quotes", "sales_estimates")
        bulk = 0
        if resource == "sales_invoices":
            bulk = max(201, n // 4) if n >= 400 else n // 4
        contacts = self.customers(purchase)
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
        for i, (c, u) in enumerate(self.timeline(n, bulk=bulk)):
            contact = rng.choice(contacts) if contacts else None
            lines, net_total, tax_total = self._artefact_lines(items, purchase)
            total = round(net_total + tax_total, 2)
            status, paid = self._artefact_status(quote, total)
            number = f"{prefix}{i + 1}" if prefix else None
            amounts = (net_total, tax_total, total, paid)
            record = self._artefact_record(resource, c, contact, lines, amounts, status)
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

    def _artefact_lines(
        self, items: list[dict[str, Any] | None], purchase: bool
    ) -> tuple[list[dict[str, Any]], Decimal, Decimal]:
        """1-3 lines of goods or services; their net and tax totals."""
        rng = self.rng
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
        return lines, net_total, tax_total

    def _artefact_status(self, quote: bool, total: Decimal) -> tuple[str, Decimal]:
        """A status (quotes: PENDING and the like) and the amount paid."""
        rng = self.rng
        if quote:
            status = rng.choice(("DRAFT", "PENDING", "PENDING", "ACCEPTED", "DECLINED"))
        else:
            status = rng.choices(
                ("DRAFT", "UNPAID", "PART_PAID", "PAID", "VOID"), weights=(3, 25, 7, 60, 5)
            )[0]
        paid = (
            total
            if status == "PAID"
            else (round(total * self.factor(0.1, 0.9), 2) if status == "PART_PAID" else Decimal(0))
        )
        return status, paid

    def _artefact_record(
        self,
        resource: str,
        c: int,
        contact: dict[str, Any] | None,
        lines: list[dict[str, Any]],
        amounts: tuple[Decimal, Decimal, Decimal, Decimal],
        status: str,
    ) -> dict[str, Any]:
        """The fields of a document (its status link set by the caller)."""
        rng = self.rng
        net_total, tax_total, total, paid = amounts
        purchase = resource.startswith("purchase")
        date = utc_date(c)
        due = utc_date(c + 30 * 86400)
        status_name = next(v for k, v in LOOKUPS["artefact_statuses"] if k == status)
        type_id = resource.upper().removesuffix("S")
        lines_key = lines_field(resource) or "invoice_lines"
        return {
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
