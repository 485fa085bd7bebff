"""Bad and hostile input to target-sage: bad lines, schema breaks, files and their modes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.test_target_helpers import (
    CONTACT_SCHEMA,
    SageAPI,
    contact,
    record_msg,
    results,
    run_cli,
    schema_msg,
    target_config,
)

GOOD_BEFORE = contact("BI-1", "BadInput before")
GOOD_AFTER = contact("BI-2", "BadInput after")

#: (name, the bad line as bytes, what the message says)
BAD_LINES = [
    ("not_json", b'{"type": "RECORD", "stream": "customers", "record": {', b"not valid JSON"),
    ("not_utf8", b'{"type": "RECORD", "stream": "customers", "record": {"code": "\xff\xfe"}}', b"not UTF-8"),
    ("too_deep", b'{"type": "RECORD", "stream": "customers", "record": {"code": "D", "notes": ' + b"[" * 5000 + b"]" * 5000 + b"}}", b"nested beyond reason"),
    ("no_type", b'{"stream": "customers"}', b"not a Singer message"),
]  # fmt: skip


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def input_with(bad: bytes) -> bytes:
    """SCHEMA (line 1), a good record (2), the bad line (3), a good record (4)."""
    return (
        line(schema_msg("customers", CONTACT_SCHEMA, ["code"]))
        + line(record_msg("customers", GOOD_BEFORE))
        + bad
        + b"\n"
        + line(record_msg("customers", GOOD_AFTER))
    )


@pytest.fixture
def api(sandbox) -> SageAPI:
    return SageAPI(sandbox)


def run_in_process(config: dict[str, Any], data: bytes) -> None:
    """The target in this process, reading bytes as it reads a file or stdin (text over a
    binary buffer), so that a line that is not UTF-8 reaches it as bytes."""
    import contextlib
    import io

    from target_sage.target import TargetSage

    with contextlib.redirect_stdout(io.StringIO()):
        TargetSage(config=config).listen(
            file_input=io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
        )


@pytest.mark.parametrize(("name", "bad", "says"), BAD_LINES, ids=[b[0] for b in BAD_LINES])
def test_bad_line_under_continue_goes_to_the_dead_letter_with_its_number(
    connection_config, tmp_path, api, name, bad, says
):
    config = target_config(connection_config, tmp_path, api, on_error="continue")
    run_in_process(config, input_with(bad))
    assert len(api.contacts_named("BadInput before")) == 1
    assert len(api.contacts_named("BadInput after")) == 1
    (dead,) = [json.loads(x) for x in Path(config["dead_letter_path"]).read_text().splitlines()]
    assert dead["type"] == "INVALID_LINE" and dead["input_line"] == 3
    assert says.decode() in dead["problem"]
    failed = [x for x in results(config) if x["outcome"] == "failed"]
    assert len(failed) == 1 and failed[0]["$message"].startswith("Input line 3: ")


@pytest.mark.parametrize(("name", "bad", "says"), BAD_LINES, ids=[b[0] for b in BAD_LINES])
def test_bad_line_under_fail_stops_after_applying_what_came_before(
    connection_config, tmp_path, api, name, bad, says
):
    from target_sage.work import TargetFailure

    config = target_config(connection_config, tmp_path, api)
    with pytest.raises(TargetFailure) as stopped:
        run_in_process(config, input_with(bad))
    assert str(stopped.value).startswith("Input line 3: " + says.decode())
    assert len(api.contacts_named("BadInput before")) == 1
    assert api.contacts_named("BadInput after") == []


def test_bad_line_under_fail_is_one_line_on_the_command_line(connection_config, tmp_path, api):
    config = target_config(connection_config, tmp_path, api)
    done = run_cli(config, input_with(BAD_LINES[1][1]), tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    stopped = [x for x in done.stderr.splitlines() if "target-sage stopped" in x]
    assert len(stopped) == 1 and "Input line 3: not UTF-8" in stopped[0]


@pytest.mark.parametrize("on_error", ["fail", "continue"])
def test_a_record_breaking_its_schema_names_line_stream_key_and_json_schema_path(
    connection_config, tmp_path, api, on_error
):
    config = target_config(connection_config, tmp_path, api, on_error=on_error)
    broken = record_msg("customers", {**contact("BI-9", "BadInput broken"), "credit_limit": "x"})
    done = run_cli(config, input_with(line(broken).rstrip(b"\n")), tmp_path)
    assert "Traceback" not in done.stderr
    want = 'Input line 3, stream `customers`, source key ["BI-9"], field `$.credit_limit`'
    assert len(api.contacts_named("BadInput before")) == 1
    if on_error == "fail":
        assert done.returncode == 1
        (stopped,) = [x for x in done.stderr.splitlines() if "target-sage stopped" in x]
        assert want in stopped
        return
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(api.contacts_named("BadInput after")) == 1
    lines = Path(config["dead_letter_path"]).read_text().splitlines()
    dead = json.loads(lines[-1])
    assert dead["input_line"] == 3 and dead["record"]["code"] == "BI-9"
    (failed,) = [x for x in results(config) if x["outcome"] == "failed"]
    assert want in failed["$message"] and failed["$source"] == "$.credit_limit"


def test_results_dead_letter_and_ledger_files_are_0600(connection_config, tmp_path, api):
    folder = tmp_path / "out"
    config = target_config(connection_config, tmp_path, api, on_error="continue")
    config.update(
        ledger_path=str(folder / "l.sqlite"),
        results_path=str(folder / "r.jsonl"),
        dead_letter_path=str(folder / "d.singer"),
    )
    old = os.umask(0o022)
    try:
        done = run_cli(config, input_with(b"nope"), tmp_path)
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr[-2000:]
    names = ["l.sqlite", "l.sqlite-wal", "l.sqlite-shm", "r.jsonl", "d.singer"]
    present = [n for n in names if (folder / n).exists()]
    assert {"l.sqlite", "r.jsonl", "d.singer"} <= set(present)
    modes = {n: stat.S_IMODE((folder / n).stat().st_mode) for n in present}
    assert modes == dict.fromkeys(present, 0o600)


def test_wal_and_shm_of_a_live_ledger_are_0600(tmp_path):
    from target_sage.ledger import Ledger

    old = os.umask(0o022)
    try:
        ledger = Ledger(tmp_path / "x.sqlite")
        ledger.record_applied("b", "s", "k", "contacts", "1", "h")
    finally:
        os.umask(old)
    try:
        for name in ("x.sqlite", "x.sqlite-wal", "x.sqlite-shm"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    finally:
        ledger.close()


@pytest.mark.parametrize("which", ["ledger_path", "results_path", "dead_letter_path"])
def test_unusable_output_paths_are_one_clear_line(connection_config, tmp_path, api, which):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    config = target_config(connection_config, tmp_path, api, on_error="continue")
    config[which] = str(blocker / "inside" / "f")
    done = run_cli(config, input_with(b"nope"), tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (stopped,) = [x for x in done.stderr.splitlines() if "target-sage stopped" in x]
    assert str(blocker / "inside" / "f") in stopped
    assert "writ" in stopped  # says what to do: a path this user can write


def test_a_corrupt_ledger_is_named_with_the_fix(connection_config, tmp_path, api):
    config = target_config(connection_config, tmp_path, api)
    Path(config["ledger_path"]).write_bytes(b"this is no database" * 300)
    done = run_cli(config, input_with(b""), tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (stopped,) = [x for x in done.stderr.splitlines() if "target-sage stopped" in x]
    assert config["ledger_path"] in stopped and "move it away" in stopped
    assert "file is not a database" not in stopped  # explained, not sqlite's own words
    assert api.contacts_named("BadInput") == []
