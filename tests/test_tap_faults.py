"""Issue 11, the faults Sage really has, over HTTP: HTML error pages (502/503/504/520-525, not
JSON), 429 without ``Retry-After``, and heavy pages (lists with ``attributes=all`` above some
``items_per_page`` fail with 500/504); the sandbox's knobs for them, and what tap-sage does."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import requests

from tap_sage.sage.client import BearerAuth, SageClient, sage_wait
from tap_sage.sandbox.app import HTML_STATUSES
from tap_sage.sandbox.runner import SandboxProcess
from tests.tap_helpers import run_tap
from tests.test_tap_sync import business_ids, with_settings

STREAMS = ["contacts", "sales_invoices"]  # creation order; sorted by updated_at


def _get(box: SandboxProcess, path: str, **params: Any) -> requests.Response:
    business = business_ids(box.db)[0]
    headers = {"Authorization": f"Bearer {box.grant()['access_token']}", "X-Business": business}
    return requests.get(box.api_url + path, params=params, headers=headers, timeout=30)


def _config(box: SandboxProcess, base: dict[str, Any], tmp_path: Path, **advanced: Any) -> dict[str, Any]:  # fmt: skip
    granted = box.grant()
    port = box.url.rsplit(":", 1)[1]
    return with_settings(
        base,
        connection_name=f"faults-{port}",
        access_token=granted["access_token"],
        refresh_token=granted["refresh_token"],
        client_id=granted["client_id"],
        client_secret=granted["client_secret"],
        oauth_settings_location=str(tmp_path / f"{port}.json"),
        advanced_config={"api_url": box.api_url, "token_url": box.token_url, **advanced},
    )


def test_sandbox_answers_html_error_pages_and_bare_429s(sandbox_factory) -> None:
    box = sandbox_factory(fault_rate=1.0, fault_kinds=["html"], fault_seed=1)
    statuses = set()
    for _ in range(30):
        response = _get(box, "/contacts")
        assert response.headers["content-type"].startswith("text/html")
        assert "<html>" in response.text and str(response.status_code) in response.text
        with_json = True
        try:
            response.json()
        except ValueError:
            with_json = False
        assert not with_json
        statuses.add(response.status_code)
    assert statuses <= set(HTML_STATUSES)
    assert len(statuses) >= 4  # several kinds of gateway page, 52x among them
    assert any(s >= 520 for s in statuses)

    bare = sandbox_factory(fault_rate=1.0, fault_kinds=["429bare"])
    response = _get(bare, "/contacts")
    assert response.status_code == 429
    assert "Retry-After" not in response.headers


def test_sandbox_fails_heavy_pages_only(sandbox_factory) -> None:
    box = sandbox_factory(heavy_page_size=20, heavy_fault_rate=1.0, fault_seed=2)
    heavy = [_get(box, "/contacts", attributes="all", items_per_page=50) for _ in range(8)]
    assert {r.status_code for r in heavy} == {500, 504}  # Sage's two ways of giving up
    assert any(r.headers["content-type"].startswith("text/html") for r in heavy)
    assert _get(box, "/contacts", attributes="all", items_per_page=20).status_code == 200
    assert _get(box, "/contacts", attributes="all").status_code == 200  # Sage's default: 20
    assert _get(box, "/contacts", items_per_page=50).status_code == 200  # not attributes=all
    # at a lower rate, some heavy pages get through
    some = sandbox_factory(heavy_page_size=20, heavy_fault_rate=0.5, fault_seed=3)
    codes = [_get(some, "/contacts", attributes="all", items_per_page=50).status_code
             for _ in range(20)]  # fmt: skip
    assert 200 in codes and set(codes) - {200}


def test_html_pages_and_bare_429s_are_retried(sandbox_factory, connection_config, tmp_path: Path) -> None:  # fmt: skip
    clean_box = sandbox_factory()
    faulty_box = sandbox_factory(fault_rate=0.25, fault_kinds=["html", "429bare"], fault_seed=5)
    runs = []
    for box in (clean_box, faulty_box):
        config = _config(box, connection_config, tmp_path, page_size=50, max_backoff=0.2)
        runs.append(run_tap(tmp_path, config, STREAMS, tag=box.url.rsplit(":", 1)[1]))
    clean, faulty = runs
    assert "Retrying" in faulty.stderr
    assert "an HTML page, not JSON" in faulty.stderr  # the retry log says what came
    assert "<html" not in faulty.stderr
    for stream in STREAMS:
        assert [json.dumps(r) for r in faulty.records(stream)] == [
            json.dumps(r) for r in clean.records(stream)
        ], stream
    assert faulty.state == clean.state


def test_heavy_pages_fall_back_to_smaller_ones(sandbox_factory, connection_config, tmp_path: Path) -> None:  # fmt: skip
    clean_box = sandbox_factory()
    heavy_box = sandbox_factory(heavy_page_size=20, heavy_fault_rate=1.0, fault_seed=6)
    runs = []
    for box in (clean_box, heavy_box):
        config = _config(box, connection_config, tmp_path, page_size=100, max_retries=1,
                         max_backoff=0.1)  # fmt: skip
        runs.append(run_tap(tmp_path, config, STREAMS, tag=box.url.rsplit(":", 1)[1]))
    clean, heavy = runs
    assert len(clean.records("contacts")) > 20  # more than one page of the floor
    for stream in STREAMS:  # the same records in the same order, and the same bookmarks
        assert [json.dumps(r) for r in heavy.records(stream)] == [
            json.dumps(r) for r in clean.records(stream)
        ], stream
    assert heavy.state == clean.state
    # said once per stream (a warning), whatever the number of halvings and businesses
    for stream in STREAMS:
        said = [line for line in heavy.stderr.splitlines()
                if f"Pages of {stream} kept failing" in line and "WARNING" in line]  # fmt: skip
        assert len(said) == 1, (stream, said)
    assert "Pages of contacts kept failing" not in clean.stderr


def test_when_retries_run_out_the_error_names_status_path_and_request_id(sandbox_factory, connection_config, tmp_path: Path) -> None:  # fmt: skip
    box = sandbox_factory(fault_rate=1.0, fault_kinds=["html"], fault_seed=7)
    config = _config(box, connection_config, tmp_path, page_size=20, max_retries=1,
                     max_backoff=0.05)  # fmt: skip
    # tokens come from the sandbox's OAuth endpoint, which the API faults leave alone
    run = run_tap(tmp_path, config, ["contacts"], tag="html", check=False)
    assert run.returncode != 0
    # the first request to give up is /businesses (the partitions) or /contacts
    named = re.search(r"Sage answered (50[234]|52[0-5]) to GET /v3\.1/(businesses|contacts): "
                      r"an HTML page, not JSON \('\d+ [^']+'\), x_request_id [0-9a-f-]{36}",
                      run.stderr)  # fmt: skip
    assert named, run.stderr[-2000:]
    for noise in ("JSONDecodeError", "DecodeError", "Expecting value", "<html", "<body"):
        assert noise not in run.stderr, noise


def test_a_429_without_retry_after_backs_off_exponentially() -> None:
    class Bare(Exception):
        retry_after = None

    waits = sage_wait(factor=0.5, max_value=60.0)
    next(waits)
    ceilings = []
    for attempt in range(6):
        wait = waits.send(Bare())
        ceiling = 0.5 * 2**attempt
        assert 0 <= wait <= ceiling
        ceilings.append(ceiling)
    assert ceilings == [0.5, 1, 2, 4, 8, 16]
    # the waits themselves grow: over many draws, the mean of the 6th is far above the 1st
    firsts, sixths = [], []
    for _ in range(200):
        gen = sage_wait(factor=0.5, max_value=60.0)
        next(gen)
        draws = [gen.send(Bare()) for _ in range(6)]
        firsts.append(draws[0])
        sixths.append(draws[5])
    assert sum(sixths) / 200 > 10 * (sum(firsts) / 200)


def test_businesses_are_read_without_parameters(sandbox, connection_config) -> None:
    """Sage's /businesses takes none (../shared/sage-api/recorded/businesses_list.json)."""
    client = SageClient.for_config(connection_config)
    assert client.businesses()
    client.get_json("/contacts", business_id=client.businesses()[0]["id"],
                    params={"items_per_page": 5})  # fmt: skip
    lines = sandbox.log_path.read_text(encoding="utf-8").splitlines()
    asked = [line for line in lines if "GET /v3.1/businesses" in line]
    assert asked and all("/v3.1/businesses?" not in line for line in asked)
    assert any("GET /v3.1/contacts?items_per_page=5" in line for line in lines)  # queries show


