"""The operation of each record on a Sage resource: upsert (create or update), delete, void."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tap_sage.checkpoints import checkpoint
from tap_sage.sage.errors import SageAPIError, SageNotFound
from target_sage.exactly_once import find_pending, lookup_fields, post_create, within_window
from target_sage.ledger import APPLIED, DELETED, PENDING, Entry
from target_sage.payload import (
    RecordError,
    build_body,
    canonical,
    content_fields,
    digest,
    idempotency_id,
    key_text,
    paths,
)
from target_sage.results import Result
from target_sage.versions import newer
from target_sage.work import Call, WorkItem

if TYPE_CHECKING:
    from tap_sage.sage.catalogue import Resource
    from target_sage.engine import Engine

LOGGER = logging.getLogger("target_sage")

#: Intent hash of a create whose content in Sage is unknown (the same idempotency_id went out
#: with two contents): the next run updates whatever Sage holds to the newest.
_UNKNOWN = "?"


def resolve_references(engine: Engine, item: WorkItem, fields: dict[str, Any]) -> None:
    """Replace source keys of other streams by Sage ids, per the `references` setting."""
    for dotted, other in engine.settings.references.get(item.stream, {}).items():
        for container, attr in list(paths(fields, dotted)):
            value = container[attr]
            entry = engine.ledger.get(engine.business_id, other, key_text(value))
            if entry is None or entry.state != APPLIED or not entry.sage_id:
                if engine.settings.dry_run:
                    continue  # a dry run writes nothing: the record may come in this input
                raise RecordError(
                    item.stream,
                    item.key,
                    dotted,
                    f"no record of stream `{other}` with source key {key_text(value)} in the "
                    f"ledger (send `{other}` first, or give the Sage id)",
                )
            container[attr] = entry.sage_id


def why_stale(
    engine: Engine, item: WorkItem, entry: Entry | None, content_hash: str, deleted: bool
) -> str | None:
    """Why this input is older than what Sage holds for the record (None: it is not).

    With ``time_extracted`` on both sides, the older message loses. Without, a content that
    the ledger applied before the one Sage holds now is an older version (a replay)."""
    if entry is None:
        return None
    if newer(entry.version, item.version):
        return (
            f"older than the version Sage holds ({item.version} < {entry.version}, "
            "ledger): not applied"
        )
    if deleted or entry.state != APPLIED or not entry.older_than_held(content_hash):
        return None
    if newer(item.version, entry.version):
        return None  # a newer message going back to an earlier content: apply it
    return "an older version than the one Sage holds (ledger): not applied"


def apply_resource(engine: Engine, item: WorkItem, res: Resource, ctx: Call) -> Result:
    s = engine.settings
    rec = item.record
    deleted = rec.get("_sdc_deleted_at") is not None
    forced = s.operations.get(item.stream)
    fields = copy.deepcopy(content_fields(rec, s.sage_id_field))
    content_hash = digest(canonical(fields))
    bid = engine.business_id
    entry = engine.ledger.get(bid, item.stream, item.key)
    given_id = rec.get(s.sage_id_field)
    known_id = str(given_id) if given_id else None
    from_ledger = False
    if known_id is None and entry is not None and entry.state == APPLIED and entry.sage_id:
        known_id, from_ledger = entry.sage_id, True

    result = result_of(item, ctx, dry_run=s.dry_run)
    if res.singleton:
        ctx.operation = "update"
        if not res.update:
            raise RecordError(item.stream, item.key, None, f"`{res.name}` cannot be updated")
        return update(engine, item, res, ctx, None, fields, content_hash, entry, result)

    operation = "delete" if deleted or forced == "delete" else "upsert"
    stale = why_stale(engine, item, entry, content_hash, operation == "delete")
    if stale is not None and entry is not None:
        return result(operation, "skipped", entry.sage_id, stale)

    if operation == "delete":
        return _apply_delete(engine, item, res, ctx, entry, known_id, result)

    is_update = forced == "update" or (forced != "create" and known_id is not None)
    ctx.operation = "update" if is_update else "create"
    resolve_references(engine, item, fields)
    if is_update:
        if known_id is None:
            raise RecordError(
                item.stream,
                item.key,
                s.sage_id_field,
                "operation is update but no Sage id is known for this source "
                f"key (not in the ledger, no `{s.sage_id_field}` field)",
            )
        return update(
            engine, item, res, ctx, known_id, fields, content_hash, entry, result, from_ledger
        )
    # create (a record deleted by this target and sent again is created again)
    if entry is not None and entry.state == APPLIED and entry.sage_id:
        return result("create", "skipped", entry.sage_id, "already created (ledger)")
    return create(engine, item, res, ctx, fields, content_hash, entry, result)


def result_of(item: WorkItem, ctx: Call, *, dry_run: bool) -> Callable[..., Result]:
    """The result line of an operation on ``item``: ``result(op, outcome, sage_id, msg,
    output)``, with the last answer's HTTP status and request id."""

    def result(
        op: str,
        outcome: str,
        sage_id: str | None = None,
        msg: str | None = None,
        output: dict[str, Any] | None = None,
    ) -> Result:
        return Result(
            item.stream,
            op,
            item.key_display,
            outcome,
            sage_id=sage_id,
            http_status=ctx.status,
            x_request_id=ctx.request_id,
            message=msg,
            output=output,
            dry_run=dry_run,
        )

    return result


