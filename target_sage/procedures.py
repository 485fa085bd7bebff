"""Execute procedures: Sage's actions, as streams whose records are the inputs.

Each procedure is a stream name (or a `stream_resources` target). Every input record gets one
result line (outcome ``executed``, ``voided``, ``skipped`` or ``failed``); the ledger makes each
procedure run once per source record, even across crashes and re-runs.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import json
import mimetypes
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tap_sage.checkpoints import checkpoint
from tap_sage.sage import catalogue, wire
from tap_sage.sage.errors import SageAPIError, SageNotFound
from target_sage.exactly_once import ambiguous_post, find_created
from target_sage.ledger import APPLIED, DELETED, PENDING
from target_sage.operations import resolve_references, result_of, void
from target_sage.payload import RecordError, build_body, canonical, digest, idempotency_id
from target_sage.results import Result
from target_sage.work import Call

if TYPE_CHECKING:
    from target_sage.engine import Engine
    from target_sage.ledger import Entry
    from target_sage.work import WorkItem


@dataclass(frozen=True)
class Input:
    """One input field of a procedure."""

    name: str
    type: str  # "string" | "boolean"
    required: bool
    description: str


@dataclass(frozen=True)
class Procedure:
    """One Execute procedure."""

    name: str
    resource: str
    summary: str
    inputs: tuple[Input, ...]
    outputs: str
    handler: Callable[[Engine, WorkItem, Call, Procedure, dict[str, Any]], Result]
    sequential: bool = False  # a POST Sage wants one at a time

    def run(self, engine: Engine, item: WorkItem, ctx: Call) -> Result:
        """Check the inputs, then run."""
        known = {i.name for i in self.inputs}
        fields = {
            k: v
            for k, v in item.record.items()
            if not k.startswith("_sdc_") and (k in known or k == "sage_id")
        }
        for inp in self.inputs:
            value = fields.get(inp.name)
            if inp.required and (value is None or value == ""):
                raise RecordError(
                    item.stream, item.key, inp.name, f"is required by procedure `{self.name}`"
                )
            if value is not None and inp.type == "string" and not isinstance(value, str):
                fields[inp.name] = str(value) if isinstance(value, (int, float)) else value
                if not isinstance(fields[inp.name], str):
                    raise RecordError(item.stream, item.key, inp.name, "must be a string")
            if value is not None and inp.type == "boolean" and not isinstance(value, bool):
                raise RecordError(item.stream, item.key, inp.name, "must be true or false")
        fields = copy.deepcopy(fields)
        resolve_references(engine, item, fields)
        return self.handler(engine, item, ctx, self, fields)

    def about(self) -> str:
        """Markdown lines for ``--about`` and the README."""
        ins = "; ".join(
            f"`{i.name}` ({i.type}{', required' if i.required else ''}): {i.description}"
            for i in self.inputs
        )
        return f"- `{self.name}`: {self.summary} Inputs: {ins}. Outputs: {self.outputs}"


def _result(
    engine: Engine,
    item: WorkItem,
    ctx: Call,
    outcome: str,
    sage_id: str | None = None,
    message: str | None = None,
    output: dict[str, Any] | None = None,
) -> Result:
    """The result line of a procedure's operation (``execute``)."""
    result = result_of(item, ctx, dry_run=engine.settings.dry_run)
    return result("execute", outcome, sage_id, message, output)


def _applied_already(
    engine: Engine,
    item: WorkItem,
    ctx: Call,
    entry: Entry | None,
    done: str,
    output: Callable[[str], dict[str, Any]] | None = None,
) -> Result | None:
    """The ``skipped`` result of a procedure the ledger says was applied, else None."""
    if entry is None or entry.state != APPLIED:
        return None
    out = output(str(entry.sage_id)) if output is not None else None
    return _result(engine, item, ctx, "skipped", entry.sage_id, f"already {done} (ledger)", out)


# -- void -------------------------------------------------------------------------------------


