"""The emulated tenant scores: ``GET /api/exposureScore`` and ``GET /api/configurationScore``.

As documented (defender-apis.md B.5.8): ``Score.Read.All``; one object,
``{"@odata.context": ".../$metadata#ExposureScore/$entity", "time": ..., "score": ...}``, with
a seven-digit fractional second as Defender writes it. No rate limit is documented (B.6): the
bucket is the unstated collections' one. How Defender computes the scores is not documented
either; the emulator derives both from the recommendations as of the emulated now, so they move
as devices are patched or reconfigured: the exposure score (0-100, lower is better) is the sum
of the active recommendations' ``exposureImpact``, capped at 100, and the Secure Score for
Devices is 1,000 less ten times the sum of their ``configScoreImpact``.

Imports only ``common`` (clock, limits, responses) and ``identity.entra`` of the emulator: it
shares no code with the collector.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from epf_emulator.common.clock import EmulatedClock
from epf_emulator.common.limits import RateLimiter
from epf_emulator.common.responses import json_response, mde_error
from epf_emulator.identity.entra import Identity

__all__ = ["SCORE_PATHS", "ScoresApi", "tenant_scores"]

#: path under /api -> the entity its @odata.context names.
SCORE_PATHS = {"exposureScore": "ExposureScore", "configurationScore": "ConfigurationScore"}
_ROLES = ("Score.Read.All",)


def tenant_scores(recommendations: list[dict[str, Any]]) -> dict[str, float]:
    """Both scores (by path) from the recommendations as of one instant."""
    active = [r for r in recommendations if r.get("status") == "Active"]
    exposure = min(100.0, sum(float(r.get("exposureImpact") or 0.0) for r in active))
    config_loss = sum(float(r.get("configScoreImpact") or 0.0) for r in active)
    return {
        "exposureScore": round(exposure, 6),
        "configurationScore": round(max(0.0, 1000.0 - 10.0 * config_loss), 6),
    }


class ScoresApi:
    """Both score endpoints over one tenant's recommendations."""

    def __init__(
        self,
        *,
        identity: Identity,
        limiter: RateLimiter,
        clock: EmulatedClock,
        recommendations: Callable[[int], list[dict[str, Any]]],
        ready: Callable[[], None],
    ) -> None:
        self._identity = identity
        self._limiter = limiter
        self._clock = clock
        self._recommendations = recommendations
        self._ready = ready

    def routes(self) -> list[Route]:
        return [
            Route(f"{prefix}/{path}", self._handler(path), methods=["GET"])
            for prefix in ("/api", "/api/v1.0")
            for path in SCORE_PATHS
        ]

    def _handler(self, path: str) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            return await self._score(request, path)

        return handle

    async def _score(self, request: Request, path: str) -> Response:
        refused = self._identity.authorize(request, dialect="mde", roles=_ROLES)
        if refused is not None:
            return refused
        throttled = self._limiter.acquire("scores")
        if throttled is not None:
            retry = {"Retry-After": str(throttled.retry_after)}
            return mde_error(429, throttled.message, code="TooManyRequests", headers=retry)
        await run_in_threadpool(self._ready)
        at = self._clock.now_us()
        records = await run_in_threadpool(self._recommendations, at)
        base = str(request.base_url).rstrip("/")
        body = {
            "@odata.context": f"{base}/api/$metadata#{SCORE_PATHS[path]}/$entity",
            "time": _seven_digits(at),
            "score": tenant_scores(records)[path],
        }
        return json_response(orjson.dumps(body))


def _seven_digits(at_us: int) -> str:
    """``2019-12-03T07:23:53.2804990Z``: Defender's seven fractional digits."""
    moment = datetime.fromtimestamp(at_us / 1_000_000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
