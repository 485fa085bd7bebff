"""What Meltano sees of the executables, without Meltano: versions, the loader test's probe
stream, and no file left open however a target run ends. Against the sandbox, in seconds.

The real ``meltano config test target-sage`` runs in tests/test_meltano_project.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from tap_sage.sandbox.runner import SandboxProcess
from target_sage.target import MELTANO_PROBE_STREAM
from tests.test_target_helpers import (
    CONTACT_SCHEMA,
    SageAPI,
    contact,
    record_msg,
    schema_msg,
    singer,
    target_config,
)

ROOT = Path(__file__).resolve().parent.parent

# What Meltano 4.4.1's `meltano config test <loader>` writes to the loader's stdin
# (meltano/core/plugin_test_service.py, LoaderTestService._generate_test_messages; no
# ACTIVATE_VERSION, target-sage does not declare activate-version).
MELTANO_PROBE = [
    {
        "type": "SCHEMA",
        "stream": "meltano_test_stream",
        "schema": {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "name": {"type": "string"},
                "created_at": {"type": "string", "format": "date-time"},
            },
        },
        "key_properties": ["id"],
    },
    {
        "type": "RECORD",
        "stream": "meltano_test_stream",
        "record": {"id": 1, "name": "Meltano Test Record", "created_at": "2025-09-29T00:00:00Z"},
    },
    {"type": "STATE", "value": {"bookmarks": {"meltano_test_stream": {"last_record": 1}}}},
]


def _run(
    executable: str, config: dict[str, Any], text: str, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """Run an executable's CLI in a child Python where a ResourceWarning is an error (the
    suite's pyproject ignores them; a child does not inherit that)."""
    config_path = tmp_path / f"{executable}-config.json"
    config_path.write_text(json.dumps(config))
    module = {"target-sage": "target_sage.target:TargetSage", "tap-sage": "tap_sage.tap:TapSage"}
    mod, cls = module[executable].split(":")
    return subprocess.run(
        [
            sys.executable,
            "-W",
            "error::ResourceWarning",
            "-c",
            f"from {mod} import {cls}; {cls}.cli()",
            "--config",
            str(config_path),
        ],
        input=text,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(tmp_path),
    )


def _no_unclosed_file(proc: subprocess.CompletedProcess[str]) -> None:
    assert "ResourceWarning" not in proc.stderr, proc.stderr[-3000:]
    assert "unclosed" not in proc.stderr, proc.stderr[-3000:]


def _writes(sandbox: SandboxProcess) -> list[str]:
    """Requests of the sandbox's access log that could change Sage (OAuth aside)."""
    lines = sandbox.log_path.read_text(encoding="utf-8").splitlines()
    requests = [m.group(1) for m in (re.search(r'"([A-Z]+ \S+)', line) for line in lines) if m]
    return [r for r in requests if not r.startswith("GET ") and "/oauth/" not in r]


def test_the_probe_stream_is_the_one_meltano_sends() -> None:
    assert MELTANO_PROBE_STREAM == "meltano_test_stream"
    assert {m.get("stream") for m in MELTANO_PROBE if m["type"] != "STATE"} == {
        MELTANO_PROBE_STREAM
    }


