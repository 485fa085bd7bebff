"""Errors of the shared Sage layer. Each names its cause and, where there is one, the fix.

No error message ever carries a token, a client secret or an authorization code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from typing_extensions import override


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret value (longer than 3 characters) replaced by ``***``."""
    for secret in sorted((s for s in secrets if s and len(s) > 3), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


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

    ``code`` is the OAuth error (``invalid_grant``, ``invalid_client``, ...) or one of our own:
    ``token_expired`` (401 in OFF mode), ``login_required``, ``store_conflict`` (the store
    belongs to another client id), ``store_unreadable``, ``refresh_unconfirmed`` (the answer to
    a refresh was lost), ``refresh_interrupted`` (an earlier run died during a refresh and Sage
    refuses the token it was spending), ``subscription_inactive``, ``login_failed``,
    ``lock_timeout``. ``fix`` says what to do.
    """

    def __init__(self, code: str, message: str, fix: str = "") -> None:
        self.code = code
        self.message = message
        self.fix = fix
        text = f"{message} ({code})"
        if fix:
            text += f". Fix: {fix}"
        super().__init__(text)


class SageNetworkError(SageError):
    """Sage could not be reached (connection refused or dropped, timeout) after every retry."""

    def __init__(self, message: str, fix: str = "") -> None:
        self.fix = fix
        super().__init__(f"{message}. Fix: {fix}" if fix else message)


TLS_FIX = (
    "if a corporate proxy inspects TLS, set ca_bundle to its CA certificate (PEM); otherwise "
    "check the system's CA certificates and the URL (advanced_config.api_url / token_url). "
    "Certificate checks cannot be turned off"
)


class SageProxyError(SageNetworkError):
    """The forward proxy refused or failed the connection (``requests.exceptions.ProxyError``)."""

    def __init__(self, proxy: str, problem: str) -> None:
        self.proxy = proxy
        self.problem = problem
        self.fix = (
            "check that the proxy is running and reachable, that proxy_url (or HTTPS_PROXY / "
            "HTTP_PROXY in the environment) names it, and that proxy_username / proxy_password "
            "are right if it asks for credentials (407); or set use_proxy to false and unset "
            "HTTPS_PROXY if no proxy is needed"
        )
        super().__init__(f"The proxy {proxy} {problem}", self.fix)


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
        self.fix = self._fix()
        fix = f". Fix: {self.fix}" if self.fix else ""
        super().__init__(f"Sage answered {status} to {method} {path}: {detail}{rid}{fix}")

    def _fix(self) -> str:
        return ""


class SageAccessDenied(SageAPIError):
    """403: the user's role, the business's country or edition, or the subscription lacks it."""

    @override
    def _fix(self) -> str:
        if self.data_code == "MultiUserAccessDenied":
            return (
                "the Sage user who authorised this connection has no access to this area in "
                "this business (Sage's user access rights: Read Only, Restricted or no access). "
                "Ask the business owner or a system manager to give that user Full Access to "
                "it in Sage (Settings > Manage Users), or log in as a user who has it "
                "(`sage-auth login`), or leave this resource out"
            )
        return (
            "the business's country or edition, or the user's role, does not include this "
            "resource (`sage-auth test` lists what each business can reach); leave it out, or "
            "have the user's access rights or the subscription changed in Sage"
        )


class SageNotFound(SageAPIError):
    """404: no such record (or no such endpoint)."""


class SageSubscriptionInactive(SageAccessDenied):
    """401 ``AuthorizationFailure`` "No active subscription": the business's trial ended or
    its Accounting subscription was cancelled. Not a token problem: refreshing does not help.
    A subclass of ``SageAccessDenied`` so that a sync skips the business with a warning."""

    @override
    def _fix(self) -> str:
        return (
            "the business's Sage Accounting subscription is not active (trial ended or "
            "subscription cancelled); renew it in Sage, or leave this business out "
            "(`sage-auth test` shows each business's subscription)"
        )