def _apply_delete(
    engine: Engine,
    item: WorkItem,
    res: Resource,
    ctx: Call,
    entry: Entry | None,
    known_id: str | None,
    result: Callable[..., Result],
) -> Result:
    """A deletion (a tombstone, or ``operations: delete``) of the record the key names."""
    dry_run, bid = engine.settings.dry_run, engine.business_id
    ctx.operation = "delete"
    if known_id is None and entry is not None and entry.state == PENDING:
        # An interrupted create: find what it made in Sage, if anything, to delete it.
        known_id = None if dry_run else find_pending(engine, item, res, ctx, entry, True)
        if known_id is None and not dry_run:
            engine.ledger.record_deleted(
                bid, item.stream, item.key, res.name, entry.sage_id, item.version
            )
            return result("delete", "skipped", None, "an interrupted create made nothing")
    if known_id is None:
        if entry is not None and entry.state == DELETED:
            if not dry_run:
                engine.ledger.record_version(bid, item.stream, item.key, item.version)
            return result("delete", "skipped", entry.sage_id, "already deleted")
        return result("delete", "skipped", None, "no Sage record known for this key")
    return delete(engine, item, res, ctx, known_id, result)


def create(
    engine: Engine,
    item: WorkItem,
    res: Resource,
    ctx: Call,
    fields: dict[str, Any],
    content_hash: str,
    entry: Entry | None,
    result: Callable[..., Result],
    message: str | None = None,
) -> Result:
    if not res.create:
        raise RecordError(
            item.stream,
            item.key,
            None,
            f"Sage resource `{res.name}` cannot be created (no POST); "
            "only update or delete records it already has",
        )
    generation = entry.generation if entry is not None else 0
    extra = {}
    if res.idempotency:
        extra["idempotency_id"] = idempotency_id(
            engine.business_id, item.stream, item.key, generation
        )
    body, ignored = build_body(
        res.name, "post", fields, stream=item.stream, key=item.key, extra=extra
    )
    warn_ignored(engine, item.stream, ignored)
    if engine.settings.dry_run:
        return result("create", "skipped", None, "dry run: would create")
    pending = entry if entry is not None and entry.state == PENDING else None
    sage_id, holds = _recover_or_post(engine, item, res, ctx, body, content_hash, pending)
    if holds != content_hash:
        # Sage answered with an earlier content (an idempotent replay, an adopted record):
        # bring it to the newest.
        return update(
            engine,
            item,
            res,
            ctx,
            sage_id,
            fields,
            content_hash,
            None,
            result,
            True,
            outcome=("create", "created"),
            message="created by an interrupted run, then updated to the newest content",
        )
    engine.ledger.record_applied(
        engine.business_id, item.stream, item.key, res.name, sage_id, content_hash, item.version
    )
    checkpoint("after_ledger")
    return result("create", "created", sage_id, message)


