"""Which tenant a request is for, read from the request as the real services read it.

Owns the three places a tenant is named: the Entra paths (``/{tenant}/oauth2/v2.0/token``,
the v1 endpoint and the discovery documents: the tenant is the path's first segment, as on
``login.microsoftonline.com``), the export blobs (``.../OrgId={tenant}/part-...``, defender-apis.md
B.5.3), and the bearer token's ``tid`` claim for every API (the MDE API, Graph, Logs
Ingestion, Key Vault and Resource Manager take the tenant from the token, not the URL). The
token is only read here, never trusted: the tenant it names checks its signature, lifetime and
audience, so a token can reach no tenant but the one that signed it.

Imports nothing of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

import orjson

__all__ = ["blob_tenant", "entra_tenant", "token_tenant"]

#: What follows ``/{tenant}`` on the Entra routes (``identity.entra``).
_ENTRA_TAILS = frozenset(
    {
        "oauth2/v2.0/token",
        "oauth2/token",
        "v2.0/.well-known/openid-configuration",
        ".well-known/openid-configuration",
    }
)
_ORG_ID = "OrgId="


def entra_tenant(path: str) -> str | None:
    """The tenant segment of an Entra path, or None for any other path."""
    tenant, separator, tail = path[1:].partition("/")
    return tenant if separator and tail in _ENTRA_TAILS else None


def blob_tenant(path: str, prefix: str) -> str | None:
    """The ``OrgId=`` segment of an export blob path under ``prefix``, or None."""
    if not path.startswith(prefix):
        return None
    for segment in path[len(prefix) :].split("/"):
        if segment.startswith(_ORG_ID):
            return segment[len(_ORG_ID) :]
    return None


def token_tenant(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The ``tid`` claim of a bearer token in ASGI ``headers``, unverified; None without one."""
    for name, value in headers:
        if name != b"authorization":
            continue
        scheme, _, token = value.decode("latin-1").partition(" ")
        parts = token.strip().split(".")
        if scheme.lower() != "bearer" or len(parts) != 3:
            return None
        payload = parts[1]
        try:
            claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (binascii.Error, ValueError):  # orjson.JSONDecodeError is a ValueError
            return None
        tenant = claims.get("tid") if isinstance(claims, dict) else None
        return tenant if isinstance(tenant, str) else None
    return None
