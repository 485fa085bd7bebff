"""The seeder's books and the order of generation: journals, transactions, ledger entries,
attachments, stock movements, and ``generate``."""

from __future__ import annotations

import base64
from collections.abc import Callable
from decimal import Decimal

from tap_sage.sage import catalogue
from tap_sage.sandbox.model import (
    link,
    utc_date,
)
from tap_sage.sandbox.seed_data import (
    LOOKUPS,
)
from tap_sage.sandbox.seed_payments import PaymentGenerator


class BusinessGenerator(PaymentGenerator):
    """Journals, transactions, ledger entries, attachments, stock movements; the order."""

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
