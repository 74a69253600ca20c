"""One tenant's ASGI application: the routes of every emulated service over one tenant.

Owns assembling the Starlette app over a ``core.tenant.Tenant``: the Entra routes
(``identity.entra``), the MDE machines and legacy hunting (``mde.machines``), the TVM exports
(``tvm.json_exports``, ``tvm.file_exports``), AV health, recommendations and vulnerabilities
(``mde.collections``), Graph hunting (``hunting.graph``), Logs Ingestion
(``ingestion.endpoint``), the App Service managed identity endpoint
(``identity.managed_identity``), the Key Vault secrets (``azure.keyvault``), the Resource
Manager API of the workspace's tables (``azure.resource_manager``), the feed mirrors
(``feeds.api``), and errors in each service's dialect for unknown routes and unexpected
exceptions; ``identity_app``, a tenant's Entra routes alone (served before its world is
built); and ``CANONICAL_PATHS``, the TVM paths the service routes in any letter case. The
control plane is ``core.control``; the layer in front of every tenant (which tenant a
request is for, faults, counts) is ``core.front``.

Imports only emulator modules (every service's routes): it shares no code with the collector.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from epf_emulator.azure.keyvault import KeyVaultApi
from epf_emulator.azure.resource_manager import WorkspaceTablesApi
from epf_emulator.common.responses import error_response
from epf_emulator.core.tenant import Tenant
from epf_emulator.feeds.api import FeedsApi
from epf_emulator.feeds.mirrors import OtFeedInput
from epf_emulator.hunting.advanced import HuntingService
from epf_emulator.hunting.graph import GraphApi
from epf_emulator.identity.entra import Identity
from epf_emulator.identity.managed_identity import ManagedIdentityApi
from epf_emulator.ingestion.endpoint import IngestionApi
from epf_emulator.ingestion.rules import emulated_rules
from epf_emulator.mde.collections import PATHS as COLLECTION_PATHS
from epf_emulator.mde.collections import CatalogApi
from epf_emulator.mde.machines import MdeApi
from epf_emulator.mde.scores import ScoresApi
from epf_emulator.tvm.json_exports import PATHS as TVM_PATHS
from epf_emulator.tvm.json_exports import TvmApi

__all__ = ["CANONICAL_PATHS", "ERROR_HANDLERS", "identity_app", "tenant_app"]

#: Lower-cased path -> the path as routed: the TVM paths answer in any letter case.
CANONICAL_PATHS = {path.lower(): path for path in (*TVM_PATHS, *COLLECTION_PATHS)}
_log = logging.getLogger(__name__)


def tenant_app(tenant: Tenant) -> Starlette:
    """The app serving ``tenant``'s every service."""
    settings = tenant.settings
    mde, graph, tvm, catalog = _defender_apis(tenant)
    ingestion = IngestionApi(
        identity=tenant.identity,
        ingested=tenant.ingested,
        rules=emulated_rules(settings.seed),  # every registry table as of this build
        now=tenant.clock.now,
        rate_limit=settings.ingestion_rate_limit,
    )
    # The TVM routes first: "/api/machines/{machine_id}" would take their paths otherwise.
    routes = tenant.identity.routes() + tvm.routes() + catalog.routes() + mde.routes()
    routes += graph.routes() + tenant.exports.routes() + ingestion.routes()
    routes += ScoresApi(
        identity=tenant.identity,
        limiter=tenant.limiter,
        clock=tenant.clock,
        recommendations=tenant.recommendation_records,
        ready=tenant.wait_ready,
    ).routes()
    routes += ManagedIdentityApi(
        identity=tenant.identity,
        stats=tenant.stats,
        header_secret=settings.managed_identity_header,
    ).routes()
    routes += KeyVaultApi(tenant.identity, settings.keyvault_secrets, tenant.anchor).routes()
    routes += WorkspaceTablesApi(tenant.identity, seed=settings.seed).routes()
    routes += FeedsApi(
        store=tenant.store,
        clock=tenant.clock,
        seed=settings.seed,
        incident_cve=lambda: (tenant.incident() or {}).get("CveId"),
        ready=tenant.wait_ready,
        ot_cves=lambda: _ot_cves(tenant),
    ).routes()
    return Starlette(routes=routes, exception_handlers=ERROR_HANDLERS)


def identity_app(identity: Identity) -> Starlette:
    """A tenant's Entra routes alone: its token endpoints and discovery documents."""
    return Starlette(routes=identity.routes(), exception_handlers=ERROR_HANDLERS)


def _defender_apis(tenant: Tenant) -> tuple[MdeApi, GraphApi, TvmApi, CatalogApi]:
    """The Defender for Endpoint APIs (machines, TVM, collections) and Graph's hunting."""
    settings = tenant.settings
    # One hunting service for both APIs: each with its own limits, both counted alike.
    hunting = HuntingService.of(tenant.store, settings, tenant.stats)
    mde = MdeApi(
        records=tenant.records,
        identity=tenant.identity,
        limiter=tenant.limiter,
        hunting=hunting,
        clock=tenant.clock,
    )
    tenant.clock.on_advance(lambda before, after: mde.invalidate())
    graph = GraphApi(
        identity=tenant.identity,
        limiter=tenant.limiter,
        hunting=hunting,
        clock=tenant.clock,
    )
    tvm = TvmApi(
        identity=tenant.identity,
        limiter=tenant.limiter,
        clock=tenant.clock,
        snapshots=tenant.snapshots,
        exports=tenant.exports,
        sas_valid_seconds=settings.sas_valid_seconds,
        ready=tenant.wait_ready,
    )
    catalog = CatalogApi(
        identity=tenant.identity,
        limiter=tenant.limiter,
        clock=tenant.clock,
        av=tenant.av_records,
        recommendations=tenant.recommendation_records,
        vulnerabilities=tenant.cve_records,
        ready=tenant.wait_ready,
    )
    return mde, graph, tvm, catalog


def _ot_cves(tenant: Tenant) -> list[OtFeedInput]:
    """The CVEs the OT sensors list, for the feed mirrors (none without sensors)."""
    if tenant.iot is None:
        return []
    return [
        OtFeedInput(
            c.cve_id, c.tenths, c.attack_vector, c.description, d.record.get("vendor") or ""
        )
        for d in tenant.iot.model.all_devices()
        for c in d.cves
    ]


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return error_response(request.url.path, status)


async def _unexpected(request: Request, exc: Exception) -> Response:
    _log.exception("emulator error on %s %s", request.method, request.url.path)
    message = "An unexpected error occurred in the emulator."
    return error_response(request.url.path, 500, message=message)


ERROR_HANDLERS: dict[Any, Any] = {HTTPException: _http_error, Exception: _unexpected}
