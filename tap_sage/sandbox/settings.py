"""Server settings: the knobs of one ``serve`` (its flags) and the fault kinds they name."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from tap_sage.sandbox import oauth

FAULT_KINDS = ("500", "503", "429", "drop", "commit500", "commitdrop")
#: Faults drawn only when named (``--fault-kinds``): ``html``, an HTML error page (not JSON) with
#: 502, 503, 504 or 520-525 as a gateway or CDN in front of Sage answers; ``429bare``, a 429
#: without ``Retry-After``; ``cutbody``, the request is served in full (a write committed) but
#: the connection closes halfway through the answer's body, after its status and headers.
EXTRA_FAULT_KINDS = ("html", "429bare", "cutbody")
ALL_FAULT_KINDS = FAULT_KINDS + EXTRA_FAULT_KINDS
HTML_STATUSES = (502, 503, 504, 520, 521, 522, 523, 524, 525)
PAGING_MODES = ("seek", "offset")

#: How long an ``idempotency_id`` is remembered: "For the next 7 days, a repetition of this very
#: same request will return the exact same result as the first request" (Sage's idempotency
#: guide, developer.sage.com/accounting/guides/concepts/idempotency/). ``--idempotency-ttl``
#: shortens it for tests.
IDEMPOTENCY_TTL = 7 * 86400.0


@dataclass
class Settings:
    """Knobs of one server (the ``serve`` flags)."""

    db: Path
    latency_ms: int = 0
    fault_rate: float = 0.0
    oauth_fault_rate: float = 0.0
    fault_seed: int | None = None
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    #: Heavy pages: a GET with ``attributes=all`` asking for more than this many items per page
    #: fails (500 or an HTML 504) with probability ``heavy_fault_rate`` (0: never).
    heavy_page_size: int = 0
    heavy_fault_rate: float = 1.0
    token_ttl: int = oauth.DEFAULT_TOKEN_TTL
    max_concurrent: int = 150
    idempotency_ttl: float = 0.0  # 0: Sage's 7 days (IDEMPOTENCY_TTL)
    #: ``seek``: pages seek from where earlier pages ended when no write came since (time
    #: independent of the page number); ``offset``: always LIMIT/OFFSET (same answers)
    paging: str = "seek"
    #: log how each list page was read (``--log-paging``)
    log_paging: bool = False
    started_at: float = field(default_factory=time.time)
