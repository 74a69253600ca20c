"""What a failed request says: the error for an answer refused or never given, its text free
of secrets.

Owns how each kind of API takes its credential and what to tell the user when it is refused
(``AuthStyle``: bearer tokens for Entra-protected APIs, the raw access token of a Defender for
IoT appliance), the errors for a refusal (``AuthError``, ``HttpStatusError`` with the OData
code and request id) and for a certificate not trusted or not the pinned one, and URLs and
exception texts with secret-bearing values (SAS signatures, tokens) removed. May import
``http.retry``, ``http.tls`` and ``errors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import orjson

from endpoint_forensics.errors import AuthError, CertificateUntrusted, EpfError, HttpStatusError
from endpoint_forensics.http.retry import Verdict, classify_error
from endpoint_forensics.http.tls import PIN_MISMATCH

__all__ = [
    "BEARER",
    "RAW_TOKEN",
    "AuthStyle",
    "no_answer",
    "odata_error",
    "refused",
    "sanitize_url",
    "scrub",
]

_SECRET_PARAMS = {"sig", "signature", "token", "access_token", "client_secret", "code", "key"}


@dataclass(frozen=True)
class AuthStyle:
    """How a remote API takes its credential, and what to tell the user when it is refused."""

    prefix: str  # put before the token in the Authorization header
    renew_on_401: bool  # a 401 may mean an expired token: get a fresh one and retry once
    refused: str
    forbidden: str
    untrusted: str


BEARER = AuthStyle(
    prefix="Bearer ",
    renew_on_401=True,
    refused="the API refused a fresh token",
    # The MDE API answers a token for another resource with 403 too (a wrong mde_scope).
    forbidden="the app lacks a permission for this API (grant it and admin consent in Entra "
    "ID), or the token is for another API (check mde_scope and graph_scope; `epf doctor` tells)",
    untrusted="set ca_bundle in the tenant config to the CA that issued it",
)
# Defender for IoT appliances: the access token itself, no scheme (C.1), and it never expires.
RAW_TOKEN = AuthStyle(
    prefix="",
    renew_on_401=False,
    refused="the appliance refused the access token; create a new one under System Settings "
    "> Integrations > Access Tokens and put it in the config",
    forbidden="the appliance refused the access token for this API",
    untrusted="set ca_bundle to its certificate (or issuer), or pin it with "
    "certificate_fingerprint",
)


def no_answer(
    style: AuthStyle, exc: httpx.TransportError, method: str, safe_url: str
) -> tuple[Verdict, str]:
    """The verdict on a request that got no answer, and what to say about it; a certificate
    not trusted or not the pin raises ``CertificateUntrusted`` (configuration: no retry)."""
    verdict = classify_error(exc)
    if verdict is Verdict.UNTRUSTED and PIN_MISMATCH in str(exc):
        raise CertificateUntrusted(
            f"{method} {safe_url}: the server's TLS certificate is not the pinned one "
            f"(certificate_fingerprint); it presented SHA-256 {str(exc).rsplit(' ', 1)[-1]}. "
            "Nothing was sent. If the appliance's certificate was renewed, pin the new "
            "fingerprint"
        ) from exc
    if verdict is Verdict.UNTRUSTED:
        raise CertificateUntrusted(
            f"{method} {safe_url}: the server's TLS certificate is not trusted; {style.untrusted}"
        ) from exc
    return verdict, f"{method} {safe_url}: {type(exc).__name__}: {scrub(str(exc))}"


def refused(style: AuthStyle, response: httpx.Response, method: str, safe_url: str) -> EpfError:
    """The error for an answer not retried: ``AuthError`` (401, 403) or ``HttpStatusError``."""
    status = response.status_code
    code, detail = odata_error(response)
    where = f"{method} {safe_url} -> {status}"
    if status == 401:
        return AuthError(f"{where}: {style.refused} ({detail})")
    if status == 403:
        return AuthError(f"{where}: {style.forbidden} ({detail})")
    return HttpStatusError(
        f"{where}: {detail}",
        method=method,
        url=safe_url,
        status=status,
        code=code,
        request_id=response.headers.get("request-id") or response.headers.get("x-ms-request-id"),
    )


def sanitize_url(url: str) -> str:
    """The URL with secret-bearing query values (SAS signatures, tokens) replaced."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [
        (k, "REDACTED" if k.lower() in _SECRET_PARAMS else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="$,'():/")))


def odata_error(response: httpx.Response) -> tuple[str | None, str]:
    """The ``error.code`` of an MDE/Graph error body, and ``code: message`` (or status text)."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
        return None, text or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, response.reason_phrase
    code = str(error.get("code")) if error.get("code") else None
    message = str(error.get("message") or response.reason_phrase)[:500]
    return code, f"{code}: {message}" if code else message


def scrub(text: str) -> str:
    """Drop anything that looks like a URL query from an exception text."""
    return " ".join(w.split("?")[0] if "://" in w else w for w in text.split())[:300]
