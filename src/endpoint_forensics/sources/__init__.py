"""Sources: one function per dataset, each yielding resumable units of batches for one table.

A dataset function takes a ``FetchContext`` and yields ``contracts.Unit`` objects. Sources know
nothing of sinks. May import ``http``, ``ratelimit``, ``config``, ``contracts`` and ``tables``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from endpoint_forensics.config import ConsoleConfig, SensorConfig, TenantConfig
from endpoint_forensics.http import ApiClient
from endpoint_forensics.ratelimit import RateBudget

__all__ = ["ApplianceContext", "FetchContext"]


@dataclass
class FetchContext:
    """What a dataset function gets: the tenant's client and budgets, and its own state."""

    client: ApiClient
    tenant: TenantConfig
    budgets: Mapping[str, RateBudget]
    now: datetime  # the snapshot time of this run
    work_dir: Path  # scratch space for downloads, removed after the run
    resume: dict[str, Any] | None = None  # token after the last unit delivered of this snapshot
    cursor: dict[str, Any] | None = None  # the dataset's cursor from the last complete run
    device_count: int | None = None  # fleet size, when known (chooses JSON pages or files)
    new_cursor: dict[str, Any] | None = field(default=None)  # set by the source when it finishes
    # What may be missing from the snapshot and why, {start, end, reason}: e.g. a collection
    # whose paging the service repeated, so the walk stopped early.
    gaps: list[dict[str, Any]] = field(default_factory=list)

    def budget(self, name: str) -> RateBudget:
        return self.budgets[name]


@dataclass
class ApplianceContext:
    """What a Defender for IoT dataset function gets: the appliance, its client, its state."""

    client: ApiClient
    appliance: SensorConfig | ConsoleConfig
    budget: RateBudget
    now: datetime  # the snapshot time of this run
    cursor: dict[str, Any] | None = None  # the dataset's cursor from the last complete run
    new_cursor: dict[str, Any] | None = field(default=None)  # set by the source when it finishes
    # Time ranges that may have lost records and could not be closed: {start, end, reason}.
    gaps: list[dict[str, Any]] = field(default_factory=list)

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET ``path`` (``/api/v1/...`` or ``/external/...``) of the appliance; decoded JSON."""
        return self.client.request_json(
            "GET", self.appliance.url + path, scope="", budget=self.budget, params=params
        )
