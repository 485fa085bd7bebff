"""How new a message's content is (its version), and how two versions compare."""

from __future__ import annotations

import datetime as dt
from typing import Any


def message_version(
    message: dict[str, Any], schema_message: dict[str, Any] | None = None
) -> str | None:
    """How new this message's content is, as a sortable UTC text, when the input says it:
    the message's ``time_extracted`` (SDK taps write it), else the record's replication key
    (the SCHEMA's ``bookmark_properties``) or ``updated_at``, else a tombstone's
    ``_sdc_deleted_at``. None when the input says nothing: then the ledger's history decides."""
    stamp = _utc_text(message.get("time_extracted"))
    if stamp is not None:
        return EXTRACTED + stamp
    record = message.get("record")
    if not isinstance(record, dict):
        return None
    names = [*((schema_message or {}).get("bookmark_properties") or []), "updated_at"]
    for name in names:
        if isinstance(name, str) and (stamp := _utc_text(record.get(name))) is not None:
            return CHANGED + stamp
    stamp = _utc_text(record.get("_sdc_deleted_at"))
    return None if stamp is None else CHANGED + stamp


#: Kinds of version: when the tap read it (time_extracted), or when the source changed it (its
#: replication key, updated_at, a tombstone's deletion time). Only versions of one kind compare.
EXTRACTED = "extracted "
CHANGED = "changed "


def newer(a: str | None, b: str | None) -> bool | None:
    """Whether version ``a`` is newer than ``b`` (None: they cannot be compared)."""
    if not a or not b or a.split(" ", 1)[0] != b.split(" ", 1)[0]:
        return None
    return a > b


def _utc_text(raw: Any) -> str | None:
    if isinstance(raw, dt.datetime):
        when = raw
    elif isinstance(raw, str) and raw:
        try:
            when = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