def _void(
    engine: Engine, item: WorkItem, ctx: Call, proc: Procedure, fields: dict[str, Any]
) -> Result:
    res = catalogue.resource(proc.resource)
    sage_id = str(fields["id"])
    entry = engine.ledger.get(engine.business_id, item.stream, item.key)
    if entry is not None and entry.state == DELETED:
        return _result(engine, item, ctx, "skipped", entry.sage_id, "already voided (ledger)")
    reason = fields.get("void_reason") or engine.settings.default_void_reason

    def result(
        op: str,
        outcome: str,
        sid: str | None = None,
        msg: str | None = None,
        output: dict[str, Any] | None = None,
    ) -> Result:
        r = _result(engine, item, ctx, outcome, sid, msg, output)
        r.operation = "execute"
        return r

    return void(engine, item, res, ctx, sage_id, reason, result, "execute")


# -- release ----------------------------------------------------------------------------------


def _release(
    engine: Engine, item: WorkItem, ctx: Call, proc: Procedure, fields: dict[str, Any]
) -> Result:
    res = catalogue.resource(proc.resource)
    sage_id = str(fields["id"])
    bid = engine.business_id
    entry = engine.ledger.get(bid, item.stream, item.key)
    if (skipped := _applied_already(engine, item, ctx, entry, "released")) is not None:
        return skipped
    if engine.settings.dry_run:
        return _result(engine, item, ctx, "skipped", sage_id, "dry run: would release")
    content_hash = digest(canonical(fields))
    engine.ledger.record_intent(
        bid, item.stream, item.key, res.name, content_hash, at=engine.sage_now()
    )
    message = None

    def status() -> str | None:
        current = engine.call("GET", f"{res.path}/{sage_id}", Call()).json()
        return (current.get("status") or {}).get("id")

    def released() -> str | None:
        return sage_id if status() not in (None, "DRAFT") else None

    if entry is not None and entry.state == PENDING and released():
        message = "released by an interrupted run"
    else:
        try:
            ambiguous_post(engine, f"{res.path}/{sage_id}/release", ctx, None, released)
        except SageAPIError as exc:
            if exc.status != 422:
                raise
            now = status()
            if now in (None, "DRAFT"):
                engine.ledger.clear_intent(bid, item.stream, item.key)
                raise
            engine.ledger.record_applied(
                bid, item.stream, item.key, res.name, sage_id, content_hash
            )
            return _result(
                engine,
                item,
                ctx,
                "skipped",
                sage_id,
                f"not a draft (status {now}): nothing to release",
            )
    engine.ledger.record_applied(bid, item.stream, item.key, res.name, sage_id, content_hash)
    checkpoint("after_ledger")
    return _result(engine, item, ctx, "executed", sage_id, message)


# -- reissue ----------------------------------------------------------------------------------


def _reissue(
    engine: Engine, item: WorkItem, ctx: Call, proc: Procedure, fields: dict[str, Any]
) -> Result:
    res = catalogue.resource("journals")
    original = str(fields["id"])
    bid = engine.business_id
    entry = engine.ledger.get(bid, item.stream, item.key)
    skipped = _applied_already(
        engine, item, ctx, entry, "reissued",
        lambda new: {"new_journal_id": new, "original_journal_id": original},
    )  # fmt: skip
    if skipped is not None:
        return skipped
    content_hash = digest(canonical(fields))
    if entry is not None and entry.state == PENDING and entry.note:
        found = _find_reissued(engine, ctx, original, json.loads(entry.note), entry.intent_at)
        if found:
            engine.ledger.record_applied(bid, item.stream, item.key, res.name, found, content_hash)
            return _result(
                engine,
                item,
                ctx,
                "executed",
                found,
                "reissued by an interrupted run",
                {"new_journal_id": found, "original_journal_id": original},
            )
    current = engine.call("GET", f"{res.path}/{original}", ctx).json()
    if engine.settings.dry_run:
        return _result(engine, item, ctx, "skipped", original, "dry run: would reissue")
    note = json.dumps({"reference": current.get("reference"), "date": current.get("date")})
    # The intent's time is Sage's (its Date header), as are the journals' timestamps the
    # lookup compares it with: a skewed local clock cannot hide the reissued journal.
    intent_at = engine.sage_now()
    engine.ledger.record_intent(
        bid, item.stream, item.key, res.name, content_hash, note, at=intent_at
    )
    answer = ambiguous_post(
        engine,
        f"{res.path}/{original}/reissue",
        ctx,
        None,
        lambda: _find_reissued(engine, ctx, original, json.loads(note), intent_at),
    )
    new_id = str(answer["id"])
    engine.ledger.record_applied(bid, item.stream, item.key, res.name, new_id, content_hash)
    checkpoint("after_ledger")
    return _result(
        engine,
        item,
        ctx,
        "executed",
        new_id,
        None,
        {"new_journal_id": new_id, "original_journal_id": original},
    )


