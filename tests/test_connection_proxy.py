"""A real forward proxy (proxy.py) between the connection and the sandbox.

The sandbox is addressed as ``api.sage.test``, a name only the proxy resolves (its plugin in
``tests/proxy_test_plugin.py``): a request reaches the sandbox only through the proxy, and the
proxy's access log lists every one of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tap_sage.sage.client import SageClient
from tap_sage.sage.connection_check import check
from tap_sage.sage.errors import SageNetworkError, SageProxyError
from tests.connection_helpers import ROOT, forget_clients, free_port, sandbox_config

PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
             "all_proxy", "no_proxy")  # fmt: skip


class Proxy:
    def __init__(self, tmp: Path, *extra: str) -> None:
        self.log = tmp / f"proxy-{time.monotonic_ns()}.log"
        port_file = self.log.with_suffix(".port")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", "0",
             "--port-file", str(port_file), "--num-workers", "1", "--num-acceptors", "1",
             "--plugins", "tests.proxy_test_plugin.SageTestHosts", "--log-level", "INFO",
             "--log-file", str(self.log), *extra],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text().strip()):
            assert self.proc.poll() is None and time.monotonic() < deadline, (
                "proxy.py did not start"
            )
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{int(port_file.read_text())}"

    def requests_to(self, host: str, *, expect: bool = True) -> list[str]:
        """The access-log lines naming ``host``. proxy.py writes a line when the client's
        connection ends, so callers close their clients first (``forget_clients``: the
        sandbox keeps connections alive); lines are awaited up to 15 s when ``expect``."""
        started = time.monotonic()
        while True:
            lines = self.log.read_text().splitlines() if self.log.exists() else []
            found = [line for line in lines if "access_log" in line and host in line]
            waited = time.monotonic() - started
            if (found and expect) or (not expect and waited > 0.3) or waited > 15:
                return found
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    started: list[Proxy] = []

    def start(*extra: str) -> Proxy:
        proxy = Proxy(tmp_path, *extra)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)
    forget_clients()
    yield
    forget_clients()


def hidden_config(sandbox: Any, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """Config whose API and token URLs use a name only the proxy can resolve."""
    config = sandbox_config(sandbox, tmp_path / "tokens.json", access_token=None, **extra)
    hidden = f"http://api.sage.test:{sandbox.port}"
    config["advanced_config"].update(
        api_url=hidden + "/v3.1", token_url=hidden + "/oauth/token", max_retries=0
    )
    return config


def test_reaches_the_sandbox_only_through_the_proxy(
    sandbox: Any, tmp_path: Path, start_proxy: Callable[..., Proxy]
) -> None:
    proxy = start_proxy()
    config = hidden_config(sandbox, tmp_path)
    # Without the proxy the name does not even resolve: nothing reaches the sandbox.
    with pytest.raises(SageNetworkError):
        SageClient.for_config(config).businesses()
    assert proxy.requests_to("api.sage.test", expect=False) == []
    forget_clients()
    via = {**config, "use_proxy": True, "proxy_url": proxy.url}
    report = check(via, probe="sample")
    assert report.ok, report.error
    forget_clients()  # its connections end, and the proxy logs them
    proxy.requests_to("/oauth/token")  # the token endpoint's connection is the last to end
    lines = proxy.requests_to("api.sage.test")
    assert any("POST api.sage.test" in line and "/oauth/token" in line for line in lines)
    assert sum("/v3.1/" in line for line in lines) >= 1 + len(report.businesses)


def test_proxy_from_the_environment_is_honoured(
    sandbox: Any, tmp_path: Path, start_proxy: Callable[..., Proxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    """use_proxy off: HTTP_PROXY (http URLs) and HTTPS_PROXY (https URLs) from the environment."""
    proxy = start_proxy()
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    config = hidden_config(sandbox, tmp_path)
    assert len(SageClient.for_config(config).businesses()) == 2
    forget_clients()  # its connection ends, and the proxy logs it
    assert proxy.requests_to("/v3.1/businesses")
    # https URL: the client asks the HTTPS_PROXY for a tunnel (the sandbox speaks no TLS, so
    # the handshake then fails, which is expected: what matters is which proxy was asked).
    forget_clients()
    tls = dict(config, advanced_config={**config["advanced_config"],
                                       "api_url": f"https://tls.sage.test:{sandbox.port}/v3.1"})  # fmt: skip
    with pytest.raises(SageNetworkError) as tls_error:
        SageClient.for_config(tls).businesses()
    assert "TLS" in str(tls_error.value) and "ca_bundle" in tls_error.value.fix
    assert any(
        "CONNECT" in line or "tls.sage.test" in line for line in proxy.requests_to("tls.sage.test")
    )


def test_proxy_credentials_and_a_proxy_that_refuses(
    sandbox: Any, tmp_path: Path, start_proxy: Callable[..., Proxy]
) -> None:
    """Error: a proxy that refuses (407 or no proxy listening) names the proxy, cause and fix,
    never its password."""
    proxy = start_proxy("--basic-auth", "sage:pr0xy-pass")
    config = hidden_config(sandbox, tmp_path, use_proxy=True, proxy_url=proxy.url,
                           proxy_username="sage", proxy_password="wrong-pass")  # fmt: skip
    with pytest.raises(SageProxyError) as denied:
        SageClient.for_config(config).businesses()
    assert "407" in str(denied.value) and "proxy_username" in denied.value.fix
    assert "wrong-pass" not in str(denied.value)
    forget_clients()
    config["proxy_password"] = "pr0xy-pass"
    assert len(SageClient.for_config(config).businesses()) == 2
    forget_clients()
    inline = dict(config, proxy_url=proxy.url.replace("http://", "http://sage:pr0xy-pass@"),
                  proxy_username=None, proxy_password=None)  # fmt: skip
    assert len(SageClient.for_config(inline).businesses()) == 2
    forget_clients()
    nobody = f"http://user:s3cret-pw@127.0.0.1:{free_port()}"
    config = dict(config, proxy_url=nobody, proxy_username=None, proxy_password=None)
    with pytest.raises(SageProxyError) as refused:
        SageClient.for_config(config).businesses()
    text = str(refused.value)
    assert "refused" in text and "127.0.0.1" in text and "s3cret-pw" not in text
    assert "use_proxy" in refused.value.fix


def test_tls_is_verified_and_ca_bundle_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TLS is always verified: a self-signed server is refused with the fix (ca_bundle); with
    its certificate as ca_bundle the same server is trusted, even when REQUESTS_CA_BUNDLE is
    set in the environment (which overrides a requests Session's own verify)."""
    import requests

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())
    import json
    import shutil as sh
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from typing_extensions import override

    if not sh.which("openssl"):
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)  # fmt: skip

    class Businesses(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"$items": [{"id": "b1"}], "$next": None}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        @override
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Businesses)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config: dict[str, Any] = {
            "initiate_oauth": "OFF", "access_token": "tok-abc",
            "advanced_config": {"api_url": f"https://127.0.0.1:{server.server_address[1]}/v3.1"},
        }  # fmt: skip
        with pytest.raises(SageNetworkError) as refused:
            SageClient.for_config(config).businesses()
        assert "TLS certificate verification failed" in str(refused.value)
        assert "ca_bundle" in refused.value.fix
        forget_clients()
        trusted = SageClient.for_config({**config, "ca_bundle": str(cert)})
        assert trusted.businesses() == [{"id": "b1"}]
    finally:
        server.shutdown()
        server.server_close()
