"""The HTTP server of ``serve``: Werkzeug's threaded server with a request handler that keeps
HTTP/1.1 connections alive (``TCP_NODELAY``), as Sage does, and logs request lines only.

Werkzeug's own handler answers every request with ``Connection: close`` and reads whatever
the client sent after the answer (it cannot tell a next request from a body left over). This
handler reads exactly the request's body (``Content-Length`` or chunked), so the next request
on the connection starts where that body ends, and sends each answer with its length in one
write. The dropped-connection fault (``answers.DropConnection``) shuts the socket without an
answer; the connection then ends. The moment a request's first line arrived goes to the
application as ``environ[ARRIVED]`` (``time.monotonic()``): ``--latency-ms`` counts from there.
"""

from __future__ import annotations

import io
import logging
import socket
import time
from collections.abc import Iterable
from email.utils import formatdate
from typing import Any

from typing_extensions import override
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

log = logging.getLogger("sage_sandbox")

#: Seconds an idle kept-alive connection stays open (longer than any client here waits).
IDLE_TIMEOUT = 300.0
#: Statuses that carry no body (RFC 9110, 6.4.1).
BODILESS = frozenset({204, 304})
#: The environ key of the request's arrival (``time.monotonic()`` when its first line was read).
ARRIVED = "sage_sandbox.arrived"
#: Set by the application on an answer whose body is to be cut halfway (the ``cutbody`` fault).
CUT_BODY = "sage_sandbox.cut_body"


class _Body(io.RawIOBase):
    """The request body: at most ``length`` bytes of the connection (the rest is the next
    request)."""

    def __init__(self, stream: Any, length: int) -> None:
        super().__init__()
        self._stream = stream
        self._left = length

    @override
    def readable(self) -> bool:
        return True

    @override
    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            return 0
        view = memoryview(buffer)[: self._left]
        data = self._stream.read(len(view))
        if not data:
            raise ConnectionError("the client closed the connection inside a request body")
        view[: len(data)] = data
        self._left -= len(data)
        return len(data)

    def drain(self) -> None:
        """Read what the application left of the body."""
        while self._left > 0 and self.read(65536):
            pass


def _drain(stream: Any) -> None:
    """Read a chunked body to its end (Werkzeug's ``DechunkedInput``)."""
    while stream.read(65536):
        pass


class KeepAliveHandler(WSGIRequestHandler):
    """HTTP/1.1 with keep-alive: one WSGI call per request, many requests per connection."""

    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT
    #: Log a line for each new connection (``serve --log-connections``).
    log_connections = False

    @override
    def setup(self) -> None:
        super().setup()
        # An answer goes out in one write; without Nagle it leaves at once.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.log_connections:
            host, port = self.client_address[:2]
            log.info("connection opened from %s:%s", host, port)

    @override
    def parse_request(self) -> bool:
        # Called as soon as the request line is read (an idle kept-alive connection waits in
        # that read, so this is the request's arrival, not the connection's).
        self.arrived = time.monotonic()
        return super().parse_request()

    @override
    def run_wsgi(self) -> None:
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        environ = self.make_environ()
        environ[ARRIVED] = self.arrived
        body: _Body | None = None
        if not environ.get("wsgi.input_terminated"):  # not chunked: Content-Length frames it
            try:
                length = max(0, int(environ.get("CONTENT_LENGTH") or 0))
            except ValueError:
                self.send_error(400, "Bad Content-Length")
                self.close_connection = True
                return
            body = _Body(self.rfile, length)
            environ["wsgi.input"] = io.BufferedReader(body)
            environ["wsgi.input_terminated"] = True
        answer: dict[str, Any] = {}

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            answer["status"], answer["headers"] = status, headers
            return lambda data: answer.setdefault("early", []).append(data)

        try:
            chunks = self.server.app(environ, start_response)
            try:
                payload = b"".join([*answer.get("early", []), *_iterate(chunks)])
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
            if body is not None:
                body.drain()
            else:
                _drain(environ["wsgi.input"])
        except ConnectionError as exc:  # the drop fault, or the client went away
            self.close_connection = True
            self.connection_dropped(exc, environ)
            return
        self._send(environ, answer["status"], answer["headers"], payload)

    def _send(
        self, environ: dict[str, Any], status: str, headers: list[tuple[str, str]], payload: bytes
    ) -> None:
        code_text, _, reason = status.partition(" ")
        code = int(code_text)
        lines = [f"{self.protocol_version} {code} {reason}", f"Server: {self.server_version}"]
        lines.append(f"Date: {formatdate(usegmt=True)}")
        names = set()
        for name, value in headers:
            lines.append(f"{name}: {value}")
            names.add(name.lower())
        bodiless = code in BODILESS or 100 <= code < 200
        if not bodiless and "content-length" not in names:
            lines.append(f"Content-Length: {len(payload)}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if bodiless or environ["REQUEST_METHOD"] == "HEAD":
            payload = b""
        # logged before the answer leaves: a client that got it finds its line in the log
        self.log_request(code, len(payload))
        if environ.get(CUT_BODY) and payload:
            # the cutbody fault: all the head, half the body, then the connection closes
            self.close_connection = True
            self.wfile.write(head + payload[: len(payload) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(head + payload)


def _iterate(chunks: Iterable[bytes]) -> Iterable[bytes]:
    yield from chunks


def serve(
    host: str, port: int, app: Any, handler: type[KeepAliveHandler], *, log_connections: bool
) -> BaseWSGIServer:
    """A threaded server of ``app`` on ``host:port`` (0: a free port), not started yet."""
    chosen = type(handler.__name__, (handler,), {"log_connections": log_connections})
    server = make_server(host, port, app, threaded=True, request_handler=chosen)
    server.daemon_threads = True  # type: ignore[attr-defined]
    return server


class QuietHandler(KeepAliveHandler):
    """Logs request lines; never the query string of ``/oauth`` (codes, states)."""

    @override
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = self.path
        if path.startswith("/oauth"):
            path = path.split("?", 1)[0]
        self.log("info", '"%s %s" %s', self.command, path, code)


class SilentHandler(QuietHandler):
    """Logs no request lines (``serve --quiet``)."""

    @override
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return
