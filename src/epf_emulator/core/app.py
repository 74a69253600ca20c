"""The emulator's ASGI application: routes of every emulated service plus the control plane.

Owns assembling the Starlette app over a ``core.tenant.Tenant``: the Entra routes
(``identity.entra``), the MDE machines and legacy hunting (``mde.machines``), the TVM exports
(``tvm.json_exports``, ``tvm.file_exports``), AV health, recommendations and vulnerabilities
(``mde.collections``), Graph hunting (``hunting.graph``), Logs Ingestion
(``ingestion.endpoint``), the App Service managed identity endpoint
(``identity.managed_identity``), the Key Vault secrets (``azure.keyvault``), the Resource
Manager API of the workspace's tables (``azure.resource_manager``), the control plane
(``GET /_emulator/stats``, ``POST /_emulator/advance?hours=H`` and
``GET /_emulator/posture?device=ID&at=ISO8601``, the emulator's own forensic answer of
docs/forensics.md, ``world.posture_at``; no auth), errors in each
service's dialect for unknown routes and unexpected exceptions, and an outer ASGI layer that
routes the TVM paths case-insensitively (as the service does), injects configured faults
before any routing and counts every response by path and status.

Imports only emulator modules (every service's routes): it shares no code with the collector.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from epf_emulator.azure.keyvault import KeyVaultApi
from epf_emulator.azure.resource_manager import WorkspaceTablesApi
from epf_emulator.common.chaos import serve_struck
from epf_emulator.common.clock import CLOCK_EARLIEST, TIMELINE_END
from epf_emulator.common.responses import body_response, error_response, json_response, mde_error
from epf_emulator.core.tenant import Tenant
from epf_emulator.feeds.api import FeedsApi
from epf_emulator.feeds.mirrors import OtFeedInput
from epf_emulator.hunting.advanced import HuntingService
from epf_emulator.hunting.graph import GraphApi
from epf_emulator.identity.managed_identity import ManagedIdentityApi
from epf_emulator.ingestion.endpoint import IngestionApi
from epf_emulator.ingestion.rules import emulated_rules
from epf_emulator.mde.collections import CatalogApi
from epf_emulator.mde.machines import MdeApi
from epf_emulator.mde.scores import ScoresApi
from epf_emulator.tvm.json_exports import PATHS as TVM_PATHS
from epf_emulator.tvm.json_exports import TvmApi

__all__ = ["CONTROL_PREFIX", "build_app"]

CONTROL_PREFIX = "/_emulator/"
_log = logging.getLogger(__name__)


def build_app(tenant: Tenant) -> ASGIApp:
    """The ASGI app serving ``tenant``."""
    settings = tenant.settings
    mde, graph, tvm, catalog = _defender_apis(tenant)
    ingestion = IngestionApi(
        identity=tenant.identity,
        ingested=tenant.ingested,
        rules=emulated_rules(settings.seed),  # every registry table as of this build
        now=tenant.clock.now,
        rate_limit=settings.ingestion_rate_limit,
    )
    routes = _control_routes(tenant)
    # The TVM routes first: "/api/machines/{machine_id}" would take their paths otherwise.
    routes += tenant.identity.routes() + tvm.routes() + catalog.routes() + mde.routes()
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
    handlers = {HTTPException: _http_error, Exception: _unexpected}
    app = Starlette(routes=routes, exception_handlers=handlers)
    canonical = list(TVM_PATHS)
    for prefix in ("/api", "/api/v1.0"):
        canonical += [f"{prefix}/{c.path}" for c in catalog.collections]
    return _FaultsAndCounts(app, tenant, {path.lower(): path for path in canonical})


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


def _control_routes(tenant: Tenant) -> list[Route]:
    """``GET /_emulator/stats`` and ``POST /_emulator/advance?hours=H`` (no auth)."""

    async def stats(request: Request) -> Response:
        document = await run_in_threadpool(tenant.stats_document)
        return json_response(document, content_type="application/json; charset=utf-8")

    async def advance(request: Request) -> Response:
        try:
            hours = float(request.query_params.get("hours", ""))
            now = await run_in_threadpool(tenant.clock.advance, hours)
        except ValueError:
            message = "The query parameter 'hours' must be a number >= 0."
            return mde_error(400, message, code="BadRequest")
        body = {
            "now": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "advanced_hours": tenant.clock.advanced_hours,
        }
        return json_response(body, content_type="application/json; charset=utf-8")

    async def posture(request: Request) -> Response:
        device = request.query_params.get("device", "").strip()
        at = _instant(request.query_params.get("at", ""))
        if not device or at is None:
            message = "Give device=<DeviceId> and at=<ISO 8601 time, e.g. 2026-11-03T14:00:00Z>."
            return _control_error(400, message)
        if not CLOCK_EARLIEST <= at <= TIMELINE_END:
            message = (
                f"at must be from {CLOCK_EARLIEST:%Y-%m-%dT%H:%M:%SZ} to"
                f" {TIMELINE_END:%Y-%m-%dT%H:%M:%SZ} (the emulated timeline)."
            )
            return _control_error(400, message)
        document = await run_in_threadpool(tenant.posture_document, device, at)
        if document is None:
            return _control_error(404, f"No device {device} onboarded at {at:%Y-%m-%dT%H:%M:%SZ}.")
        return json_response(document, content_type="application/json; charset=utf-8")

    return [
        Route(f"{CONTROL_PREFIX}stats", stats, methods=["GET"]),
        Route(f"{CONTROL_PREFIX}advance", advance, methods=["POST"]),
        Route(f"{CONTROL_PREFIX}posture", posture, methods=["GET"]),
    ]


def _instant(text: str) -> datetime | None:
    """An ISO 8601 instant (``Z`` or an offset; a naive one is UTC), or None."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _control_error(status: int, message: str) -> Response:
    return json_response(
        {"error": {"status": status, "message": message}},
        status=status,
        content_type="application/json; charset=utf-8",
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return error_response(request.url.path, status)


async def _unexpected(request: Request, exc: Exception) -> Response:
    _log.exception("emulator error on %s %s", request.method, request.url.path)
    message = "An unexpected error occurred in the emulator."
    return error_response(request.url.path, 500, message=message)


class _FaultsAndCounts:
    """Outermost layer: answer injected faults before routing, count every response."""

    def __init__(self, app: ASGIApp, tenant: Tenant, canonical: dict[str, str]) -> None:
        self._app = app
        self._tenant = tenant
        self._canonical = canonical

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path: str = scope["path"]
        canonical = self._canonical.get(path.lower())
        if canonical is not None and canonical != path:  # /api/Machines/InfoGatheringExport...
            path = canonical
            scope = {**scope, "path": canonical, "raw_path": canonical.encode()}
        control = path.startswith(CONTROL_PREFIX)
        status_seen: dict[str, Any] = {}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen["status"] = message["status"]
            await send(message)

        fault = None if control else self._tenant.faults.check(path)
        struck = None
        if fault is None and not control:
            struck = self._tenant.chaos.strike(path, scope.get("method", "GET"))
        try:
            if struck is not None:

                def service_error(status: int, message: str, retry_after: int | None) -> Any:
                    return error_response(path, status, message=message, retry_after=retry_after)

                await serve_struck(
                    struck, self._tenant.chaos, scope, receive, counting_send, self._app,
                    service_error,
                )  # fmt: skip
            elif fault is not None and fault.ignore_skip:
                query = scope.get("query_string", b"").decode("latin-1")
                kept = "&".join(
                    p
                    for p in query.split("&")
                    if p.split("=", 1)[0].lower() not in ("$skip", "%24skip")
                )
                scope = {**scope, "query_string": kept.encode("latin-1")}
                await self._app(scope, receive, counting_send)
            elif fault is not None and fault.body is not None:
                response = body_response(
                    path, fault.status, fault.body, retry_after=fault.effective_retry_after
                )
                await response(scope, receive, counting_send)
            elif fault is not None:
                response = error_response(
                    path,
                    fault.status,
                    message=f"Injected fault: {fault.status} on {fault.path}",
                    retry_after=fault.effective_retry_after,
                )
                await response(scope, receive, counting_send)
            else:
                await self._app(scope, receive, counting_send)
        finally:
            if not control and "status" in status_seen:
                self._tenant.stats.record(path, int(status_seen["status"]))