def _find_reissued(
    engine: Engine, ctx: Call, original: str, note: dict[str, Any], since: float | None
) -> str | None:
    try:
        engine.call("GET", f"/journals/{original}", ctx)
        return None  # the original still stands: the reissue never happened
    except SageNotFound:
        pass
    # ``since`` is Sage's time of the intent; two minutes of leeway cover the Date header's
    # resolution and the time the request took.
    start = since if since is not None else engine.sage_now()
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start - 120))
    next_path: str | None = "/journals"
    params: dict[str, Any] | None = {
        "attributes": "all",
        "items_per_page": 200,
        "updated_or_created_since": when,
    }
    while next_path:
        body = engine.call("GET", next_path, ctx, params=params).json()
        params = None
        for journal in body.get("$items", []):
            if (
                journal.get("id") != original
                and journal.get("reference") == note.get("reference")
                and journal.get("date") == note.get("date")
            ):
                return str(journal["id"])
        next_path = body.get("$next")
    return None


# -- quote / estimate -> invoice ----------------------------------------------------------------

_LINE_FIELDS = (
    "description",
    "quantity",
    "unit_price",
    "discount_amount",
    "unit_price_includes_tax",
)
_LINE_LINKS = ("ledger_account", "tax_rate", "product", "service")


def _invoice_fields(source: str, quote: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """The write fields of the sales invoice a quote or estimate (as read) becomes."""
    # Sage sends decimals as strings (tap_sage.sage.wire): back to numbers for the write body
    quote = wire.read_shape(source).to_decimals(copy.deepcopy(quote))
    lines_key = "quote_lines" if source == "sales_quotes" else "estimate_lines"
    lines = []
    for line in quote.get(lines_key) or []:
        out = {k: line[k] for k in _LINE_FIELDS if line.get(k) is not None}
        for link in _LINE_LINKS:
            if isinstance(line.get(link), dict) and line[link].get("id"):
                out[f"{link}_id"] = line[link]["id"]
        lines.append(out)
    body_fields: dict[str, Any] = {
        "contact_id": (quote.get("contact") or {}).get("id"),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "invoice_lines": lines,
        "reference": quote.get("reference"),
    }
    body_fields = {k: v for k, v in body_fields.items() if v is not None}
    body_fields.update({k: v for k, v in fields.items() if k != "sage_id"})
    return body_fields


def _convert(
    engine: Engine, item: WorkItem, ctx: Call, proc: Procedure, fields: dict[str, Any]
) -> Result:
    source = catalogue.resource(proc.resource)
    invoices = catalogue.resource("sales_invoices")
    quote_id = str(fields.pop("id"))
    bid = engine.business_id
    entry = engine.ledger.get(bid, item.stream, item.key)
    skipped = _applied_already(
        engine, item, ctx, entry, "invoiced", lambda new: {"sales_invoice_id": new}
    )
    if skipped is not None:
        return skipped
    quote = engine.call("GET", f"{source.path}/{quote_id}", ctx).json()
    status = (quote.get("status") or {}).get("id")
    content_hash = digest(canonical(fields))
    if status == "INVOICED":
        invoice_id = (quote.get("invoice") or {}).get("id")
        if invoice_id:
            engine.ledger.record_applied(
                bid, item.stream, item.key, invoices.name, str(invoice_id), content_hash
            )
        return _result(
            engine,
            item,
            ctx,
            "skipped",
            invoice_id,
            "the quote or estimate is already invoiced",
            {"sales_invoice_id": invoice_id},
        )
    body_fields = _invoice_fields(source.name, quote, fields)
    generation = entry.generation if entry is not None else 0
    extra = {
        "original_quote_estimate_id": quote_id,
        "idempotency_id": idempotency_id(bid, item.stream, item.key, generation),
    }
    body, _ = build_body(
        invoices.name, "post", body_fields, stream=item.stream, key=item.key, extra=extra
    )
    if engine.settings.dry_run:
        return _result(engine, item, ctx, "skipped", None, "dry run: would invoice")
    try:
        response = engine.call(
            "POST", invoices.path, ctx, json_body=body, retry=True, expected=(200, 201)
        )
        invoice_id = str(response.json()["id"])
    except SageAPIError as exc:
        # A retry of a POST that Sage committed before failing may be refused because the
        # quote is now invoiced: that invoice is ours.
        if exc.status != 422:
            raise
        now = engine.call("GET", f"{source.path}/{quote_id}", Call()).json()
        made = (now.get("invoice") or {}).get("id")
        if (now.get("status") or {}).get("id") != "INVOICED" or not made:
            raise
        invoice_id = str(made)
    engine.ledger.record_applied(
        bid, item.stream, item.key, invoices.name, invoice_id, content_hash
    )
    checkpoint("after_ledger")
    return _result(
        engine, item, ctx, "executed", invoice_id, None, {"sales_invoice_id": invoice_id}
    )


# -- attachments ------------------------------------------------------------------------------

_CONTEXTS = {
    "contact_id": "CONTACT",
    "sales_invoice_id": "SALES_INVOICE",
    "sales_credit_note_id": "SALES_CREDIT_NOTE",
    "purchase_invoice_id": "PURCHASE_INVOICE",
    "purchase_credit_note_id": "PURCHASE_CREDIT_NOTE",
    "journal_id": "JOURNAL",
    "bank_transfer_id": "BANK_TRANSFER",
}


def _upload(
    engine: Engine, item: WorkItem, ctx: Call, proc: Procedure, fields: dict[str, Any]
) -> Result:
    res = catalogue.resource("attachments")
    bid = engine.business_id
    entry = engine.ledger.get(bid, item.stream, item.key)
    skipped = _applied_already(
        engine, item, ctx, entry, "uploaded", lambda new: {"attachment_id": new}
    )
    if skipped is not None:
        return skipped
    data, name = _upload_file(engine, item, fields)
    body_fields = _upload_fields(item, fields, data, name)
    extra: dict[str, Any] = {}
    if res.idempotency:
        generation = entry.generation if entry is not None else 0
        extra["idempotency_id"] = idempotency_id(bid, item.stream, item.key, generation)
    body, _ = build_body(
        res.name, "post", body_fields, stream=item.stream, key=item.key, extra=extra
    )
    if engine.settings.dry_run:
        return _result(engine, item, ctx, "skipped", None, "dry run: would upload")
    content_hash = digest(canonical(fields))
    # What identifies the upload in Sage if its answer is lost: name, size and the link.
    lookup: dict[str, Any] = {
        k: body_fields[k]
        for k in ("file_name", "file_size", "attachment_context_id", "transaction_id")
        if k in body_fields
    }
    if entry is not None and entry.state == PENDING:
        found = find_created(engine, res, lookup, ctx, since=entry.intent_at)
        if found:
            engine.ledger.record_applied(bid, item.stream, item.key, res.name, found, content_hash)
            return _result(
                engine,
                item,
                ctx,
                "executed",
                found,
                "uploaded by an interrupted run",
                {"attachment_id": found, "file_name": name, "file_size": len(data)},
            )
    if res.idempotency:  # Sage's guide promises it: retried blindly
        response = engine.call(
            "POST", res.path, ctx, json_body=body, retry=True, expected=(200, 201)
        )
        attachment_id = str(response.json()["id"])
    else:  # attachments are not in Sage's idempotency guide: intent, then lookups
        since = engine.sage_now()
        engine.ledger.record_intent(bid, item.stream, item.key, res.name, content_hash, at=since)
        answer = ambiguous_post(
            engine, res.path, ctx, body, lambda: find_created(engine, res, lookup, ctx, since=since)
        )
        attachment_id = str(answer["id"])
    engine.ledger.record_applied(
        bid, item.stream, item.key, res.name, attachment_id, digest(canonical(fields))
    )
    checkpoint("after_ledger")
    return _result(
        engine,
        item,
        ctx,
        "executed",
        attachment_id,
        None,
        {"attachment_id": attachment_id, "file_name": name, "file_size": len(data)},
    )


def _upload_file(engine: Engine, item: WorkItem, fields: dict[str, Any]) -> tuple[bytes, str]:
    """The bytes to upload and their file name, from ``file_path`` or ``file_base64``."""
    path = fields.get("file_path")
    encoded = fields.get("file_base64")
    if bool(path) == bool(encoded):
        raise RecordError(
            item.stream, item.key, "file_path", "give exactly one of `file_path` and `file_base64`"
        )
    if path:
        data, file = _read_upload(engine, item, str(path))
        name = str(fields.get("file_name") or file.name)
    else:
        try:
            data = base64.b64decode(str(encoded), validate=True)
        except (binascii.Error, ValueError):
            raise RecordError(item.stream, item.key, "file_base64", "is not valid base64") from None
        name = str(fields.get("file_name") or "")
        if not name:
            raise RecordError(item.stream, item.key, "file_name", "is required with `file_base64`")
    return data, name


def _upload_fields(
    item: WorkItem, fields: dict[str, Any], data: bytes, name: str
) -> dict[str, Any]:
    """The attachment's write fields: the file, and the one record it is linked to."""
    links = [k for k in (*_CONTEXTS, "transaction_id") if fields.get(k)]
    ctx_type = fields.get("attachment_context_type_id")
    ctx_id = fields.get("attachment_context_id")
    if len(links) + (1 if ctx_type or ctx_id else 0) != 1 or (bool(ctx_type) != bool(ctx_id)):
        raise RecordError(
            item.stream,
            item.key,
            "contact_id",
            "link the file to exactly one record: `transaction_id`, "
            f"{', '.join(f'`{k}`' for k in _CONTEXTS)}, or "
            "`attachment_context_type_id` with `attachment_context_id`",
        )
    mime = str(
        fields.get("mime_type") or mimetypes.guess_type(name)[0] or "application/octet-stream"
    )
    body_fields: dict[str, Any] = {
        "file": base64.b64encode(data).decode("ascii"),
        "file_name": name,
        "mime_type": mime,
        "file_size": len(data),
        "file_extension": Path(name).suffix or None,
        "description": fields.get("description"),
        "is_public": fields.get("is_public"),
    }
    if links and links[0] == "transaction_id":
        body_fields["transaction_id"] = fields["transaction_id"]
    elif links:
        body_fields["attachment_context_type_id"] = _CONTEXTS[links[0]]
        body_fields["attachment_context_id"] = fields[links[0]]
    else:
        body_fields["attachment_context_type_id"] = ctx_type
        body_fields["attachment_context_id"] = ctx_id
    body_fields = {k: v for k, v in body_fields.items() if v is not None}
    return body_fields


def _read_upload(engine: Engine, item: WorkItem, raw: str) -> tuple[bytes, Path]:
    """The bytes of a local file for upload_attachments, only from inside `upload_folder`.

    The path is resolved (symlinks included) and must stay inside the folder; the file is then
    opened without following a symlink, and the opened file's own path is checked again, so a
    link swapped in between cannot lead outside either."""
    base = engine.settings.upload_folder
    if base is None:
        raise RecordError(
            item.stream,
            item.key,
            "file_path",
            "reading local files is off: set the `upload_folder` setting to the folder they "
            "may come from, or give `file_base64`",
        )
    given = Path(raw).expanduser()
    resolved = (given if given.is_absolute() else base / given).resolve()
    if not resolved.is_relative_to(base):
        raise RecordError(
            item.stream,
            item.key,
            "file_path",
            f"{raw!r} is outside `upload_folder` {base} (after resolving links)",
        )
    try:
        fd = os.open(resolved, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise RecordError(
            item.stream, item.key, "file_path", f"cannot read {raw!r}: {exc.strerror or exc}"
        ) from None
    with os.fdopen(fd, "rb") as fh:
        held = Path(f"/proc/self/fd/{fd}")
        if held.exists() and not Path(os.readlink(held)).is_relative_to(base):
            raise RecordError(
                item.stream, item.key, "file_path", f"{raw!r} is outside `upload_folder` {base}"
            )
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RecordError(item.stream, item.key, "file_path", f"{raw!r} is not a file")
        return fh.read(), resolved


_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]")


def safe_file_name(name: str, fallback: str) -> str:
    """A plain file name from a name Sage (or the input) gives: the last path component, no
    NUL or separators, no leading dots (no `..`, no hidden files), only safe characters."""
    last = name.replace("\x00", "").replace("\\", "/").split("/")[-1]
    cleaned = _UNSAFE.sub("_", last).lstrip(". ").strip()
    return cleaned[:200] or _UNSAFE.sub("_", fallback) or "attachment"


def _download(
    engine: Engine, item: WorkItem, ctx: Call, proc: Procedure, fields: dict[str, Any]
) -> Result:
    attachment_id = str(fields["id"])
    folder = Path(str(fields.get("folder") or engine.settings.download_folder)).expanduser()
    if engine.settings.dry_run:
        return _result(engine, item, ctx, "skipped", attachment_id, "dry run: would download")
    meta = engine.call("GET", f"/attachments/{attachment_id}", ctx).json()
    raw_name = str(fields.get("file_name") or meta.get("file_name") or "")
    name = safe_file_name(raw_name, f"attachment-{attachment_id}")
    response = engine.call(
        "GET",
        f"/attachments/{attachment_id}/file",
        ctx,
        headers={"Accept": "application/octet-stream"},
    )
    target = folder / name
    partial = folder / f".{name}.{os.getpid()}.part"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(response.content)
        os.replace(partial, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise RecordError(
            item.stream,
            item.key,
            "file_name",
            f"cannot write {str(target)!r}: {exc.strerror or exc}",
        ) from None
    message = None if name == raw_name else f"saved as {name!r} (Sage's name {raw_name!r})"
    return _result(
        engine,
        item,
        ctx,
        "executed",
        attachment_id,
        message,
        {"path": str(target), "file_size": len(response.content)},
    )


def _id(what: str) -> Input:
    return Input(
        "id",
        "string",
        True,
        f"Sage id of the {what} (or a source key, with the `references` setting)",
    )


_VOID_INPUTS = (
    Input(
        "void_reason",
        "string",
        False,
        "why (required by Sage unless the document is a "
        "draft; default: the `default_void_reason` setting)",
    ),
)


def _procedures() -> dict[str, Procedure]:
    procs: list[Procedure] = []
    for res, what in (
        ("sales_invoices", "sales invoice"),
        ("sales_credit_notes", "credit note"),
        ("sales_corrective_invoices", "corrective invoice"),
    ):
        procs.append(
            Procedure(
                f"void_{res}",
                res,
                f"Void a {what} (DELETE with void_reason).",
                (_id(what), *_VOID_INPUTS),
                "outcome `voided` with the document's Sage id (`skipped` when the "
                "ledger says it was voided already)",
                _void,
            )
        )
    for res, what in (
        ("sales_invoices", "sales invoice"),
        ("sales_credit_notes", "sales credit note"),
        ("purchase_invoices", "purchase invoice"),
        ("purchase_credit_notes", "purchase credit note"),
    ):
        procs.append(
            Procedure(
                f"release_{res}",
                res,
                f"Release (finalise) a draft {what}.",
                (_id(what),),
                "outcome `executed` with the document's Sage id; `skipped` when it is not a draft",
                _release,
                sequential=True,
            )
        )
    procs.append(
        Procedure(
            "reissue_journals",
            "journals",
            "Reissue a journal (Sage voids it and creates a new one).",
            (_id("journal"),),
            "outcome `executed`, Sage id and output.new_journal_id = the new journal",
            _reissue,
        )
    )
    for res, what, article in (
        ("sales_quotes", "quote", "a"),
        ("sales_estimates", "estimate", "an"),
    ):
        procs.append(
            Procedure(
                f"convert_{res}",
                res,
                f"Turn {article} {what} into a sales invoice (POST /sales_invoices "
                "with original_quote_estimate_id; contact, lines and reference are copied).",
                (
                    _id(what),
                    Input("date", "string", False, "invoice date (default today)"),
                    Input("due_date", "string", False, "due date"),
                    Input(
                        "reference", "string", False, f"invoice reference (default the {what}'s)"
                    ),
                    Input("notes", "string", False, "notes"),
                ),
                "outcome `executed`, Sage id and output.sales_invoice_id = the new invoice",
                _convert,
                sequential=True,
            )
        )
    link_inputs = tuple(
        Input(k, "string", False, f"link to this {v.lower().replace('_', ' ')}")
        for k, v in _CONTEXTS.items()
    )
    procs.append(
        Procedure(
            "upload_attachments",
            "attachments",
            "Upload a file and attach it to a transaction or a contact/document.",
            (
                Input("file_path", "string", False, "path of a local file (or give file_base64)"),
                Input("file_base64", "string", False, "the file's content, base64"),
                Input(
                    "file_name",
                    "string",
                    False,
                    "name in Sage (default: the file's name; required with file_base64)",
                ),
                Input("mime_type", "string", False, "default: guessed from the name"),
                Input("description", "string", False, "description"),
                Input("is_public", "boolean", False, "visible to the contact"),
                Input("transaction_id", "string", False, "link to this transaction"),
                *link_inputs,
                Input(
                    "attachment_context_type_id",
                    "string",
                    False,
                    "explicit link type, with attachment_context_id",
                ),
                Input("attachment_context_id", "string", False, "explicit link target"),
            ),
            "outcome `executed`, Sage id and output.attachment_id of the attachment",
            _upload,
        )
    )
    procs.append(
        Procedure(
            "download_attachments",
            "attachments",
            "Download an attachment's file into a folder.",
            (
                Input("id", "string", True, "Sage id of the attachment"),
                Input(
                    "folder",
                    "string",
                    False,
                    "folder to write to (default: the `download_folder` setting)",
                ),
                Input("file_name", "string", False, "name to write (default: the attachment's)"),
            ),
            "outcome `executed`, output.path of the written file and output.file_size; the file is "
            "written atomically (replaced if present)",
            _download,
        )
    )
    return {p.name: p for p in procs}


PROCEDURES: dict[str, Procedure] = _procedures()


def about_text() -> str:
    """The Execute procedures, for ``--about`` and the README."""
    return "Execute procedures (stream name -> action):\n" + "\n".join(
        p.about() for p in PROCEDURES.values()
    )
