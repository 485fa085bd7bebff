"""Units of ``tap_sage.deletions``: the messages each ``deletions`` mode writes, in order, for
one stream of a real ``TapSage`` (its writer replaced by a list). The loaders' side of it:
tests/test_deletions_loaders.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.singerlib import RecordMessage, SchemaMessage

from tap_sage import deletions
from tap_sage.tap import TapSage


def _config(tmp_path: Path, **settings: Any) -> dict[str, Any]:
    return {
        "connection_name": "unit", "initiate_oauth": "REFRESH", "client_id": "unit-client-id",
        "client_secret": "unit-client-secret", "access_token": "unit-access-token", "refresh_token": "unit-refresh-token",
        "oauth_settings_location": str(tmp_path / "tokens.json"), **settings,
    }  # fmt: skip


class Written:
    """The tap's messages, as a list."""

    def __init__(self, tap: TapSage) -> None:
        self.messages: list[Any] = []
        tap.write_message = self.messages.append  # type: ignore[method-assign]

    def take(self) -> list[Any]:
        out, self.messages[:] = list(self.messages), []
        return out


def _deletions(tmp_path: Path, **settings: Any) -> tuple[deletions.Deletions, Written, TapSage]:
    tap = TapSage(config=_config(tmp_path, **settings), validate_config=True)
    stream = tap.streams["contacts"]
    return deletions.Deletions(stream, tap, deletions.mode(tap.config)), Written(tap), tap


def test_the_mode_comes_from_deletions_else_include_deleted() -> None:
    assert deletions.mode({}) == "flag"
    assert deletions.mode({"include_deleted": True}) == "flag"
    assert deletions.mode({"include_deleted": False}) == "none"
    assert deletions.mode({"include_deleted": False, "deletions": "stream"}) == "stream"
    assert deletions.mode({"deletions": "none"}) == "none"


def test_an_unknown_mode_is_refused_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigValidationError) as error:
        TapSage(config=_config(tmp_path, deletions="remove"), validate_config=True)
    assert "'remove' is not one of" in str(error.value.errors)


def test_flag_narrows_the_schema_once_then_restores_it_for_the_next_business(tmp_path: Path) -> None:  # fmt: skip
    deleted, written, tap = _deletions(tmp_path, stream_maps={"contacts": {"__alias__": "customers"}})  # fmt: skip
    deleted.start_partition()
    assert written.take() == []  # nothing narrowed yet: the SDK's own SCHEMA stands
    first = deleted.record({"id": "x", "deleted_at": "2026-01-02T03:04:05Z", "name": "X"}, "b1")
    second = deleted.record({"id": "y"}, "b1")
    assert first == {"business_id": "b1", "id": "x", "_sdc_deleted_at": "2026-01-02T03:04:05Z"}
    assert second is not None and set(second) == {"business_id", "id", "_sdc_deleted_at"}
    assert second["_sdc_deleted_at"]  # no deleted_at from Sage: deleted by now
    (narrowed,) = written.take()  # one SCHEMA for both, under the stream map's alias
    assert isinstance(narrowed, SchemaMessage)
    assert narrowed.stream == "customers"
    assert narrowed.key_properties == ["business_id", "id"]
    assert set(narrowed.schema["properties"]) == {"business_id", "id", "_sdc_deleted_at"}
    full = tap.streams["contacts"].schema["properties"]
    assert narrowed.schema["properties"]["id"] == full["id"]

    deleted.start_partition()  # the next business: the full SCHEMA again, once
    (restored,) = written.take()
    assert restored.stream == "customers"
    assert restored.schema == tap.streams["contacts"].stream_maps[0].transformed_schema
    assert restored.bookmark_properties == ["updated_at"]
    deleted.start_partition()
    assert written.take() == []


def test_stream_writes_a_deletions_stream_and_nothing_on_the_stream(tmp_path: Path) -> None:
    deleted, written, _tap = _deletions(tmp_path, deletions="stream")
    assert deleted.record({"id": "x", "deleted_at": "2026-01-02T03:04:05Z"}, "b1") is None
    assert deleted.record({"id": "y", "deleted_at": "2026-01-02T03:04:06Z"}, "b2") is None
    schema, one, two = written.take()
    assert isinstance(schema, SchemaMessage) and schema.stream == "contacts_deletions"
    assert schema.key_properties == ["business_id", "id"]
    assert schema.schema["properties"]["deleted_at"]["format"] == "date-time"
    assert isinstance(one, RecordMessage) and isinstance(two, RecordMessage)
    assert one.stream == two.stream == "contacts_deletions"
    assert one.record == {"business_id": "b1", "id": "x", "deleted_at": "2026-01-02T03:04:05Z"}
    assert two.record["business_id"] == "b2"
    deleted.start_partition()
    assert written.take() == []  # the stream's own SCHEMA was never narrowed


def test_none_writes_nothing(tmp_path: Path) -> None:
    deleted, written, tap = _deletions(tmp_path, include_deleted=False)
    assert deleted.record({"id": "x"}, "b1") is None
    assert written.take() == []
    assert tap.include_deleted is False  # the reader does not emit them at all


def test_flag_in_batch_mode_goes_to_the_deletions_stream(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    batch = {"encoding": {"format": "jsonl", "compression": "none"}, "storage": {"root": f"file://{tmp_path}"}}  # fmt: skip
    deleted, written, _tap = _deletions(tmp_path, batch_config=batch)
    assert deleted.mode == "stream"
    assert "deletions go to 'contacts_deletions'" in caplog.text
    assert deleted.record({"id": "x"}, "b1") is None
    assert [m.stream for m in written.take()] == ["contacts_deletions"] * 2
