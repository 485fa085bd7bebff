"""Partitions of a list that Sage reads only with a parameter: one read per allowed value.

Sage's ``GET /tax_determinations`` refuses a list without ``usage`` (the v3.1 spec marks it
required, with the values ``sales`` and ``purchases``; the sandbox refuses it the same way). So
the stream reads the list once for each value the spec allows (from the catalogue's ``enum``),
for each business: a partition ``{"business_id", "usage"}`` each, with its own state. A value
set in ``stream_filters`` reads that value alone. Sage's tax rates do not say which usage they
were listed for, and one rate may be listed for both, so every record carries the value it was
read with (a ``usage`` field) and that field is part of the primary key.

A required parameter without an enum in the spec still needs ``stream_filters`` (the stream is
then not selected by default, and skipped with a warning naming the setting).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from tap_sage.sage.catalogue import Param, Resource


def enumerated(resource: Resource) -> tuple[Param, ...]:
    """The required list parameters of ``resource`` whose values the spec enumerates."""
    return tuple(p for p in resource.params if p.required and p.enum)


def unreadable(resource: Resource, given: Mapping[str, Any]) -> list[str]:
    """Required parameters that neither ``stream_filters`` (``given``) nor the spec's enum
    supply: without them Sage refuses the list."""
    return [p.name for p in resource.params if p.required and not p.enum and p.name not in given]


def needs_filters(resource: Resource) -> bool:
    """Whether the stream reads only when ``stream_filters`` names a parameter."""
    return any(p.required and not p.enum for p in resource.params)


def values(resource: Resource, given: Mapping[str, Any]) -> list[dict[str, str]]:
    """One dict of parameter values per read of a business: every combination of the allowed
    values, each parameter set in ``stream_filters`` held to that value. ``[{}]`` when the
    resource has no such parameter."""
    params = enumerated(resource)
    choices = [[str(given[p.name])] if p.name in given else list(p.enum) for p in params]
    return [dict(zip([p.name for p in params], combo, strict=True))
            for combo in itertools.product(*choices)]  # fmt: skip


def add_properties(resource: Resource, properties: dict[str, Any]) -> list[str]:
    """Add the record fields that say which values a record was read with; their names."""
    names = []
    for param in enumerated(resource):
        properties.setdefault(
            param.name,
            {
                "type": "string",
                "enum": list(param.enum),
                "description": f"The `{param.name}` this record was listed for (the tap reads "
                f"the list once per value: {', '.join(param.enum)}).",
            },
        )
        names.append(param.name)
    return names


def label(context: Mapping[str, Any]) -> str:
    """The partition's keys other than the business, as words (``usage sales``)."""
    return ", ".join(f"{k} {v}" for k, v in context.items() if k != "business_id")


def values_of(context: Mapping[str, Any]) -> dict[str, str]:
    """The partition's values other than the business (``{"usage": "sales"}``): what its read
    sends and what each of its records carries."""
    return {k: str(v) for k, v in context.items() if k != "business_id"}


def key(context: Mapping[str, Any]) -> str:
    """The partition within its stream, as text: the business, then any other values
    (``tap_sage.readahead`` keys its reads by stream and this)."""
    rest = "".join(f"|{k}={v}" for k, v in values_of(context).items())
    return f"{context['business_id']}{rest}"
