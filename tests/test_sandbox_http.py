"""The sandbox's HTTP: kept-alive connections (one per requests.Session), the dropped-connection
fault on them, ``--latency-ms`` (from a request's arrival to its answer), and the sandbox extra
(``sage-sandbox serve`` without Werkzeug)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import requests
from packaging.requirements import Requirement

from tap_sage.sandbox.app import SandboxApp, Settings
from tap_sage.sandbox.runner import SandboxProcess
from tap_sage.sandbox.server import ARRIVED

TIMEOUT = 10
#: Run Python with Werkzeug impossible to import (as in an install without the sandbox extra).
NO_WERKZEUG = "import sys; sys.modules['werkzeug'] = None; "


def _connections(sandbox: SandboxProcess) -> int:
    """Connections the server accepted (``--log-connections`` logs one line each)."""
    return sandbox.log_path.read_text(encoding="utf-8").count("connection opened from")


def _session(sandbox: SandboxProcess) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {sandbox.grant()['access_token']}"
    return session


def test_a_session_keeps_one_connection_over_every_kind_of_answer(sandbox_factory) -> None:
    sandbox = sandbox_factory(extra_args=["--log-connections"])
    api = sandbox.api_url
    with _session(sandbox) as session:
        answers = []
        for page in range(1, 11):
            answers.append(session.get(f"{api}/contacts", params={"page": page}, timeout=TIMEOUT))
        contact = answers[0].json()["$items"][0]["id"]
        answers.append(session.get(f"{api}/contacts/{contact}", timeout=TIMEOUT))
        created = session.post(
            f"{api}/contacts",
            json={"contact": {"name": "Keep Alive Ltd", "contact_type_ids": ["CUSTOMER"]}},
            timeout=TIMEOUT,
        )
        answers.append(created)
        new_id = created.json()["id"]
        answers.append(
            session.put(f"{api}/contacts/{new_id}", json={"contact": {"notes": "x"}}, timeout=10)
        )
        # answers the server gives without reading the body: the next request still parses
        answers.append(
            session.post(f"{api}/contacts", data=b"x" * 50_000, timeout=TIMEOUT)  # 415
        )
        answers.append(session.put(f"{api}/contacts", json={"contact": {}}, timeout=TIMEOUT))
        answers.append(session.get(f"{api}/nowhere", timeout=TIMEOUT))  # 404
        answers.append(session.delete(f"{api}/contacts/{new_id}", timeout=TIMEOUT))  # 204
        answers.append(session.get(f"{api}/contacts/{new_id}", timeout=TIMEOUT))  # 404
        answers.append(session.get(f"{api}/contacts", params={"page": 2}, timeout=TIMEOUT))
    statuses = [a.status_code for a in answers]
    assert statuses == [200] * 11 + [201, 200, 415, 405, 404, 204, 404, 200]
    assert answers[-1].json() == answers[1].json()  # same page, same answer
    assert all(a.headers.get("Connection", "").lower() != "close" for a in answers)
    assert _connections(sandbox) == 1


def test_http_1_1_on_the_wire_with_nodelay_answers_framed_by_content_length(sandbox) -> None:
    token = sandbox.grant()["access_token"]
    request = (
        f"GET /v3.1/contacts?items_per_page=2 HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=TIMEOUT) as sock:
        stream = sock.makefile("rb")
        for _ in range(2):  # two requests, one connection
            sock.sendall(request)
            status = stream.readline()
            headers = {}
            while (line := stream.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = stream.read(int(headers["content-length"]))
            assert status.startswith(b"HTTP/1.1 200")
            assert "connection" not in headers
            assert len(json.loads(body)["$items"]) == 2


def test_the_drop_fault_ends_the_connection_and_the_client_sees_a_connection_error(
    sandbox_factory,
) -> None:
    sandbox = sandbox_factory(
        fault_rate=0.3, fault_kinds=["drop"], fault_seed=5, extra_args=["--log-connections"]
    )
    drops = answered = 0
    with _session(sandbox) as session:
        for page in range(1, 41):
            try:
                response = session.get(
                    f"{sandbox.api_url}/contacts", params={"page": page % 5 + 1}, timeout=TIMEOUT
                )
            except requests.ConnectionError:
                drops += 1
                continue
            assert response.status_code == 200
            answered += 1
    assert drops >= 3 and answered >= 10, (drops, answered)
    # each drop closes its connection; every other answer came on the kept-alive one
    assert _connections(sandbox) == drops + 1


#: The latency of the tests below (ms): long beside the sandbox's own work on these requests.
LATENCY_MS = 150


def _timed(session: Any, method: str, url: str, **kwargs: Any) -> tuple[float, str]:
    """(seconds from before the request was sent to its whole answer, what it was)."""
    started = time.monotonic()
    try:
        response = session.request(method, url, timeout=TIMEOUT, **kwargs)
        what = str(response.status_code)
    except requests.ConnectionError:
        what = "drop"
    return time.monotonic() - started, what


def test_every_answer_and_fault_leaves_no_sooner_than_the_latency_after_it_was_sent(
    sandbox_factory,
) -> None:
    """A lower bound only: the latency includes the sandbox's work, so no upper bound holds
    on a busy machine (and timing bounds are the benchmarks' business)."""
    sandbox = sandbox_factory(
        latency_ms=LATENCY_MS,
        fault_rate=0.5,
        fault_kinds=["500", "429", "drop", "html", "commit500"],
        fault_seed=11,
        heavy_page_size=20,
        heavy_fault_rate=0.5,
    )
    api = sandbox.api_url
    heavy = {"attributes": "all", "items_per_page": 200}
    timings: list[tuple[float, str]] = []
    with _session(sandbox) as session:
        for i in range(16):
            body = {"contact": {"name": f"Latency {i}", "contact_type_ids": ["CUSTOMER"]}}
            timings.append(_timed(session, "GET", f"{api}/contacts"))
            timings.append(_timed(session, "POST", f"{api}/contacts", json=body))
            timings.append(_timed(session, "GET", f"{api}/sales_invoices", params=heavy))
    form = {"grant_type": "refresh_token", "refresh_token": "unknown"}
    timings.append(_timed(requests, "POST", sandbox.token_url, data=form))
    seen = {what for _, what in timings}
    # the faults answered too: 500, 429, an HTML 5xx, a dropped connection, a success
    assert {"200", "201", "500", "429", "drop", "400"} <= seen, seen
    assert seen & {"502", "503", "504", "520", "521", "522", "523", "524", "525"}, seen
    early = [(round(seconds * 1000, 1), what) for seconds, what in timings]
    early = [(ms, what) for ms, what in early if ms < LATENCY_MS]
    assert not early, f"answered sooner than --latency-ms {LATENCY_MS}: {early}"


@pytest.mark.parametrize(("spent", "sleeps"), [(0.0, True), (1.0, False)])
def test_the_latency_sleeps_only_what_the_work_left_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spent: float, sleeps: bool
) -> None:
    """A unit: a request that arrived ``spent`` seconds ago is answered after a sleep of what
    is left of 500 ms (none once a second has gone by)."""
    from werkzeug.test import EnvironBuilder

    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)  # the app's (no other thread runs here)
    wsgi = SandboxApp(Settings(db=tmp_path / "empty.db", latency_ms=500))
    environ = EnvironBuilder(path="/v3.1/nowhere").get_environ()
    environ[ARRIVED] = time.monotonic() - spent
    statuses: list[str] = []
    wsgi(environ, lambda status, headers, exc_info=None: statuses.append(status))
    assert statuses and statuses[0].startswith("401")  # no token: answered, after the sleep
    if sleeps:
        assert len(slept) == 1 and 0 < slept[0] <= 0.5, slept
    else:
        assert slept == []


