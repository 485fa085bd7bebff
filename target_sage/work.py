"""What one record's work is: the item a sink hands on, the answer of its last request, and
the run-stopping failure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tap_sage.sage.errors import SageError


class TargetFailure(SageError):
    """A record failed under ``on_error: fail``: the run stops here."""


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
class Call:
    """The last HTTP answer of an operation (for the results file)."""

    status: int | None = None
    request_id: str | None = None
    operation: str | None = None  # once decided: create, update, delete, ...
