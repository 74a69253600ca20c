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

from endpoint_forensics.config import TenantConfig
from endpoint_forensics.http import ApiClient
from endpoint_forensics.ratelimit import RateBudget

__all__ = ["FetchContext"]


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

    def budget(self, name: str) -> RateBudget:
        return self.budgets[name]
