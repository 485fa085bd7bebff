"""target-sage: settings, routing of streams to sinks, STATE, error handling."""

from __future__ import annotations

from tap_sage.startup import long_lived_imports

with long_lived_imports():  # objects that live as long as the process (tap_sage.startup)
    import copy
    import json
    import logging
    import sys
    from typing import IO, Any, ClassVar

    import click
    import jsonschema
    from singer_sdk import Target
    from singer_sdk.exceptions import (
        InvalidRecord,
        MissingKeyPropertiesError,
        RecordsWithoutSchemaException,
    )
    from singer_sdk.sinks import Sink
    from typing_extensions import override

    from tap_sage.about import SageVersions  # and registers the markdown about formatter
    from tap_sage.sage.client import SageClient
    from tap_sage.sage.errors import SageError
    from tap_sage.sage.settings import CONNECTION_PROPERTIES
    from tap_sage.sdk_private import active_sinks, env_var_config, latest_state
    from target_sage import run_lock
    from target_sage.engine import Engine, new_run_id
    from target_sage.ledger_db import open_ledger
    from target_sage.payload import DottedFieldError, source_key
    from target_sage.procedures import about_text
    from target_sage.reader import LineReader
    from target_sage.results import DeadLetterFile, Result, ResultsFile
    from target_sage.settings import TARGET_PROPERTIES, TargetSettings
    from target_sage.sinks import SageSink
    from target_sage.work import TargetFailure

LOGGER = logging.getLogger("target_sage")

#: The stream of Meltano 4's loader test (`meltano config test <loader>`): one SCHEMA (id,
#: name, created_at; key id), one RECORD and one STATE, from
#: meltano/core/plugin_test_service.py, LoaderTestService, in Meltano 4.4.1. target-sage
#: answers it with the connection check and writes nothing to Sage.
MELTANO_PROBE_STREAM = "meltano_test_stream"


