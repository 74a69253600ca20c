"""``epf doctor`` for one Defender for IoT sensor or management console.

Three checks: the TLS handshake with the trust the config sets (``http.tls.client_ssl_context``:
the pinned fingerprint, the CA bundle or the system store; nothing is sent over it), the
access token, and one cheap call through ``http.ApiClient`` as a sync makes it (the sensor's
``GET /api/v1/devices?authorized=true``, the console's ``GET /external/v3/integration/sensors``).
May import ``doctor.checks``, ``http`` (client, rate limits, TLS), ``identity.credentials``,
``config`` and ``errors``.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

from endpoint_forensics.config import ConsoleConfig, SensorConfig
from endpoint_forensics.doctor.checks import Check
from endpoint_forensics.errors import AuthError, EpfError
from endpoint_forensics.http.client import RAW_TOKEN, ApiClient
from endpoint_forensics.http.ratelimit import IOT_APPLIANCE_LIMIT, RateBudget
from endpoint_forensics.http.tls import PIN_MISMATCH, certificate_fingerprint, client_ssl_context
from endpoint_forensics.identity.credentials import StaticToken

__all__ = ["appliance_checks"]

_HANDSHAKE_TIMEOUT_SECONDS = 15.0
_PROBE_RETRIES = 1
_TOKEN_PAGE = "System Settings > Integrations > Access Tokens"


def appliance_checks(appliance: SensorConfig | ConsoleConfig) -> list[Check]:
    """TLS, token and one call, in order; what cannot be checked after a failure is skipped."""
    kind = "console" if isinstance(appliance, ConsoleConfig) else "sensor"
    area = f"{kind} {appliance.name}"
    tls = _tls_check(appliance, area, kind)
    if tls.ok is False:
        skipped = "not checked: no trusted TLS connection"
        return [tls, Check(area, "token", None, skipped), Check(area, "API", None, skipped)]
    return [tls, *_token_and_call(appliance, area, kind)]


def _trust(appliance: SensorConfig | ConsoleConfig) -> str:
    if appliance.certificate_fingerprint is not None:
        return "the pinned certificate_fingerprint"
    if appliance.ca_bundle is not None:
        return f"ca_bundle {appliance.ca_bundle}"
    return "the system trust store"


def _tls_check(appliance: SensorConfig | ConsoleConfig, area: str, kind: str) -> Check:
    parts = urlsplit(appliance.url)
    host, port = parts.hostname or "", parts.port or 443
    timeout = min(appliance.timeout_seconds, _HANDSHAKE_TIMEOUT_SECONDS)
    block = f'[[{kind}s]] "{appliance.name}"'
    context = client_ssl_context(
        ca_bundle=appliance.ca_bundle, fingerprint=appliance.certificate_fingerprint
    )
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=host),
        ):
            pass
    except ssl.SSLCertVerificationError as exc:
        presented = _presented_fingerprint(host, port, timeout)
        if PIN_MISMATCH in str(exc):
            detail = f"{host}:{port} presented SHA-256 {presented}, not the pinned certificate"
            fix = (
                f"If the appliance's certificate was renewed, compare {presented} with the "
                "fingerprint of the certificate on the appliance (System Settings > "
                f'SSL/TLS Certificates) and, if they match, set certificate_fingerprint = "'
                f'{presented}" in {block}; if they differ, something is intercepting the '
                "connection"
            )
        else:
            reason = exc.verify_message or str(exc)
            detail = f"{host}:{port}: certificate not trusted by {_trust(appliance)}: {reason}"
            fix = (
                f"Set ca_bundle in {block} to a PEM with the appliance's certificate (or the CA "
                f'that issued it), or pin it: certificate_fingerprint = "{presented}" (the '
                "certificate it presents now; compare it with the appliance's first)"
            )
        return Check(area, "TLS", False, detail, fix)
    except OSError as exc:
        detail = f"cannot connect to {host}:{port}: {exc.strerror or exc}"
        fix = f"Check url in {block} and that this machine can reach the appliance on port {port}"
        return Check(area, "TLS", False, detail, fix)
    return Check(area, "TLS", True, f"{host}:{port} trusted by {_trust(appliance)}")


def _presented_fingerprint(host: str, port: int, timeout: float) -> str:
    """The SHA-256 of the certificate the server presents (read only; nothing is sent)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except OSError:
        return "unknown"
    return certificate_fingerprint(der) if der else "unknown"


def _token_and_call(appliance: SensorConfig | ConsoleConfig, area: str, kind: str) -> list[Check]:
    if kind == "sensor":
        # The sensor's only list call; authorized=true keeps the answer short.
        path, params = "/api/v1/devices", {"authorized": "true"}
    else:
        path, params = "/external/v3/integration/sensors", {}
    what = f"GET {path}" + ("?authorized=true" if params else "")
    block = f'[[{kind}s]] "{appliance.name}"'
    client = ApiClient(
        StaticToken(appliance.token),
        verify=client_ssl_context(
            ca_bundle=appliance.ca_bundle, fingerprint=appliance.certificate_fingerprint
        ),
        timeout_seconds=appliance.timeout_seconds,
        max_retries=min(appliance.max_retries, _PROBE_RETRIES),
        auth_style=RAW_TOKEN,
    )
    try:
        with client:
            answer = client.request_json(
                "GET",
                appliance.url + path,
                scope="",
                budget=RateBudget(IOT_APPLIANCE_LIMIT),
                params=params or None,
            )
    except AuthError as exc:
        if "-> 401" in str(exc):
            source = appliance.token.source
            fix = (
                f"Create a new access token on the {kind} ({_TOKEN_PAGE}) and put it in token "
                f"of {block}" + (f" (now read from {source})" if source != "literal" else "")
            )
            skipped = Check(area, "API", None, "not checked: the token was refused")
            return [Check(area, "token", False, str(exc), fix), skipped]
        fix = f"Create an access token for the integration API on the {kind} ({_TOKEN_PAGE})"
        return [Check(area, "token", True, "accepted"), Check(area, "API", False, str(exc), fix)]
    except EpfError as exc:
        fix = f"Check url in {block}; the {kind} answered an error to {what}"
        unknown = Check(area, "token", None, "not known: the call failed")
        return [unknown, Check(area, "API", False, str(exc), fix)]
    count = len(answer) if isinstance(answer, list) else _count(answer)
    return [
        Check(area, "token", True, "accepted"),
        Check(area, "API", True, f"{what} answered ({count} item{'s' * (count != 1)})"),
    ]


def _count(answer: Any) -> int:
    if isinstance(answer, dict):
        return sum(len(v) for v in answer.values() if isinstance(v, list))
    return 0
