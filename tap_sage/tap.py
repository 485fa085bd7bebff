"""tap-sage: the Singer tap for Sage Business Cloud Accounting (API v3.1)."""

from __future__ import annotations

from tap_sage.startup import long_lived_imports, one_malloc_arena

one_malloc_arena()  # before any thread allocates (tap_sage.startup)

with long_lived_imports():  # objects that live as long as the process (tap_sage.startup)
    import functools
    import io
    import os
    import sys
    import typing as t
    from collections.abc import Mapping
    from concurrent.futures import ThreadPoolExecutor
    from datetime import date
    from typing import Any

    import click
    from singer_sdk import Tap
    from singer_sdk.exceptions import ConfigValidationError
    from singer_sdk.tap_base import CliTestOptionValue
    from typing_extensions import override

    from tap_sage import deletions, partitioning
    from tap_sage.about import SageVersions  # and registers the markdown about formatter
    from tap_sage.readahead import RequestBudget, Scheduler, Slot, partitions_ahead
    from tap_sage.sage import catalogue
    from tap_sage.sage.client import SageClient
    from tap_sage.sage.errors import SageConfigError
    from tap_sage.sage.settings import CONNECTION_PROPERTIES, ConnectionSettings
    from tap_sage.selection import lean_catalog, row_selected, selected
    from tap_sage.streams import SageSingletonStream, SageStream
    from tap_sage.sync import epoch
    from tap_sage.sync.pages import PAGE_BUFFER
    from tap_sage.writer import BufferedMsgSpecWriter, flush_writers

if t.TYPE_CHECKING:
    from singer_sdk.streams import Stream

MAX_CONCURRENCY = 150  # Sage's limit of concurrent requests per app

TAP_PROPERTIES: dict[str, Any] = {
    "start_date": {
        "type": ["string", "null"],
        "format": "date-time",
        "description": "Earliest `updated_at` to read on the first run of an incremental stream "
        "(ISO 8601, e.g. `2024-01-01T00:00:00Z`). Later runs start from their bookmark. Empty: "
        "the whole history.",
    },
    "business_ids": {
        "type": ["array", "null"],
        "items": {"type": "string"},
        "description": "Ids of the Sage businesses to read (one state partition each). Empty: "
        "every business the connection can reach (`GET /businesses`).",
    },
    "include_deleted": {
        "type": "boolean",
        "default": True,
        "description": "Emit records that Sage deleted since the last run (resources that take "
        "`deleted_since`). Kept for older configurations: `false` means `deletions: none`; "
        "`deletions` says how they are emitted and wins when set.",
    },
    "deletions": deletions.SETTING,
    "stream_filters": {
        "type": ["object", "null"],
        "additionalProperties": {"type": "object"},
        "description": 'Server-side filters per stream, e.g. `{"sales_invoices": '
        '{"from_date": "2024-01-01", "status_id": "UNPAID"}}`. Each parameter must be '
        "one the resource's list takes (checked at start-up); incremental, paging and sort "
        "parameters are the tap's own.",
    },
    "max_concurrency": {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_CONCURRENCY,
        "default": 4,
        "description": "Requests to Sage in flight at the same time, across every stream and "
        "business (1 to Sage's limit of 150): the pages of one list, and the lists that come "
        "next read ahead while one is emitted. Records and STATE are emitted in the same order, "
        "with the same bookmarks, whatever the value.",
    },
}

_DATE_PARAMS = ("from_date", "to_date", "updated_from_date", "updated_to_date", "date")


def _check_value(stream: str, name: str, kind: str, value: Any) -> str:
    where = f"stream_filters.{stream}.{name}"
    if isinstance(value, (dict, list)) or value is None:
        raise SageConfigError(where, f"must be a single {kind} value, not {value!r}")
    if kind == "boolean":
        if isinstance(value, bool):
            return "true" if value else "false"
        if str(value).lower() in ("true", "false"):
            return str(value).lower()
        raise SageConfigError(where, f"{value!r} is not true or false")
    if kind in ("integer", "number"):
        try:
            number = float(value) if kind == "number" else int(str(value))
        except ValueError:
            raise SageConfigError(where, f"{value!r} is not a {kind}") from None
        return str(number)
    text = str(value)
    if name in _DATE_PARAMS:
        try:
            date.fromisoformat(text[:10])
        except ValueError:
            raise SageConfigError(where, f"{text!r} is not a date (YYYY-MM-DD)") from None
    return text


