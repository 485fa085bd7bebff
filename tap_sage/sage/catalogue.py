"""The Sage resource catalogue: every v3.1 resource as data.

The catalogue is generated from Sage's public v3.1 spec by ``scripts/generate_catalogue.py``
into ``resources.json`` (beside this module) and ``schemas/`` (one JSON schema per list resource
and singleton, and one per write body). A new Sage resource is one entry there, not a new class.

This module is part of the shared Sage layer: it imports nothing Singer-specific.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
from typing_extensions import override

_HERE = Path(__file__).parent
RESOURCES_FILE = _HERE / "resources.json"
SCHEMAS_DIR = _HERE / "schemas"

#: Query parameters that drive incremental reads and paging rather than filtering.
CONTROL_PARAMS = frozenset(
    {"page", "items_per_page", "attributes", "updated_or_created_since", "deleted_since", "sort"}
)


# Frozen ``msgspec`` structs, decoded from ``resources.json`` in one C pass: frozen dataclasses
# cost every start-up the generation of their methods and a Python ``__init__`` per resource
# and parameter (issue 15).


class Param(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One query parameter a list endpoint accepts."""

    name: str
    type: str  # "string" | "boolean" | "integer" | "number"
    description: str = ""
    format: str | None = None
    required: bool = False  # the spec marks it required (tax_determinations' ``usage``)
    enum: tuple[str, ...] = ()  # the values the spec allows (``usage``: sales, purchases)


class Action(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A special action on one record, e.g. ``POST /sales_invoices/{key}/release``."""

    name: str  # "release" | "reissue" | "file" | "bank_feed"
    method: str  # "POST" | "GET"
    path: str  # "/sales_invoices/{key}/release"
    success_status: int


class Resource(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One Sage resource (``/contacts``, ``/business_settings``, ...)."""

    name: str  # "contacts"
    path: str  # "/contacts"
    title: str  # "Contacts"
    definition: str  # spec definition of one item, e.g. "Contact"
    wrapper: str | None  # body wrapper for writes, e.g. "contact"; None when not writable
    singleton: bool  # GET returns one object, not an envelope
    key: str  # "id" (or "" for singletons, which have no id)
    list: bool
    get: bool  # GET /{path}/{key}
    create: bool  # POST
    update: bool  # PUT (singletons: PUT on the collection path)
    delete: bool  # DELETE that deletes (204)
    void: bool  # DELETE voids the document and takes ``void_reason``
    actions: tuple[Action, ...]
    params: tuple[Param, ...]  # every query parameter of the list GET
    parallel_posts: bool  # False where Sage asks for strictly sequential POSTs
    idempotency: bool  # POST accepts ``idempotency_id`` inside the wrapper
    availability: dict[str, tuple[str, ...]] = msgspec.field(
        default_factory=dict
    )  # edition -> countries
    post_definition: str | None = None  # "postContacts"
    put_definition: str | None = None  # "putContacts"

    @property
    def param_names(self) -> frozenset[str]:
        """Names of every query parameter the list GET accepts."""
        return frozenset(p.name for p in self.params)

    @property
    def incremental(self) -> bool:
        """Whether the list takes ``updated_or_created_since``."""
        return "updated_or_created_since" in self.param_names

    @property
    def deletions(self) -> bool:
        """Whether the list takes ``deleted_since`` (tombstones)."""
        return "deleted_since" in self.param_names

    @property
    def sortable(self) -> bool:
        """Whether the list takes ``sort=updated_at[:desc]``."""
        return "sort" in self.param_names

    @property
    def date_filtered(self) -> bool:
        """Whether the list takes ``from_date``/``to_date``."""
        return "from_date" in self.param_names

    @property
    def filter_params(self) -> dict[str, Param]:
        """Parameters a user may set as server-side filters (everything but paging/sync)."""
        return {p.name: p for p in self.params if p.name not in CONTROL_PARAMS}

    @property
    def writable(self) -> bool:
        """Whether any write (create, update, delete or void) exists."""
        return self.create or self.update or self.delete or self.void

    def action(self, name: str) -> Action | None:
        """The action called ``name``, if this resource has it."""
        return next((a for a in self.actions if a.name == name), None)

    def available_in(self, country: str, edition: str | None = None) -> bool:
        """Whether Sage documents this resource for ``country`` (and ``edition`` if given).

        Resources with no availability data in the spec are assumed available everywhere.
        """
        if not self.availability:
            return True
        editions = [edition] if edition else list(self.availability)
        return any(country.upper() in self.availability.get(e, ()) for e in editions)


class _Named(msgspec.Struct):
    name: str


class _Names(msgspec.Struct):
    resources: tuple[_Named, ...]


class _Texts(msgspec.Struct):
    resources: tuple[msgspec.Raw, ...]


class Catalogue(Mapping[str, Resource]):
    """Every resource, by name, in catalogue order; each decoded when first asked for.

    A sync of one stream needs one resource of the 85: decoding them all (their parameters'
    descriptions included) held 321 KiB at the first request (tracemalloc), a decoded one
    and the file's text about half of it. Iterating the values decodes them all."""

    def __init__(self, text: bytes) -> None:
        names = msgspec.json.decode(text, type=_Names).resources
        texts = msgspec.json.decode(text, type=_Texts).resources
        self._texts = {n.name: t for n, t in zip(names, texts, strict=True)}
        self._decoded: dict[str, Resource] = {}

    @override
    def __getitem__(self, name: str) -> Resource:
        found = self._decoded.get(name)
        if found is None:  # two threads may both decode it: the first one stored is kept
            decoded = msgspec.json.decode(self._texts[name], type=Resource)
            found = self._decoded.setdefault(name, decoded)
        return found

    @override
    def __contains__(self, name: object) -> bool:
        return name in self._texts

    @override
    def __iter__(self) -> Iterator[str]:
        return iter(self._texts)

    @override
    def __len__(self) -> int:
        return len(self._texts)


@functools.cache
def resources() -> Catalogue:
    """Every resource, by name, in catalogue order."""
    return Catalogue(RESOURCES_FILE.read_bytes())


def resource(name: str) -> Resource:
    """The resource called ``name``; ``KeyError`` naming it when there is none."""
    try:
        return resources()[name]
    except KeyError:
        msg = f"Unknown Sage resource {name!r}"
        raise KeyError(msg) from None


@functools.cache
def list_schema(name: str) -> dict[str, Any]:
    """JSON schema of one item of resource ``name`` as a list (or singleton GET) returns it."""
    path = SCHEMAS_DIR / "read" / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@functools.cache
def write_schema(name: str, verb: str) -> dict[str, Any] | None:
    """JSON schema of the wrapped body of a ``verb`` ("post" | "put") on resource ``name``.

    The schema describes the whole body, wrapper included: ``{"contact": {...}}``.
    """
    path = SCHEMAS_DIR / "write" / f"{verb}_{name}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