def _recover_or_post(
    engine: Engine,
    item: WorkItem,
    res: Resource,
    ctx: Call,
    body: dict[str, Any],
    content_hash: str,
    pending: Entry | None,
) -> tuple[str, str | None]:
    """The Sage id of the create, and the content hash Sage then holds (None: unknown): what
    an interrupted create made, if that can be known, else the POST (after its intent)."""
    bid = engine.business_id
    inner = body[res.wrapper or ""]
    sage_id: str | None = None
    holds: str | None = content_hash  # the content Sage holds once this is done
    if pending is not None:
        sage_id = find_pending(engine, item, res, ctx, pending)
        if sage_id is not None:
            holds = pending.intent_hash
            LOGGER.info(
                "Stream `%s`, source key %s: found %s %s created by an interrupted run",
                item.stream,
                item.key,
                res.name,
                sage_id,
            )
    if sage_id is None:
        since = pending.intent_at if pending is not None else None
        if pending is not None and res.idempotency and within_window(engine, pending):
            # The same idempotency_id again: Sage answers with what the interrupted POST
            # made, if it got through, whatever this body says.
            if pending.intent_hash != content_hash:
                holds = None
                engine.ledger.record_intent(
                    bid,
                    item.stream,
                    item.key,
                    res.name,
                    _UNKNOWN,
                    at=pending.intent_at,
                    body=pending.intent_body,
                )
        else:
            since = engine.sage_now()
            engine.ledger.record_intent(
                bid,
                item.stream,
                item.key,
                res.name,
                content_hash,
                at=since,
                body=lookup_fields(inner),
            )
        sage_id = post_create(engine, item, res, ctx, body, since)
    return sage_id, holds


def update(
    engine: Engine,
    item: WorkItem,
    res: Resource,
    ctx: Call,
    sage_id: str | None,
    fields: dict[str, Any],
    content_hash: str,
    entry: Entry | None,
    result: Callable[..., Result],
    from_ledger: bool = False,
    *,
    outcome: tuple[str, str] = ("update", "updated"),
    message: str | None = None,
) -> Result:
    if not res.update:
        if outcome[1] == "created":  # adopted, and cannot be brought further
            engine.ledger.record_applied(
                engine.business_id, item.stream, item.key, res.name, sage_id, content_hash
            )
            return result(*outcome, sage_id, "adopted; Sage cannot update this resource")
        raise RecordError(
            item.stream,
            item.key,
            None,
            f"Sage resource `{res.name}` cannot be updated (no PUT)",
        )
    body, ignored = build_body(res.name, "put", fields, stream=item.stream, key=item.key)
    warn_ignored(engine, item.stream, ignored)
    if _unchanged(engine, entry, content_hash, sage_id):
        if not engine.settings.dry_run:
            engine.ledger.record_version(engine.business_id, item.stream, item.key, item.version)
        return result("update", "skipped", sage_id, "unchanged since last applied (ledger)")
    if engine.settings.dry_run:
        return result("update", "skipped", sage_id, "dry run: would update")
    bid = engine.business_id
    path = res.path if sage_id is None else f"{res.path}/{sage_id}"
    try:
        response = engine.call("PUT", path, ctx, json_body=body, expected=(200,))
    except SageNotFound as exc:
        if not from_ledger or sage_id is None:
            raise RecordError(
                item.stream,
                item.key,
                engine.settings.sage_id_field,
                f"Sage has no {res.name} {sage_id} (404): it was deleted in Sage; give "
                "the id of a record that exists, or none to create one",
            ) from exc
        return _create_anew(engine, item, res, ctx, sage_id, fields, content_hash, result)
    if sage_id is None:
        returned = response.json().get("id") if response.content else None
        sage_id = str(returned) if returned else None
    engine.ledger.record_applied(
        bid, item.stream, item.key, res.name, sage_id, content_hash, item.version
    )
    checkpoint("after_ledger")
    return result(*outcome, sage_id, message)


