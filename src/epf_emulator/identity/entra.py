"""The emulated Entra ID tenant: token endpoint, OpenID discovery, and bearer-token checks.

Owns the client-credentials grant (defender-apis.md A.1-A.4): ``POST /{tenant}/oauth2/v2.0/token``
(``scope=<resource>/.default``; who the client is, by secret or certificate assertion, is
``identity.client_auth``'s job), the legacy v1 ``/{tenant}/oauth2/token`` (``resource=``),
the discovery document MSAL/azure-identity fetch first, Entra's error bodies (AADSTS90002,
700016, 7000215, 70011...), and the tokens themselves: JWTs signed HMAC-SHA256 with a
per-emulator key, carrying ``aud``, ``tid``, ``appid`` and every app role. ``aud`` is the
resource exactly as requested, as Entra writes it in v1.0 tokens: an App ID URI or an app id,
with the trailing slash of a ``<resource>//.default`` scope kept. Which audiences each API
accepts is here too (``*_AUDIENCES``), each only those the real API is documented or reported
to accept. ``authorize`` is what the MDE and Graph APIs call first: 401 for a missing, forged,
expired or wrong-audience token, 403 for a missing role, in that API's error dialect.

Imports only ``common.limits``, ``common.responses`` and ``identity.client_auth`` of the
emulator: it shares no code with the collector.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import secrets
import time
import uuid
from collections.abc import Collection
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from epf_emulator.common.limits import RequestStats
from epf_emulator.common.responses import (
    Dialect,
    entra_error,
    graph_error,
    json_response,
    mde_error,
)
from epf_emulator.identity.client_auth import CertificateSource, ClientAuthenticator, unknown_tenant

__all__ = [
    "APP_ROLES",
    "GRAPH_AUDIENCES",
    "MDE_AUDIENCES",
    "MONITOR_AUDIENCES",
    "RESOURCES",
    "VAULT_AUDIENCES",
    "Identity",
    "TokenError",
    "resource_audience",
]

_WINDOWS_DEFENDER_ATP = "fc780465-2017-40d4-a0c5-307022471b92"
_THREAT_PROTECTION = "8ee8fdad-f234-4243-8f3b-15c294843740"
_GRAPH = "00000003-0000-0000-c000-000000000000"
#: Resources a token can be requested for, by App ID URI or app id (defender-apis.md A.2): the
#: service principals of the emulated tenant. Entra issuing a token does not mean an API takes it.
RESOURCES = frozenset(
    {
        "https://api.securitycenter.microsoft.com",  # WindowsDefenderATP
        "https://securitycenter.onmicrosoft.com/windowsatpservice",  # WindowsDefenderATP
        _WINDOWS_DEFENDER_ATP,
        "https://api.security.microsoft.com",  # Microsoft Threat Protection (Defender XDR)
        _THREAT_PROTECTION,
        "https://graph.microsoft.com",
        _GRAPH,
        "https://monitor.azure.com",
        "https://vault.azure.net",
        "https://management.azure.com",  # Azure Resource Manager (azure.resource_manager)
        "https://management.core.windows.net",  # its older App ID URI
    }
)
#: The MDE API takes the two App ID URIs its docs request tokens for (defender-apis.md A.2),
#: on either host. Not the Threat Protection resource (``https://api.security.microsoft.com``,
#: the Defender XDR APIs'): that is the documented base URL, not the token's audience, and
#: users report the MDE API refusing it (and WindowsDefenderATP's other identifier URIs).
MDE_AUDIENCES = frozenset(
    {
        "https://api.securitycenter.microsoft.com",
        "https://securitycenter.onmicrosoft.com/windowsatpservice",
    }
)
#: Graph takes its App ID URI and its app id (a token asked for by app id carries the app id).
GRAPH_AUDIENCES = frozenset({"https://graph.microsoft.com", _GRAPH})
#: Logs Ingestion (D.1, D.4): the SDK's ``https://monitor.azure.com/.default`` and the
#: tutorial's ``https://monitor.azure.com//.default`` both work, so both audiences do.
MONITOR_AUDIENCES = frozenset({"https://monitor.azure.com", "https://monitor.azure.com/"})
#: Key Vault (A.7): the resource its own 401 challenge names.
VAULT_AUDIENCES = frozenset({"https://vault.azure.net"})
#: Every application permission the emulated app registration has been granted (A.6).
APP_ROLES = (
    "Machine.Read.All",
    "Vulnerability.Read.All",
    "Software.Read.All",
    "SecurityRecommendation.Read.All",
    "AdvancedQuery.Read.All",
    "ThreatHunting.Read.All",
    "Score.Read.All",
)
_DEFAULT_SUFFIX = "/.default"
# Scopes MSAL may add to any request; they never name a resource.
_RESERVED_SCOPES = frozenset({"openid", "profile", "offline_access"})


class TokenError(Exception):
    """A bearer token was refused; the message says why (it goes into the 401 body)."""


class Identity:
    """One app registration in one tenant, and the tokens issued to it."""

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        token_lifetime_seconds: int,
        stats: RequestStats,
        certificate: CertificateSource = None,
        roles: Collection[str] | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id
        # The app roles (application permissions) granted to the app: every token carries them.
        self.roles = tuple(APP_ROLES if roles is None else roles)
        self._clients = ClientAuthenticator(
            tenant_id=tenant_id,
            client_id=client_id,
            client_secret=client_secret,
            certificate=certificate,
        )
        self._lifetime = token_lifetime_seconds
        self.issued_signatures: set[str] = set()
        self._stats = stats
        self._key = secrets.token_bytes(32)
        # The service principal's object id: stable per (tenant, client).
        self._object_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant_id}/{client_id}"))

    def routes(self) -> list[Route]:
        return [
            Route("/{tenant}/oauth2/v2.0/token", self._token_v2, methods=["POST"]),
            Route("/{tenant}/oauth2/token", self._token_v1, methods=["POST"]),
            Route("/{tenant}/v2.0/.well-known/openid-configuration", self._openid_v2),
            Route("/{tenant}/.well-known/openid-configuration", self._openid_v1),
        ]

    # --- tokens --------------------------------------------------------------------------
    def mint(
        self,
        audience: str,
        *,
        roles: Collection[str] | None = None,
        lifetime_seconds: int | None = None,
        tenant_id: str | None = None,
    ) -> str:
        """Sign a token the way the token endpoint does (tests use the keyword options)."""
        # Rounded up, so a token is valid for at least its lifetime from the moment it is
        # issued (``expires_in`` is never optimistic, even for one-second test tokens).
        now = math.ceil(time.time())
        claims = {
            "aud": audience,
            "iss": f"https://sts.windows.net/{tenant_id or self.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + (self._lifetime if lifetime_seconds is None else lifetime_seconds),
            "appid": self.client_id,
            "appidacr": "1",
            "idtyp": "app",
            "oid": self._object_id,
            "sub": self._object_id,
            "roles": list(self.roles if roles is None else roles),
            "tid": tenant_id or self.tenant_id,
            "uti": secrets.token_urlsafe(16),
            "ver": "1.0",
        }
        header = _b64(orjson.dumps({"typ": "JWT", "alg": "HS256", "kid": "epf-emulator"}))
        payload = _b64(orjson.dumps(claims))
        signed = f"{header}.{payload}".encode()
        signature = _b64(hmac.new(self._key, signed, hashlib.sha256).digest())
        self.issued_signatures.add(signature)  # for a check that no token leaks anywhere
        return f"{header}.{payload}.{signature}"

    def validate(self, token: str, *, audiences: Collection[str]) -> dict[str, Any]:
        """The claims of a token this tenant issued for one of ``audiences``.

        Raises:
            TokenError: forged, malformed, expired, not yet valid, other tenant or audience.
        """
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("IDX14100: JWT is not well formed, there are no dots (.).")
        signed = f"{parts[0]}.{parts[1]}".encode()
        expected = hmac.new(self._key, signed, hashlib.sha256).digest()
        try:
            signature = _unb64(parts[2])
            claims = orjson.loads(_unb64(parts[1]))
        except (binascii.Error, ValueError, orjson.JSONDecodeError) as exc:
            raise TokenError("IDX14102: Unable to decode the token.") from exc
        if not hmac.compare_digest(signature, expected):
            raise TokenError("IDX10511: Signature validation failed.")
        if not isinstance(claims, dict):
            raise TokenError("IDX14102: Unable to decode the token payload.")
        now = time.time()
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
            raise TokenError("IDX10223: Lifetime validation failed. The token is expired.")
        if isinstance(claims.get("nbf"), int) and claims["nbf"] > now + 5:
            raise TokenError("IDX10222: Lifetime validation failed. The token is not yet valid.")
        if claims.get("tid") != self.tenant_id:
            raise TokenError("The token was issued by another tenant.")
        if claims.get("aud") not in audiences:
            audience = claims.get("aud")
            raise TokenError(
                f"IDX10214: Audience validation failed. Audience '{audience}' is not valid."
            )
        return claims

    def authorize(
        self, request: Request, *, dialect: Dialect, roles: Collection[str]
    ) -> Response | None:
        """Check the bearer token of an API call: None if allowed, else the 401/403 response."""
        audiences = GRAPH_AUDIENCES if dialect == "graph" else MDE_AUDIENCES
        error = mde_error if dialect == "mde" else graph_error
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            if dialect == "graph":
                return error(401, "Access token is empty.")
            return error(401, "Authorization header is missing or is not a Bearer token.")
        try:
            claims = self.validate(token.strip(), audiences=audiences)
        except TokenError as exc:
            if dialect == "graph" and "IDX1022" in str(exc):  # lifetime: Graph's own wording
                return error(401, "Access token has expired or is not yet valid.")
            if dialect == "graph" and "IDX10214" in str(exc):  # audience: Graph's own wording
                return error(401, "Access token validation failure. Invalid audience.")
            if dialect == "mde" and "IDX10214" in str(exc):
                # The MDE API answers a token for another resource with 403, like a missing
                # permission (users report it: MicrosoftDocs/microsoft-365-docs#9246).
                return error(403, str(exc))
            return error(401, str(exc))
        granted = set(claims.get("roles") or ())
        if not granted.intersection(roles):
            needed = " or ".join(sorted(roles))
            return error(
                403,
                f"The application lacks the application permission {needed} to access the resource.",
            )
        return None

    @property
    def assertion_signatures(self) -> set[str]:
        """The signature part of every client assertion the token endpoint received."""
        return self._clients.assertion_signatures

    # --- endpoints -----------------------------------------------------------------------
    async def _token_v2(self, request: Request) -> Response:
        form = await _form(request)
        refused = self._clients.check(request, form)
        if refused is not None:
            return refused
        scopes = [s for s in form.get("scope", "").split() if s not in _RESERVED_SCOPES]
        resource = _resource_of(scopes)
        if resource is None:
            return entra_error(
                400,
                "invalid_scope",
                70011,
                "The provided value for the input parameter 'scope' is not valid. The scope "
                f"{form.get('scope', '')} is not valid. Client credentials flows must have a scope"
                " value with /.default suffixed to the resource identifier (application ID URI).",
            )
        self._stats.token_issued()
        token = self.mint(resource)  # the resource as requested is the audience
        body = {
            "token_type": "Bearer",
            "expires_in": self._lifetime,  # a number in v2 (defender-apis.md A.1)
            "ext_expires_in": self._lifetime,
            "access_token": token,
        }
        return json_response(
            body,
            content_type="application/json; charset=utf-8",
            headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"},
        )

    async def _token_v1(self, request: Request) -> Response:
        """The legacy v1 grant still shown in MDE samples: ``resource=`` and string times (A.1)."""
        form = await _form(request)
        refused = self._clients.check(request, form)
        if refused is not None:
            return refused
        resource = resource_audience(form.get("resource", ""))
        if resource is None:
            return entra_error(
                400,
                "invalid_resource",
                500011,
                f"The resource principal named {form.get('resource', '')} was not found in the"
                f" tenant named {self.tenant_id}.",
            )
        self._stats.token_issued()
        now = int(time.time())
        return json_response(
            {
                "token_type": "Bearer",
                "expires_in": str(self._lifetime),
                "ext_expires_in": str(self._lifetime),
                "expires_on": str(now + self._lifetime),
                "not_before": str(now),
                "resource": resource,
                "access_token": self.mint(resource),
            },
            content_type="application/json; charset=utf-8",
        )

    async def _openid_v2(self, request: Request) -> Response:
        return self._openid(request, "/v2.0", "/oauth2/v2.0")

    async def _openid_v1(self, request: Request) -> Response:
        return self._openid(request, "", "/oauth2")

    def _openid(self, request: Request, version: str, oauth: str) -> Response:
        tenant = request.path_params["tenant"]
        if tenant != self.tenant_id:
            return unknown_tenant(tenant)
        base = str(request.base_url).rstrip("/")
        authority = f"{base}/{tenant}"
        document = {
            "token_endpoint": f"{authority}{oauth}/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{base}/{tenant}/discovery{version}/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{authority}{version}",
            "request_uri_parameter_supported": False,
            "authorization_endpoint": f"{authority}{oauth}/authorize",
            "device_authorization_endpoint": f"{authority}{oauth}/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{authority}{oauth}/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "ver"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
        }
        return json_response(document, content_type="application/json; charset=utf-8")


def resource_audience(requested: str) -> str | None:
    """The ``aud`` of a token for the resource ``requested``, or None for an unknown resource.

    Entra finds the resource with or without one trailing slash and writes the identifier as
    requested: ``https://monitor.azure.com/`` stays so (Microsoft identity platform, "Scopes
    when acquiring tokens": APIs that expect the trailing slash in ``aud`` are asked for with
    ``//``), and each API decides whether it takes that audience.
    """
    known = requested[:-1] if requested.endswith("/") else requested
    return requested if known in RESOURCES else None


def _resource_of(scopes: list[str]) -> str | None:
    """The resource of a single ``<resource>/.default`` scope (``//.default`` too), else None."""
    if len(scopes) != 1 or not scopes[0].endswith(_DEFAULT_SUFFIX):
        return None
    return resource_audience(scopes[0][: -len(_DEFAULT_SUFFIX)])


async def _form(request: Request) -> dict[str, str]:
    try:
        form = await request.form()
    except Exception:  # a body that is not form-encoded is just an empty request to Entra
        return {}
    try:
        return {key: value for key, value in form.items() if isinstance(value, str)}
    finally:
        await form.close()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
