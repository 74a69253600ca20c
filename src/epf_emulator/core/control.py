"""The emulator's control plane: ground truth, the clock, and its own forensic answer (no auth).

Owns ``GET /_emulator/stats`` (``core.seats``: one tenant's document; with several tenants
every one's, and ``?tenant=<id or name>`` one tenant's, its world built first if need be),
``POST /_emulator/advance?hours=H`` (every tenant's clock, or one tenant's with ``tenant``)
and ``GET /_emulator/posture?device=ID&at=ISO8601[&tenant=]``, the emulator's own answer of
docs/forensics.md (``world.posture_at``), of the home tenant unless another is named. An
unknown tenant is 404 in the control plane's own error shape.

Imports only emulator modules: it shares no code with the collector.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from epf_emulator.common.clock import CLOCK_EARLIEST, TIMELINE_END
from epf_emulator.common.responses import json_response, mde_error
from epf_emulator.core.app import ERROR_HANDLERS
from epf_emulator.core.seats import Seat, Seats

__all__ = ["CONTROL_PREFIX", "control_app"]

CONTROL_PREFIX = "/_emulator/"
_JSON = "application/json; charset=utf-8"


def control_app(seats: Seats) -> Starlette:
    """The control plane's routes over every tenant of ``seats``."""

    def seat_of(request: Request) -> Seat | Response:
        key = request.query_params.get("tenant")
        if key is None:
            return seats.home
        return seats.find(key.strip()) or _control_error(404, f"No tenant {key} here.")

    async def stats(request: Request) -> Response:
        seat = seat_of(request)
        if isinstance(seat, Response):
            return seat
        if "tenant" in request.query_params:
            document = await run_in_threadpool(seat.document)
        else:
            document = await run_in_threadpool(seats.document)
        return json_response(document, content_type=_JSON)

    async def advance(request: Request) -> Response:
        seat = seat_of(request)
        if isinstance(seat, Response):
            return seat
        try:
            hours = float(request.query_params.get("hours", ""))
            if "tenant" in request.query_params:
                await run_in_threadpool(seat.clock.advance, hours)
            else:
                await run_in_threadpool(seats.advance, hours)
        except ValueError:
            message = "The query parameter 'hours' must be a number >= 0."
            return mde_error(400, message, code="BadRequest")
        body = {
            "now": seat.clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "advanced_hours": seat.clock.advanced_hours,
        }
        return json_response(body, content_type=_JSON)

    async def posture(request: Request) -> Response:
        seat = seat_of(request)
        if isinstance(seat, Response):
            return seat
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
        tenant = await run_in_threadpool(lambda: seat.build().result())
        document = await run_in_threadpool(tenant.posture_document, device, at)
        if document is None:
            return _control_error(404, f"No device {device} onboarded at {at:%Y-%m-%dT%H:%M:%SZ}.")
        return json_response(document, content_type=_JSON)

    routes = [
        Route(f"{CONTROL_PREFIX}stats", stats, methods=["GET"]),
        Route(f"{CONTROL_PREFIX}advance", advance, methods=["POST"]),
        Route(f"{CONTROL_PREFIX}posture", posture, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers=ERROR_HANDLERS)


def _instant(text: str) -> datetime | None:
    """An ISO 8601 instant (``Z`` or an offset; a naive one is UTC), or None."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _control_error(status: int, message: str) -> Response:
    return json_response(
        {"error": {"status": status, "message": message}}, status=status, content_type=_JSON
    )
