"""Exactly-once for the creates Sage cannot deduplicate, and for interrupted creates.

The exactly-once protocol (see also ``ledger.py``):

* Every POST to a resource with idempotency carries ``idempotency_id`` = hash(business, stream,
  source key, generation). A retry after a timeout or a 500, or a re-run after a crash, sends the
  same id and Sage answers with the record it already made. The Sage id is committed to the
  ledger as soon as Sage answers; a re-run then finds it and updates instead of creating.
* A POST Sage cannot deduplicate (no idempotency on the resource, or an action) is preceded by
  a committed ``pending`` intent. A pending intent found later (after a crash, a 5xx or a
  dropped connection) is reconciled by looking the record up in Sage (content match, the
  document's status, or the journal's reference) before anything is sent again.
* STATE is only passed on by the SDK after every sink has been drained, and a drain returns only
  when every record of the batch has been applied (or, under ``on_error: continue``, recorded
  as failed): STATE never gets ahead of the writes.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tap_sage.sage.errors import SageAPIError, SageNetworkError
from target_sage.payload import RecordError, dumps
from target_sage.work import Call, WorkItem

if TYPE_CHECKING:
    from tap_sage.sage.catalogue import Resource
    from target_sage.engine import Engine
    from target_sage.ledger import Entry

LOGGER = logging.getLogger("target_sage")

#: How long Sage remembers an idempotency_id: "For the next 7 days, a repetition of this very
#: same request will return the exact same result" (developer.sage.com/accounting/guides/
#: concepts/idempotency/). An interrupted create older than that (less a margin) is looked up
#: instead of sent again.
IDEMPOTENCY_WINDOW = 7 * 86400.0
IDEMPOTENCY_MARGIN = 3600.0
#: Leeway of a lookup before the intent's time (both in Sage's time; the Date header has a
#: resolution of one second).
LOOKUP_LEEWAY = 60.0


def post_create(
    engine: Engine,
    item: WorkItem,
    res: Resource,
    ctx: Call,
    body: dict[str, Any],
    since: float | None,
) -> str:
    """POST the create: retried blindly only where Sage's idempotency guide promises
    idempotency; else after each ambiguous failure a lookup first."""
    bid = engine.business_id
    inner = body[res.wrapper or ""]
    try:
        if res.idempotency:
            response = engine.call(
                "POST", res.path, ctx, json_body=body, retry=True, expected=(200, 201)
            )
            return str(response.json()["id"])
        answer = ambiguous_post(
            engine, res.path, ctx, body, lambda: find_created(engine, res, inner, ctx, since=since)
        )
        return str(answer["id"])
    except SageAPIError as exc:
        if exc.data_code == "IdempotencyResourceMismatch":
            engine.ledger.clear_intent(bid, item.stream, item.key)
            raise RecordError(
                item.stream,
                item.key,
                "idempotency_id",
                f"Sage refused the create in `{res.name}`: its idempotency_id was used "
                "before for another resource (IdempotencyResourceMismatch). The stream "
                "was routed elsewhere by an earlier run (`stream_resources`?); route it "
                "back, or use a ledger of its own (`ledger_path`)",
            ) from exc
        if exc.status < 500 and exc.status != 429:
            engine.ledger.clear_intent(bid, item.stream, item.key)
        raise


def within_window(engine: Engine, pending: Entry) -> bool:
    """Whether Sage still remembers the idempotency_id of this pending create."""
    if pending.intent_at is None:
        return False
    return engine.sage_now() - pending.intent_at < IDEMPOTENCY_WINDOW - IDEMPOTENCY_MARGIN


def find_pending(
    engine: Engine, item: WorkItem, res: Resource, ctx: Call, pending: Entry, lookup: bool = False
) -> str | None:
    """The Sage record an interrupted create made, if it can be known without sending it
    again: a lookup of the content it sent, created since its intent (Sage's time).
    Within Sage's idempotency window the POST itself is the lookup (None), unless
    ``lookup`` asks for one anyway (a delete)."""
    if res.idempotency and not lookup and within_window(engine, pending):
        return None
    if not pending.intent_body:
        return None
    sent = json.loads(pending.intent_body, parse_float=decimal.Decimal)
    return find_created(engine, res, sent, ctx, since=pending.intent_at)


def ambiguous_post(
    engine: Engine,
    path: str,
    ctx: Call,
    body: Any | None,
    reconcile: Callable[[], str | None],
) -> dict[str, Any]:
    """A POST Sage cannot deduplicate: after a 5xx, 429 or dropped connection it may still
    have been applied, so ``reconcile`` looks for its effect before any retry. Returns the
    answer's JSON, or ``{"id": <found>}``. As many tries as the connection's max_retries."""
    tries = 1 + engine.client.settings.max_retries
    for attempt in range(tries):
        try:
            response = engine.call(
                "POST", path, ctx, json_body=body, retry=False, expected=(200, 201)
            )
            return dict(response.json())
        except (SageNetworkError, SageAPIError) as exc:
            if isinstance(exc, SageAPIError) and exc.status < 500 and exc.status != 429:
                raise
            LOGGER.warning("POST %s failed (%s); checking whether it was applied", path, exc)
            time.sleep(min(engine.client.settings.max_backoff, 0.5 * 2**attempt))
            found = reconcile()
            if found:
                return {"id": found}
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def find_created(
    engine: Engine, res: Resource, inner: Mapping[str, Any], ctx: Call, since: float | None = None
) -> str | None:
    """The Sage record whose fields match ``inner``, created since ``since`` (Sage's time,
    with a minute's leeway) by Sage's own ``created_at``, and not owned by another source
    record. No local clock is involved."""
    not_before = since - LOOKUP_LEEWAY if since else None
    scalars = {
        k: v
        for k, v in inner.items()
        if isinstance(v, (str, int, float, bool, decimal.Decimal)) and k != "idempotency_id"
    }
    if not scalars:
        return None
    next_path: str | None = res.path
    first: dict[str, Any] = {"attributes": "all", "items_per_page": 200}
    if not_before and "updated_or_created_since" in res.param_names:
        # Only what changed since the intent (Sage's time): a short list, not the resource.
        first["updated_or_created_since"] = time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(not_before)
        )
    params: dict[str, Any] | None = first
    while next_path:
        body = engine.call("GET", next_path, ctx, params=params).json()
        params = None
        items = body.get("$items", []) if isinstance(body, dict) else []
        for item in items:
            created = _timestamp(item.get("created_at"))
            if not_before and created is not None and created < not_before:
                continue
            if all(_same(_read_value(item, k), v) for k, v in scalars.items()) and not (
                engine.ledger.sage_id_taken(engine.business_id, res.name, str(item.get("id")))
            ):
                return str(item["id"])
        next_path = body.get("$next") if isinstance(body, dict) else None
    return None


def lookup_fields(inner: Mapping[str, Any]) -> str:
    """What a lookup needs of a create's body (its scalar fields), as JSON for the ledger."""
    return dumps(
        {
            k: v
            for k, v in inner.items()
            if isinstance(v, (str, int, float, bool, decimal.Decimal)) and k != "idempotency_id"
        },
        sort_keys=True,
    )


def _timestamp(value: Any) -> float | None:
    """Epoch seconds of one of Sage's ISO 8601 timestamps (``created_at``), else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


def _read_value(record: Mapping[str, Any], name: str) -> Any:
    """A write field's value in a read record (``contact_id`` is ``contact.id`` there)."""
    if name in record:
        return record[name]
    if name.endswith("_id"):
        link = record.get(name[:-3])
        if isinstance(link, Mapping):
            return link.get("id")
    return None


def _same(read: Any, sent: Any) -> bool:
    """Whether a value read from Sage is the one sent: decimals compare by value, whichever
    of a JSON number or Sage's decimal string either side is."""
    if read == sent:
        return True
    if isinstance(read, bool) or isinstance(sent, bool) or read is None or sent is None:
        return False
    try:
        return decimal.Decimal(str(read)) == decimal.Decimal(str(sent))
    except decimal.InvalidOperation:
        return False
