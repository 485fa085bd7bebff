"""The engine of a target run: the connection's client and business, each request (with the
crash points around it), Sage's clock, and the dispatch of one record to its resource
operation (``operations``) or Execute procedure (``procedures``). Routing is ``routing``,
exactly-once ``exactly_once``, ordering ``ordering``, the run lock ``run_lock``, the results
``reporting``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from tap_sage.checkpoints import checkpoint
from tap_sage.sage.client import SageClient
from tap_sage.sage.errors import (
    SageAPIError,
    SageAuthError,
    SageError,
    SageNetworkError,
)
from target_sage import operations
from target_sage.ledger import Ledger, LedgerError
from target_sage.ordering import Turnstile
from target_sage.payload import RecordError
from target_sage.procedures import PROCEDURES
from target_sage.reporting import Reporter
from target_sage.results import DeadLetterFile, Result, ResultsFile
from target_sage.routing import Route, route
from target_sage.settings import TargetSettings
from target_sage.work import Call, WorkItem

LOGGER = logging.getLogger("target_sage")


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
    reporter: Reporter = field(init=False)
    #: Sage's clock minus ours, from the ``Date`` header of Sage's answers (None: none yet).
    _sage_offset: float | None = None

    def __post_init__(self) -> None:
        self.reporter = Reporter(self.settings, self.results, self.dead_letter)

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
        """One request through the shared client, with the checkpoints around it."""
        ticket: int | None = getattr(self._local, "ticket", None)
        in_turn = method == "POST" and ticket is not None and self.turnstile is not None
        if in_turn:
            assert self.turnstile is not None and ticket is not None
            self.turnstile.wait_turn(ticket)
        write = method != "GET"  # the crash points count writes only
        if write:
            checkpoint("before_request")
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
            checkpoint("after_request")
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

    # -- routing -------------------------------------------------------------------------------

    def route(self, stream: str) -> Route:
        """The resource or procedure of a stream; ``RoutingError`` when there is none."""
        return route(self.settings.stream_resources, stream)

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
                return PROCEDURES[route.procedure].run(self, item, ctx)
            assert route.resource is not None
            return operations.apply_resource(self, item, route.resource, ctx)
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


def new_run_id() -> str:
    """An id for this run, written on every result line."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
