"""The HTTP session to Sage shared by the tap and the target.

``SageClient`` sends every request: bearer token from the connection's token source, ``Accept``
and ``Content-Type`` JSON, ``X-Business``, proxy and CA bundle, a timeout, retries with
``backoff`` on 429 (honouring ``Retry-After``), 5xx, timeouts and dropped connections, one
token renewal on 401, and Sage's error bodies parsed into ``SageAPIError``. It logs method,
path, status, duration and ``x_request_id``; never a header, a body or a token.

One client per connection per process (``SageClient.for_config``), shared by every stream,
sink and thread; each thread gets its own ``requests.Session``.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Generator, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urljoin, urlsplit

import backoff
import requests

from tap_sage.sage.errors import (
    TLS_FIX,
    SageAccessDenied,
    SageAPIError,
    SageNetworkError,
    SageNotFound,
    SageProxyError,
    SageSubscriptionInactive,
)
from tap_sage.sage.settings import ConnectionSettings

if TYPE_CHECKING:
    from tap_sage.sage.auth import TokenSource

LOGGER = logging.getLogger("sage.http")

#: How much of a body ``requests`` reads at a time when it loads an answer
#: (``requests.models.CONTENT_CHUNK_SIZE``, 10 KiB as it ships). A 200-item list page of Sage is
#: several hundred KiB (``attributes=all``); read 10 KiB at a time it costs 80 trips through
#: urllib3 and http.client, a third of the CPU of reading the page (measured: 2.8 ms vs 1.8 ms
#: of CPU per 800 KiB page of the sandbox). One read per MiB gives the same bytes.
#: ``tests/test_wire.py`` checks that requests still reads this name.
BODY_CHUNK = 1 << 20
requests.models.CONTENT_CHUNK_SIZE = max(requests.models.CONTENT_CHUNK_SIZE, BODY_CHUNK)

#: Retried: 429, 5xx, and the 52x a CDN in front of Sage answers with an HTML page (520-525:
#: origin error, down, connection timed out, unreachable, timeout, TLS handshake failed).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 525})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: A connection refused, dropped or timed out, or an answer's body cut off (``IncompleteRead``:
#: fewer bytes than its ``Content-Length``): retried where the method may be.
DROPPED = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class BearerAuth(requests.auth.AuthBase):
    """The access token as ``Authorization: Bearer``. Given to requests as the request's auth,
    not as a header: a request without auth gets the ``~/.netrc`` (``$NETRC``) entry of its
    host, which would replace the bearer token with Basic credentials (requests'
    ``Session.prepare_request``), and costs a look at that file per request."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request

    def __repr__(self) -> str:
        return "BearerAuth(********)"


class RetryableError(Exception):
    """A transient failure worth another try: 429, 5xx, timeout or dropped connection."""

    def __init__(self, reason: str, retry_after: float | None = None,
                 response: requests.Response | None = None, proxy: bool = False) -> None:  # fmt: skip
        self.reason = reason
        self.retry_after = retry_after
        self.response = response
        self.proxy = proxy
        super().__init__(reason)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), else None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def sage_wait(*, factor: float = 0.5, max_value: float = 60.0) -> Generator[float, Any, None]:
    """Backoff waits: the server's ``Retry-After`` when given, else full-jitter exponential.

    python-backoff sends each caught exception into the generator.
    """
    exc = yield 0.0
    attempt = 0
    while True:
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            wait = min(float(retry_after), max_value)
        else:
            wait = random.uniform(0, min(max_value, factor * 2**attempt))
        attempt += 1
        exc = yield wait


def parse_errors(response: requests.Response) -> list[dict[str, Any]]:
    """Sage's error array from a response body (tolerating a dict or no JSON at all)."""
    try:
        body = response.json()
    except ValueError:
        return []
    if isinstance(body, list):
        return [e for e in body if isinstance(e, dict)]
    if isinstance(body, dict):
        if "$dataCode" in body or "$message" in body:
            return [body]
        for key in ("errors", "$errors"):
            if isinstance(body.get(key), list):
                return [e for e in body[key] if isinstance(e, dict)]
    return []


