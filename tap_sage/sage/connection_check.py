"""The connection test: credentials, businesses, and which resources each business can reach.

``check(config)`` never raises for a connection problem: it returns a ``ConnectionReport``
whose ``ok`` says whether a sync can work, ``error`` names the cause and the fix when it
cannot, and ``businesses`` says per business its country, edition, subscription, and which
catalogue resources Sage's documentation puts in its country and edition
(``unavailable`` otherwise) and, of those, which answered a cheap probe (``GET
<resource>?items_per_page=1``): ``reachable``, ``denied`` (403: role or edition) or
``failed``. Only a bad setting (``SageConfigError``) is raised, before any network call.

Used by ``sage-auth test`` and by the executables' connection tests.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tap_sage.sage import catalogue
from tap_sage.sage.errors import (
    SageAccessDenied,
    SageAPIError,
    SageAuthError,
    SageConfigError,
    SageError,
    SageNotFound,
    SageProxyError,
    SageSubscriptionInactive,
)
from tap_sage.sage.settings import ConnectionSettings

if TYPE_CHECKING:
    from tap_sage.sage.client import SageClient

#: Resources probed with ``probe="sample"`` (when documented for the business).
SAMPLE_RESOURCES = (
    "contacts",
    "ledger_accounts",
    "sales_invoices",
    "purchase_invoices",
    "bank_accounts",
    "products",
    "business_settings",
)
EDITIONS = ("Start", "Standard", "Plus")
#: Sage tells editions by subscription id, not by name (NOTES.md, "Editions").
EDITION_OF_SUBSCRIPTION = {
    "START": "Start",
    "MICRO": "Start",
    "ACCOUNTS": "Standard",
    "ACCOUNTING_10": "Standard",
    "ACCOUNTING": "Plus",
}
#: Statuses of a live subscription: ``paying``, or a trial (NOTES.md, "Editions").
LIVE_STATUSES = frozenset({"paying", "trial", "trialing", "in_trial", "free_trial"})
#: Parallel ``GET /businesses/{id}`` of ``detailed_businesses``.
DETAIL_CONCURRENCY = 8


def detailed_businesses(client: Any) -> list[dict[str, Any]]:
    """Every business the connection reaches, with its attributes. Sage's ``/businesses``
    lists only ``id``, ``displayed_as`` and ``$path`` (recorded/businesses_list.json), so
    country and subscriptions come from ``GET /businesses/{id}`` of each."""
    items = [dict(b) for b in client.businesses()]
    wanting = [b for b in items if b.get("id") and "subscriptions" not in b]

    def detail(item: dict[str, Any]) -> None:
        item.update(client.get_json(f"/businesses/{item['id']}"))

    if wanting:
        with ThreadPoolExecutor(max_workers=min(DETAIL_CONCURRENCY, len(wanting))) as pool:
            list(pool.map(detail, wanting))
    return items


def edition_of(subscriptions: list[Mapping[str, Any]]) -> str | None:
    """The edition (Start | Standard | Plus) of a business's subscriptions: by id, else (an id
    this module does not know) by the last word of its name."""
    for sub in subscriptions:
        found = EDITION_OF_SUBSCRIPTION.get(str(sub.get("id") or "").upper())
        if found:
            return found
    for sub in subscriptions:
        name = str(sub.get("displayed_as") or "")
        if name and name.split()[-1] in EDITIONS:
            return name.split()[-1]
    return None


def describe_business(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``{id, name, country, edition, subscription, active}`` of a business (as ``GET
    /businesses/{id}`` answers)."""
    country_raw = raw.get("country")
    country = (
        str(country_raw.get("id") or "")
        if isinstance(country_raw, Mapping)
        else str(country_raw or "")
    ).upper() or None
    subscriptions = [s for s in raw.get("subscriptions") or [] if isinstance(s, Mapping)]
    subscription = subscriptions[0] if subscriptions else {}
    name = str(subscription.get("displayed_as") or "") or None
    edition = edition_of(subscriptions)
    active_values = [s.get("active") for s in subscriptions if s.get("active") is not None]
    if not active_values:  # no ``active`` flag: a live status says it
        active_values = [
            str(s["status"]).lower() in LIVE_STATUSES for s in subscriptions if s.get("status")
        ]
    active: bool | None = any(bool(v) for v in active_values) if active_values else None
    return {
        "id": str(raw.get("id") or ""),
        "name": str(raw.get("name") or raw.get("displayed_as") or ""),
        "country": country,
        "edition": edition,
        "subscription": name,
        "subscription_id": subscription.get("id"),
        "subscription_status": subscription.get("status"),
        "active": active,
    }


