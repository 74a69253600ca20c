"""Sources: one function per dataset, each yielding resumable units of batches for one table.

A dataset function takes a context (``FetchContext`` for a Defender tenant, ``SensorContext``
or ``ConsoleContext`` for a Defender for IoT appliance, ``FeedContext`` for a threat feed), yields ``contracts.Unit`` objects and
returns the dataset's new cursor (None: no cursor, or keep the last one). The pipeline stores
that cursor only once every unit is delivered. Sources know nothing of sinks. Datasets are
declared in ``tables.datasets``. May import ``http``, ``config``, ``contracts``, ``errors`` and
``tables``.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from endpoint_forensics.config import ConsoleConfig, FeedsConfig, SensorConfig, TenantConfig
from endpoint_forensics.contracts import Unit
from endpoint_forensics.http.client import ApiClient
from endpoint_forensics.http.ratelimit import RateBudget

__all__ = [
    "ApplianceContext",
    "ConsoleContext",
    "Cursor",
    "FeedContext",
    "FetchContext",
    "Fetched",
    "SensorContext",
]

Cursor = dict[str, Any]
# What a dataset function is: units out, and the dataset's new cursor returned at the end.
Fetched = Generator[Unit, None, Cursor | None]


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
    # What may be missing from the snapshot and why, {start, end, reason}: e.g. a collection
    # whose paging the service repeated, so the walk stopped early.
    gaps: list[dict[str, Any]] = field(default_factory=list)

    def budget(self, name: str) -> RateBudget:
        return self.budgets[name]


@dataclass
class ApplianceContext:
    """What a Defender for IoT dataset function gets: the appliance's client and budget, and
    the dataset's state. ``SensorContext`` and ``ConsoleContext`` add the appliance's config."""

    client: ApiClient
    budget: RateBudget
    now: datetime  # the snapshot time of this run
    cursor: dict[str, Any] | None = None  # the dataset's cursor from the last complete run
    appliance: SensorConfig | ConsoleConfig = field(kw_only=True)
    # Time ranges that may have lost records and could not be closed: {start, end, reason}.
    gaps: list[dict[str, Any]] = field(default_factory=list)

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET ``path`` (``/api/v1/...`` or ``/external/...``) of the appliance; decoded JSON."""
        return self.client.request_json(
            "GET", self.appliance.url + path, scope="", budget=self.budget, params=params
        )


@dataclass
class SensorContext(ApplianceContext):
    """A Defender for IoT OT sensor's dataset function gets this."""

    appliance: SensorConfig = field(kw_only=True)


@dataclass
class ConsoleContext(ApplianceContext):
    """A Defender for IoT management console's dataset function gets this."""

    appliance: ConsoleConfig = field(kw_only=True)


@dataclass
class FeedContext:
    """What a threat feed's dataset function gets: a client that downloads (no credentials:
    the feeds are public), where each feed is read, and the dataset's cursor (the last good
    copy's version)."""

    client: ApiClient
    feeds: FeedsConfig
    now: datetime  # the snapshot time of this run
    work_dir: Path  # scratch space for downloads, removed after the run
    cursor: dict[str, Any] | None = None
    gaps: list[dict[str, Any]] = field(default_factory=list)
