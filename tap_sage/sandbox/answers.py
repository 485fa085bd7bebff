"""Answers in Sage's format: the errors a handler raises and the responses they become."""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Response

from tap_sage.sandbox import store

HTML_TITLES = {
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
    520: "Web server is returning an unknown error",
    521: "Web server is down",
    522: "Connection timed out",
    523: "Origin is unreachable",
    524: "A timeout occurred",
    525: "SSL handshake failed",
}


class DropConnection(Exception):
    """Close the client's connection without any HTTP answer."""


class SageError(Exception):
    """An error answered in Sage's format."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        source: str = "",
        extra: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.items = [
            {"$severity": "error", "$dataCode": code, "$message": message, "$source": source}
        ] + (extra or [])


class OAuthError(Exception):
    """An OAuth error (``{"error": ..., "error_description": ...}``)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


class Answer(Exception):
    """Answer the request with ``response`` at once (a fault's ready-made answer)."""

    def __init__(self, response: Response) -> None:
        super().__init__("answer")
        self.response = response


def not_allowed(method: str, path: str) -> SageError:
    """405 ``MethodNotAllowed``."""
    return SageError(405, "MethodNotAllowed", f"{method} is not allowed on {path}")


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    """``body`` as compact JSON."""
    return Response(store.dumps(body), status=status, mimetype="application/json", headers=headers)


def html_response(status: int, title: str) -> Response:
    """An error page as a gateway or CDN in front of Sage sends it: HTML, not Sage's JSON."""
    page = (
        f"<!DOCTYPE html>\n<html><head><title>{status} {title}</title></head>"
        f"<body><h1>{status} {title}</h1><p>The origin did not answer.</p></body></html>\n"
    )
    return Response(page, status=status, mimetype="text/html")


def raw_json(status: int, text: str | bytes) -> Response:
    """JSON already serialized (a stored record, or a page's UTF-8 bytes)."""
    return Response(text, status=status, mimetype="application/json")
