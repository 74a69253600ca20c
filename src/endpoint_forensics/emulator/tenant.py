"""One emulated Defender tenant: its fleet, tables, identity, limits, faults and counters.

Owns building everything a running emulator serves from (``EmulatorSettings`` plus the start
time and the per-start client secret) and the ``/_emulator/stats`` document, whose ``truth``
is computed from the emulator's own data: the machine records it serves and SQL over its own
hunting tables, never through any collector logic.

Imports only emulator modules and nothing of the collector.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .fleet import Fleet, build_fleet, tenant_ids
from .identity import Identity
from .limits import FaultInjector, RateLimiter, RequestStats
from .settings import EmulatorSettings
from .store import Store
from .tvm import build_assessments

__all__ = ["Tenant"]


class Tenant:
    """Everything one emulator start serves from; ``close`` releases the database."""

    def __init__(self, settings: EmulatorSettings, *, anchor: datetime, client_secret: str) -> None:
        self.settings = settings
        self.anchor = anchor
        self.tenant_id, self.client_id = tenant_ids(settings.seed)
        self.fleet: Fleet = build_fleet(settings.devices, settings.seed, anchor)
        # Injected records are appended verbatim (copied, so callers cannot change them later).
        self.records: list[dict[str, Any]] = self.fleet.machine_records() + [
            dict(record) for record in settings.extra_machine_records
        ]
        assessments = build_assessments(self.fleet.devices, settings.seed, anchor)
        self.store = Store(self.fleet.devices, assessments, anchor)
        self.stats = RequestStats()
        self.identity = Identity(
            tenant_id=self.tenant_id,
            client_id=self.client_id,
            client_secret=client_secret,
            token_lifetime_seconds=settings.token_lifetime_seconds,
            stats=self.stats,
        )
        self.limiter = RateLimiter(settings.rate_limits)
        self.faults = FaultInjector(settings.faults)

    def close(self) -> None:
        self.store.close()

    def stats_document(self, now: datetime | None = None) -> dict[str, Any]:
        """The ``/_emulator/stats`` JSON: ground truth per table, request counts, fleet."""
        now = now or datetime.now(UTC)
        served_ids = {r["id"] for r in self.records if isinstance(r.get("id"), str) and r["id"]}
        return {
            "truth": {
                "EPF_Devices_CL": len(served_ids),
                "EPF_AgentHealth_CL": self.store.agent_health_truth(now),
                # One row per dataset per run: machines and agent health.
                "EPF_Runs_CL": 2,
            },
            "requests": self.stats.requests(),
            "tokens_issued": self.stats.tokens_issued,
            "faults": self.faults.snapshot(),
            "fleet": {
                "devices": len(self.fleet.devices),
                "seed": self.settings.seed,
                "anchor": self.anchor.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "by_platform": self.fleet.by_platform(),
                "extra_machine_records": len(self.settings.extra_machine_records),
                "hunting_rows": self.store.row_counts(),
            },
        }
