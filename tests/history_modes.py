"""The history modes tests configure: ``EVERY_ROW`` keeps every change-tracked dataset in
snapshot mode (every row, every run), for tests whose subject is delivery, not history."""

from __future__ import annotations

from endpoint_forensics.tables.datasets import DATASETS

EVERY_ROW: dict[str, str] = {
    d.name: "snapshot" for d in DATASETS if d.kind == "tenant" and d.table.changes is not None
}
#: The same as a ``[history]`` TOML section.
EVERY_ROW_TOML = "[history.mode]\n" + "".join(f'{name} = "snapshot"\n' for name in EVERY_ROW)
