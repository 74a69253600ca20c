"""The emulator's ASGI application: routes of every emulated service plus the control plane.

Owns assembling the Starlette app over a ``Tenant``: the Entra, MDE and Graph routes,
``GET /_emulator/stats`` (no auth), errors in each service's dialect for unknown routes and
unexpected exceptions, and an outer ASGI layer that injects configured faults before any
routing and counts every response by path and status.

Imports only emulator modules: it shares no code with the collector.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .graph import GraphApi
from .mde import MdeApi
from .responses import error_response, json_response
from .tenant import Tenant

__all__ = ["CONTROL_PREFIX", "build_app"]

CONTROL_PREFIX = "/_emulator/"
_log = logging.getLogger(__name__)


def build_app(tenant: Tenant) -> ASGIApp:
    """The ASGI app serving ``tenant``."""
    settings = tenant.settings
    mde = MdeApi(
        records=tenant.records,
        identity=tenant.identity,
        limiter=tenant.limiter,
        store=tenant.store,
        hunting_row_limit=settings.hunting_row_limit,
    )
    graph = GraphApi(
        identity=tenant.identity,
        limiter=tenant.limiter,
        store=tenant.store,
        hunting_row_limit=settings.hunting_row_limit,
    )

    async def stats(request: Request) -> Response:
        document = await run_in_threadpool(tenant.stats_document)
        return json_response(document, content_type="application/json; charset=utf-8")

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return error_response(request.url.path, status)

    async def unexpected(request: Request, exc: Exception) -> Response:
        _log.exception("emulator error on %s %s", request.method, request.url.path)
        message = "An unexpected error occurred in the emulator."
        return error_response(request.url.path, 500, message=message)

    routes = [Route(f"{CONTROL_PREFIX}stats", stats, methods=["GET"])]
    routes += tenant.identity.routes() + mde.routes() + graph.routes()
    handlers = {HTTPException: http_error, Exception: unexpected}
    app = Starlette(routes=routes, exception_handlers=handlers)
    return _FaultsAndCounts(app, tenant)


class _FaultsAndCounts:
    """Outermost layer: answer injected faults before routing, count every response."""

    def __init__(self, app: ASGIApp, tenant: Tenant) -> None:
        self._app = app
        self._tenant = tenant

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path: str = scope["path"]
        control = path.startswith(CONTROL_PREFIX)
        status_seen: dict[str, Any] = {}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen["status"] = message["status"]
            await send(message)

        fault = None if control else self._tenant.faults.check(path)
        try:
            if fault is not None:
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