def _unchanged(engine: Engine, entry: Entry | None, content_hash: str, sage_id: str | None) -> bool:
    """Whether the ledger says Sage holds this content already (``skip_unchanged``)."""
    return (
        engine.settings.skip_unchanged
        and entry is not None
        and entry.state == APPLIED
        and entry.content_hash == content_hash
        and (sage_id is None or entry.sage_id == sage_id)
    )


def _create_anew(
    engine: Engine,
    item: WorkItem,
    res: Resource,
    ctx: Call,
    sage_id: str,
    fields: dict[str, Any],
    content_hash: str,
    result: Callable[..., Result],
) -> Result:
    """Gone in Sage (deleted there, or by an interrupted run of ours): the ledger learns it,
    and the record is created anew with the newest content."""
    bid = engine.business_id
    LOGGER.warning(
        "Stream `%s`, source key %s: Sage %s %s is gone (404); creating it anew",
        item.stream,
        item.key,
        res.name,
        sage_id,
    )
    engine.ledger.record_deleted(bid, item.stream, item.key, res.name, sage_id)
    fresh = engine.ledger.get(bid, item.stream, item.key)
    return create(
        engine,
        item,
        res,
        ctx,
        fields,
        content_hash,
        fresh,
        result,
        f"Sage record {sage_id} was gone (404); created anew",
    )


def delete(
    engine: Engine,
    item: WorkItem,
    res: Resource,
    ctx: Call,
    sage_id: str,
    result: Callable[..., Result],
) -> Result:
    if res.void:
        reason = item.record.get("void_reason") or engine.settings.default_void_reason
        return void(engine, item, res, ctx, sage_id, reason, result, "delete")
    if not res.delete:
        raise RecordError(
            item.stream,
            item.key,
            "_sdc_deleted_at",
            f"Sage resource `{res.name}` cannot be deleted",
        )
    if engine.settings.dry_run:
        return result("delete", "skipped", sage_id, "dry run: would delete")
    message = None
    try:
        engine.call("DELETE", f"{res.path}/{sage_id}", ctx, expected=(200, 204))
    except SageNotFound:
        message = "already deleted in Sage"
    engine.ledger.record_deleted(
        engine.business_id, item.stream, item.key, res.name, sage_id, item.version
    )
    checkpoint("after_ledger")
    return result("delete", "deleted", sage_id, message)


def void(
    engine: Engine,
    item: WorkItem,
    res: Resource,
    ctx: Call,
    sage_id: str,
    reason: Any,
    result: Callable[..., Result],
    operation: str,
) -> Result:
    """Void a sales invoice, credit note or corrective invoice (idempotent)."""
    if engine.settings.dry_run:
        return result(operation, "skipped", sage_id, "dry run: would void")
    params = {"void_reason": str(reason)} if reason else None
    message = None
    try:
        engine.call("DELETE", f"{res.path}/{sage_id}", ctx, params=params, expected=(200, 204))
    except SageAPIError as exc:
        if exc.status != 422:
            raise
        current = engine.call("GET", f"{res.path}/{sage_id}", Call()).json()
        if (current.get("status") or {}).get("id") != "VOID":
            if exc.source == "void_reason":
                raise RecordError(
                    item.stream,
                    item.key,
                    "void_reason",
                    "Sage needs a void_reason to void this document: give it "
                    "in the record or the `default_void_reason` "
                    "setting",
                ) from exc
            raise
        message = "already void in Sage"
    engine.ledger.record_deleted(
        engine.business_id, item.stream, item.key, res.name, sage_id, item.version
    )
    checkpoint("after_ledger")
    # Sage deletes a draft instead of voiding it (204, no body).
    outcome = "deleted" if ctx.status == 204 else "voided"
    return result(operation, outcome, sage_id, message)


def warn_ignored(engine: Engine, stream: str, ignored: list[str]) -> None:
    for name in ignored:
        if name in {"id", "displayed_as", "$path", "created_at", "updated_at", "business_id"}:
            continue
        engine.warn_once(stream, f"field `{name}` is not part of Sage's write body; ignored")


# -- results -------------------------------------------------------------------------------
