"""The tenants one emulator serves: each one's seat, and its world built on first use.

Owns ``Seat``: what a tenant has from the start, cheap enough for hundreds: its name, seed,
tenant and client ids, a client secret fresh each start, its emulated clock, request counters,
rate limits (Defender's are per tenant and application, so one tenant's calls never throttle
another) and Entra identity; its client certificate is issued only once asked for (an RSA key
costs a tenth of a second). Its world (``core.tenant.Tenant``: fleet, database, exports) and
that world's app (``core.app``) are built on the first request that needs them, by a pool as
wide as the machine has cores, so a crowd of first requests builds a few tenants at a time
while every other request is served. ``Seats`` holds every seat of one start, found by tenant
id or name; tenant 0 is the home tenant: its seed is the settings' own (one tenant is the
emulator it always was), it is built at start, it alone has the IoT appliances, and it serves
what names no tenant (the managed identity, the feeds, a token of an unknown tenant). Also
``tenant_seed`` and the names (``t000``...), and the ``/_emulator/stats`` documents: one
tenant's, and for several tenants every one's, the unbuilt ones in brief (their requests,
tokens and budgets) so that asking builds nothing.

Imports only emulator modules: it shares no code with the collector.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.types import ASGIApp, Scope

from epf_emulator.common.chaos import ChaosInjector
from epf_emulator.common.clock import EmulatedClock
from epf_emulator.common.limits import FaultInjector, RateLimiter, RequestStats
from epf_emulator.common.settings import EmulatorSettings
from epf_emulator.core.app import identity_app, tenant_app
from epf_emulator.core.credentials import settings_of_this_start
from epf_emulator.core.routing import blob_tenant, entra_tenant, token_tenant
from epf_emulator.core.startup import Startup
from epf_emulator.core.tenant import Tenant, TenantAccess
from epf_emulator.identity.client_auth import (
    CERTIFICATE_FILE,
    ClientCertificate,
    load_or_create_certificate,
)
from epf_emulator.identity.entra import Identity
from epf_emulator.tvm.file_exports import BLOB_PREFIX
from epf_emulator.world.fleet import tenant_ids

__all__ = ["Seat", "Seats", "TenantCredentials", "tenant_names", "tenant_seed"]


@dataclass(frozen=True)
class TenantCredentials:
    """One tenant's name and app credentials (plain data: it crosses ``EmulatorProcess``'s
    pipe)."""

    name: str
    tenant_id: str
    client_id: str
    client_secret: str


def tenant_seed(seed: int, index: int) -> int:
    """Tenant ``index``'s seed: ``seed`` itself for tenant 0, else 31 bits of a hash of both
    (so fleets differ between tenants and each is the same at every start)."""
    if index == 0:
        return seed
    digest = hashlib.sha256(f"epf-emulator:tenant:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


def tenant_names(count: int) -> list[str]:
    """The tenants' names: ``emulated`` alone (the name a one-tenant config always had), else
    ``t000``, ``t001``... of one width, so they sort in tenant order."""
    if count == 1:
        return ["emulated"]
    width = max(3, len(str(count - 1)))
    return [f"t{index:0{width}d}" for index in range(count)]


class Seat:
    """One tenant: its credentials, clock, counters and limits now; its world once asked for."""

    def __init__(
        self,
        settings: EmulatorSettings,
        *,
        index: int,
        name: str,
        alone: bool,
        anchor: datetime,
        state_dir: Path,
        faults: FaultInjector,
        chaos: ChaosInjector,
        process: Startup,
        builder: ThreadPoolExecutor,
        certificate: ClientCertificate | None = None,
    ) -> None:
        self.index, self.name = index, name
        self.client_secret = secrets.token_urlsafe(32)
        self.settings = settings_of_this_start(settings, self.client_secret)
        self.tenant_id, self.client_id = tenant_ids(settings.seed)
        self.state_dir = state_dir
        self.clock = EmulatedClock(settings.start)
        self.stats = RequestStats()
        self.limiter = RateLimiter(settings.rate_limits, clock=self._quota_time)
        self._certificate = certificate
        self._certificate_lock = threading.Lock()
        self.identity = Identity(
            tenant_id=self.tenant_id,
            client_id=self.client_id,
            client_secret=self.client_secret,
            token_lifetime_seconds=settings.token_lifetime_seconds,
            stats=self.stats,
            certificate=self._registered_certificate,
            roles=settings.app_roles,
        )
        self._access = TenantAccess(
            self.tenant_id,
            self.client_id,
            self.clock,
            self.stats,
            self.identity,
            self.limiter,
            faults,
            chaos,
        )
        self._alone, self._anchor, self._process, self._builder = alone, anchor, process, builder
        self._lock = threading.Lock()
        self._build: Future[Tenant] | None = None
        self._timing: Startup | None = None
        self._identity_app: Starlette | None = None
        self.tenant: Tenant | None = None
        #: The tenant's app once its world is built (set after ``tenant``).
        self.app: ASGIApp | None = None

    def _quota_time(self) -> float:
        # Quotas run on the tenant's time: an advance of the clock lets that time pass for them
        # too, as a day between two syncs would on the real service.
        return time.monotonic() + self.clock.advanced_hours * 3600

    @property
    def credentials(self) -> TenantCredentials:
        return TenantCredentials(self.name, self.tenant_id, self.client_id, self.client_secret)

    # --- the client certificate ----------------------------------------------------------
    def certificate(self) -> ClientCertificate:
        """The app's client certificate, issued on the first call (kept in the state
        directory, so a restart with the same one keeps it)."""
        with self._certificate_lock:
            if self._certificate is None:
                self.state_dir.mkdir(parents=True, exist_ok=True)
                self._certificate = load_or_create_certificate(
                    self.state_dir, common_name=f"epf-emulator-{self.client_id}"
                )
            return self._certificate

    def _registered_certificate(self) -> ClientCertificate | None:
        """The certificate the token endpoint knows: none before it was issued, this start or
        an earlier one with the same state directory."""
        if self._certificate is None and (self.state_dir / CERTIFICATE_FILE).is_file():
            return self.certificate()
        return self._certificate

    # --- the world -----------------------------------------------------------------------
    def identity_app(self) -> Starlette:
        """The Entra routes alone: a token costs no world."""
        if self._identity_app is None:  # a race makes two equal apps: harmless
            self._identity_app = identity_app(self.identity)
        return self._identity_app

    def build(self) -> Future[Tenant]:
        """The tenant's world: built (in the pool) on the first call, then the same one."""
        with self._lock:
            if self._build is None:
                self._build = self._builder.submit(self._make, None, wait=True)
            return self._build

    def build_now(self, startup: Startup) -> Tenant:
        """Build the world in this thread, its posture timeline in the background (the home
        tenant, at start); ``startup`` times it."""
        with self._lock:
            built: Future[Tenant] = Future()
            built.set_result(self._make(startup, wait=False))
            self._build = built
        return built.result()

    def _make(self, timing: Startup | None, *, wait: bool) -> Tenant:
        timing = Startup() if timing is None else timing  # from the build, not its queueing
        tenant = Tenant(
            self.settings,
            access=self._access,
            anchor=self._anchor,
            state_dir=self.state_dir,
            startup=timing,
        )
        try:
            app = tenant_app(tenant)
            if wait:
                timing.serving()
                tenant.wait_ready()
        except BaseException:
            tenant.close()
            raise
        self._timing = timing
        self.tenant, self.app = tenant, app
        return tenant

    def close(self) -> None:
        """Release the world, if one was built (after the pool stopped building)."""
        with self._lock:
            build = self._build
        if build is None or not build.done() or build.cancelled() or build.exception():
            return
        build.result().close()

    # --- the stats -----------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """What the seat knows without its world: who, whether built, requests, budgets."""
        now = self.clock.now()
        return {
            "name": self.name,
            "tenant_id": self.tenant_id,
            "client_id": self.client_id,
            "seed": self.settings.seed,
            "built": self.app is not None,
            "requests": self.stats.requests(),
            "tokens_issued": self.stats.tokens_issued,
            "budgets": self.limiter.usage(),
            "clock": {
                "now": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "advanced_hours": self.clock.advanced_hours,
            },
        }

    def document(self) -> dict[str, Any]:
        """This tenant's ``/_emulator/stats`` document, its world built first if need be. One
        tenant alone: the emulator's document as it always was."""
        document = self.build().result().stats_document()
        if self._alone:
            return document
        timing = self._timing
        build = {
            "seconds": timing.serving_seconds if timing else None,
            "ready_seconds": timing.ready_seconds if timing else None,
        }
        # The process's start and peak, not this tenant's build (which is "build").
        document["process"] = self._process.document()
        return {**self.summary(), **document, "build": build}