@dataclass
class BusinessReport:
    """What one business can do."""

    id: str
    name: str
    country: str | None
    edition: str | None
    subscription: str | None
    active: bool | None
    subscription_id: str | None = None  # Sage's id: START, MICRO, ACCOUNTS, ACCOUNTING_10, ...
    ok: bool = True
    problem: str | None = None
    reachable: list[str] = field(default_factory=list)
    denied: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    unavailable: list[str] = field(default_factory=list)
    unprobed: list[str] = field(default_factory=list)


@dataclass
class ConnectionReport:
    """The outcome of ``check``. ``to_dict()`` is JSON-ready; ``lines()`` is for people."""

    ok: bool
    connection_name: str
    mode: str
    token_store: str | None
    error: dict[str, str] | None = None
    token: dict[str, Any] = field(default_factory=dict)
    businesses: list[BusinessReport] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (no token, no secret)."""
        return asdict(self)

    def lines(self) -> list[str]:
        """A human-readable report."""
        out = [
            f"Connection {self.connection_name!r} (initiate_oauth {self.mode}): "
            + ("OK" if self.ok else "FAILED")
        ]
        if self.token_store:
            out.append(f"  token store: {self.token_store}")
        for key, value in self.token.items():
            out.append(f"  {key.replace('_', ' ')}: {value}")
        if self.error:
            out.append(f"  error ({self.error['code']}): {self.error['message']}")
            if self.error.get("fix"):
                out.append(f"  fix: {self.error['fix']}")
        for b in self.businesses:
            edition = f"{b.edition} edition" if b.edition else "edition unknown"
            sub = f" (subscription {b.subscription_id})" if b.subscription_id else ""
            where = " ".join(x for x in (b.country, edition + sub) if x)
            state = "OK" if b.ok else "NOT USABLE"
            active = "" if b.active is None else (" active" if b.active else " INACTIVE")
            out.append(f"  business {b.name} [{b.id}] {where}{active}: {state}")
            if b.problem:
                out.append(f"    problem: {b.problem}")
            if b.reachable:
                out.append(f"    reachable ({len(b.reachable)}): {', '.join(b.reachable)}")
            for name, why in b.denied.items():
                out.append(f"    denied: {name}: {why}")
            for name, why in b.failed.items():
                out.append(f"    failed: {name}: {why}")
            if b.unavailable:
                out.append(
                    f"    not offered in {b.country} {b.edition or ''} ({len(b.unavailable)}): "
                    + ", ".join(b.unavailable)
                )
            if b.unprobed:
                out.append(f"    documented, not probed ({len(b.unprobed)})")
        return out


def _iso(epoch: Any) -> str | None:
    if not epoch:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(epoch)))


def token_summary(client: Any) -> dict[str, Any]:
    """Expiry times of the connection's tokens (never a token)."""
    from tap_sage.sage.auth import RotatingTokenSource

    tokens = getattr(client, "tokens", None)
    if not isinstance(tokens, RotatingTokenSource):
        return {}
    data = tokens.store.read()
    return {
        "access_token_expires_at": _iso(data.get("access_token_expires_at")),
        "refresh_token_expires_at": _iso(data.get("refresh_token_expires_at")),
        "last_refresh_at": _iso(data.get("refreshed_at")),
        "refreshes": int(data.get("refresh_count") or 0),
    }


def _probe_targets(
    business: BusinessReport, probe: str
) -> tuple[list[catalogue.Resource], list[str], list[str]]:
    targets: list[catalogue.Resource] = []
    unavailable: list[str] = []
    unprobed: list[str] = []
    for name, res in catalogue.resources().items():
        if not (res.list or res.singleton):
            continue
        if business.country and not res.available_in(business.country, business.edition):
            unavailable.append(name)
        elif probe == "all" or (probe == "sample" and name in SAMPLE_RESOURCES):
            targets.append(res)
        else:
            unprobed.append(name)
    return targets, unavailable, unprobed


def _probe(client: Any, business_id: str, res: catalogue.Resource) -> tuple[str, str, str]:
    """``(resource, outcome, detail)``; outcome is reachable | denied | failed | inactive."""
    params = None if res.singleton else {"items_per_page": 1}
    try:
        client.request("GET", res.path, business_id=business_id, params=params, expected=(200,))
    except SageSubscriptionInactive as exc:
        return res.name, "inactive", exc.fix
    except SageAccessDenied as exc:
        return res.name, "denied", f"403 {exc.data_code or ''}".strip()
    except SageNotFound:
        return res.name, "failed", "404 not found"
    except SageAPIError as exc:
        return res.name, "failed", f"{exc.status} {exc.data_code or exc.sage_message or ''}".strip()
    return res.name, "reachable", ""