class TargetSage(SageVersions, Target):
    """Singer target for Sage Business Cloud Accounting (API v3.1)."""

    name = "target-sage"
    # The distribution is tap-sage (both executables); the SDK looks the version up by it.
    package_name = "tap-sage"
    config_jsonschema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {**CONNECTION_PROPERTIES, **TARGET_PROPERTIES},
    }
    default_sink_class = SageSink
    message_reader_class = LineReader

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Sinks drain one at a time: Sage's sequential POSTs hold across streams, and records
        # of one stream that refer to another are applied after it. Parallelism is inside a
        # sink (`max_parallel_writes`).
        self.max_parallelism = 1
        self.target_settings = TargetSettings.from_config(self.config)
        s = self.target_settings
        self.run_id = new_run_id()
        self.engine = Engine(
            settings=s,
            results=ResultsFile(s.results_path, self.run_id),
            dead_letter=DeadLetterFile(None if s.on_error == "fail" else s.dead_letter_path),
            ledger=open_ledger(s),
            client_factory=lambda: SageClient.for_config(s.connection),
        )
        self.current_message: dict[str, Any] | None = None
        self._schema_messages: dict[str, dict[str, Any]] = {}
        self._emitted_state: dict[str, Any] | None = None
        self._meltano_probe = False
        if isinstance(self.message_reader, LineReader):
            self.message_reader.on_bad_line = self._bad_line

    @property
    def line_number(self) -> int:
        """The input line being processed (0 before the first)."""
        reader = self.message_reader
        return reader.line_number if isinstance(reader, LineReader) else 0

    # -- CLI: connection test --------------------------------------------------------------------

    @classmethod
    @override
    def get_singer_command(cls) -> click.Command:
        command = super().get_singer_command()
        command.params.append(
            click.Option(
                ["--test", "test_connection"],
                is_flag=True,
                help="Test the connection (credentials, business, write access) and exit.",
            )
        )
        return command

    @classmethod
    @override
    def invoke(  # type: ignore[override]
        cls,
        *,
        about: bool = False,
        about_format: str | None = None,
        config: Any = None,
        file_input: IO[str] | None = None,
        test_connection: bool = False,
    ) -> None:
        try:
            if test_connection and not about:
                merged = dict(config.config) if config is not None else {}
                if config is not None and getattr(config, "parse_env", False):
                    # `--config ENV`: the TARGET_SAGE_* variables, read as a run reads them.
                    merged.update(env_var_config(cls))
                sys.exit(cls.test_connection(merged))
            super().invoke(
                about=about, about_format=about_format, config=config, file_input=file_input
            )
        except (
            RecordsWithoutSchemaException, InvalidRecord, MissingKeyPropertiesError,
            DottedFieldError,
        ) as exc:  # fmt: skip
            LOGGER.error("target-sage stopped: %s", exc)
            sys.exit(1)
        except SageError as exc:
            # A bad setting, a failed record under on_error=fail, a lost connection: one clear
            # line, exit 1, no STATE beyond what was applied. Re-running is safe.
            LOGGER.error("target-sage stopped: %s", exc)
            sys.exit(1)

    @classmethod
    def test_connection(cls, config: dict[str, Any]) -> int:
        """Run the shared connection check; report on stderr, JSON on stdout; 0 when usable."""
        from tap_sage.sage.connection_check import check

        settings = TargetSettings.from_config(config)
        business = [settings.business_id] if settings.business_id else None
        report = check(settings.connection, probe="sample", business_ids=business)
        for line in report.lines():
            print(line, file=sys.stderr)
        print(json.dumps(report.to_dict(), default=str))
        return 0 if report.ok else 1

    # -- Meltano's loader test ------------------------------------------------------------------

    def _answer_meltano_probe(self) -> None:
        """Meltano's loader test sent its probe stream: run the connection check (reads only)
        and fail, naming the cause, when the connection cannot work. Meltano counts any output
        line with "error" or "exception" in it as a failure, so a passing check says neither."""
        from tap_sage.sage.connection_check import check

        s = self.target_settings
        LOGGER.info(
            "Stream `%s` is Meltano's loader test: checking the connection instead of writing",
            MELTANO_PROBE_STREAM,
        )
        business = [s.business_id] if s.business_id else None
        report = check(s.connection, probe="sample", business_ids=business)
        for line in report.lines():
            print(line, file=sys.stderr)
        if not report.ok:
            # The code and the fix go on the one line that Meltano shows the user.
            if report.error:
                error = report.error
                fix = f"; fix: {error['fix']}" if error.get("fix") else ""
                cause = f"({error['code']}) {error['message']}{fix}"
            else:
                cause = "no usable business"
            raise TargetFailure(f"connection test failed: {cause}")

    # -- plumbing for the sinks ------------------------------------------------------------------

    def active_sink(self, stream: str) -> Sink | None:
        """The active sink of a stream, if any."""
        return active_sinks(self).get(stream)

    def schema_message(self, stream: str) -> dict[str, Any] | None:
        """The SCHEMA message last received for a (tap-side) stream."""
        return self._schema_messages.get(stream)

    @override
    def get_sink_class(self, stream_name: str) -> type[Sink]:
        return SageSink

    # -- messages ----------------------------------------------------------------------------------

    @override
    def _process_schema_message(self, message_dict: dict[str, Any]) -> None:
        if message_dict.get("stream") == MELTANO_PROBE_STREAM:
            self._meltano_probe = True
            return
        self._schema_messages[str(message_dict.get("stream"))] = copy.deepcopy(message_dict)
        super()._process_schema_message(message_dict)

    @override
    def _process_record_message(self, message_dict: dict[str, Any]) -> None:
        if self._meltano_probe and message_dict.get("stream") == MELTANO_PROBE_STREAM:
            return  # the probe's record: never written
        self.current_message = message_dict
        try:
            super()._process_record_message(message_dict)
        except (InvalidRecord, MissingKeyPropertiesError) as exc:
            self._invalid_record(message_dict, exc)
        except RecordsWithoutSchemaException as exc:
            # The input is broken from here on (the SDK's standard tests expect this error).
            raise RecordsWithoutSchemaException(
                f"Input line {self.line_number}: a RECORD of stream "
                f"`{message_dict.get('stream')}` before any SCHEMA of it"
            ) from exc
        except ValueError as exc:
            self._invalid_record(message_dict, exc)
        finally:
            self.current_message = None

    def _stop(self, text: str) -> None:
        """Stop at a bad line under ``on_error: fail``: the records before it are applied (and
        their STATE passed on) first, then one line says where and why."""
        self.drain_all()
        raise TargetFailure(
            f"{text} — stopping (on_error is `fail`; set `on_error: continue` to record "
            "bad lines in the dead letter and go on)"
        )

    def _bad_line(self, number: int, problem: str, text: str) -> None:
        """A line that is no Singer message at all (not UTF-8, not JSON, too deep)."""
        message = f"Input line {number}: {problem}"
        result = Result("", "read", None, "failed", message=message)
        self.engine.results.write(result)
        self.engine.reporter.count_failure()
        if self.target_settings.on_error != "continue":
            self._stop(message)
        self.engine.dead_letter.write_bad_line(number, problem, text)
        LOGGER.error("%s", message)

    def _invalid_record(self, message: dict[str, Any], exc: Exception) -> None:
        stream = str(message.get("stream"))
        record = message.get("record") or {}
        sink = active_sinks(self).get(stream)
        keys = list(sink.key_properties) if sink is not None else []
        key: Any = "?"
        if isinstance(record, dict) and all(k in record for k in keys):
            key, _ = source_key(record, keys)
        number = self.line_number
        field = _failing_field(exc, keys, record)
        where = f", field `{field}`" if field else ""
        problem = getattr(exc, "error_message", None) or str(exc)
        text = f"Input line {number}, stream `{stream}`, source key {key}{where}: {problem}"
        result = Result(stream, "upsert", key, "failed", message=text[:1000], source=field)
        if self.target_settings.on_error != "continue":
            self.engine.results.write(result)
            self.engine.reporter.count_failure()
            self.drain_all()  # the records before it are applied
            # The SDK's own error, with the one line that says where (its standard tests
            # expect the type); ``invoke`` prints it as `target-sage stopped: ...`.
            exc.args = (f"{text[:1000]} — stopping (on_error is `fail`)",)
            raise exc
        dead = {**message, "input_line": number}
        self.engine.reporter.report_message(result, self._schema_messages.get(stream), dead)

    @override
    def _process_state_message(self, message_dict: dict[str, Any]) -> None:
        super()._process_state_message(message_dict)
        # STATE goes out only once everything before it is applied: drain, then emit.
        if any(sink.current_size for sink in active_sinks(self).values()):
            self.drain_all()
        elif (latest := latest_state(self)) is not None and latest != self._emitted_state:
            self._write_state_message(latest)

    @override
    def _write_state_message(self, state: dict[str, Any]) -> None:
        if state == self._emitted_state:
            return
        super()._write_state_message(state)
        self._emitted_state = state

    @override
    def process_endofpipe(self) -> None:
        try:
            super().process_endofpipe()
        finally:
            self._summary()
            self.engine.results.close()
            self.engine.dead_letter.close()
            self.engine.ledger.close()
            run_lock.release_run_lock(self.engine.settings)
        if self._meltano_probe:
            self._answer_meltano_probe()
        s = self.target_settings
        if s.dry_run and self.engine.reporter.failed and s.on_error == "fail":
            raise TargetFailure(
                f"dry run: {self.engine.reporter.failed} record(s) would fail; see {s.results_path}"
            )

    def _summary(self) -> None:
        counts = self.engine.results.counts
        if not counts:
            return
        by_stream: dict[str, dict[str, int]] = {}
        for (stream, outcome), n in sorted(counts.items()):
            by_stream.setdefault(stream, {})[outcome] = n
        for stream, outcomes in by_stream.items():
            LOGGER.info(
                "Summary `%s`: %s", stream, ", ".join(f"{k} {v}" for k, v in outcomes.items())
            )
        failed = sum(n for (_, outcome), n in counts.items() if outcome == "failed")
        if failed and self.target_settings.on_error == "continue":
            LOGGER.warning(
                "%d record(s) failed; see %s; replay them with `target-sage --input %s`",
                failed,
                self.target_settings.results_path,
                self.target_settings.dead_letter_path,
            )
        print(  # the summary belongs on stderr, stdout carries STATE
            "target-sage summary: "
            + "; ".join(
                f"{s}: " + ", ".join(f"{k} {v}" for k, v in o.items()) for s, o in by_stream.items()
            ),
            file=sys.stderr,
        )


def _failing_field(exc: Exception, keys: list[str], record: Any) -> str | None:
    """The JSON Schema path of the field that broke the record's schema (``$.lines[0].qty``),
    or the missing key property."""
    if isinstance(exc, DottedFieldError):
        return exc.field
    cause = exc.__cause__
    if isinstance(cause, jsonschema.ValidationError):
        path = str(cause.json_path)
        if cause.validator == "required" and isinstance(cause.instance, dict):
            missing = [k for k in cause.validator_value or [] if k not in cause.instance]
            if missing:
                return f"{path}.{missing[0]}"
        return path
    if isinstance(exc, MissingKeyPropertiesError) and isinstance(record, dict):
        missing = [k for k in keys if k not in record]
        return f"$.{missing[0]}" if missing else None
    return None


TargetSage.__doc__ = (
    "Singer target for Sage Business Cloud Accounting (API v3.1): create, update, delete "
    "and Execute, exactly once.\n\n"
    "Streams map to Sage resources by name or through `stream_resources`. " + about_text()
)
