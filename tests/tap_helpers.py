"""Helpers of the tap tests: run tap-sage as a process and read what it wrote."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import requests

from tap_sage.tap import TapSage

TIMEOUT = 30


def catalog_for(config: dict[str, Any], streams: Iterable[str]) -> dict[str, Any]:
    """The tap's discovered catalog with only ``streams`` selected."""
    wanted = set(streams)
    catalog = TapSage(config=config, validate_config=False, setup_mapper=False).catalog_dict
    for entry in catalog["streams"]:
        for meta in entry["metadata"]:
            if meta["breadcrumb"] == []:
                meta["metadata"]["selected"] = entry["tap_stream_id"] in wanted
    return catalog


class Run:
    """One finished run of the tap: its messages and its log."""

    def __init__(self, stdout: str, stderr: str, returncode: int) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.returncode = returncode
        self.messages: list[dict[str, Any]] = []
        for line in stdout.splitlines():
            try:
                self.messages.append(json.loads(line))
            except ValueError:  # a line cut by a kill
                continue

    def records(self, stream: str | None = None) -> list[dict[str, Any]]:
        return [
            m["record"]
            for m in self.messages
            if m["type"] == "RECORD" and (stream is None or m["stream"] == stream)
        ]

    @property
    def states(self) -> list[dict[str, Any]]:
        return [m["value"] for m in self.messages if m["type"] == "STATE"]

    @property
    def state(self) -> dict[str, Any]:
        return self.states[-1]


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def tap_command(tmp: Path, config: dict[str, Any], streams: Iterable[str],
                state: dict[str, Any] | None = None, tag: str = "run") -> list[str]:  # fmt: skip
    cmd = [
        sys.executable, "-m", "tap_sage.tap",
        "--config", str(write_json(tmp / f"{tag}-config.json", config)),
        "--catalog", str(write_json(tmp / f"{tag}-catalog.json", catalog_for(config, streams))),
    ]  # fmt: skip
    if state is not None:
        cmd += ["--state", str(write_json(tmp / f"{tag}-state.json", state))]
    return cmd


def run_tap(tmp: Path, config: dict[str, Any], streams: Iterable[str],
            state: dict[str, Any] | None = None, tag: str = "run", check: bool = True) -> Run:  # fmt: skip
    """Run ``python -m tap_sage.tap`` to the end."""
    proc = subprocess.run(
        tap_command(tmp, config, streams, state, tag),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    run = Run(proc.stdout, proc.stderr, proc.returncode)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def live_records(db: Path, resource: str, business: str | None = None) -> dict[str, str]:
    """id -> updated_at of the live records of ``resource`` in the sandbox database."""
    conn = sqlite3.connect(str(db))
    try:
        sql = "SELECT id, updated_at FROM records WHERE resource = ? AND deleted_at IS NULL"
        args: list[Any] = [resource]
        if business:
            sql += " AND business = ?"
            args.append(business)
        return {str(i): str(u) for i, u in conn.execute(sql, args)}
    finally:
        conn.close()


def businesses(api_url: str, token: str) -> list[dict[str, Any]]:
    response = requests.get(
        api_url + "/businesses",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        timeout=TIMEOUT,
    )
    response.raise_for_status()
    return list(response.json()["$items"])
