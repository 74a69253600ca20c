"""The emulated Azure Resource Manager API of one Log Analytics workspace's tables.

Owns, on the emulator's HTTPS app (its base URL stands in for ``https://management.azure.com``),
``GET .../workspaces/{ws}``, ``GET`` and ``PUT .../workspaces/{ws}/tables/{table}`` and ``POST
.../tables/{table}/migrate`` (Tables API, ``api-version`` 2021-12-01-preview, which brought
``migrate``, or later; the plans each version knows are ``azure.table_rules``'s; paths
case-insensitive, as ARM's) over ``azure.workspace``'s workspace, which starts with the original
connector's five classic tables, and ``GET .../savedSearches``, ``GET`` and ``PUT
.../savedSearches/{id}`` over ``azure.saved_searches`` (api-version 2020-03-01-preview or later,
those with ``functionAlias``). Tokens must be this tenant's
for Resource Manager (``https://management.azure.com`` or ``https://management.core.windows.net``,
with or without the slash: 401 ``InvalidAuthenticationTokenAudience`` otherwise). The app's
service principal holds one role, Log Analytics Contributor on the workspace's resource group,
so another subscription or resource group is a 403 ``AuthorizationFailed``, and another
workspace there a 404 ``ResourceNotFound``. Errors are ARM's ``{"error": {"code", "message"}}``
with ``x-ms-request-id``; Azure's own wording where known (the classic-table refusal, a missing
table: learn.microsoft.com/azure/azure-monitor/logs/custom-logs-migrate, Azure/azure-cli#31712),
ours elsewhere. ``migrate`` answers 200 with no body, as the Tables - Migrate reference shows.

Imports only ``azure`` modules and ``identity.entra`` of the emulator: it shares no code with the
collector.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from epf_emulator.azure.errors import ArmRefusal
from epf_emulator.azure.saved_searches import SAVED_SEARCHES_API_VERSIONS, SavedSearches
from epf_emulator.azure.table_rules import TABLE_PLANS_BY_API_VERSION
from epf_emulator.azure.workspace import (
    LOCATION,
    RESOURCE_GROUP,
    WORKSPACE_NAME,
    WorkspaceTables,
)
from epf_emulator.identity.entra import Identity, TokenError

__all__ = [
    "ARM_AUDIENCES",
    "SAVED_SEARCHES_API_VERSIONS",
    "TABLES_API_VERSIONS",
    "WorkspaceTablesApi",
]

#: Resource Manager accepts a token for either App ID URI, with or without the slash.
ARM_AUDIENCES = frozenset(
    {
        "https://management.azure.com",
        "https://management.azure.com/",
        "https://management.core.windows.net",
        "https://management.core.windows.net/",
    }
)
#: The Tables API versions that have ``migrate`` (it came with 2021-12-01-preview).
TABLES_API_VERSIONS = tuple(TABLE_PLANS_BY_API_VERSION)
_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/"
    r"microsoft\.operationalinsights/workspaces/(?P<ws>[^/]+?)"
    r"(?:/tables/(?P<table>[^/]+?)(?P<migrate>/migrate)?"
    r"|(?P<saved>/savedsearches)(?:/(?P<search>[^/]+?))?)?/?$",
    re.IGNORECASE,
)
_JSON = "application/json; charset=utf-8"


class WorkspaceTablesApi:
    """The tables of one emulated workspace, read and changed with Resource Manager tokens."""

    def __init__(self, identity: Identity, *, seed: int) -> None:
        self._identity = identity
        self.workspace = WorkspaceTables(seed=seed)
        self.saved_searches = SavedSearches(self.workspace)

    def routes(self) -> list[Route]:
        return [
            Route("/subscriptions/{rest:path}", self._handle, methods=["GET", "PUT", "POST"]),
        ]

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        try:
            return self._answer(request, body)
        except ArmRefusal as refused:
            return _error(refused.status, refused.code, refused.message)

    def _answer(self, request: Request, body: bytes) -> Response:
        match = _PATH.match(request.url.path)
        if match is None:
            raise ArmRefusal(
                404,
                "NotFound",
                "The emulated Resource Manager serves workspace tables and saved searches only.",
            )
        if match["saved"] is not None:
            return self._saved_answer(request, match, body)
        migrate = match["migrate"] is not None
        name = match["table"]
        if (request.method == "POST") != migrate or (name is None and request.method != "GET"):
            raise ArmRefusal(
                405, "MethodNotAllowed", f"The method '{request.method}' is not allowed here."
            )
        version = self._checked(request, match, TABLES_API_VERSIONS, "workspaces/tables")
        if name is None:
            return _ok(self.workspace.workspace())
        if request.method == "GET":
            return _ok(self.workspace.get(name))
        if migrate:
            self.workspace.migrate(name)
            return Response(b"", status_code=200, headers=_ids())
        return _ok(self.workspace.put(name, _json_object(body), api_version=version))

    def _saved_answer(self, request: Request, match: re.Match[str], body: bytes) -> Response:
        search = match["search"]
        if request.method == "POST" or (search is None and request.method != "GET"):
            raise ArmRefusal(
                405, "MethodNotAllowed", f"The method '{request.method}' is not allowed here."
            )
        self._checked(request, match, SAVED_SEARCHES_API_VERSIONS, "workspaces/savedSearches")
        if search is None:
            return _ok(self.saved_searches.list())
        if request.method == "GET":
            return _ok(self.saved_searches.get(search))
        return _ok(self.saved_searches.put(search, _json_object(body)))

    def _checked(
        self, request: Request, match: re.Match[str], versions: tuple[str, ...], kind: str
    ) -> str:
        """The request's api-version, once its token, version, role scope and workspace pass."""
        claims = self._authenticate(request)
        version = _check_api_version(request.query_params.get("api-version"), versions, kind)
        action = {"GET": "read", "PUT": "write", "POST": "migrate/action"}[request.method]
        if match["saved"] is not None:
            action = f"savedSearches/{action}"
        elif match["table"] is not None:
            action = f"tables/{action}"
        scope = request.url.path.rstrip("/")
        self._authorize(str(claims.get("oid") or ""), match["sub"], match["rg"], action, scope)
        if match["ws"].lower() != WORKSPACE_NAME:
            raise ArmRefusal(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.OperationalInsights/workspaces/{match['ws']}' under "
                f"resource group '{match['rg']}' was not found. For more details please go to "
                "https://aka.ms/ARMResourceNotFoundFix",
            )
        return version

    def _authenticate(self, request: Request) -> dict[str, Any]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ArmRefusal(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            )
        try:
            return self._identity.validate(token.strip(), audiences=ARM_AUDIENCES)
        except TokenError as exc:
            text = str(exc)
            if "IDX10214" in text:
                allowed = "','".join(sorted(ARM_AUDIENCES))
                raise ArmRefusal(
                    401,
                    "InvalidAuthenticationTokenAudience",
                    "The access token has been obtained for wrong audience or resource. It "
                    f"should exactly match with one of the allowed audiences '{allowed}'.",
                ) from exc
            if "IDX1022" in text:
                raise ArmRefusal(
                    401, "ExpiredAuthenticationToken", "The access token has expired."
                ) from exc
            if "another tenant" in text:
                raise ArmRefusal(
                    401,
                    "InvalidAuthenticationTokenTenant",
                    "The access token is from the wrong issuer. It must match the tenant "
                    "associated with this subscription.",
                ) from exc
            raise ArmRefusal(
                401, "InvalidAuthenticationToken", "The access token is invalid."
            ) from exc

    def _authorize(self, oid: str, subscription: str, group: str, action: str, scope: str) -> None:
        # The one role assignment: Log Analytics Contributor on the workspace's resource group.
        if subscription.lower() != self.workspace.subscription or group.lower() != RESOURCE_GROUP:
            raise ArmRefusal(
                403,
                "AuthorizationFailed",
                f"The client '{oid}' with object id '{oid}' does not have authorization to "
                f"perform action 'Microsoft.OperationalInsights/workspaces/{action}' "
                f"over scope '{scope}' or the scope is invalid. If access was recently granted, "
                "please refresh your credentials.",
            )


