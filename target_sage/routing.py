"""Routing: the Sage resource or Execute procedure a stream's records go to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tap_sage.sage import catalogue
from tap_sage.sage.catalogue import Resource
from tap_sage.sage.errors import SageError
from target_sage.procedures import PROCEDURES


class RoutingError(SageError):
    """A stream maps to nothing Sage can write."""


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


def route(stream_resources: Mapping[str, str], stream: str) -> Route:
    """The resource or procedure of a stream; ``RoutingError`` when there is none."""
    target = stream_resources.get(stream, stream)
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
