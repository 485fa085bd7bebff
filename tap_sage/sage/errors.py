"""Errors of the shared Sage layer. Each names its cause and, where there is one, the fix.

No error message ever carries a token, a client secret or an authorization code.
"""

from __future__ import annotations

from typing import Any


class SageError(Exception):
    """Base of every error this project raises about Sage or its connection."""


class SageConfigError(SageError):
    """A setting is missing or invalid. Raised before any network call."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"Setting `{setting}`: {problem}")


class SageAuthError(SageError):
    """The OAuth connection cannot give a usable access token.

    ``code`` is the OAuth error (``invalid_grant``, ``invalid_client``, ...) or one of our own
    (``token_expired``, ``login_required``, ``store_conflict``); ``fix`` says what to do.
    """

    def __init__(self, code: str, message: str, fix: str = "") -> None:
        self.code = code
        self.fix = fix
        text = f"{message} ({code})"
        if fix:
            text += f". Fix: {fix}"
        super().__init__(text)


class SageNetworkError(SageError):
    """Sage could not be reached (connection refused or dropped, timeout) after every retry."""


class SageAPIError(SageError):
    """Sage answered a request with an error status.

    ``errors`` is Sage's error array: ``[{"$severity", "$dataCode", "$message", "$source"}]``.
    """

    def __init__(
        self,
        status: int,
        method: str,
        path: str,
        errors: list[dict[str, Any]] | None = None,
        request_id: str | None = None,
        text: str = "",
    ) -> None:
        self.status = status
        self.method = method
        self.path = path
        self.errors = errors or []
        self.request_id = request_id
        first = self.errors[0] if self.errors else {}
        self.data_code: str | None = first.get("$dataCode")
        self.sage_message: str | None = first.get("$message") or (text[:300] or None)
        self.source: str | None = first.get("$source") or None
        detail = "; ".join(
            f"{e.get('$dataCode', '?')}: {e.get('$message', '')}"
            + (f" (field `{e['$source']}`)" if e.get("$source") else "")
            for e in self.errors
        ) or (text[:300] if text else "no error body")
        rid = f", x_request_id {request_id}" if request_id else ""
        super().__init__(f"Sage answered {status} to {method} {path}: {detail}{rid}")


class SageAccessDenied(SageAPIError):
    """403: the user's role, the business's country or edition, or the subscription lacks it."""


class SageNotFound(SageAPIError):
    """404: no such record (or no such endpoint)."""
