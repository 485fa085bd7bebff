"""The seeder's money movements: contact payments and allocations, other payments, bank
transfers and deposits."""

from __future__ import annotations

from typing import Any

from tap_sage.sandbox.model import (
    link,
    utc_date,
)
from tap_sage.sandbox.seed_documents import DocumentGenerator


class PaymentGenerator(DocumentGenerator):
    """Payments, allocations, transfers and deposits."""

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