def validate_stream_filters(raw: Any) -> dict[str, dict[str, str]]:
    """``stream_filters`` checked against the catalogue: query parameters per stream."""
    if not raw:
        return {}
    if not isinstance(raw, dict):
        raise SageConfigError("stream_filters", "must be an object: stream -> {parameter: value}")
    resources = catalogue.resources()
    out: dict[str, dict[str, str]] = {}
    for stream, filters in raw.items():
        resource = resources.get(stream)
        if resource is None or not resource.list or resource.singleton:
            raise SageConfigError(
                f"stream_filters.{stream}", "there is no list stream of this name"
            )
        if not isinstance(filters, dict):
            raise SageConfigError(f"stream_filters.{stream}", "must be an object of parameters")
        accepted = resource.filter_params
        checked: dict[str, str] = {}
        for name, value in filters.items():
            if name in catalogue.CONTROL_PARAMS:
                raise SageConfigError(
                    f"stream_filters.{stream}.{name}",
                    "is set by the tap itself (paging, attributes, incremental sync, sort)",
                )
            param = accepted.get(name)
            if param is None:
                known = ", ".join(sorted(accepted)) or "none"
                raise SageConfigError(
                    f"stream_filters.{stream}.{name}",
                    f"{stream} does not take the parameter {name!r} (it takes: {known})",
                )
            checked[name] = _check_value(stream, name, param.type, value)
        out[stream] = checked
    return out


def end_output() -> None:
    """The tap's output is complete: stdout is flushed and closed now, so that whoever reads it
    (a target, Meltano) sees its end at once instead of after the interpreter's teardown, which
    frees every object and joins the threads: 0.1 to 0.17 s after the last line, measured by
    ``bench/pipeline_bench.py`` (the end of a 20,000-record sync). Only the process's own
    stdout is closed (not one a caller put in its place); its descriptor then writes to
    ``os.devnull``."""
    stdout = sys.__stdout__
    if stdout is None or sys.stdout is not stdout or stdout.closed:
        return
    flush_writers()
    stdout.flush()
    fd = stdout.fileno()
    stdout.close()  # Python's own stdout does not close its descriptor: dup2 does, below
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)  # the pipe's end is released; a stray write goes nowhere
    finally:
        os.close(devnull)


