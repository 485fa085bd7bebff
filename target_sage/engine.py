"""Applying records to Sage: routing, the operation of each record, exactly-once, ordering.

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

Ordering: ``Dispatcher`` hands operations to a pool of ``max_parallel_writes`` threads in input
order. An operation waits for the previous operation on the same record (same source key or
Sage id); a POST to a resource where Sage forbids parallel POSTs waits for the previous such
POST. Sinks are drained one at a time, so these POSTs are strictly sequential across streams.
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from filelock import FileLock, Timeout

from tap_sage.sage import catalogue
from tap_sage.sage.catalogue import Resource
from tap_sage.sage.client import SageClient
from tap_sage.sage.errors import (
    SageAPIError,
    SageAuthError,
    SageError,
    SageNetworkError,
    SageNotFound,
)
from target_sage import hooks
from target_sage.ledger import APPLIED, DELETED, PENDING, Entry, Ledger, LedgerError
from target_sage.payload import (
    RecordError,
    build_body,
    canonical,
    content_fields,
    digest,
    dumps,
    idempotency_id,
    key_text,
    paths,
)
from target_sage.results import DeadLetterFile, Result, ResultsFile
from target_sage.settings import TargetSettings

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
#: Intent hash of a create whose content in Sage is unknown (the same idempotency_id went out
#: with two contents): the next run updates whatever Sage holds to the newest.
_UNKNOWN = "?"

#: Seconds to wait for another process's run on the same ledger.
LEDGER_LOCK_TIMEOUT = 900
#: Ledger path -> the lock this process holds on it (one run at a time per ledger across
#: processes; runs in one process are sequential anyway, so they share it).
_RUN_LOCKS: dict[str, FileLock] = {}
_RUN_LOCKS_GUARD = threading.Lock()


class TargetFailure(SageError):
    """A record failed under ``on_error: fail``: the run stops here."""


class RoutingError(SageError):
    """A stream maps to nothing Sage can write."""


@dataclass
class WorkItem:
    """One record to apply, as the sink received it."""

    stream: str
    record: dict[str, Any]
    key: str  # canonical source key
    key_display: Any  # the source key as written to results ({"id": 1} or "#<hash>")
    raw_message: dict[str, Any]  # the RECORD message as received, for the dead letter
    schema_message: dict[str, Any] | None
    chain: str = ""  # records with the same chain are applied in input order
    key_problem: str | None = None  # e.g. a key property is empty
    ticket: int | None = None  # turn of a POST Sage wants one at a time
    version: str | None = None  # the message's time_extracted (UTC ISO), when the tap gave one


@dataclass
class Route:
    """Where the records of one stream go."""

    stream: str
    resource: Resource | None = None
    procedure: str | None = None

    @property
    def target(self) -> str:
        """Resource or procedure name."""
        return self.procedure or (self.resource.name if self.resource else "")


@dataclass
class Call:
    """The last HTTP answer of an operation (for the results file)."""

    status: int | None = None
    request_id: str | None = None
    operation: str | None = None  # once decided: create, update, delete, ...


@dataclass
class Engine:
    """Applies work items for one target run. Shared by every sink."""

    settings: TargetSettings
    results: ResultsFile
    dead_letter: DeadLetterFile
    ledger: Ledger
    client_factory: Callable[[], SageClient]
    _client: SageClient | None = None
    _business_id: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _business_lock: threading.Lock = field(default_factory=threading.Lock)
    _warned: set[tuple[str, str]] = field(default_factory=set)
    _local: threading.local = field(default_factory=threading.local)
    turnstile: Turnstile | None = None
    failed: int = 0
    #: Sage's clock minus ours, from the ``Date`` header of Sage's answers (None: none yet).
    _sage_offset: float | None = None

    # -- shared pieces -----------------------------------------------------------------------

    @property
    def client(self) -> SageClient:
        """The connection's client (created on the first write)."""
        with self._lock:
            if self._client is None:
                self._client = self.client_factory()
            return self._client

    @property
    def business_id(self) -> str:
        """The business written to: the setting, else the connection's lead business."""
        with self._business_lock:
            if self._business_id is None:
                if self.settings.business_id:
                    self._business_id = self.settings.business_id
                elif self.settings.dry_run:
                    self._business_id = ""
                else:
                    self._business_id = self._lead_business()
            return self._business_id

    def _lead_business(self) -> str:
        try:
            lead = self.client.get_json("/businesses/lead")
            if isinstance(lead, dict) and lead.get("id"):
                return str(lead["id"])
        except SageAPIError:
            pass
        businesses = self.client.businesses()
        if not businesses:
            raise SageError("The connection reaches no Sage business; set `business_id`")
        return str(businesses[0]["id"])

    def call(
        self,
        method: str,
        path: str,
        ctx: Call,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any | None = None,
        retry: bool | None = None,
        expected: tuple[int, ...] = (200, 201, 204),
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """One request through the shared client, with the crash-test hooks around it."""
        ticket: int | None = getattr(self._local, "ticket", None)
        in_turn = method == "POST" and ticket is not None and self.turnstile is not None
        if in_turn:
            assert self.turnstile is not None and ticket is not None
            self.turnstile.wait_turn(ticket)
        write = method != "GET"  # the crash points count writes only
        if write:
            hooks.reached("before_request")
        try:
            response = self.client.request(
                method,
                path,
                business_id=self.business_id,
                params=params,
                json_body=json_body,
                retry=retry,
                expected=expected,
                headers=headers,
            )
        except SageAPIError as exc:
            ctx.status, ctx.request_id = exc.status, exc.request_id
            raise
        self._note_sage_time(response)
        if in_turn:
            assert self.turnstile is not None and ticket is not None
            self.turnstile.done(ticket)  # the next sequential POST may go
        ctx.status = response.status_code
        ctx.request_id = response.headers.get("x_request_id") or response.headers.get(
            "X-Request-Id"
        )
        if write:
            hooks.reached("after_request")
        return response

    def _note_sage_time(self, response: requests.Response) -> None:
        """Learn Sage's clock from the ``Date`` header (RFC 9110; Sage sends it on every
        answer): reconciliation compares Sage's timestamps with Sage's time, never ours."""
        raw = response.headers.get("Date")
        if not raw:
            return
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return
        self._sage_offset = when.timestamp() - time.time()

    def sage_now(self) -> float:
        """Sage's current time (epoch seconds), from its ``Date`` header; asks Sage once when
        no answer has told it yet. Accurate to about a second (the header's resolution)."""
        if self._sage_offset is None:
            self.call("GET", "/businesses", Call())
        if self._sage_offset is None:  # a server without Date: the local clock is all we have
            LOGGER.warning("Sage sent no Date header; using the local clock")
            self._sage_offset = 0.0
        return time.time() + self._sage_offset

    def warn_once(self, stream: str, text: str) -> None:
        """Log a warning once per stream."""
        with self._lock:
            if (stream, text) in self._warned:
                return
            self._warned.add((stream, text))
        LOGGER.warning("Stream `%s`: %s", stream, text)

    def acquire_run_lock(self) -> None:
        """Hold the ledger's run lock before the first write (not in a dry run).

        Two processes writing the same records at once could both create a record Sage cannot
        deduplicate; the second waits. The OS drops the lock if the process dies.
        """
        if self.settings.dry_run or self.ledger.shared:  # a database ledger locks itself
            return
        key = str(self.settings.ledger_path)
        with _RUN_LOCKS_GUARD:
            if key in _RUN_LOCKS:
                return
            lock = FileLock(key + ".lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:
                LOGGER.warning(
                    "Another target-sage run is writing with the ledger %s; waiting "
                    "up to %d s for it to finish",
                    key,
                    LEDGER_LOCK_TIMEOUT,
                )
                lock.acquire(timeout=LEDGER_LOCK_TIMEOUT)
            _RUN_LOCKS[key] = lock

    def release_run_lock(self) -> None:
        """Let other processes write with this ledger again."""
        with _RUN_LOCKS_GUARD:
            lock = _RUN_LOCKS.pop(str(self.settings.ledger_path), None)
        if lock is not None:
            lock.release()

    # -- routing -------------------------------------------------------------------------------

    def route(self, stream: str) -> Route:
        """The resource or procedure of a stream; ``RoutingError`` when there is none."""
        from target_sage.procedures import PROCEDURES

        target = self.settings.stream_resources.get(stream, stream)
        if target in PROCEDURES:
            return Route(stream, procedure=target)
        res = catalogue.resources().get(target)
        if res is None:
            hint = (
                f"map it with the `stream_resources` setting, e.g. "
                f'{{"{stream}": "contacts"}}, or name the stream after a Sage resource or an '
                f"Execute procedure (see `target-sage --about`)"
            )
            raise RoutingError(
                f"Stream `{stream}` maps to no Sage resource or procedure ({target!r}): {hint}"
            )
        if not res.writable or not res.wrapper:
            raise RoutingError(
                f"Stream `{stream}` maps to Sage resource `{res.name}`, which cannot be written"
            )
        return Route(stream, resource=res)

    # -- one record -----------------------------------------------------------------------------

    def apply(self, item: WorkItem, route: Route) -> Result:
        """Apply one record; never raises for a record-level problem (returns ``failed``)."""
        self._local.ticket = item.ticket
        try:
            return self._apply(item, route)
        finally:
            self._local.ticket = None
            if item.ticket is not None and self.turnstile is not None:
                self.turnstile.done(item.ticket)

    def _apply(self, item: WorkItem, route: Route) -> Result:
        ctx = Call()
        operation = "execute" if route.procedure else "upsert"
        try:
            if item.key_problem:
                raise RecordError(item.stream, item.key, None, item.key_problem)
            if route.procedure:
                from target_sage.procedures import PROCEDURES

                return PROCEDURES[route.procedure].run(self, item, ctx)
            assert route.resource is not None
            return self._apply_resource(item, route.resource, ctx)
        except RecordError as exc:
            return Result(
                item.stream,
                ctx.operation or operation,
                item.key_display,
                "failed",
                http_status=ctx.status,
                x_request_id=ctx.request_id,
                message=str(exc),
                source=exc.field,
            )
        except SageAPIError as exc:
            return Result(
                item.stream,
                ctx.operation or operation,
                item.key_display,
                "failed",
                http_status=exc.status,
                data_code=exc.data_code,
                message=f"{exc} (stream `{item.stream}`, source key {item.key})",
                source=exc.source,
                x_request_id=exc.request_id,
            )
        except (SageAuthError, SageNetworkError, LedgerError):
            # The connection or the ledger, not the record: stop (a re-run is safe), whatever
            # on_error says.
            raise
        except (KeyError, TypeError, ValueError) as exc:
            return Result(
                item.stream,
                ctx.operation or operation,
                item.key_display,
                "failed",
                http_status=ctx.status,
                x_request_id=ctx.request_id,
                message=f"Unexpected answer from Sage ({type(exc).__name__}: {exc}) "
                f"(stream `{item.stream}`, source key {item.key})",
            )
        except SageError as exc:
            return Result(
                item.stream,
                ctx.operation or operation,
                item.key_display,
                "failed",
                message=f"{exc} (stream `{item.stream}`, source key {item.key})",
            )

    def resolve_references(self, item: WorkItem, fields: dict[str, Any]) -> None:
        """Replace source keys of other streams by Sage ids, per the `references` setting."""
        for dotted, other in self.settings.references.get(item.stream, {}).items():
            for container, attr in list(paths(fields, dotted)):
                value = container[attr]
                entry = self.ledger.get(self.business_id, other, key_text(value))
                if entry is None or entry.state != APPLIED or not entry.sage_id:
                    if self.settings.dry_run:
                        continue  # a dry run writes nothing: the record may come in this input
                    raise RecordError(
                        item.stream,
                        item.key,
                        dotted,
                        f"no record of stream `{other}` with source key {key_text(value)} in the "
                        f"ledger (send `{other}` first, or give the Sage id)",
                    )
                container[attr] = entry.sage_id

    def _stale(
        self, item: WorkItem, entry: Entry | None, content_hash: str, deleted: bool
    ) -> str | None:
        """Why this input is older than what Sage holds for the record (None: it is not).

        With ``time_extracted`` on both sides, the older message loses. Without, a content that
        the ledger applied before the one Sage holds now is an older version (a replay)."""
        if entry is None:
            return None
        from target_sage.sinks import newer

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

    def _apply_resource(self, item: WorkItem, res: Resource, ctx: Call) -> Result:
        s = self.settings
        rec = item.record
        deleted = rec.get("_sdc_deleted_at") is not None
        forced = s.operations.get(item.stream)
        fields = copy.deepcopy(content_fields(rec, s.sage_id_field))
        content_hash = digest(canonical(fields))
        bid = self.business_id
        entry = self.ledger.get(bid, item.stream, item.key)
        given_id = rec.get(s.sage_id_field)
        known_id = str(given_id) if given_id else None
        from_ledger = False
        if known_id is None and entry is not None and entry.state == APPLIED and entry.sage_id:
            known_id, from_ledger = entry.sage_id, True

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
                dry_run=s.dry_run,
            )

        if res.singleton:
            ctx.operation = "update"
            if not res.update:
                raise RecordError(item.stream, item.key, None, f"`{res.name}` cannot be updated")
            return self._update(item, res, ctx, None, fields, content_hash, entry, result)

        operation = "delete" if deleted or forced == "delete" else "upsert"
        stale = self._stale(item, entry, content_hash, operation == "delete")
        if stale is not None and entry is not None:
            return result(operation, "skipped", entry.sage_id, stale)

        if operation == "delete":
            ctx.operation = "delete"
            if known_id is None and entry is not None and entry.state == PENDING:
                # An interrupted create: find what it made in Sage, if anything, to delete it.
                known_id = None if s.dry_run else self.find_pending(item, res, ctx, entry, True)
                if known_id is None and not s.dry_run:
                    self.ledger.record_deleted(
                        bid, item.stream, item.key, res.name, entry.sage_id, item.version
                    )
                    return result("delete", "skipped", None, "an interrupted create made nothing")
            if known_id is None:
                if entry is not None and entry.state == DELETED:
                    if not s.dry_run:
                        self.ledger.record_version(bid, item.stream, item.key, item.version)
                    return result("delete", "skipped", entry.sage_id, "already deleted")
                if not s.dry_run and item.version is not None:  # a tombstone: an older version
                    self.ledger.record_deleted(  # read later (another input) is not applied
                        bid, item.stream, item.key, res.name, None, item.version
                    )
                return result("delete", "skipped", None, "no Sage record known for this key")
            return self._delete(item, res, ctx, known_id, result)

        is_update = forced == "update" or (forced != "create" and known_id is not None)
        ctx.operation = "update" if is_update else "create"
        self.resolve_references(item, fields)
        if is_update:
            if known_id is None:
                raise RecordError(
                    item.stream,
                    item.key,
                    s.sage_id_field,
                    "operation is update but no Sage id is known for this source "
                    f"key (not in the ledger, no `{s.sage_id_field}` field)",
                )
            return self._update(
                item, res, ctx, known_id, fields, content_hash, entry, result, from_ledger
            )
        # create (a record deleted by this target and sent again is created again)
        if entry is not None and entry.state == APPLIED and entry.sage_id:
            return result("create", "skipped", entry.sage_id, "already created (ledger)")
        return self._create(item, res, ctx, fields, content_hash, entry, result)

    def _create(
        self,
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
                self.business_id, item.stream, item.key, generation
            )
        body, ignored = build_body(
            res.name, "post", fields, stream=item.stream, key=item.key, extra=extra
        )
        self._warn_ignored(item.stream, ignored)
        if self.settings.dry_run:
            return result("create", "skipped", None, "dry run: would create")
        bid = self.business_id
        inner = body[res.wrapper or ""]
        pending = entry if entry is not None and entry.state == PENDING else None
        sage_id: str | None = None
        holds: str | None = content_hash  # the content Sage holds once this is done
        if pending is not None:
            sage_id = self.find_pending(item, res, ctx, pending)
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
            if pending is not None and res.idempotency and self._within_window(pending):
                # The same idempotency_id again: Sage answers with what the interrupted POST
                # made, if it got through, whatever this body says.
                if pending.intent_hash != content_hash:
                    holds = None
                    self.ledger.record_intent(
                        bid,
                        item.stream,
                        item.key,
                        res.name,
                        _UNKNOWN,
                        at=pending.intent_at,
                        body=pending.intent_body,
                    )
            else:
                since = self.sage_now()
                self.ledger.record_intent(
                    bid,
                    item.stream,
                    item.key,
                    res.name,
                    content_hash,
                    at=since,
                    body=_lookup_fields(inner),
                )
            sage_id = self._post_create(item, res, ctx, body, since)
        if holds != content_hash:
            # Sage answered with an earlier content (an idempotent replay, an adopted record):
            # bring it to the newest.
            return self._update(
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
        self.ledger.record_applied(
            bid, item.stream, item.key, res.name, sage_id, content_hash, item.version
        )
        hooks.reached("after_ledger")
        return result("create", "created", sage_id, message)

    def _post_create(
        self, item: WorkItem, res: Resource, ctx: Call, body: dict[str, Any], since: float | None
    ) -> str:
        """POST the create: retried blindly only where Sage's idempotency guide promises
        idempotency; else after each ambiguous failure a lookup first."""
        bid = self.business_id
        inner = body[res.wrapper or ""]
        try:
            if res.idempotency:
                response = self.call(
                    "POST", res.path, ctx, json_body=body, retry=True, expected=(200, 201)
                )
                return str(response.json()["id"])
            answer = self.ambiguous_post(
                res.path, ctx, body, lambda: self.find_created(res, inner, ctx, since=since)
            )
            return str(answer["id"])
        except SageAPIError as exc:
            if exc.data_code == "IdempotencyResourceMismatch":
                self.ledger.clear_intent(bid, item.stream, item.key)
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
                self.ledger.clear_intent(bid, item.stream, item.key)
            raise

    def _within_window(self, pending: Entry) -> bool:
        """Whether Sage still remembers the idempotency_id of this pending create."""
        if pending.intent_at is None:
            return False
        return self.sage_now() - pending.intent_at < IDEMPOTENCY_WINDOW - IDEMPOTENCY_MARGIN

    def find_pending(
        self, item: WorkItem, res: Resource, ctx: Call, pending: Entry, lookup: bool = False
    ) -> str | None:
        """The Sage record an interrupted create made, if it can be known without sending it
        again: a lookup of the content it sent, created since its intent (Sage's time).
        Within Sage's idempotency window the POST itself is the lookup (None), unless
        ``lookup`` asks for one anyway (a delete)."""
        if res.idempotency and not lookup and self._within_window(pending):
            return None
        if not pending.intent_body:
            return None
        sent = json.loads(pending.intent_body, parse_float=decimal.Decimal)
        return self.find_created(res, sent, ctx, since=pending.intent_at)

    def ambiguous_post(
        self,
        path: str,
        ctx: Call,
        body: Any | None,
        reconcile: Callable[[], str | None],
    ) -> dict[str, Any]:
        """A POST Sage cannot deduplicate: after a 5xx, 429 or dropped connection it may still
        have been applied, so ``reconcile`` looks for its effect before any retry. Returns the
        answer's JSON, or ``{"id": <found>}``. As many tries as the connection's max_retries."""
        tries = 1 + self.client.settings.max_retries
        for attempt in range(tries):
            try:
                response = self.call(
                    "POST", path, ctx, json_body=body, retry=False, expected=(200, 201)
                )
                return dict(response.json())
            except (SageNetworkError, SageAPIError) as exc:
                if isinstance(exc, SageAPIError) and exc.status < 500 and exc.status != 429:
                    raise
                LOGGER.warning("POST %s failed (%s); checking whether it was applied", path, exc)
                time.sleep(min(self.client.settings.max_backoff, 0.5 * 2**attempt))
                found = reconcile()
                if found:
                    return {"id": found}
                if attempt == tries - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def find_created(
        self, res: Resource, inner: Mapping[str, Any], ctx: Call, since: float | None = None
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
            body = self.call("GET", next_path, ctx, params=params).json()
            params = None
            items = body.get("$items", []) if isinstance(body, dict) else []
            for item in items:
                created = _timestamp(item.get("created_at"))
                if not_before and created is not None and created < not_before:
                    continue
                if all(_same(_read_value(item, k), v) for k, v in scalars.items()) and not (
                    self.ledger.sage_id_taken(self.business_id, res.name, str(item.get("id")))
                ):
                    return str(item["id"])
            next_path = body.get("$next") if isinstance(body, dict) else None
        return None

    def _update(
        self,
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
                self.ledger.record_applied(
                    self.business_id, item.stream, item.key, res.name, sage_id, content_hash
                )
                return result(*outcome, sage_id, "adopted; Sage cannot update this resource")
            raise RecordError(
                item.stream,
                item.key,
                None,
                f"Sage resource `{res.name}` cannot be updated (no PUT)",
            )
        body, ignored = build_body(res.name, "put", fields, stream=item.stream, key=item.key)
        self._warn_ignored(item.stream, ignored)
        if (
            self.settings.skip_unchanged
            and entry is not None
            and entry.state == APPLIED
            and entry.content_hash == content_hash
            and (sage_id is None or entry.sage_id == sage_id)
        ):
            if not self.settings.dry_run:
                self.ledger.record_version(self.business_id, item.stream, item.key, item.version)
            return result("update", "skipped", sage_id, "unchanged since last applied (ledger)")
        if self.settings.dry_run:
            return result("update", "skipped", sage_id, "dry run: would update")
        bid = self.business_id
        path = res.path if sage_id is None else f"{res.path}/{sage_id}"
        try:
            response = self.call("PUT", path, ctx, json_body=body, expected=(200,))
        except SageNotFound as exc:
            if not from_ledger or sage_id is None:
                raise RecordError(
                    item.stream,
                    item.key,
                    self.settings.sage_id_field,
                    f"Sage has no {res.name} {sage_id} (404): it was deleted in Sage; give "
                    "the id of a record that exists, or none to create one",
                ) from exc
            # Gone in Sage (deleted there, or by an interrupted run of ours): the ledger
            # learns it, and the record is created anew with the newest content.
            LOGGER.warning(
                "Stream `%s`, source key %s: Sage %s %s is gone (404); creating it anew",
                item.stream,
                item.key,
                res.name,
                sage_id,
            )
            self.ledger.record_deleted(bid, item.stream, item.key, res.name, sage_id)
            fresh = self.ledger.get(bid, item.stream, item.key)
            return self._create(
                item,
                res,
                ctx,
                fields,
                content_hash,
                fresh,
                result,
                f"Sage record {sage_id} was gone (404); created anew",
            )
        if sage_id is None:
            returned = response.json().get("id") if response.content else None
            sage_id = str(returned) if returned else None
        self.ledger.record_applied(
            bid, item.stream, item.key, res.name, sage_id, content_hash, item.version
        )
        hooks.reached("after_ledger")
        return result(*outcome, sage_id, message)

    def _delete(
        self, item: WorkItem, res: Resource, ctx: Call, sage_id: str, result: Callable[..., Result]
    ) -> Result:
        if res.void:
            reason = item.record.get("void_reason") or self.settings.default_void_reason
            return self.void(item, res, ctx, sage_id, reason, result, "delete")
        if not res.delete:
            raise RecordError(
                item.stream,
                item.key,
                "_sdc_deleted_at",
                f"Sage resource `{res.name}` cannot be deleted",
            )
        if self.settings.dry_run:
            return result("delete", "skipped", sage_id, "dry run: would delete")
        message = None
        try:
            self.call("DELETE", f"{res.path}/{sage_id}", ctx, expected=(200, 204))
        except SageNotFound:
            message = "already deleted in Sage"
        self.ledger.record_deleted(
            self.business_id, item.stream, item.key, res.name, sage_id, item.version
        )
        hooks.reached("after_ledger")
        return result("delete", "deleted", sage_id, message)

    def void(
        self,
        item: WorkItem,
        res: Resource,
        ctx: Call,
        sage_id: str,
        reason: Any,
        result: Callable[..., Result],
        operation: str,
    ) -> Result:
        """Void a sales invoice, credit note or corrective invoice (idempotent)."""
        if self.settings.dry_run:
            return result(operation, "skipped", sage_id, "dry run: would void")
        params = {"void_reason": str(reason)} if reason else None
        message = None
        try:
            self.call("DELETE", f"{res.path}/{sage_id}", ctx, params=params, expected=(200, 204))
        except SageAPIError as exc:
            if exc.status != 422:
                raise
            current = self.call("GET", f"{res.path}/{sage_id}", Call()).json()
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
        self.ledger.record_deleted(
            self.business_id, item.stream, item.key, res.name, sage_id, item.version
        )
        hooks.reached("after_ledger")
        # Sage deletes a draft instead of voiding it (204, no body).
        outcome = "deleted" if ctx.status == 204 else "voided"
        return result(operation, outcome, sage_id, message)

    def _warn_ignored(self, stream: str, ignored: list[str]) -> None:
        for name in ignored:
            if name in {"id", "displayed_as", "$path", "created_at", "updated_at", "business_id"}:
                continue
            self.warn_once(stream, f"field `{name}` is not part of Sage's write body; ignored")

    # -- results -------------------------------------------------------------------------------

    def count_failure(self) -> None:
        """One more failed record (or bad line) in this run."""
        with self._lock:
            self.failed += 1

    def report(self, item: WorkItem, result: Result) -> None:
        """Write the result line, and the dead letter of a failure."""
        self.report_message(result, item.schema_message, item.raw_message)

    def report_message(
        self,
        result: Result,
        schema_message: dict[str, Any] | None,
        raw_message: dict[str, Any],
    ) -> None:
        """Write the result line, and under ``on_error: continue`` the failed message."""
        self.results.write(result)
        if result.outcome == "failed":
            self.count_failure()
            if self.settings.on_error == "continue":
                self.dead_letter.write(schema_message, raw_message)
                LOGGER.error("%s", result.message)


class Turnstile:
    """Strict input order for the POSTs Sage wants one at a time, without serialising the rest.

    The dispatcher hands each such item a ticket in input order. Its first POST waits for its
    turn (every earlier ticket done); the turn passes on as soon as Sage has answered that POST
    (or the item ends without one), so validation, body building and ledger/results writes of
    neighbouring records overlap the POST in flight, while no two of these POSTs ever do.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._issued = 0
        self._next = 0
        self._done: set[int] = set()

    def ticket(self) -> int:
        """The next ticket (dispatcher thread only)."""
        ticket = self._issued
        self._issued += 1
        return ticket

    def wait_turn(self, ticket: int) -> None:
        """Block until every earlier ticket is done."""
        with self._cond:
            self._cond.wait_for(lambda: self._next >= ticket)

    def done(self, ticket: int) -> None:
        """This ticket's POST has been answered (or there was none). Idempotent."""
        with self._cond:
            if ticket < self._next or ticket in self._done:
                return
            self._done.add(ticket)
            while self._next in self._done:
                self._done.discard(self._next)
                self._next += 1
            self._cond.notify_all()


class Dispatcher:
    """Applies a batch in input order with bounded concurrency (see the module docstring)."""

    def __init__(self, engine: Engine, route: Route) -> None:
        self.engine = engine
        self.route = route

    def run(self, items: list[WorkItem], sequential_post: Callable[[WorkItem], bool]) -> None:
        """Apply every item; raise ``TargetFailure`` at the first failure under on_error=fail."""
        engine = self.engine
        engine.acquire_run_lock()
        stop: list[Result] = []
        workers = engine.settings.max_parallel_writes

        fatal: list[BaseException] = []

        def work(item: WorkItem) -> None:
            try:
                result = engine.apply(item, self.route)
                engine.report(item, result)
            except BaseException as exc:  # the connection (or the disk) failed: stop
                fatal.append(exc)
                raise
            settings = engine.settings
            if result.outcome == "failed" and settings.on_error == "fail" and not settings.dry_run:
                stop.append(result)

        if workers == 1:
            for item in items:
                work(item)
                if stop:
                    break
        else:
            last_by_chain: dict[str, Future[None]] = {}
            inflight: set[Future[None]] = set()
            engine.turnstile = Turnstile()
            with ThreadPoolExecutor(workers, thread_name_prefix="sage-write") as pool:
                for item in items:
                    if stop or fatal:
                        break
                    before = last_by_chain.get(item.chain)
                    if before is not None and not before.done():
                        wait([before])
                    if sequential_post(item):
                        item.ticket = engine.turnstile.ticket()
                    while len(inflight) >= workers:
                        done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                        inflight -= done
                    if stop or fatal:
                        break
                    future = pool.submit(work, item)
                    inflight.add(future)
                    last_by_chain[item.chain] = future
                wait(inflight)
                engine.turnstile = None
                if fatal:
                    raise fatal[0]
        if stop:
            raise TargetFailure(
                f"{stop[0].message or 'record failed'} — stopping (on_error is `fail`; set "
                "`on_error: continue` to record failures and go on)"
            )


def _lookup_fields(inner: Mapping[str, Any]) -> str:
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


def new_run_id() -> str:
    """An id for this run, written on every result line."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
