"""The threat-feed mirrors' routes, public and unauthenticated as the published feeds are:

- ``GET /feeds/kev/known_exploited_vulnerabilities.json``
- ``GET /feeds/epss/epss_scores-current.csv.gz``: a 302 to today's dated file, as
  epss.empiricalsecurity.com answers; ``GET /feeds/epss/epss_scores-YYYY-MM-DD.csv.gz`` for a day
  up to today (a later day is 404: it is not published yet)
- ``GET /feeds/vulnrichment/archive/refs/heads/develop.zip``: the repository's archive

Each document is built once per emulated day (the clock moves by whole hours), from the CVE
catalogue and the CVEs the OT sensors list.
Imports ``feeds.mirrors``, ``feeds.paths``, ``common`` and ``world.database``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from epf_emulator.common.clock import EmulatedClock, epoch_us
from epf_emulator.feeds.mirrors import (
    FeedCve,
    OtFeedInput,
    epss_csv,
    feed_cves,
    kev_document,
    ot_feed_cves,
    vulnrichment_zip,
)
from epf_emulator.feeds.paths import FEED_PATHS
from epf_emulator.world.database import Store

__all__ = ["FeedsApi"]


class FeedsApi:
    def __init__(
        self,
        *,
        store: Store,
        clock: EmulatedClock,
        seed: int,
        incident_cve: Callable[[], str | None],
        ready: Callable[[], None],
        ot_cves: Callable[[], list[OtFeedInput]] = list,
    ) -> None:
        self._store = store
        self._clock = clock
        self._seed = seed
        self._incident_cve = incident_cve
        self._ready = ready
        self._ot_cves = ot_cves
        self._lock = threading.Lock()
        self._cves: list[FeedCve] | None = None
        self._built: dict[tuple[str, str], bytes] = {}

    def routes(self) -> list[Route]:
        return [
            Route(FEED_PATHS["kev"], self._kev, methods=["GET"]),
            Route(FEED_PATHS["epss"], self._epss_current, methods=["GET"]),
            Route("/feeds/epss/epss_scores-{day}.csv.gz", self._epss_day, methods=["GET"]),
            Route(FEED_PATHS["vulnrichment"], self._vulnrichment, methods=["GET"]),
        ]

    async def _kev(self, request: Request) -> Response:
        now = self._clock.now()
        body = await run_in_threadpool(
            self._document,
            "kev",
            f"{now:%Y-%m-%dT%H}",
            lambda cves: kev_document(cves, self._seed, epoch_us(now), self._incident_cve()),
        )
        return Response(body, media_type="application/json")

    async def _epss_current(self, request: Request) -> Response:
        return RedirectResponse(f"/feeds/epss/epss_scores-{self._clock.now():%Y-%m-%d}.csv.gz", 302)

    async def _epss_day(self, request: Request) -> Response:
        text = request.path_params["day"]
        try:
            day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            return PlainTextResponse("Not Found", status_code=404)
        if day.date() > self._clock.now().date():
            return PlainTextResponse("Not Found", status_code=404)
        body = await run_in_threadpool(
            self._document, "epss", text, lambda cves: epss_csv(cves, self._seed, day)
        )
        return Response(body, media_type="application/gzip")

    async def _vulnrichment(self, request: Request) -> Response:
        now = self._clock.now()
        body = await run_in_threadpool(
            self._document,
            "vulnrichment",
            f"{now:%Y-%m-%dT%H}",
            lambda cves: vulnrichment_zip(cves, self._seed, epoch_us(now), self._incident_cve()),
        )
        return Response(body, media_type="application/zip")

    def _document(self, feed: str, when: str, build: Callable[[list[FeedCve]], bytes]) -> bytes:
        self._ready()
        with self._lock:
            key = (feed, when)
            if key not in self._built:
                if self._cves is None:
                    catalogue = feed_cves(self._store)
                    known = {c.id for c in catalogue}
                    ot = ot_feed_cves(self._ot_cves(), known, self._seed)
                    self._cves = catalogue + ot
                # One copy per feed: an earlier day's is not asked for again.
                self._built = {k: v for k, v in self._built.items() if k[0] != feed}
                self._built[key] = build(self._cves)
            return self._built[key]
