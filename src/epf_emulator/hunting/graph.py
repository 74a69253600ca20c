"""The emulated Microsoft Graph security API: ``POST /v1.0/security/runHuntingQuery``.

Owns the Graph flavour of advanced hunting (defender-apis.md B.3): the ``Query`` and optional
``Timespan`` body (``P30D``, ``start/end``, ``P30D/end``, ``start/P30D``, ``start``; default the
last 30 days, never more), the ``schema``/``results`` response with its ``@odata.context``,
silent truncation at Graph's own row limit, Graph's error dialect, and its answer to a query
that runs past its time limit: ``504`` with code ``UnknownError`` and an empty message
(microsoft-graph-docs issue 19954). It shares the ``advanced_hunting`` rate limit with the MDE
endpoint (``mde.machines``), runs queries with ``hunting.advanced`` and needs a Graph token with
``ThreatHunting.Read.All``.

Imports only ``common`` (clock, limits, responses), ``hunting.advanced``, ``identity.entra`` and
``world.database`` of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from epf_emulator.common.clock import EmulatedClock
from epf_emulator.common.limits import RateLimiter
from epf_emulator.common.responses import GRAPH_CONTENT_TYPE, graph_error, json_response, read_json
from epf_emulator.hunting.advanced import (
    HuntingQueryError,
    HuntingResult,
    HuntingService,
    HuntingTimedOut,
)
from epf_emulator.identity.entra import Identity
from epf_emulator.world.database import RETENTION

__all__ = ["GraphApi", "TimespanError", "parse_timespan"]

_CONTEXT = "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.security.huntingQueryResults"
_ROLES = ("ThreatHunting.Read.All",)
_DURATION = re.compile(
    r"^P(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


class TimespanError(ValueError):
    """The ``Timespan`` is not one of the forms Graph documents."""


class GraphApi:
    """The Graph hunting route over one tenant's hunting tables."""

    def __init__(
        self,
        *,
        identity: Identity,
        limiter: RateLimiter,
        hunting: HuntingService,
        clock: EmulatedClock,
    ) -> None:
        self._identity = identity
        self._limiter = limiter
        self._hunting = hunting
        self._clock = clock

    def routes(self) -> list[Route]:
        return [Route("/v1.0/security/runHuntingQuery", self._run_query, methods=["POST"])]

    async def _run_query(self, request: Request) -> Response:
        refused = self._identity.authorize(request, dialect="graph", roles=_ROLES)
        if refused is not None:
            return refused
        throttled = self._limiter.acquire("advanced_hunting")
        if throttled is not None:
            retry = {"Retry-After": str(throttled.retry_after)}
            return graph_error(429, throttled.message, code="TooManyRequests", headers=retry)
        body = await read_json(request)
        if not isinstance(body, dict):
            return graph_error(400, "The body must be a JSON object with a 'Query' property.")
        # Graph matches JSON property names case-insensitively.
        fields = {str(key).lower(): value for key, value in body.items()}
        query, timespan = fields.get("query"), fields.get("timespan")
        if not isinstance(query, str):
            return graph_error(400, "The 'Query' property is required and must be a string.")
        now = self._clock.now()  # the emulated clock: advance() moves the window too
        try:
            start, end = parse_timespan(timespan, now=now)
        except TimespanError as exc:
            return graph_error(400, str(exc))
        try:
            result: HuntingResult = await self._hunting.run(
                "graph", query, start=start, end=end, now=now
            )
        except HuntingQueryError as exc:
            return graph_error(400, str(exc))
        except HuntingTimedOut:
            # What Graph's gateway answers after about 3 minutes: no message at all.
            return graph_error(504, "", code="UnknownError")
        schema = orjson.dumps([{"name": name, "type": kind} for name, kind in result.columns])
        payload = (
            b'{"@odata.context":'
            + orjson.dumps(_CONTEXT)
            + b',"schema":'
            + schema
            + b',"results":['
            + b",".join(result.rows)
            + b"]}"
        )
        return json_response(payload, content_type=GRAPH_CONTENT_TYPE)


def parse_timespan(value: Any, *, now: datetime) -> tuple[datetime, datetime]:
    """The ``[start, end]`` a Graph ``Timespan`` selects, clipped to the last 30 days.

    Raises:
        TimespanError: not a string of one of the documented forms, or start after end.
    """
    oldest = now - RETENTION
    if value is None or value == "":
        return oldest, now
    if not isinstance(value, str):
        raise TimespanError(
            f"Invalid Timespan {value!r}: expected an ISO 8601 duration or interval, e.g. 'P30D'."
        )
    text = value.strip()
    if "/" in text:
        first, _, second = text.partition("/")
        if first.startswith("P"):
            end = _instant(second, value)
            start = end - _duration(first, value)
        elif second.startswith("P"):
            start = _instant(first, value)
            end = start + _duration(second, value)
        else:
            start, end = _instant(first, value), _instant(second, value)
    elif text.startswith("P"):
        start, end = now - _duration(text, value), now
    else:
        start, end = _instant(text, value), now
    if start > end:
        raise TimespanError(f"Invalid Timespan {value!r}: the start is after the end.")
    return max(start, oldest), min(end, now)


def _duration(text: str, original: str) -> timedelta:
    match = _DURATION.match(text)
    if match is None or text in ("P", "PT") or text.endswith("T"):
        raise TimespanError(
            f"Invalid Timespan {original!r}: {text!r} is not an ISO 8601 duration such as 'P30D' or 'PT12H'."
        )
    parts = {k: float(v) for k, v in match.groupdict().items() if v is not None}
    return timedelta(**parts)


def _instant(text: str, original: str) -> datetime:
    try:
        instant = datetime.fromisoformat(text.strip())
    except ValueError:
        message = f"Invalid Timespan {original!r}: {text!r} is not an ISO 8601 date and time."
        raise TimespanError(message) from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return instant
