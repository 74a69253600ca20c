"""The emulated Azure Key Vault: secret reads, with the challenge the SDK expects (A.7).

Owns ``GET /secrets/{name}[/{version}]?api-version=7.4`` (and newer, ``7.5``, ``7.6`` and the
dated versions) on the emulator's HTTPS app, whose base URL is the vault URL. A request without
a bearer token gets the challenge 401 (``WWW-Authenticate: Bearer authorization="<emulator>/
<tenant>", resource="https://vault.azure.net"``), as does a token that is not this tenant's for
``https://vault.azure.net``; 400 ``BadParameter`` for a missing or older api-version; 404
``SecretNotFound`` for an unknown name or version; otherwise the A.7 body. Secret names are
case-insensitive, as in Key Vault; each secret has one version, stable per tenant and name.
Only a token whose audience is exactly ``https://vault.azure.net`` is taken (the resource the
challenge names; ``identity.entra.VAULT_AUDIENCES``).
Error bodies are ``{"error": {"code", "message"}}``; the wording the docs do not give is ours.

Imports only ``common.responses`` and ``identity.entra`` of the emulator: it shares no code
with the collector.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from epf_emulator.common.responses import json_response
from epf_emulator.identity.entra import VAULT_AUDIENCES, Identity, TokenError

__all__ = ["CLIENT_SECRET_NAME", "VAULT_AUDIENCE", "KeyVaultApi"]

#: The secret the emulated vault always holds: the emulated app's own client secret.
CLIENT_SECRET_NAME = "epf-client-secret"
VAULT_AUDIENCE = "https://vault.azure.net"
_MIN_NUMBERED_VERSION = (7, 4)
_NUMBERED = re.compile(r"^(\d+)\.(\d+)(?:-preview)?$")
_DATED = re.compile(r"^\d{4}-\d{2}-\d{2}(?:-preview)?$")
_JSON = "application/json; charset=utf-8"


@dataclass(frozen=True)
class _Stored:
    name: str  # as configured: the id shows it in that case
    value: str
    version: str


class KeyVaultApi:
    """One vault's secrets, read with tokens for ``https://vault.azure.net``."""

    def __init__(self, identity: Identity, secrets: Mapping[str, str], created: datetime) -> None:
        self._identity = identity
        self._created = int(created.timestamp())
        self._secrets = {
            name.lower(): _Stored(name, value, _version_of(identity.tenant_id, name))
            for name, value in secrets.items()
        }

    def routes(self) -> list[Route]:
        return [
            Route("/secrets/{name}", self._get, methods=["GET"]),
            # The SDK asks for the current version as "/secrets/{name}/": no redirect for it.
            Route("/secrets/{name}/", self._get, methods=["GET"]),
            Route("/secrets/{name}/{version}", self._get, methods=["GET"]),
        ]

    async def _get(self, request: Request) -> Response:
        refused = self._authorize(request)
        if refused is not None:
            return refused
        api_version = request.query_params.get("api-version", "")
        if not _supported(api_version):
            message = (
                f"The specified version ({api_version}) is not recognized. Consider using the "
                "latest supported version (7.4)."
                if api_version
                else "The api-version query parameter is missing."
            )
            return _error(400, "BadParameter", message)
        name = request.path_params["name"]
        version = request.path_params.get("version")
        stored = self._secrets.get(name.lower())
        if stored is None or (version is not None and version.lower() != stored.version):
            shown = f"{name}/{version}" if version is not None else name
            return _error(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {shown} was not found in this key vault. If you "
                "recently deleted this secret you may be able to recover it using the correct "
                "recovery command. For help resolving this issue, please see "
                "https://go.microsoft.com/fwlink/?linkid=2125182",
            )
        base = str(request.base_url).rstrip("/")
        body = {
            "value": stored.value,
            "id": f"{base}/secrets/{stored.name}/{stored.version}",
            "attributes": {
                "enabled": True,
                "created": self._created,
                "updated": self._created,
                "recoveryLevel": "Recoverable+Purgeable",
            },
        }
        return json_response(body, content_type=_JSON)

    def _authorize(self, request: Request) -> Response | None:
        """None for a valid vault token, else the challenge 401 the SDK answers with a token."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self._challenge(request, "AKV10000: Request is missing a Bearer or PoP token.")
        try:
            self._identity.validate(token.strip(), audiences=VAULT_AUDIENCES)
        except TokenError as exc:
            return self._challenge(request, f"AKV10022: Invalid token: {exc}")
        return None

    def _challenge(self, request: Request, message: str) -> Response:
        authority = f"{str(request.base_url).rstrip('/')}/{self._identity.tenant_id}"
        header = f'Bearer authorization="{authority}", resource="{VAULT_AUDIENCE}"'
        return _error(401, "Unauthorized", message, headers={"WWW-Authenticate": header})


def _supported(api_version: str) -> bool:
    numbered = _NUMBERED.match(api_version)
    if numbered is not None:
        return (int(numbered[1]), int(numbered[2])) >= _MIN_NUMBERED_VERSION
    return _DATED.match(api_version) is not None  # every dated version is newer than 7.x


def _version_of(tenant_id: str, name: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"keyvault/{tenant_id}/{name.lower()}").hex


def _error(
    status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None
) -> Response:
    body = {"error": {"code": code, "message": message}}
    return json_response(body, status=status, content_type=_JSON, headers=headers)