def check(
    config: Mapping[str, Any] | ConnectionSettings,
    *,
    probe: str = "all",
    business_ids: Iterable[str] | None = None,
) -> ConnectionReport:
    """Test a connection: credentials, businesses, and per business what it can reach.

    ``probe``: ``"all"`` (every documented resource, ``check_concurrency`` at a time),
    ``"sample"`` (a few common ones) or ``"none"`` (documentation only).
    ``business_ids`` limits the check to those businesses.
    """
    from tap_sage.sage.client import SageClient

    started = time.monotonic()
    settings = (
        config if isinstance(config, ConnectionSettings) else ConnectionSettings.from_config(config)
    )
    report = ConnectionReport(
        ok=False,
        connection_name=settings.connection_name,
        mode=settings.initiate_oauth.value,
        token_store=None if not settings.initiate_oauth.rotates else settings.token_store_display,
    )
    wanted = set(business_ids) if business_ids else None
    try:
        client = SageClient.for_config(settings)
        raw = detailed_businesses(client)
        report.token = token_summary(client)
        report.businesses = _business_reports(raw, wanted)
        _probe_businesses(client, settings, report, probe)
        _conclude(report, wanted)
    except SageConfigError:
        raise
    except SageError as exc:
        report.error = _error_of(exc)
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _business_reports(
    raw: Iterable[Mapping[str, Any]], wanted: set[str] | None
) -> list[BusinessReport]:
    """One report per business the token reaches (of ``wanted``, if given); an inactive
    subscription makes its business not ok, with the fix."""
    out: list[BusinessReport] = []
    for item in raw:
        info = describe_business(item)
        if wanted is not None and info["id"] not in wanted:
            continue
        b = BusinessReport(
            id=info["id"],
            name=info["name"],
            country=info["country"],
            edition=info["edition"],
            subscription=info["subscription"],
            active=info["active"],
            subscription_id=info["subscription_id"],
        )
        out.append(b)
        if b.active is False:
            b.ok = False
            b.problem = (
                f"its subscription ({b.subscription or 'unknown'}, status "
                f"{info['subscription_status'] or 'inactive'}) is not active: renew it in "
                "Sage, or leave this business out"
            )
    return out


def _probe_businesses(
    client: SageClient, settings: ConnectionSettings, report: ConnectionReport, probe: str
) -> None:
    """Probe what each usable business reaches, ``check_concurrency`` requests at a time."""
    jobs: list[tuple[BusinessReport, catalogue.Resource]] = []
    for b in report.businesses:
        if not b.ok:
            continue
        targets, b.unavailable, b.unprobed = _probe_targets(b, probe)
        jobs.extend((b, res) for res in targets)
    with ThreadPoolExecutor(max_workers=settings.check_concurrency) as pool:
        results = list(pool.map(lambda j: (j[0], _probe(client, j[0].id, j[1])), jobs))
    for b, (name, outcome, detail) in results:
        if outcome == "reachable":
            b.reachable.append(name)
        elif outcome == "denied":
            b.denied[name] = detail
        elif outcome == "inactive":
            b.ok = False
            b.problem = detail
        else:
            b.failed[name] = detail
    for b in report.businesses:
        if b.ok and jobs and not b.reachable and any(j[0] is b for j in jobs):
            b.ok = False
            b.problem = "no probed resource answered; see denied/failed"


def _conclude(report: ConnectionReport, wanted: set[str] | None) -> None:
    """The report's verdict: ok, or the one error that says why not and what to do."""
    if wanted is not None and (missing := wanted - {b.id for b in report.businesses}):
        report.error = {
            "code": "business_not_found",
            "message": "the token cannot reach business(es) " + ", ".join(sorted(missing)),
            "fix": "check the business ids (this report lists the reachable ones), or log "
            "in as a user who has access to them",
        }
    elif not report.businesses:
        report.error = {
            "code": "no_business",
            "message": "the credentials work but reach no business",
            "fix": "log in (`sage-auth login`) as a Sage user who has a business",
        }
    elif not any(b.ok for b in report.businesses):
        report.error = {
            "code": "no_usable_business",
            "message": "no business of this connection is usable (see each business)",
            "fix": "follow the problem given for each business",
        }
    else:
        report.ok = True


def _error_of(exc: SageError) -> dict[str, str]:
    """A failed check's error: code, message and fix, from what went wrong."""
    if isinstance(exc, SageAuthError):
        return {"code": exc.code, "message": exc.message, "fix": exc.fix}
    if isinstance(exc, SageProxyError):
        return {"code": "proxy", "message": f"the proxy {exc.proxy} {exc.problem}", "fix": exc.fix}
    if isinstance(exc, SageAPIError):
        return {"code": f"http_{exc.status}", "message": str(exc), "fix": exc.fix}
    return {
        "code": "network",
        "message": str(exc),
        "fix": "check the network, advanced_config.api_url and the proxy settings",
    }