@pytest.mark.parametrize("executable", ["tap-sage", "target-sage"])
def test_about_reports_the_package_version(executable: str) -> None:
    version = metadata.version("tap-sage")
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", version)
    out = subprocess.run(
        [str(Path(sys.executable).with_name(executable)), "--about", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    about = json.loads(out)
    assert about["name"] == executable
    assert about["version"] == version
    assert about["supported_python_versions"], "read from the tap-sage distribution too"


def test_meltano_probe_is_answered_by_a_connection_check_that_writes_nothing(
    sandbox: SandboxProcess, connection_config: dict[str, Any], tmp_path: Path
) -> None:
    api = SageAPI(sandbox)
    config = target_config(connection_config, tmp_path, api)
    before = len(api.all("/contacts"))
    proc = _run("target-sage", config, singer(MELTANO_PROBE), tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    # Meltano's criterion (LoaderTestService.validate): exit 0 and no output line that says
    # "error" or "exception", in any case.
    bad = [line for line in output.splitlines() if re.search("error|exception", line, re.I)]
    assert not bad, bad
    assert f"target-sage v{metadata.version('tap-sage')}," in proc.stderr  # the log's version
    assert "Connection 'test' (initiate_oauth REFRESH): OK" in proc.stderr
    business = next(line for line in proc.stderr.splitlines() if f"[{api.business_id}]" in line)
    assert business.endswith(": OK"), business
    assert _writes(sandbox) == []
    assert len(api.all("/contacts")) == before
    assert not Path(config["results_path"]).exists(), "the probe's record is not a result"
    _no_unclosed_file(proc)


def test_meltano_probe_with_a_refused_grant_fails_and_says_why(
    sandbox: SandboxProcess, connection_config: dict[str, Any], tmp_path: Path
) -> None:
    api = SageAPI(sandbox)
    config = target_config(connection_config, tmp_path, api)
    config["client_secret"] = "not-the-secret"
    config.pop("access_token")
    proc = _run("target-sage", config, singer(MELTANO_PROBE), tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "connection test failed:" in proc.stderr
    # Meltano shows the user only the last line: it must carry the OAuth error code and the fix.
    last = proc.stderr.strip().splitlines()[-1]
    assert "(invalid_client)" in last, last
    assert "fix:" in last, last
    assert re.search("error", proc.stderr, re.I), "Meltano must see the failure"
    assert "not-the-secret" not in proc.stdout + proc.stderr
    assert _writes(sandbox) == []
    _no_unclosed_file(proc)


def test_a_failed_target_run_leaves_no_file_open(
    sandbox: SandboxProcess, connection_config: dict[str, Any], tmp_path: Path
) -> None:
    api = SageAPI(sandbox)
    config = target_config(connection_config, tmp_path, api)
    schema = {
        **CONTACT_SCHEMA,
        "properties": {**CONTACT_SCHEMA["properties"], "credit_limit": {"type": "integer"}},
    }
    text = singer(
        [
            schema_msg("customers", schema, ["code"]),
            record_msg("customers", contact("RW1", credit_limit="not a number")),
        ]
    )
    proc = _run("target-sage", config, text, tmp_path)
    assert proc.returncode != 0
    results = Path(config["results_path"]).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["outcome"] for line in results] == ["failed"]
    _no_unclosed_file(proc)
    assert Path(config["results_path"]).stat().st_mode & 0o777 == 0o600


def test_a_run_that_goes_on_after_failures_leaves_no_file_open(
    sandbox: SandboxProcess, connection_config: dict[str, Any], tmp_path: Path
) -> None:
    api = SageAPI(sandbox)
    config = target_config(connection_config, tmp_path, api, on_error="continue")
    schema = {
        **CONTACT_SCHEMA,
        "properties": {**CONTACT_SCHEMA["properties"], "credit_limit": {"type": "integer"}},
    }
    text = singer(
        [
            schema_msg("customers", schema, ["code"]),
            record_msg("customers", contact("RW2", credit_limit="not a number")),
            record_msg("customers", contact("RW3")),
        ]
    )
    proc = _run("target-sage", config, text, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcomes = [
        json.loads(line)["outcome"]
        for line in Path(config["results_path"]).read_text(encoding="utf-8").splitlines()
    ]
    assert sorted(outcomes) == ["created", "failed"]
    dead = Path(config["dead_letter_path"]).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["type"] for line in dead] == ["SCHEMA", "RECORD"]
    assert Path(config["dead_letter_path"]).stat().st_mode & 0o777 == 0o600
    _no_unclosed_file(proc)


def test_a_failed_tap_run_leaves_no_file_open(
    sandbox: SandboxProcess, connection_config: dict[str, Any], tmp_path: Path
) -> None:
    config = {**connection_config, "client_secret": "not-the-secret"}
    config.pop("access_token")
    proc = _run("tap-sage", config, "", tmp_path)
    assert proc.returncode != 0
    assert "invalid_client" in proc.stderr
    assert "not-the-secret" not in proc.stdout + proc.stderr
    _no_unclosed_file(proc)