def test_serve_without_werkzeug_names_the_extra_and_the_pip_command(sandbox_db) -> None:
    code = NO_WERKZEUG + (
        "from tap_sage.sandbox.cli import main; "
        f"sys.exit(main(['serve', '--port', '0', '--db', {str(sandbox_db)!r}]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'tap-sage[sandbox]'" in proc.stderr
    assert "Werkzeug" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_seed_grant_and_the_plugins_need_no_werkzeug(tmp_path) -> None:
    db = tmp_path / "plain.db"
    code = NO_WERKZEUG + (
        "from tap_sage.sandbox.cli import main; "
        f"assert main(['seed', '--db', {str(db)!r}, '--businesses', '1']) == 0; "
        f"assert main(['grant', '--db', {str(db)!r}]) == 0; "
        "import tap_sage.tap, target_sage.target, tap_sage.sage.auth_cli, tap_sage.sandbox.runner"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "access_token" in proc.stdout.splitlines()[-1]


def test_werkzeug_is_in_the_sandbox_extra_not_the_runtime_dependencies() -> None:
    requirements = [Requirement(r) for r in metadata.requires("tap-sage") or []]
    werkzeug = [r for r in requirements if r.name.lower() == "werkzeug"]
    assert werkzeug, "werkzeug is in no extra"
    assert all(r.marker is not None for r in werkzeug), "werkzeug is a runtime dependency"
    for extra in ("sandbox", "dev"):  # dev: make venv, make test and the demo
        assert any(r.marker.evaluate({"extra": extra}) for r in werkzeug if r.marker), extra
