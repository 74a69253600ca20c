"""The App Service / Azure Functions managed identity endpoint (``IDENTITY_ENDPOINT``).

Owns ``GET /msi/token?api-version=2019-08-01&resource=<resource>[&client_id=<id>]`` with the
header ``X-IDENTITY-HEADER: <IDENTITY_HEADER>``: the request azure-identity's
``ManagedIdentityCredential`` sends (through MSAL's App Service flow) when the environment has
``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER``. It answers a token for the emulated app's own
identity (signed by ``identity.entra.Identity``, so every emulated API accepts it) as
``{"access_token", "expires_on", "resource", "token_type", "client_id"}`` with ``expires_on``
a string of epoch seconds, as the platform does. A missing or wrong header is a 401, another
api-version, an unknown resource or another identity a 400, each as the platform's
``{"statusCode", "message", "correlationId"}``; the wording is ours. ``resource`` is a resource
(App ID URI or app id), not a scope: a ``/.default`` suffix names no resource (defender-apis.md
A.5). The token's audience is the resource as given, trailing slash included, as Entra issues
it (``identity.entra.resource_audience``). Every token counts in ``tokens_issued``.

The identity is the app registration itself: no ``client_id`` (the system-assigned identity)
or the app's ``client_id`` (as a user-assigned identity); ``mi_res_id``, ``object_id`` and
``principal_id`` name no identity the emulated app has.

Imports only ``common.limits``, ``common.responses`` and ``identity.entra`` of the emulator: it
shares no code with the collector.
"""

from __future__ import annotations

import base64
import hmac
import uuid
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from epf_emulator.common.limits import RequestStats
from epf_emulator.common.responses import json_response
from epf_emulator.identity.entra import Identity, resource_audience

__all__ = ["API_VERSION", "HEADER", "PATH", "ManagedIdentityApi"]

PATH = "/msi/token"
API_VERSION = "2019-08-01"
HEADER = "X-IDENTITY-HEADER"
#: The query parameters that pick a user-assigned identity (App Service, 2019-08-01).
_IDENTITY_PARAMS = ("client_id", "mi_res_id", "object_id", "principal_id")
_JSON = "application/json; charset=utf-8"


class ManagedIdentityApi:
    """The token endpoint of the app's managed identity, guarded by ``header_secret``."""

    def __init__(self, *, identity: Identity, stats: RequestStats, header_secret: str) -> None:
        if not header_secret:
            raise ValueError("the managed identity endpoint needs a header secret")
        self._identity = identity
        self._stats = stats
        self._secret = header_secret.encode()

    def routes(self) -> list[Route]:
        return [Route(PATH, self._token, methods=["GET"])]

    async def _token(self, request: Request) -> Response:
        supplied = request.headers.get(HEADER, "").encode()
        if not hmac.compare_digest(supplied, self._secret):
            return _error(401, f"The {HEADER} header is missing or does not match IDENTITY_HEADER.")
        params = request.query_params
        if params.get("api-version") != API_VERSION:
            version = params.get("api-version", "")
            return _error(400, f"The api-version '{version}' is not supported; use {API_VERSION}.")
        requested = params.get("resource", "")
        audience = resource_audience(requested)
        if audience is None:
            return _error(400, f"The resource '{requested}' is not a known resource.")
        chosen = {name: params[name] for name in _IDENTITY_PARAMS if params.get(name)}
        if len(chosen) > 1:
            names = ", ".join(sorted(chosen))
            return _error(400, f"Only one of client_id, mi_res_id or principal_id: got {names}.")
        if chosen and chosen != {"client_id": self._identity.client_id}:
            return _error(
                400, "No Managed Identity found for specified ClientId/ResourceId/PrincipalId."
            )
        self._stats.token_issued()
        token = self._identity.mint(audience)
        body = {
            "access_token": token,
            "expires_on": str(_expiry(token)),  # a string, as the platform sends it
            "resource": requested,
            "token_type": "Bearer",
            "client_id": self._identity.client_id,
        }
        return json_response(body, content_type=_JSON)


def _expiry(token: str) -> int:
    """The ``exp`` claim ``Identity.mint`` signed, so ``expires_on`` never disagrees with it."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = orjson.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return int(claims["exp"])


def _error(status: int, message: str) -> Response:
    body = {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())}
    return json_response(body, status=status, content_type=_JSON)