def test_sandbox_cuts_a_body_halfway(sandbox_factory) -> None:
    box = sandbox_factory(fault_rate=1.0, fault_kinds=["cutbody"], fault_seed=8)
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        _get(box, "/contacts", items_per_page=50, attributes="all")  # the head said more came


def test_answers_cut_off_after_they_began_are_asked_again(sandbox_factory, connection_config, tmp_path: Path) -> None:  # fmt: skip
    """A page whose status and headers came but whose body was cut off is asked again, at
    concurrency 1 (where the next page is already asked for once an answer begins,
    ``PageScanner._pages_in_turn``) and 4: the same records, order and bookmarks."""
    clean_box = sandbox_factory()
    cut_box = sandbox_factory(fault_rate=0.2, fault_kinds=["cutbody"], fault_seed=9)
    runs = {}
    for concurrency in (1, 4):
        for name, box in (("clean", clean_box), ("cut", cut_box)):
            config = _config(box, connection_config, tmp_path, page_size=20, max_backoff=0.05)
            config = with_settings(config, max_concurrency=concurrency)
            runs[name, concurrency] = run_tap(tmp_path, config, STREAMS,
                                              tag=f"{name}{concurrency}")  # fmt: skip
    for concurrency in (1, 4):
        clean, cut = runs["clean", concurrency], runs["cut", concurrency]
        assert re.search(r"Retrying GET /v3\.1/\w+ .*ChunkedEncodingError reading the answer",
                         cut.stderr), cut.stderr[-2000:]  # fmt: skip
        assert len(clean.records("contacts")) > 40  # several pages
        for stream in STREAMS:
            assert [json.dumps(r) for r in cut.records(stream)] == [
                json.dumps(r) for r in clean.records(stream)
            ], (stream, concurrency)
        assert cut.state == clean.state


