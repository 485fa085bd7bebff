"""The stock-SDK peer of tap-sage for the benchmarks: what a user would write with singer-sdk.

A small, idiomatic ``RESTStream`` tap over the same Sage API (the sandbox): a bearer token, the
``X-Business`` header, ``attributes=all`` pages of 200 sorted by ``updated_at``, Sage's
relative ``$next`` links through the SDK's HATEOAS paginator, one state bookmark per stream,
the SDK's defaults for everything else (record conformance, writer, one request at a time).
The schemas are tap-sage's read schemas (read as JSON files, so the peer imports nothing of
tap-sage): both taps emit the same fields.

    python bench/peer_tap.py --config CONFIG [--catalog CATALOG]

Config: ``api_url``, ``access_token``, ``business_id``.
"""

from __future__ import annotations

import json
import typing as t
from pathlib import Path
from typing import Any

from singer_sdk import Tap
from singer_sdk import typing as th
from singer_sdk.authenticators import BearerTokenAuthenticator
from singer_sdk.pagination import BaseHATEOASPaginator
from singer_sdk.streams import RESTStream
from typing_extensions import override

if t.TYPE_CHECKING:
    import requests
    from singer_sdk.helpers.types import Context

SCHEMAS = Path(__file__).resolve().parent.parent / "tap_sage" / "sage" / "schemas" / "read"


class SageNextPaginator(BaseHATEOASPaginator):
    """Sage's ``$next``: a link relative to the API root, null on the last page."""

    @override
    def get_next_url(self, response: requests.Response) -> str | None:
        link = response.json().get("$next")
        return str(link) if link else None


class SageStream(RESTStream[Any]):
    """A Sage list."""

    records_jsonpath = "$['$items'][*]"
    #: whether the list takes ``sort`` (``/bank_accounts`` does not)
    sortable = True
    primary_keys: t.ClassVar[list[str]] = ["id"]
    replication_key = "updated_at"

    @property
    @override
    def url_base(self) -> str:
        return str(self.config["api_url"])

    @property
    @override
    def authenticator(self) -> BearerTokenAuthenticator:
        return BearerTokenAuthenticator(token=str(self.config["access_token"]))

    @property
    @override
    def http_headers(self) -> dict[str, str]:
        return {"X-Business": str(self.config["business_id"]), "Accept": "application/json"}

    @override
    def get_new_paginator(self) -> SageNextPaginator:
        return SageNextPaginator()

    @override
    def get_url_params(
        self, context: Context | None, next_page_token: Any | None
    ) -> dict[str, Any]:
        if next_page_token:  # the link keeps every parameter
            return dict(
                pair.split("=", 1) for pair in next_page_token.query.split("&") if "=" in pair
            )
        params: dict[str, Any] = {"items_per_page": 200, "attributes": "all"}
        if self.sortable:
            params["sort"] = "updated_at"
        since = self.get_starting_replication_key_value(context)
        if since:
            params["updated_or_created_since"] = since
        return params


def _stream(name: str, *, sortable: bool = True) -> type[SageStream]:
    schema = json.loads((SCHEMAS / f"{name}.json").read_text(encoding="utf-8"))
    attrs = {"name": name, "path": f"/{name}", "schema": schema, "sortable": sortable}
    return type(name, (SageStream,), attrs)


STREAMS = [_stream("sales_invoices"), _stream("contact_payments"),
           _stream("bank_accounts", sortable=False)]  # fmt: skip


class TapSagePeer(Tap):
    """The stock-SDK peer of tap-sage."""

    name = "tap-sage-peer"
    config_jsonschema = th.PropertiesList(
        th.Property("api_url", th.StringType, required=True),
        th.Property("access_token", th.StringType, required=True, secret=True),
        th.Property("business_id", th.StringType, required=True),
        th.Property("start_date", th.DateTimeType),
    ).to_dict()

    @override
    def discover_streams(self) -> list[SageStream]:
        return [stream(self) for stream in STREAMS]


if __name__ == "__main__":
    TapSagePeer.cli()