class TapSage(SageVersions, Tap):
    """Singer tap for Sage Business Cloud Accounting: every list and settings resource of v3.1,
    incremental where Sage allows, consistent under concurrent writes, per business."""

    name = "tap-sage"
    package_name = "tap-sage"  # the distribution, whose version --about and the logs report
    message_writer_class = BufferedMsgSpecWriter
    config_jsonschema: t.ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {**CONNECTION_PROPERTIES, **TAP_PROPERTIES},
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Initialise the tap; with ``validate_config`` (the default), check every setting."""
        self._business_ids: list[str] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._budget: RequestBudget | None = None
        self._scheduler: Scheduler | None = None
        self._filters: dict[str, dict[str, str]] | None = None
        self._connection: ConnectionSettings | None = None
        #: every stream the input catalog lists, selected or not (``_only_selected``)
        self._catalogued: set[str] | None = None
        if isinstance(kwargs.get("catalog"), Mapping):
            kwargs["catalog"] = self._only_selected(kwargs["catalog"])
        super().__init__(*args, **kwargs)
        if kwargs.get("validate_config", True):
            try:
                self._connection = ConnectionSettings.from_config(self.config)
                self._filters = validate_stream_filters(self.config.get("stream_filters"))
                start = self.config.get("start_date")
                if start:
                    try:
                        epoch(str(start))
                    except ValueError:
                        raise SageConfigError(
                            "start_date", f"{start!r} is not an ISO 8601 date-time"
                        ) from None
            except SageConfigError as error:
                raise ConfigValidationError(str(error), errors=[str(error)]) from error

    @override
    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """The SDK's JSON-schema validation, with secret values kept out of its messages."""
        secrets = [
            str(self._config[k])
            for k, v in CONNECTION_PROPERTIES.items()
            if v.get("secret") and self._config.get(k) not in (None, "")
        ]
        try:
            errors = super()._validate_config(raise_errors=raise_errors)
        except ConfigValidationError as error:
            redacted = [self._redact(e, secrets) for e in error.errors]
            raise ConfigValidationError(
                self._redact(str(error), secrets), errors=redacted
            ) from None
        return [self._redact(e, secrets) for e in errors]

    @staticmethod
    def _redact(text: str, secrets: list[str]) -> str:
        for secret in secrets:
            text = text.replace(secret, "********")
        return text

    @classmethod
    @override
    def invoke(  # type: ignore[override]
        cls,
        *,
        about: bool = False,
        about_format: str | None = None,
        config: Any = None,
        state: t.IO[str] | None = None,
        catalog: t.IO[str] | None = None,
    ) -> None:
        """The SDK's sync command, with the catalog file read lean: a deselected entry's
        schema is skipped, not parsed (``lean_catalog``). The file is read as bytes: its
        text as a ``str`` beside the bytes decoded into it would double its 1.5 MB at start-up's
        memory high-water mark."""
        if catalog is not None:
            binary = getattr(catalog, "buffer", None)
            catalog = io.StringIO(lean_catalog(binary.read() if binary else catalog.read()))
        super().invoke(
            about=about, about_format=about_format, config=config, state=state, catalog=catalog
        )
        end_output()

    @classmethod
    @override
    def cb_test(cls, ctx: click.Context, param: click.Option, value: str) -> None:
        """``--test``: first the connection check (credentials, businesses, a sample of
        resources per business, reported in the log), then the SDK's one-record sync of every
        stream. A connection that cannot work fails here with its cause and fix."""
        if value == CliTestOptionValue.All.value:
            config_input = ctx.params.get("config")
            if config_input is not None:
                # only ``--test`` checks the connection: a sync does not import the check
                from tap_sage.sage.connection_check import check

                tap = cls(
                    config=config_input.config,
                    parse_env_config=config_input.parse_env,
                    validate_config=True,
                    setup_mapper=False,
                )
                ids = [str(b) for b in tap.config.get("business_ids") or []] or None
                report = check(tap.config, probe="sample", business_ids=ids)
                for line in report.lines():
                    cls.logger.info("%s", line)
                if not report.ok:
                    cls.logger.error("The connection test failed: %s", report.lines()[0])
                    ctx.exit(1)
        super().cb_test(ctx, param, value)

    # -- settings, shared by every stream -------------------------------------------------

    def _only_selected(self, catalog: Mapping[str, Any]) -> dict[str, Any]:
        """The input catalog (as the CLI reads it) with only the entries that select their
        stream: the SDK parses every entry's schema and registers every entry with its mapper,
        so a run of one stream would pay for all 85. What is not listed at all is still
        synced (the SDK's rule), so the names listed are kept (``_catalogued``)."""
        entries = catalog.get("streams")
        if not isinstance(entries, list):
            return dict(catalog)
        self._catalogued = {str(e.get("tap_stream_id")) for e in entries if isinstance(e, dict)}
        kept = []
        for entry in entries:
            rows = entry.get("metadata") if isinstance(entry, dict) else None
            rows = [m for m in rows if isinstance(m, dict)] if isinstance(rows, list) else []
            if row_selected(rows):
                kept.append(entry)
        return {**catalog, "streams": kept}

    @property
    def connection(self) -> ConnectionSettings:
        """The validated connection settings."""
        if self._connection is None:
            self._connection = ConnectionSettings.from_config(self.config)
        return self._connection

    @property
    def client(self) -> SageClient:
        """The one client of this connection (shared by every stream and thread)."""
        return SageClient.for_config(self.connection)

    @property
    def stream_filters(self) -> dict[str, dict[str, str]]:
        """Validated ``stream_filters``."""
        if self._filters is None:
            self._filters = validate_stream_filters(self.config.get("stream_filters"))
        return self._filters

    @property
    def include_deleted(self) -> bool:
        """Whether deletion records go out (settings ``deletions``, ``include_deleted``)."""
        return deletions.mode(self.config) != deletions.NONE

    @property
    def max_concurrency(self) -> int:
        """Setting ``max_concurrency``."""
        return max(1, min(MAX_CONCURRENCY, int(self.config.get("max_concurrency") or 4)))

    @property
    def executor(self) -> ThreadPoolExecutor | None:
        """The page-fetching threads: ``max_concurrency`` waiting for answers and
        ``PAGE_BUFFER`` more reading and decoding answered pages (each request holds a slot of
        ``request_budget`` only until its answer begins); at 1, the next page of a list is
        asked for while the one before it is still read (``PageScanner._pages_in_turn``)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.max_concurrency + PAGE_BUFFER, thread_name_prefix="sage-page"
            )
        return self._executor

    @property
    def request_budget(self) -> RequestBudget:
        """The connection's requests in flight: at most ``max_concurrency``, whatever the
        streams and businesses they belong to."""
        if self._budget is None:
            self._budget = RequestBudget(self.max_concurrency)
        return self._budget

    @property
    def scheduler(self) -> Scheduler:
        """Reads the partitions that come next while one is emitted (``tap_sage.readahead``)."""
        if self._scheduler is None:
            self._scheduler = Scheduler(
                self._sync_plan, ahead=partitions_ahead(self.max_concurrency)
            )
        return self._scheduler

    def _sync_plan(self) -> list[Slot]:
        """The partitions in the order ``Tap.sync_all`` reads them: the selected streams in
        catalogue order, each one's businesses in order; none before the businesses are known
        (a stream's partition read on its own, outside a sync, reads nothing ahead)."""
        slots: list[Slot] = []
        if self._business_ids is None:
            return slots  # no sync under way (its partitions ask for the businesses first)
        for stream in self.streams.values():
            if not isinstance(stream, SageStream) or not stream.selected:
                continue
            if stream.parent_stream_type:
                continue
            for partition in stream.partitions or []:
                key = (stream.name, partitioning.key(partition))  # business (and usage)
                slots.append(Slot(key, functools.partial(stream.read_unit, partition)))
        return slots

    @property
    def business_ids(self) -> list[str]:
        """The businesses to read: setting ``business_ids``, else every reachable one."""
        if self._business_ids is None:
            reachable = [str(b["id"]) for b in self.client.businesses() if b.get("id")]
            wanted = [str(b) for b in self.config.get("business_ids") or []]
            if wanted:
                unknown = [b for b in wanted if b not in reachable]
                if unknown:
                    raise SageConfigError(
                        "business_ids",
                        f"the connection cannot reach {', '.join(unknown)} (it reaches: "
                        f"{', '.join(reachable) or 'no business'})",
                    )
                self._business_ids = wanted
            else:
                self._business_ids = reachable
            self.logger.info("Reading %d business(es)", len(self._business_ids))
        return self._business_ids

    def flush_output(self) -> None:
        """Write out buffered Singer messages."""
        writer = self.message_writer
        if isinstance(writer, BufferedMsgSpecWriter):
            writer.flush()

    # -- streams ----------------------------------------------------------------------------

    @override
    def discover_streams(self) -> list[Stream]:
        """One stream per list resource and per settings singleton of the catalogue; with an
        input catalog, only those it selects (or does not list: the SDK syncs those too), so
        that a run of one stream builds one stream. Discovery (no catalog) builds them all."""
        catalog = self.input_catalog
        wanted: set[str] | None = None
        if catalog is not None:
            listed = self._catalogued or {e.tap_stream_id for e in catalog.streams}
            wanted = {e.tap_stream_id for e in catalog.streams if selected(e.metadata)}
            wanted |= set(catalogue.resources()) - listed
        streams: list[Stream] = []
        resources = catalogue.resources()
        for name in resources:
            if wanted is not None and name not in wanted:
                continue  # not decoded (``catalogue.Catalogue``)
            resource = resources[name]
            if resource.singleton:
                streams.append(SageSingletonStream(self, resource))
            elif resource.list:
                streams.append(SageStream(self, resource))
        return streams


if __name__ == "__main__":
    TapSage.cli()
