"""The layer in front of every tenant: one listener, the tenant chosen per request.

Owns the outermost ASGI app: the TVM paths routed in any letter case, as the service does
(``core.app.CANONICAL_PATHS``); the control plane (``core.control``) aside; then which tenant
a request is for (``Seats.route``: the Entra path's tenant, an export blob's ``OrgId``, the
bearer token's ``tid``); configured faults and chaos before any routing, in the struck
service's dialect; the tenant's app, built on its first request that needs it (a token
request needs only the tenant's Entra routes); and every response counted by path and status
in that tenant's counters.

Imports only emulator modules: it shares no code with the collector.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from epf_emulator.common.chaos import serve_struck
from epf_emulator.common.responses import body_response, error_response
from epf_emulator.core.app import CANONICAL_PATHS
from epf_emulator.core.control import CONTROL_PREFIX, control_app
from epf_emulator.core.seats import Seat, Seats

__all__ = ["Front"]

_log = logging.getLogger(__name__)


class Front:
    """Outermost layer: control plane aside, pick the tenant, inject faults, count."""

    def __init__(self, seats: Seats) -> None:
        self._seats = seats
        self._control = control_app(seats)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._control(scope, receive, send)
            return
        path: str = scope["path"]
        canonical = CANONICAL_PATHS.get(path.lower())
        if canonical is not None and canonical != path:  # /api/Machines/InfoGatheringExport...
            path = canonical
            scope = {**scope, "path": canonical, "raw_path": canonical.encode()}
        if path.startswith(CONTROL_PREFIX):
            await self._control(scope, receive, send)
            return
        seat, entra = self._seats.route(scope)
        status_seen: dict[str, Any] = {}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen["status"] = message["status"]
            await send(message)

        try:
            await self._serve(seat, entra, path, scope, receive, counting_send)
        finally:
            if "status" in status_seen:
                seat.stats.record(path, int(status_seen["status"]))

    async def _serve(
        self, seat: Seat, entra: bool, path: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        seats = self._seats
        fault = seats.faults.check(path)
        if fault is not None and not fault.ignore_skip:  # answered before any tenant's app
            if fault.body is not None:
                response = body_response(
                    path, fault.status, fault.body, retry_after=fault.effective_retry_after
                )
            else:
                response = error_response(
                    path,
                    fault.status,
                    message=f"Injected fault: {fault.status} on {fault.path}",
                    retry_after=fault.effective_retry_after,
                )
            await response(scope, receive, send)
            return
        struck = None if fault is not None else seats.chaos.strike(path, scope.get("method", "GET"))
        app = seat.identity_app() if entra else await self._world_app(seat, path)
        if app is None:
            message = "The emulated tenant could not be built."
            await error_response(path, 500, message=message)(scope, receive, send)
        elif struck is not None:

            def service_error(status: int, message: str, retry_after: int | None) -> Any:
                return error_response(path, status, message=message, retry_after=retry_after)

            await serve_struck(struck, seats.chaos, scope, receive, send, app, service_error)
        elif fault is not None:  # ignore_skip: served as if the request had no $skip
            query = scope.get("query_string", b"").decode("latin-1")
            kept = "&".join(
                p
                for p in query.split("&")
                if p.split("=", 1)[0].lower() not in ("$skip", "%24skip")
            )
            await app({**scope, "query_string": kept.encode("latin-1")}, receive, send)
        else:
            await app(scope, receive, send)

    @staticmethod
    async def _world_app(seat: Seat, path: str) -> ASGIApp | None:
        """The tenant's app, its world built first if need be; None if that failed."""
        app = seat.app
        if app is not None:
            return app
        try:  # awaited, not a worker thread held: the pool builds a few tenants at a time
            await asyncio.wrap_future(seat.build())
        except Exception:
            _log.exception("building tenant %s for %s failed", seat.name, path)
            return None
        return seat.app
