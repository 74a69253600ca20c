"""The emulated OData collections beyond machines: AV health, recommendations, vulnerabilities.

Owns ``GET /api/deviceavinfo`` (B.2: ``Machine.Read.All``; default page size 20, ``$top`` at
most 10,000, ``$skip``, ``$filter`` on the documented fields; 30/min), ``GET
/api/recommendations`` (B.5.7: ``SecurityRecommendation.Read.All``; ``$top`` <= 10,000) and
``GET /api/vulnerabilities`` (B.5.8: ``Vulnerability.Read.All``; ``$top`` <= 8,000), each
with its own rate limit. With ``$top`` a page has no ``@odata.nextLink`` (defender-apis.md
F: reported for ``/api/deviceavinfo``), so a client pages with ``$skip`` itself; without it,
a page of the collection's default size (deviceavinfo 20, as documented; the others their
``$top`` cap, a guess) and a ``$skip`` next link that keeps ``$filter``. Records are as of the
emulated now (``world.av_health``, ``world.catalog_records`` through the tenant), cached per
instant; ``$filter`` is ``mde.odata``'s.

Imports only ``common`` (clock, limits, responses), ``identity.entra`` and ``mde.odata`` of the
emulator: it shares no code with the collector.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from epf_emulator.common.clock import EmulatedClock
from epf_emulator.common.limits import RateLimiter
from epf_emulator.common.responses import json_response, mde_error
from epf_emulator.identity.entra import Identity
from epf_emulator.mde.odata import ODataFilterError, compile_filter, non_negative

__all__ = ["PATHS", "CatalogApi", "Collection"]

_S, _N, _T, _B = "Edm.String", "Edm.Int64", "Edm.DateTimeOffset", "Edm.Boolean"
_AV_FIELDS = {
    **dict.fromkeys(
        "machineId computerDnsName osKind osPlatform osVersion avMode avSignatureVersion"
        " avEngineVersion avPlatformVersion quickScanResult quickScanError fullScanResult"
        " fullScanError avIsSignatureUpToDate avIsEngineUpToDate avIsPlatformUpToDate".split(),
        _S,
    ),
    "rbacGroupId": _N,
}
_RECOMMENDATION_FIELDS = {
    **dict.fromkeys(
        "id productName vendor recommendedVersion recommendationCategory subCategory"
        " remediationType recommendedProgram recommendedVendor status".split(),
        _S,
    ),
    "severityScore": _N,
}
_CVE_FIELDS = {
    **dict.fromkeys("id name description severity".split(), _S),
    "cvssV3": _N,
    "publishedOn": _T,
    "updatedOn": _T,
}
_QUERY_OPTIONS = frozenset({"$top", "$skip", "$filter"})
_COLLECTIONS = ("deviceavinfo", "recommendations", "vulnerabilities")
#: Every path this module serves, for case-insensitive routing (the service ignores case).
PATHS = tuple(f"{prefix}/{name}" for prefix in ("/api", "/api/v1.0") for name in _COLLECTIONS)


@dataclass(frozen=True)
class Collection:
    path: str
    context: str
    entity: str
    roles: tuple[str, ...]
    limit: str
    max_top: int
    default_page: int
    fields: dict[str, str]
    records: Callable[[int], list[dict[str, Any]]]  # as of an instant (epoch µs)


class CatalogApi:
    """The three collections over one tenant's posture."""

    def __init__(
        self,
        *,
        identity: Identity,
        limiter: RateLimiter,
        clock: EmulatedClock,
        av: Callable[[int], list[dict[str, Any]]],
        recommendations: Callable[[int], list[dict[str, Any]]],
        vulnerabilities: Callable[[int], list[dict[str, Any]]],
        ready: Callable[[], None],
    ) -> None:
        self._identity = identity
        self._limiter = limiter
        self._clock = clock
        self._ready = ready
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, int, str | None], list[dict[str, Any]]] = OrderedDict()
        self.collections = (
            Collection(
                "deviceavinfo",
                "DeviceAvInfo",
                "microsoft.windowsDefenderATP.api.DeviceAvInfo",
                ("Machine.Read.All", "Machine.ReadWrite.All"),
                "deviceavinfo",
                10_000,
                20,
                _AV_FIELDS,
                av,
            ),
            Collection(
                "recommendations",
                "Recommendations",
                "microsoft.windowsDefenderATP.api.PublicRecommendation",
                ("SecurityRecommendation.Read.All",),
                "recommendations",
                10_000,
                10_000,
                _RECOMMENDATION_FIELDS,
                recommendations,
            ),
            Collection(
                "vulnerabilities",
                "Vulnerabilities",
                "microsoft.windowsDefenderATP.api.PublicVulnerability",
                ("Vulnerability.Read.All",),
                "vulnerabilities",
                8_000,
                8_000,
                _CVE_FIELDS,
                vulnerabilities,
            ),
        )
        assert tuple(c.path for c in self.collections) == _COLLECTIONS

    def routes(self) -> list[Route]:
        routes = []
        for prefix in ("/api", "/api/v1.0"):
            for collection in self.collections:
                routes.append(
                    Route(f"{prefix}/{collection.path}", self._handler(collection), methods=["GET"])
                )
        return routes

    def _handler(self, collection: Collection) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            return await self._list(request, collection)

        return handle

    async def _list(self, request: Request, collection: Collection) -> Response:
        refused = self._identity.authorize(request, dialect="mde", roles=collection.roles)
        if refused is not None:
            return refused
        throttled = self._limiter.acquire(collection.limit)
        if throttled is not None:
            retry = {"Retry-After": str(throttled.retry_after)}
            return mde_error(429, throttled.message, code="TooManyRequests", headers=retry)
        params = request.query_params
        unknown = sorted(k for k in params if k.startswith("$") and k not in _QUERY_OPTIONS)
        if unknown:
            return mde_error(
                400, f"The query parameter '{unknown[0]}' is not supported.", code="ODataError"
            )
        try:
            top = non_negative(params.get("$top"), "$top")
            skip = non_negative(params.get("$skip"), "$skip") or 0
        except ValueError as exc:
            return mde_error(400, str(exc), code="BadRequest")
        if top is not None and top > collection.max_top:
            message = (
                f"The limit of '{collection.max_top}' for Top query has been exceeded."
                f" The value from the incoming request is '{top}'."
            )
            return mde_error(400, message, code="BadRequest")
        filter_text = params.get("$filter")
        await run_in_threadpool(self._ready)
        at = self._clock.now_us()
        try:
            matched = await run_in_threadpool(self._matching, collection, at, filter_text)
        except ODataFilterError as exc:
            return mde_error(400, f"Invalid filter clause: {exc}", code="ODataError")
        page_size = collection.default_page if top is None else top
        page = matched[skip : skip + page_size]
        base = str(request.base_url).rstrip("/")
        body: dict[str, Any] = {
            "@odata.context": f"{base}/api/$metadata#{collection.context}",
            "value": page,
        }
        if top is None and skip + page_size < len(matched):
            parts = [f"$skip={skip + page_size}"]
            if filter_text is not None:
                parts.append("$filter=" + quote(filter_text, safe="'(),:/"))
            body["@odata.nextLink"] = f"{base}{request.url.path}?{'&'.join(parts)}"
        return json_response(await run_in_threadpool(orjson.dumps, body))

    def _matching(
        self, collection: Collection, at: int, filter_text: str | None
    ) -> list[dict[str, Any]]:
        key = (collection.path, at, filter_text)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        records = self._all(collection, at)
        if filter_text is not None:
            predicate = compile_filter(
                filter_text,
                fields=collection.fields,
                other_fields=frozenset(records[0]) - set(collection.fields)
                if records
                else frozenset(),
                entity=collection.entity,
            )
            records = [r for r in records if predicate(r)]
        with self._lock:
            self._cache[key] = records
            while len(self._cache) > 24:
                self._cache.popitem(last=False)
        return records

    def _all(self, collection: Collection, at: int) -> list[dict[str, Any]]:
        key = (collection.path, at, None)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        records = collection.records(at)
        with self._lock:
            self._cache[key] = records
        return records
