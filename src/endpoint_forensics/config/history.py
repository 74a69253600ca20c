"""The ``[history]`` section: how the snapshot datasets keep their history (docs/history.md).

``mode`` per dataset: ``changes`` writes only what changed since the destination's last
snapshot (a ``Removed`` row when an item goes, every row again at each baseline), ``snapshot``
writes every row every time. Only datasets whose table is change-tracked (``Table.changes``)
take a mode. Imports only the dataset registry.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from endpoint_forensics.config.models import Dataset, Model
from endpoint_forensics.tables.datasets import spec_of

__all__ = ["DEFAULT_BASELINE_DAYS", "DEFAULT_HISTORY_MODE", "HistoryConfig", "HistoryMode"]

HistoryMode = Literal["snapshot", "changes"]
#: What a change-tracked dataset keeps unless configured (docs/history.md has the measurement).
DEFAULT_HISTORY_MODE: HistoryMode = "changes"
#: Days between full baselines. Measured (docs/history.md): 14 writes 6.2 times fewer rows than
#: snapshot mode where 7 writes 3.8 times fewer, and leaves 17 days of missed runs before the
#: functions' 31-day look-back finds no full snapshot (28 would leave 3).
DEFAULT_BASELINE_DAYS = 14.0


class HistoryConfig(Model):
    # Days between full baselines in change-only mode; the KQL functions look back 31 days.
    baseline_days: float = Field(default=DEFAULT_BASELINE_DAYS, gt=0, le=30)
    mode: dict[Dataset, HistoryMode] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _tracked_only(self) -> HistoryConfig:
        for dataset in self.mode:
            if spec_of("tenant", dataset).table.changes is None:
                raise ValueError(
                    f"mode.{dataset}: {dataset} keeps no change-only history (it is not a "
                    "snapshot of device state); leave it out"
                )
        return self

    def mode_for(self, dataset: str) -> HistoryMode | None:
        """The mode of a tenant dataset; None when its table keeps no change-only history."""
        if spec_of("tenant", dataset).table.changes is None:
            return None
        return self.mode.get(dataset, DEFAULT_HISTORY_MODE)