def test_an_error_answer_cut_off_is_retried_when_streamed(sandbox, connection_config) -> None:
    """A list page is read with ``stream`` (its slot of the budget ends when its answer
    begins): an error answer whose body is cut off (an HTML 503 from a gateway, here from a
    bare socket server) is retried as it is without ``stream``, not raised as a ``requests``
    error; ``answered`` is told of the 200 only."""
    server = socket.create_server(("127.0.0.1", 0))
    asked: list[bytes] = []
    cut = b"<html><title>503 Service"
    ok = b'{"$items": [], "$total": 0}'

    def serve() -> None:
        for answer in (
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html\r\n"
            b"Content-Length: 1000\r\n\r\n" + cut,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(ok)).encode() + b"\r\n\r\n" + ok,
        ):
            conn, _ = server.accept()
            with conn:
                asked.append(conn.recv(65536).split(b"\r\n", 1)[0])
                conn.sendall(answer)
                conn.shutdown(socket.SHUT_RDWR)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = server.getsockname()[1]
    config = dict(connection_config, connection_name=f"cut-{port}")
    config["advanced_config"] = {**config["advanced_config"], "max_backoff": 0.05,
                                 "api_url": f"http://127.0.0.1:{port}/v3.1"}  # fmt: skip
    client = SageClient.for_config(config)
    began: list[int] = []
    response = client.request("GET", "/contacts", slot=contextlib.nullcontext(),
                              answered=lambda: began.append(1))  # fmt: skip
    thread.join(10)
    server.close()
    assert response.status_code == 200 and response.content == ok
    assert asked == [b"GET /v3.1/contacts HTTP/1.1"] * 2  # the cut 503, then the 200
    assert began == [1]


def test_a_netrc_entry_for_the_host_does_not_replace_the_token(sandbox, connection_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """requests gives a request without auth the ``~/.netrc`` (``$NETRC``) entry of its host as
    Basic credentials, over an ``Authorization`` header: the bearer token goes as the request's
    auth (``BearerAuth``), so a user's netrc line for the API host loses no connection."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password elsewhere\n", encoding="utf-8")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    basic = requests.Session().prepare_request(requests.Request("GET", sandbox.api_url))
    assert basic.headers["Authorization"].startswith("Basic ")  # requests does read it
    # a stale access token: the first call is answered 401, the client refreshes (the token
    # endpoint takes the client's credentials in its form, with no netrc line in their way)
    config = dict(connection_config, connection_name="netrc", access_token="stale")
    client = SageClient.for_config(config)
    assert client.businesses()
    sent = client.session.prepare_request(
        requests.Request("GET", sandbox.api_url, auth=BearerAuth("t0ken"))
    )
    assert sent.headers["Authorization"] == "Bearer t0ken"
    assert "t0ken" not in repr(BearerAuth("t0ken"))
