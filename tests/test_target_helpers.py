"""Helpers for the target tests (no tests here): Singer input, running the target, reading Sage."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from tap_sage.sandbox.runner import SandboxProcess
from tests.checkpoint_support import KILL_ENV, TARGET_CLI

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "target"

CONTACT_SCHEMA = {
    "type": "object",
    "properties": {
        "code": {"type": "string"},
        "name": {"type": ["string", "null"]},
        "contact_type_ids": {"type": ["array", "null"], "items": {"type": "string"}},
        "reference": {"type": ["string", "null"]},
        "notes": {"type": ["string", "null"]},
        "credit_limit": {"type": ["number", "null"]},
        "_sdc_deleted_at": {"type": ["string", "null"], "format": "date-time"},
    },
}


def schema_msg(stream: str, schema: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    return {"type": "SCHEMA", "stream": stream, "schema": schema, "key_properties": keys}


def record_msg(stream: str, record: dict[str, Any]) -> dict[str, Any]:
    return {"type": "RECORD", "stream": stream, "record": record}


def state_msg(value: dict[str, Any]) -> dict[str, Any]:
    return {"type": "STATE", "value": value}


def singer(messages: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(m) + "\n" for m in messages)


def contact(code: str, name: str | None = None, **extra: Any) -> dict[str, Any]:
    # Sage takes a contact reference of at most 10 characters (NOTES.md, "Validation quirks"):
    # a longer code gets a short stable stand-in
    reference = code if len(code) <= 10 else hashlib.sha256(code.encode()).hexdigest()[:10]
    return {
        "code": code,
        "name": name or f"Contact {code}",
        "contact_type_ids": ["CUSTOMER"],
        "reference": reference,
        **extra,
    }


def contacts_input(
    records: list[dict[str, Any]], stream: str = "customers", state: dict[str, Any] | None = None
) -> str:
    msgs = [schema_msg(stream, CONTACT_SCHEMA, ["code"])]
    msgs += [record_msg(stream, r) for r in records]
    if state is not None:
        msgs.append(state_msg(state))
    return singer(msgs)


def target_config(
    connection_config: dict[str, Any], tmp_path: Path, api: SageAPI, **extra: Any
) -> dict[str, Any]:
    return {
        **connection_config,
        "business_id": api.business_id,
        "ledger_path": str(tmp_path / "ledger.sqlite"),
        "results_path": str(tmp_path / "results.jsonl"),
        "dead_letter_path": str(tmp_path / "dead-letter.singer"),
        "stream_resources": {"customers": "contacts"},
        **extra,
    }


def run_target(config: dict[str, Any], text: str) -> list[dict[str, Any]]:
    """Run the target in this process; return the STATE values it wrote."""
    from target_sage.target import TargetSage

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        target = TargetSage(config=config)
        target.listen(file_input=io.StringIO(text))
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def run_cli(
    config: dict[str, Any],
    text: str | bytes,
    tmp_path: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    code: str = TARGET_CLI,
) -> subprocess.CompletedProcess[str]:
    """Run ``target-sage`` as a child process (for SIGKILL tests), its input from a file
    (``bytes``: written as they are); ``code`` is the ``python -c`` program (target-sage with
    the tests' checkpoints). A kill point comes only from ``env``, never from this process."""
    config_path = tmp_path / "target-config.json"
    config_path.write_text(json.dumps(config))
    input_path = tmp_path / "input.singer"
    if isinstance(text, bytes):
        input_path.write_bytes(text)
    else:
        input_path.write_text(text)
    full_env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", code, "--config", str(config_path), "--input", str(input_path)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=str(tmp_path),
    )


def killed_run(
    config: dict[str, Any],
    text: str,
    tmp_path: Path,
    kill_at: str,
    *,
    may_finish: bool = False,
    env: dict[str, str] | None = None,
    code: str = TARGET_CLI,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run the target with ``TARGET_SAGE_KILL_AT=kill_at``: it must die there by SIGKILL (or,
    with ``may_finish``, when the point may come after the last write, die or finish)."""
    killed = run_cli(config, text, tmp_path, {**(env or {}), KILL_ENV: kill_at}, timeout, code)
    allowed = (0, -signal.SIGKILL) if may_finish else (-signal.SIGKILL,)
    assert killed.returncode in allowed, killed.stderr[-2000:]
    return killed


def faulty_connection(
    sandbox_factory: Any, connection_config: dict[str, Any], fault_rate: float, *args: str
) -> tuple[SandboxProcess, SageAPI, dict[str, Any]]:
    """A sandbox failing ``fault_rate`` of requests (``args``: its --fault-* arguments), a
    fault-free view of the same data for checking, and a connection to the faulty one."""
    faulty = sandbox_factory(fault_rate=fault_rate, extra_args=list(args))
    api = SageAPI(sandbox_factory(db=faulty.db))  # same data, no faults: for checking
    grant = faulty.grant()
    conn = {
        **connection_config,
        "access_token": grant["access_token"],
        "refresh_token": grant["refresh_token"],
        "advanced_config": {
            "api_url": faulty.api_url,
            "token_url": faulty.token_url,
            "max_backoff": 1,
            "max_retries": 10,
        },
    }
    return faulty, api, conn


def results(config: dict[str, Any]) -> list[dict[str, Any]]:
    path = Path(config["results_path"])
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class SageAPI:
    """Reads (and occasionally writes) the sandbox directly, with a grant of its own."""

    def __init__(self, sandbox: SandboxProcess, business: int = 0) -> None:
        self.sandbox = sandbox
        grant = sandbox.grant()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {grant['access_token']}"
        items = self.session.get(sandbox.api_url + "/businesses", timeout=30).json()["$items"]
        self.business_id = str(items[business]["id"])
        self.session.headers["X-Business"] = self.business_id

    def get(self, path: str, **params: Any) -> Any:
        response = self.session.get(self.sandbox.api_url + path, params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.session.post(self.sandbox.api_url + path, json=body, timeout=30)
        assert response.status_code == 201, response.text
        return response.json()

    def all(self, path: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        nxt: str | None = path
        params: dict[str, Any] | None = {"attributes": "all", "items_per_page": 200}
        while nxt:
            response = self.session.get(self.sandbox.api_url + nxt, params=params, timeout=30)
            response.raise_for_status()
            body = response.json()
            out.extend(body["$items"])
            nxt, params = body.get("$next"), None
        return out

    def contacts_named(self, prefix: str) -> list[dict[str, Any]]:
        return [c for c in self.all("/contacts") if str(c.get("name", "")).startswith(prefix)]

    def first_id(self, path: str, **params: Any) -> str:
        return str(self.get(path, items_per_page=1, **params)["$items"][0]["id"])
