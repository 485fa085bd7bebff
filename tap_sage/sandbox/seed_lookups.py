"""The seeder's reference records: lookups, ledger accounts, tax rates, bank accounts,
settings singletons, and records filled from their schema."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tap_sage.sage import catalogue, wire
from tap_sage.sandbox.model import (
    COUNTRIES,
    link,
    ref_resource,
    utc_date,
    utc_ts,
)
from tap_sage.sandbox.seed_business import BusinessBase
from tap_sage.sandbox.seed_data import (
    CHART,
    CURRENCIES,
    EXTRA_COUNTRIES,
    LOOKUPS,
    REGIONS,
    SERVICES,
    TAX_RATES,
)


class LookupGenerator(BusinessBase):
    """Reference records: lookups, ledger accounts, tax rates, bank accounts, singletons."""

    def lookups(self) -> None:
        self._places()
        self._catalogue_lookups()
        self._exchange_rates()

    def _places(self) -> None:
        """Countries, currencies, address regions and tax types."""
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

    def _catalogue_lookups(self) -> None:
        """The fixed lookup lists (statuses, types, ...)."""
        t0 = self.start
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

    def _exchange_rates(self) -> None:
        t0 = self.start
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
