"""The SDK's standard target tests, run against the sandbox.

The SDK's test streams are not Sage resources, so every one is routed with `stream_resources`
to `analysis_type_categories` (no required field; `code` and `name` are given with SDK stream
maps where the records have an `id`), so each test really writes to the sandbox. Records that
still cannot be a Sage write would be recorded as failed under `on_error: continue`.

Skipped, with the reason in the marker:
- `target_multiple_state_messages`: target-sage emits STATE at every STATE message once every
  record before it is applied (5 here); the SDK test expects its own batching cadence (3 of 5).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from singer_sdk.testing import get_target_test_class

from tap_sage.sandbox.runner import SandboxProcess
from target_sage.target import TargetSage

SDK_CONFIG: dict[str, Any] = {}

STREAMS = [
    "test_array_data",
    "TestCamelcase",
    "ForecastingTypeToCategory",
    "test_duplicate_records",
    "test_strings",
    "test_strings_in_objects",
    "test_strings_in_arrays",
    "test_invalid_schema",
    "test_multiple_state_messages_a",
    "test_multiple_state_messages_b",
    "test_no_pk",
    "test_optional_attributes",
    "example_stream",
    "test_record_before_schema",
    "record_missing_fields",
    "test_record_missing_key_property",
    "test_record_missing_required_property",
    "test_object_schema_with_properties",
    "test_object_schema_no_properties",
    "test_schema_updates",
    "test:SpecialChars!in?attributes",
]
WITH_ID = [
    "test_array_data",
    "test_duplicate_records",
    "test_strings",
    "test_multiple_state_messages_a",
    "test_multiple_state_messages_b",
    "test_no_pk",
    "test_optional_attributes",
    "example_stream",
    "record_missing_fields",
    "test_schema_updates",
]
#: Tests that expect the target to raise: they run with the default `on_error: fail`.
RAISING = ("record_missing_key_property", "record_before_schema", "invalid_schema")

_Base = get_target_test_class(TargetSage, config=SDK_CONFIG)


@pytest.fixture(scope="module")
def sdk_sandbox(
    seeded_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SandboxProcess]:
    db = tmp_path_factory.mktemp("sdk-sandbox") / "sandbox.db"
    db.write_bytes(seeded_db.read_bytes())
    with SandboxProcess(db) as sandbox:
        yield sandbox


class TestTargetSageStandard(_Base):  # type: ignore[misc,valid-type]
    """The SDK's standard target tests."""

    @pytest.fixture
    def resource(self, sdk_sandbox: SandboxProcess, tmp_path: Path, request) -> None:
        grant = sdk_sandbox.grant()
        raising = any(name in request.node.name for name in RAISING)
        SDK_CONFIG.clear()
        SDK_CONFIG.update(
            {
                "connection_name": "sdk-tests",
                "client_id": grant["client_id"],
                "client_secret": grant["client_secret"],
                "access_token": grant["access_token"],
                "refresh_token": grant["refresh_token"],
                "oauth_settings_location": str(tmp_path / "tokens.json"),
                "advanced_config": {
                    "api_url": sdk_sandbox.api_url,
                    "token_url": sdk_sandbox.token_url,
                },
                "ledger_path": str(tmp_path / "ledger.sqlite"),
                "results_path": str(tmp_path / "results.jsonl"),
                "dead_letter_path": str(tmp_path / "dead.singer"),
                "on_error": "fail" if raising else "continue",
                "stream_resources": dict.fromkeys(STREAMS, "analysis_type_categories"),
                "stream_maps": {
                    s: {"name": f"'{s} ' + str(id)", "code": "str(id)"} for s in WITH_ID
                },
            }
        )

    @pytest.mark.skip(
        reason="target-sage emits STATE at every STATE message once all records before it "
        "are applied (5 here); the SDK test expects its batching cadence (3 of the 5)"
    )
    def test_target_multiple_state_messages(self) -> None:  # type: ignore[override]
        pass