def no_active_subscription(response: requests.Response) -> bool:
    """Whether a 401 says the business has no active subscription (not a token problem)."""
    return response.status_code == 401 and any(
        "subscription" in str(e.get("$message", "")).lower() for e in parse_errors(response)
    )


def api_error(response: requests.Response, method: str, path: str) -> SageAPIError:
    """The ``SageAPIError`` subclass for an error response."""
    cls: type[SageAPIError] = SageAPIError
    if no_active_subscription(response):
        cls = SageSubscriptionInactive
    elif response.status_code == 403:
        cls = SageAccessDenied
    elif response.status_code == 404:
        cls = SageNotFound
    return cls(
        response.status_code,
        method,
        path,
        parse_errors(response),
        request_id_of(response),
        body_summary(response),
    )


def request_id_of(response: requests.Response) -> str | None:
    """Sage's request id of an answer (``x-request-id``; ``x_request_id`` in older answers)."""
    return response.headers.get("x-request-id") or response.headers.get("x_request_id")


def body_summary(response: requests.Response) -> str:
    """A short, readable account of a body that is not Sage's JSON (never the page itself).

    A gateway or CDN in front of Sage answers 502/503/504/52x with an HTML page: its
    ``<title>`` says what happened."""
    kind = response.headers.get("content-type", "")
    if kind.startswith("application/json"):
        return ""
    text = response.text or ""
    if "html" in kind or text.lstrip()[:1] == "<":
        match = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        title = " ".join(match.group(1).split())[:120] if match else ""
        return f"an HTML page, not JSON{f' ({title!r})' if title else ''}"
    return " ".join(text.split())[:300]


