"""Wire shapes of the emulated services' responses: JSON bodies, headers and error envelopes.

Owns the four error dialects (defender-apis.md A.1, B.0, B.3, B.5.3): Entra's OAuth errors
(``error``, ``error_description`` with an AADSTS code...), MDE's ``{"error": {code, message,
target}}``, Graph's ``{"error": {code, message, innerError}}`` and Azure Storage's XML
``<Error><Code>…</Code><Message>…</Message></Error>`` (the export blobs), and which one a
path speaks. JSON bodies are always valid JSON, encoded with orjson.

Imports nothing of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "GRAPH_CONTENT_TYPE",
    "MDE_CONTENT_TYPE",
    "Dialect",
    "body_response",
    "dialect_of",
    "entra_error",
    "error_response",
    "graph_error",
    "json_response",
    "mde_error",
    "read_json",
    "storage_error",
]

Dialect = Literal["entra", "mde", "graph", "storage"]

#: Captured on the MDE API (defender-apis.md B.0).
MDE_CONTENT_TYPE = "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8"
GRAPH_CONTENT_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
_PLAIN_JSON = "application/json; charset=utf-8"

_MDE_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "ResourceNotFound",
    405: "MethodNotAllowed",
    429: "TooManyRequests",
}
_GRAPH_CODES = {
    400: "BadRequest",
    401: "InvalidAuthenticationToken",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    429: "TooManyRequests",
}
_DEFAULT_MESSAGES = {
    400: "The request is invalid.",
    401: "Unauthorized",
    403: "The application does not have the required application permissions.",
    404: "The requested resource was not found.",
    405: "The HTTP method is not allowed on this resource.",
    429: "API calls quota exceeded! Please retry later.",
}
# Entra: (error, AADSTS code, description) per injected status.
_ENTRA_FAULTS = {
    400: ("invalid_request", 900144, "The request is invalid."),
    401: (
        "invalid_client",
        7000215,
        "Invalid client secret provided. Ensure the secret being sent in the request is the client"
        " secret value, not the client secret ID, for a secret added to app.",
    ),
    403: ("unauthorized_client", 700016, "The application is not allowed to request tokens."),
}
_ENTRA_TRANSIENT = (
    "temporarily_unavailable",
    90033,
    "A transient error has occurred. Please try again.",
)


def dialect_of(path: str) -> Dialect:
    """Which service answers ``path``: the token endpoints, Graph (``/v1.0/``) or MDE."""
    if "/oauth2/" in path or path.endswith("/openid-configuration"):
        return "entra"
    if path.startswith(("/v1.0/", "/beta/")):
        return "graph"
    if path.startswith("/tvm-export/"):
        return "storage"
    return "mde"


def json_response(
    payload: Any,
    *,
    status: int = 200,
    content_type: str = MDE_CONTENT_TYPE,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A JSON response; ``payload`` may already be encoded bytes."""
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    all_headers = {"OData-Version": "4.0"} if content_type != _PLAIN_JSON else {}
    all_headers.update(headers or {})
    return Response(body, status_code=status, media_type=content_type, headers=all_headers)


def mde_error(
    status: int,
    message: str | None = None,
    *,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """``{"error": {"code", "message", "target"}}``; ``target`` is a per-request correlation id."""
    body = {
        "error": {
            "code": code or _MDE_CODES.get(status, _fallback_code(status)),
            "message": message or _DEFAULT_MESSAGES.get(status, "An unexpected error occurred."),
            "target": str(uuid.uuid4()),
        }
    }
    return json_response(body, status=status, headers=_with_auth_challenge(status, headers))


def graph_error(
    status: int,
    message: str | None = None,
    *,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """``{"error": {"code", "message", "innerError": {"date", "request-id", ...}}}``.

    ``message=""`` sends an empty message, as Graph's gateway does with a 504.
    """
    request_id = str(uuid.uuid4())
    if message is None:
        message = _DEFAULT_MESSAGES.get(status, "An unexpected error occurred.")
    body = {
        "error": {
            "code": code or _GRAPH_CODES.get(status, _fallback_code(status)),
            "message": message,
            "innerError": {
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": request_id,
                "client-request-id": request_id,
            },
        }
    }
    extra = {"request-id": request_id, "client-request-id": request_id, **(headers or {})}
    headers = _with_auth_challenge(status, extra)
    return json_response(body, status=status, content_type=GRAPH_CONTENT_TYPE, headers=headers)


def entra_error(status: int, error: str, code: int, description: str) -> Response:
    """Entra's OAuth error body (defender-apis.md A.1), with trace and correlation ids."""
    now = datetime.now(UTC)
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
    body = {
        "error": error,
        "error_description": (
            f"AADSTS{code}: {description}\r\nTrace ID: {trace_id}\r\n"
            f"Correlation ID: {correlation_id}\r\nTimestamp: {stamp}"
        ),
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }
    return json_response(body, status=status, content_type=_PLAIN_JSON)


def storage_error(
    status: int,
    code: str,
    message: str,
    *,
    detail: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Azure Storage's XML error, with its request id and time in the message."""
    request_id = str(uuid.uuid4())
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
    text = f"{message}\nRequestId:{request_id}\nTime:{stamp}"
    body = (
        '<?xml version="1.0" encoding="utf-8"?><Error>'
        f"<Code>{_xml(code)}</Code><Message>{_xml(text)}</Message>"
        + (
            f"<AuthenticationErrorDetail>{_xml(detail)}</AuthenticationErrorDetail>"
            if detail
            else ""
        )
        + "</Error>"
    )
    all_headers = {"x-ms-request-id": request_id, "x-ms-error-code": code, **(headers or {})}
    return Response(
        body.encode(), status_code=status, media_type="application/xml", headers=all_headers
    )


def body_response(path: str, status: int, body: str, *, retry_after: int | None) -> Response:
    """Exactly ``body`` with ``status`` (a fault with a body: the documented empty 200...)."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    dialect = dialect_of(path)
    media = {"graph": GRAPH_CONTENT_TYPE, "storage": "application/octet-stream"}.get(
        dialect, MDE_CONTENT_TYPE if dialect == "mde" else _PLAIN_JSON
    )
    return Response(body.encode(), status_code=status, media_type=media, headers=headers)


def error_response(
    path: str, status: int, *, message: str | None = None, retry_after: int | None = None
) -> Response:
    """The error a service would send for ``status`` on ``path`` (used by fault injection)."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    dialect = dialect_of(path)
    if dialect == "storage":
        storage_code = {403: "AuthenticationFailed", 404: "BlobNotFound", 503: "ServerBusy"}.get(
            status, "InternalError" if status >= 500 else "InvalidInput"
        )
        text = message or "The request failed."
        return storage_error(status, storage_code, text, headers=headers)
    if dialect == "entra":
        error, code, description = _ENTRA_FAULTS.get(status, _ENTRA_TRANSIENT)
        response = entra_error(status, error, code, message or description)
        response.headers.update(headers)
        return response
    if dialect == "graph":
        return graph_error(status, message, headers=headers)
    return mde_error(status, message, headers=headers)


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fallback_code(status: int) -> str:
    return "InternalServerError" if status >= 500 else "BadRequest"


def _with_auth_challenge(status: int, headers: Mapping[str, str] | None) -> dict[str, str]:
    merged = dict(headers or {})
    if status == 401:
        merged.setdefault("WWW-Authenticate", 'Bearer error="invalid_token"')
    return merged


async def read_json(request: Request) -> Any:
    """The request's JSON body, or None when it is empty or not JSON."""
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
