"""Run state on disk: per-source checkpoints, and the quarantine of malformed records.

Checkpoints live in ``<state dir>/tenants/<tenant>.json`` (``sensors/``, ``consoles/`` for IoT), written atomically (temp file and
rename) after every delivered unit, so a run that stops anywhere resumes at the next unit.
Per dataset they hold: the snapshot in progress (its run id, snapshot time, delivered units and
the source's resume token), the time of the last complete snapshot, and the dataset's cursor.
A quarantined record is kept whole, with its reason, in
``<state dir>/quarantine/<run id>/<tenant>.<dataset>.jsonl``. Imports ``contracts`` only.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from endpoint_forensics.contracts import Reject
from endpoint_forensics.errors import EpfError

__all__ = ["Quarantine", "TenantState"]

_VERSION = 1


class TenantState:
    """The checkpoint file of one tenant; ``dataset(name)`` is a mutable dict, ``save`` persists."""

    def __init__(self, state_dir: Path, tenant: str, *, folder: str = "tenants") -> None:
        # One folder per kind of source: tenants, sensors, consoles.
        self.path = state_dir / folder / f"{tenant}.json"
        self._data: dict[str, Any] = {"version": _VERSION, "datasets": {}}
        if self.path.exists():
            try:
                loaded = orjson.loads(self.path.read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                raise EpfError(
                    f"checkpoint file {str(self.path)!r} is unreadable ({exc}); move it away to "
                    "start the tenant's datasets afresh"
                ) from exc
            if isinstance(loaded, dict) and loaded.get("version") == _VERSION:
                self._data = loaded

    def dataset(self, name: str) -> dict[str, Any]:
        datasets: dict[str, dict[str, Any]] = self._data["datasets"]
        return datasets.setdefault(name, {})

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        with partial.open("wb") as fh:
            fh.write(orjson.dumps(self._data, option=orjson.OPT_INDENT_2, default=_encode))
            fh.flush()
            os.fsync(fh.fileno())
        partial.replace(self.path)


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")


class Quarantine:
    def __init__(self, state_dir: Path, run_id: str) -> None:
        self.folder = state_dir / "quarantine" / run_id
        self.count = 0

    def add(self, tenant: str, dataset: str, rejects: list[Reject]) -> Path | None:
        """Append ``rejects`` to the dataset's quarantine file; return its path."""
        if not rejects:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{tenant}.{dataset}.jsonl"
        with path.open("ab") as fh:
            for reject in rejects:
                line = {"reason": reject.reason, "record": reject.record}
                fh.write(orjson.dumps(line, default=str) + b"\n")
        self.count += len(rejects)
        return path
