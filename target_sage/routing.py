"""Routing: the Sage resource or Execute procedure a stream's records go to.

Decided here only (``destination``): the target's sinks route with it, the settings check
``stream_resources`` with it, and the procedures are the names it knows besides resources."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tap_sage.sage import catalogue
from tap_sage.sage.catalogue import Resource
from tap_sage.sage.errors import SageConfigError, SageError
from target_sage.procedures import PROCEDURES


class RoutingError(SageError):
    """A stream maps to nothing Sage can write."""

    def __init__(self, message: str, problem: str, *, unknown: bool = False) -> None:
        self.problem = problem  # the same, said of the setting's value
        self.unknown = unknown  # neither a resource nor a procedure (the message says how to map)
        super().__init__(message)


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


def destination(target: str) -> str | Resource:
    """What a ``stream_resources`` value (or a stream's own name) names: an Execute procedure
    (its name), or a Sage resource that can be written. ``RoutingError`` (with ``problem``,
    the fault without the stream) when it is neither."""
    if target in PROCEDURES:
        return target
    res = catalogue.resources().get(target)
    if res is None:
        raise RoutingError(
            f"maps to no Sage resource or procedure ({target!r})",
            f"{target!r} is neither a Sage resource nor an Execute procedure",
            unknown=True,
        )
    if not res.writable or not res.wrapper:
        raise RoutingError(
            f"maps to Sage resource `{res.name}`, which cannot be written",
            f"Sage resource {target!r} cannot be written",
        )
    return res


def check_stream_resources(stream_resources: Mapping[str, str]) -> None:
    """The ``stream_resources`` setting's check: ``SageConfigError`` names the stream."""
    for stream, target in stream_resources.items():
        try:
            destination(target)
        except RoutingError as exc:
            raise SageConfigError(f"stream_resources.{stream}", exc.problem) from None


def route(stream_resources: Mapping[str, str], stream: str) -> Route:
    """The resource or procedure of a stream; ``RoutingError`` when there is none."""
    target = stream_resources.get(stream, stream)
    try:
        found = destination(target)
    except RoutingError as exc:
        hint = (
            f"map it with the `stream_resources` setting, e.g. "
            f'{{"{stream}": "contacts"}}, or name the stream after a Sage resource or an '
            f"Execute procedure (see `target-sage --about`)"
        )
        text = f"Stream `{stream}` {exc}"
        if exc.unknown:
            text += f": {hint}"
        raise RoutingError(text, exc.problem, unknown=exc.unknown) from None
    if isinstance(found, str):
        return Route(stream, procedure=found)
    return Route(stream, resource=found)
