"""Injected faults: the dice of ``--fault-rate``, heavy pages, and what each fault kind answers."""

from __future__ import annotations

import random
import threading

from werkzeug.wrappers import Request

from tap_sage.sandbox.answers import (
    HTML_TITLES,
    Answer,
    DropConnection,
    SageError,
    html_response,
    json_response,
)
from tap_sage.sandbox.lists import DEFAULT_ITEMS_PER_PAGE
from tap_sage.sandbox.settings import HTML_STATUSES, Settings

WRITE_METHODS = frozenset({"POST", "PUT", "DELETE"})


class Faults:
    """One server's fault dice (one seeded generator for ``/v3.1`` and ``/oauth``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._rng = random.Random(settings.fault_seed)
        self._lock = threading.Lock()

    def draw(self, rate: float, method: str) -> str | None:
        """The fault kind of this request, or None; ``commit*`` act as 500/drop on reads."""
        if rate <= 0:
            return None
        with self._lock:
            if self._rng.random() >= rate:
                return None
            kind = self._rng.choice(self.settings.fault_kinds)
        if kind.startswith("commit") and method not in WRITE_METHODS:
            kind = "500" if kind == "commit500" else "drop"
        return kind

    def heavy(self, request: Request) -> None:
        """Fail a heavy list page (``attributes=all`` above ``heavy_page_size`` items)."""
        limit = self.settings.heavy_page_size
        if limit <= 0 or request.method != "GET" or request.args.get("attributes") != "all":
            return
        try:
            size = int(request.args.get("items_per_page", DEFAULT_ITEMS_PER_PAGE))
        except ValueError:
            return
        if size <= limit:
            return
        with self._lock:
            if self._rng.random() >= self.settings.heavy_fault_rate:
                return
            gateway = self._rng.random() < 0.5
        if gateway:
            raise Answer(html_response(504, "Gateway Time-out"))
        raise SageError(500, "UnexpectedError", "Sandbox fault injected: page too heavy")

    def before(self, kind: str | None) -> None:
        """Answer a fault that comes before any work (every kind but ``commit*``)."""
        if kind == "html":
            with self._lock:
                status = self._rng.choice(HTML_STATUSES)
            raise Answer(html_response(status, HTML_TITLES.get(status, "Error")))
        if kind == "429bare":
            raise Answer(json_response(429, SageError(429, "TooManyRequests", "Rate limit").items))
        if kind == "drop":
            raise DropConnection
        if kind == "429":
            raise Answer(
                json_response(
                    429,
                    SageError(429, "TooManyRequests", "Rate limit exceeded").items,
                    {"Retry-After": "1"},
                )
            )
        if kind in ("500", "503"):
            status = int(kind)
            code = "UnexpectedError" if status == 500 else "ServiceUnavailable"
            raise SageError(status, code, "Sandbox fault injected")

    @staticmethod
    def after(kind: str | None) -> None:
        """Answer a fault that comes after the write committed (``commit500``, ``commitdrop``)."""
        if kind == "commitdrop":
            raise DropConnection
        if kind == "commit500":
            raise SageError(500, "UnexpectedError", "Sandbox fault injected after commit")
