"""Run state on disk: typed per-source checkpoints, and the quarantine of malformed records.

Checkpoints live in ``<state dir>/tenants/<tenant>.json`` (``sensors/``, ``consoles/`` for IoT), written atomically (temp file and
rename) after every delivered unit, so a run that stops anywhere resumes at the next unit.
Per dataset they hold: the snapshot in progress (its run id, snapshot time, delivered units and
the source's resume token), the time of the last complete snapshot, and the dataset's cursor.
``DatasetCheckpoint`` is the one way the run changes them: ``is_due``, ``begin``, ``advance``
(after every sink holds a unit), ``finish`` (with the source's final cursor) and ``abandon``.
A quarantined record is kept whole, with its reason, in
``<state dir>/quarantine/<run id>/<tenant>.<dataset>.jsonl``. May import ``contracts`` and
``errors``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from endpoint_forensics.contracts import Reject
from endpoint_forensics.errors import EpfError

__all__ = ["CheckpointFile", "DatasetCheckpoint", "Quarantine", "Snapshot"]

_VERSION = 1
Cursor = dict[str, Any]


@dataclass
class Snapshot:
    """A snapshot in progress: its run, its time, and how far delivery got."""

    run_id: str
    time: datetime  # stamped as SnapshotTime and TimeGenerated on every row of it
    units: int = 0  # units every sink holds
    resume: Cursor | None = None  # the source's token after the last of them


@dataclass
class DatasetCheckpoint:
    """Where one dataset of one source stands. Each method that changes it saves it, so a run
    that stops anywhere resumes at the next undelivered unit."""

    snapshot: Snapshot | None = None
    last_success: datetime | None = None  # the time of the last complete snapshot
    last_rows: int | None = None
    cursor: Cursor | None = None  # the dataset's cursor after the last complete snapshot
    _save: Callable[[], None] = field(default=lambda: None, repr=False, compare=False)

    def is_due(self, now: datetime, interval_hours: float) -> bool:
        """Whether a snapshot is due: always with no interval, after a failure, or with one
        in progress; else once ``interval_hours`` have passed since the last one."""
        if not interval_hours or self.last_success is None or self.snapshot is not None:
            return True
        return now - self.last_success >= timedelta(hours=interval_hours)

    def begin(self, run_id: str, now: datetime) -> Snapshot:
        """The snapshot to deliver: the unfinished one, else a new one taken ``now``."""
        if self.snapshot is None:
            self.snapshot = Snapshot(run_id, now)
            self._save()
        return self.snapshot

    def advance(self, resume: Cursor | None) -> None:
        """Every sink holds the next unit: only now may the snapshot move past it."""
        assert self.snapshot is not None, "advance before begin"
        self.snapshot.resume = resume
        self.snapshot.units += 1
        self._save()

    def finish(self, rows: int, cursor: Cursor | None) -> None:
        """The snapshot is complete; ``cursor`` (None: keep the last) is where the next one
        starts."""
        assert self.snapshot is not None, "finish before begin"
        self.last_success = self.snapshot.time
        self.last_rows = rows
        self.snapshot = None
        if cursor is not None:
            self.cursor = cursor
        self._save()

    def abandon(self) -> Snapshot | None:
        """Forget the snapshot in progress (it restarts from nothing); return it."""
        snapshot, self.snapshot = self.snapshot, None
        if snapshot is not None:
            self._save()
        return snapshot

    def restore(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` after all (its rows could not be removed: the next run will)."""
        self.snapshot = snapshot
        self._save()

    @classmethod
    def load(cls, data: Mapping[str, Any], save: Callable[[], None]) -> DatasetCheckpoint:
        snap = data.get("snapshot")
        last = data.get("last_success")
        return cls(
            snapshot=None
            if snap is None
            else Snapshot(
                snap["run_id"],
                datetime.fromisoformat(snap["time_generated"]),
                int(snap.get("units", 0)),
                snap.get("resume"),
            ),
            last_success=None if last is None else datetime.fromisoformat(last),
            last_rows=data.get("last_rows"),
            cursor=data.get("cursor"),
            _save=save,
        )

    def dump(self) -> dict[str, Any]:
        """The on-disk form (the keys are the file format: keep them)."""
        out: dict[str, Any] = {}
        if self.snapshot is not None:
            s = self.snapshot
            out["snapshot"] = {
                "run_id": s.run_id,
                "time_generated": s.time.isoformat(),
                "units": s.units,
                "resume": s.resume,
            }
        if self.last_success is not None:
            out["last_success"] = self.last_success.isoformat()
        if self.last_rows is not None:
            out["last_rows"] = self.last_rows
        if self.cursor is not None:
            out["cursor"] = self.cursor
        return out


class CheckpointFile:
    """The checkpoint file of one source: one ``DatasetCheckpoint`` per dataset, saved whole
    and atomically whenever one of them changes."""

    def __init__(self, state_dir: Path, source: str, *, folder: str = "tenants") -> None:
        # One folder per kind of source: tenants, sensors, consoles.
        self.path = state_dir / folder / f"{source}.json"
        self._datasets: dict[str, DatasetCheckpoint] = {}
        stored: dict[str, Any] = {}
        if self.path.exists():
            try:
                loaded = orjson.loads(self.path.read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                raise EpfError(
                    f"checkpoint file {str(self.path)!r} is unreadable ({exc}); move it away to "
                    "start the source's datasets afresh"
                ) from exc
            if isinstance(loaded, dict) and loaded.get("version") == _VERSION:
                stored = loaded.get("datasets") or {}
        for name, data in stored.items():
            self._datasets[name] = DatasetCheckpoint.load(data, self.save)

    def dataset(self, name: str) -> DatasetCheckpoint:
        if name not in self._datasets:
            self._datasets[name] = DatasetCheckpoint(_save=self.save)
        return self._datasets[name]

    def save(self) -> None:
        data = {
            "version": _VERSION,
            "datasets": {name: d.dump() for name, d in self._datasets.items()},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        with partial.open("wb") as fh:
            fh.write(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=_encode))
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
