"""What a run collects: every configured source, and for each the datasets it asks for, as the
registry (``tables.datasets``) declares them, with the function that fetches each.

May import ``config``, ``sources``, ``transforms`` and ``tables``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from endpoint_forensics.config import Settings
from endpoint_forensics.sources import Fetched
from endpoint_forensics.tables import RUNS
from endpoint_forensics.tables.datasets import DatasetSpec, SourceKind, spec_of
from endpoint_forensics.transforms.compat import COMPAT

__all__ = ["Fetch", "Source", "fetch_function", "sources_of", "tables_written"]

# A dataset function: a context in, units out, the dataset's new cursor returned at the end.
Fetch = Callable[[Any], Fetched]


def fetch_function(spec: DatasetSpec) -> Fetch:
    """The function of ``endpoint_forensics.sources`` that ``spec.fetch`` names."""
    return _resolve(spec.fetch)


@cache
def _resolve(reference: str) -> Fetch:
    module, _, name = reference.partition(":")
    function: Fetch = getattr(importlib.import_module(f"endpoint_forensics.sources.{module}"), name)
    return function


@dataclass(frozen=True)
class Source:
    """One thing to collect from, as the run sees it."""

    kind: SourceKind
    name: str
    config: Any  # TenantConfig, SensorConfig, ConsoleConfig or FeedsConfig
    defender_tenant_id: str
    unit_scope: str  # the first part of its delivery unit ids
    where: dict[str, str]  # the columns that pick its rows out of a table

    @property
    def datasets(self) -> tuple[DatasetSpec, ...]:
        """The datasets the config asks for, in its order."""
        return tuple(spec_of(self.kind, name) for name in self.config.datasets)


def sources_of(settings: Settings) -> list[Source]:
    """Every source of ``settings``: Defender tenants, then IoT sensors, then consoles, then
    the threat feeds (read last: a feed's outage never delays the posture)."""
    sources = [
        Source("tenant", t.name, t, t.tenant_id, t.tenant_id, {"DefenderTenantId": t.tenant_id})
        for t in settings.tenants
    ]
    sources += [
        Source("sensor", a.name, a, a.defender_tenant_id, f"sensor:{a.name}", {"Appliance": a.name})
        for a in settings.sensors
    ]
    sources += [
        Source(
            "console", a.name, a, a.defender_tenant_id, f"console:{a.name}", {"Appliance": a.name}
        )
        for a in settings.consoles
    ]
    if settings.feeds is not None:
        sources.append(Source("feed", "feeds", settings.feeds, "", "feeds", {}))
    return sources


def tables_written(settings: Settings) -> list[str]:
    """The tables a sync of ``settings`` writes, in order of first use."""
    tables = [d.table for source in sources_of(settings) for d in source.datasets]
    tables.append(RUNS)
    if settings.output.compat:
        tables += [t for table in list(tables) for t in COMPAT.derives(table)]
    return list(dict.fromkeys(t.name for t in tables))