def _check_api_version(version: str | None, versions: tuple[str, ...], kind: str) -> str:
    if not version:
        raise ArmRefusal(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    if version not in versions:
        raise ArmRefusal(
            400,
            "NoRegisteredProviderFound",
            f"No registered resource provider found for location '{LOCATION}' and API version "
            f"'{version}' for type '{kind}'. The supported api-versions are "
            f"'{', '.join(versions)}'.",
        )
    return version


def _json_object(body: bytes) -> Mapping[str, Any]:
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ArmRefusal(
            400,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized.",
        ) from exc
    if not isinstance(decoded, dict):
        raise ArmRefusal(400, "InvalidRequestContent", "The request content must be a JSON object.")
    return decoded


def _ok(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), status_code=200, media_type=_JSON, headers=_ids())


def _ids() -> dict[str, str]:
    request_id = str(uuid.uuid4())
    return {"x-ms-request-id": request_id, "x-ms-correlation-request-id": request_id}


def _error(status: int, code: str, message: str) -> Response:
    headers = _ids()
    if status == 401:
        headers["WWW-Authenticate"] = (
            'Bearer authorization_uri="https://login.microsoftonline.com/", '
            'error="invalid_token", error_description="' + message.replace('"', "'") + '"'
        )
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return Response(body, status_code=status, media_type=_JSON, headers=headers)