class Seats:
    """Every tenant of one emulator start; ``home`` (tenant 0) is built by ``Emulator``."""

    def __init__(
        self,
        settings: EmulatorSettings,
        *,
        anchor: datetime,
        state_dir: Path,
        startup: Startup,
        home_certificate: ClientCertificate,
    ) -> None:
        count = settings.tenants
        self.startup = startup
        self.faults = FaultInjector(settings.faults)  # one process: faults and chaos for all
        self.chaos = ChaosInjector(settings.chaos)
        self._builder = ThreadPoolExecutor(
            max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="epf-tenant-build"
        )
        self.seats: list[Seat] = []
        for index, name in enumerate(tenant_names(count)):
            self.seats.append(
                Seat(
                    settings if index == 0 else _guest_settings(settings, index),
                    index=index,
                    name=name,
                    alone=count == 1,
                    anchor=anchor,
                    state_dir=state_dir if index == 0 else state_dir / "tenants" / name,
                    faults=self.faults,
                    chaos=self.chaos,
                    process=startup,
                    builder=self._builder,
                    certificate=home_certificate if index == 0 else None,
                )
            )
        self._by_key = {seat.tenant_id: seat for seat in self.seats}
        self._by_key.update({seat.name: seat for seat in self.seats})

    @property
    def home(self) -> Seat:
        return self.seats[0]

    def find(self, key: str) -> Seat | None:
        """The seat of a tenant id or name."""
        return self._by_key.get(key)

    def route(self, scope: Scope) -> tuple[Seat, bool]:
        """(the seat a request is for, whether it is an Entra request: ``core.routing``).
        What names no tenant of this emulator goes home, whose own checks refuse it."""
        path: str = scope["path"]
        tenant = entra_tenant(path)
        if tenant is not None:
            return self._by_key.get(tenant, self.home), True
        if len(self.seats) == 1:
            return self.home, False
        tenant = blob_tenant(path, BLOB_PREFIX) or token_tenant(scope.get("headers", ()))
        seat = self._by_key.get(tenant) if tenant else None
        return seat or self.home, False

    def advance(self, hours: float) -> None:
        """Advance every tenant's clock by ``hours``.

        Raises:
            ValueError: ``hours`` is negative or not finite.
        """
        for seat in self.seats:  # bad hours: the first refuses before any clock moved
            seat.clock.advance(hours)

    def document(self) -> dict[str, Any]:
        """``/_emulator/stats``: one tenant's document alone; with several, every tenant's
        under its id (those not built yet in brief: asking builds nothing), and the process's
        start, peak, faults and chaos."""
        if len(self.seats) == 1:
            return self.home.document()
        tenants = {
            seat.tenant_id: seat.document() if seat.app is not None else seat.summary()
            for seat in self.seats
        }
        return {
            "tenant_count": len(self.seats),
            "tenants_built": sum(1 for seat in self.seats if seat.app is not None),
            "tenants": tenants,
            "process": self.startup.document(),
            "faults": self.faults.snapshot(),
            "chaos": self.chaos.snapshot(),
        }

    def close(self) -> None:
        """Stop building and release every world built."""
        self._builder.shutdown(wait=True, cancel_futures=True)
        for seat in self.seats:
            seat.close()


def _guest_settings(settings: EmulatorSettings, index: int) -> EmulatorSettings:
    """Tenant ``index``'s settings: its own seed; the IoT appliances and the injected machine
    records stay with the home tenant."""
    return replace(
        settings,
        seed=tenant_seed(settings.seed, index),
        iot_sensors=0,
        iot_event_storms=(),
        extra_machine_records=(),
    )