class SageClient:
    """Sends requests to the Sage API for one connection."""

    _instances: ClassVar[dict[tuple[str, str, str], SageClient]] = {}
    _instances_lock = threading.Lock()

    def __init__(self, settings: ConnectionSettings, tokens: TokenSource | None = None) -> None:
        from tap_sage.sage.auth import token_source_for

        self.settings = settings
        self._local = threading.local()
        self.tokens: TokenSource = tokens or token_source_for(settings, self.new_session)
        self.request_count = 0
        self._count_lock = threading.Lock()

    @classmethod
    def for_config(cls, config: Mapping[str, Any] | ConnectionSettings) -> SageClient:
        """The one client of this connection in this process (created on first use)."""
        settings = (
            config
            if isinstance(config, ConnectionSettings)
            else ConnectionSettings.from_config(config)
        )
        key = (settings.connection_name, settings.token_store, settings.api_url)
        with cls._instances_lock:
            client = cls._instances.get(key)
            if client is None or client.settings != settings:
                client = cls(settings)
                cls._instances[key] = client
            return client

    # -- sessions -------------------------------------------------------------------------------

    def new_session(self) -> requests.Session:
        """A ``requests.Session`` with this connection's proxy, TLS and User-Agent."""
        session = requests.Session()
        session.headers["User-Agent"] = self.settings.user_agent
        session.headers["Accept"] = "application/json"
        if self.settings.proxies:
            session.proxies.update(self.settings.proxies)
            session.trust_env = False
        # TLS is always verified: against ca_bundle when given, else the default trust store
        # (or REQUESTS_CA_BUNDLE from the environment). Requests also pass it explicitly, as
        # requests lets REQUESTS_CA_BUNDLE override a Session's own verify.
        session.verify = self.settings.ca_bundle or True
        return session

    def _proxy_name(self) -> str:
        if self.settings.proxies:
            return self.settings.proxy_display or "?"
        return "from the environment (HTTPS_PROXY / HTTP_PROXY)"

    @property
    def session(self) -> requests.Session:
        """This thread's session."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self.new_session()
            self._local.session = session
        return session

    # -- requests -------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """Absolute URL of an API path (``/contacts``, a relative ``$next``, or a full URL)."""
        if urlsplit(path).scheme:
            return path
        return urljoin(self.settings.api_url + "/", path.lstrip("/"))

    def request(
        self,
        method: str,
        path: str,
        *,
        business_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        json_body: Any | None = None,
        headers: Mapping[str, str] | None = None,
        retry: bool | None = None,
        expected: tuple[int, ...] = (200, 201, 204),
        slot: AbstractContextManager[object] | None = None,
        answered: Callable[[], None] | None = None,
    ) -> requests.Response:
        """Send one request, with retries; raise ``SageAPIError`` on an error answer.

        ``retry`` defaults to True for GET/PUT/DELETE and False for POST: a POST is retried only
        when the caller says it is safe (it carries an ``idempotency_id``).

        ``slot`` (one of the connection's requests in flight, ``tap_sage.readahead``) is held
        by each try from its sending until Sage's answer begins (status and headers in), not
        while its body is read nor between tries; ``answered()`` is called once a 200 has
        begun, before its body is read (``PageScanner._pages_in_turn`` asks for the next page
        then). With either, a body cut off or timed out while it is read is retried as a
        dropped connection is.
        """
        method = method.upper()
        may_retry = (method in SAFE_METHODS) if retry is None else retry
        max_tries = 1 + (self.settings.max_retries if may_retry else 0)
        url = self.url(path)
        log_path = urlsplit(url).path
        response: requests.Response | None = None
        try:
            response = self._send_with_retries(
                method, url, log_path, business_id, params, json_body, headers, max_tries,
                slot=slot, answered=answered,
            )  # fmt: skip
        except RetryableError as exc:
            if exc.response is not None:
                raise api_error(exc.response, method, log_path) from exc
            if exc.proxy:
                raise SageProxyError(
                    self._proxy_name(),
                    f"refused or dropped the connection {exc.reason} (gave up after {max_tries} "
                    "tries)",
                ) from None
            raise SageNetworkError(f"{exc.reason} (gave up after {max_tries} tries)") from exc
        if response.status_code not in expected:
            raise api_error(response, method, log_path)
        return response

    def _send_with_retries(
        self,
        method: str,
        url: str,
        log_path: str,
        business_id: str | None,
        params: Mapping[str, Any] | None,
        json_body: Any | None,
        headers: Mapping[str, str] | None,
        max_tries: int,
        *,
        slot: AbstractContextManager[object] | None,
        answered: Callable[[], None] | None,
    ) -> requests.Response:
        response: requests.Response | None = None
        for attempt in backoff.retry_context(
            RetryableError,
            lambda: sage_wait(max_value=self.settings.max_backoff),
            max_tries=max_tries,
            jitter=None,
            on_backoff=lambda d: LOGGER.warning(
                "Retrying %s %s in %.1fs (try %d): %s",
                method, log_path, d["wait"], d["tries"], d.get("exception"),
            ),
            logger=None,
        ):  # fmt: skip
            with attempt:
                response = self._send_once(method, url, log_path, business_id, params, json_body,
                                           headers, slot, answered)  # fmt: skip
        assert response is not None
        return response

    def _send_once(
        self,
        method: str,
        url: str,
        log_path: str,
        business_id: str | None,
        params: Mapping[str, Any] | None,
        json_body: Any | None,
        headers: Mapping[str, str] | None,
        slot: AbstractContextManager[object] | None = None,
        answered: Callable[[], None] | None = None,
    ) -> requests.Response:
        stream = slot is not None or answered is not None
        for renewal in (False, True):
            token = self.tokens.token()
            hdrs: dict[str, str] = {}
            if business_id:
                hdrs["X-Business"] = business_id
            if json_body is not None:
                hdrs["Content-Type"] = "application/json"
            if headers:
                hdrs.update(headers)
            started = time.monotonic()
            try:
                session = self.session
                # what Session.request does, with the request made (and the environment's
                # proxies and CA bundle looked up) before the slot is taken: the slot covers
                # the sending and the wait for the answer only
                bearer = BearerAuth(token)
                prepared = session.prepare_request(
                    requests.Request(method, url, hdrs, json=json_body, params=params, auth=bearer)
                )
                # verify given per request: a Session.verify would lose to REQUESTS_CA_BUNDLE
                options = session.merge_environment_settings(
                    prepared.url, {}, stream, self.settings.ca_bundle or True, None
                )
                with slot if slot is not None else contextlib.nullcontext():
                    response = session.send(
                        prepared, timeout=self.settings.timeout, allow_redirects=True, **options
                    )
            except requests.exceptions.ProxyError as exc:
                if "407 Proxy Authentication Required" in str(exc):
                    raise SageProxyError(
                        self._proxy_name(),
                        "asked for credentials (407 Proxy Authentication Required)",
                    ) from None
                raise RetryableError(f"on {method} {log_path}", proxy=True) from None
            except requests.exceptions.SSLError:
                raise SageNetworkError(
                    f"TLS certificate verification failed on {method} {log_path} "
                    f"({urlsplit(url).netloc})",
                    TLS_FIX,
                ) from None
            except DROPPED as exc:
                raise RetryableError(f"{type(exc).__name__} on {method} {log_path}") from exc
            finally:
                with self._count_lock:
                    self.request_count += 1
            if stream and response.status_code != 200:
                # an error's body is read now, as without ``stream``: the checks below read it,
                # and one cut off or timed out is retried like any dropped connection
                self._read_body(response, method, log_path)
            elapsed = (time.monotonic() - started) * 1000
            request_id = request_id_of(response) or "-"
            LOGGER.debug(
                "%s %s -> %s in %.0f ms (x_request_id %s)",
                method, log_path, response.status_code, elapsed, request_id,
            )  # fmt: skip
            if response.status_code == 407:
                raise SageProxyError(
                    self._proxy_name(), "asked for credentials (407 Proxy Authentication Required)"
                )
            if response.status_code == 401 and no_active_subscription(response):
                raise api_error(response, method, log_path)
            if response.status_code == 401 and not renewal:
                self.tokens.invalidate(token)
                continue
            if response.status_code in RETRY_STATUSES:
                what = body_summary(response)
                raise RetryableError(
                    f"{response.status_code} on {method} {log_path} (x_request_id {request_id})"
                    + (f": {what}" if what else ""),
                    parse_retry_after(response.headers.get("Retry-After")),
                    response,
                )
            if stream and response.status_code == 200:
                try:
                    if answered is not None:
                        answered()
                finally:  # read (and the connection given back) whatever the callback did
                    self._read_body(response, method, log_path)
            return response
        return response

    @staticmethod
    def _read_body(response: requests.Response, method: str, log_path: str) -> None:
        """The body of a streamed answer, read now: one cut off (``IncompleteRead``, a reset)
        or timed out is a ``RetryableError``, as the same failure before the headers is."""
        try:
            response.content  # noqa: B018 - reads and keeps the body
        except DROPPED as exc:
            raise RetryableError(
                f"{type(exc).__name__} reading the answer to {method} {log_path}"
            ) from exc

    def get_json(
        self, path: str, *, business_id: str | None = None, params: Mapping[str, Any] | None = None
    ) -> Any:
        """GET and decode JSON; an answer that is not JSON is a ``SageAPIError`` naming it."""
        response = self.request("GET", path, business_id=business_id, params=params)
        return decode_json(response, "GET", urlsplit(self.url(path)).path)

    def businesses(self) -> list[dict[str, Any]]:
        """Every business the token can reach (``/businesses``).

        Sage's ``/businesses`` takes no parameters and answers every business in one page
        (``$items_per_page: 2147483647``, ../shared/sage-api/recorded/businesses_list.json);
        a ``$next`` would still be followed."""
        out: list[dict[str, Any]] = []
        next_path: str | None = "/businesses"
        params: dict[str, Any] | None = None
        while next_path:
            body = self.get_json(next_path, params=params)
            out.extend(body.get("$items", []))
            next_path = body.get("$next")
            params = None
        return out


def decode_json(response: requests.Response, method: str, path: str) -> Any:
    """The JSON body of a successful answer, or a ``SageAPIError`` saying what came instead."""
    try:
        return response.json()
    except ValueError:
        raise SageAPIError(
            response.status_code, method, path, [], request_id_of(response),
            body_summary(response) or "a body that is not JSON",
        ) from None  # fmt: skip
