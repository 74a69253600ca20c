"""Checkpoints per sink, and the quarantine of malformed records.

Each sink keeps its own checkpoints, where it keeps its data if it can (the DuckDB workspace
holds them in ``_epf_checkpoints``, written in the transaction of the unit they cover; Sentinel
in files per ingestion endpoint and DCRs), so a workspace that is new, copied or restored knows
what it holds. Per source and dataset they hold: the snapshot in progress (its run id, snapshot
time, delivered units and the source's resume token), the time of the last complete snapshot,
and the dataset's cursor. ``DatasetCheckpoint`` is the one way the run changes them:
``is_due``, ``begin``, ``advance`` (after the sink holds a unit), ``finish`` (with the source's
final cursor) and ``abandon``; ``CheckpointGroup`` moves those of the sinks that stand at the
same place together, so one collection serves them all. The state folder's per-source files of
earlier versions are read once, for sinks that hold that source's data but no checkpoints yet.
A quarantined record is kept whole, with its reason, in
``<state dir>/quarantine/<run id>/<tenant>.<dataset>.jsonl``. May import ``contracts``,
``errors`` and ``sinks.checkpoint_file``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from endpoint_forensics.contracts import Reject, SavedCheckpoint, Sink
from endpoint_forensics.sinks.checkpoint_file import read_checkpoint_file

__all__ = [
    "CheckpointGroup",
    "DatasetCheckpoint",
    "Quarantine",
    "Snapshot",
    "load_checkpoints",
]

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
    """Where one dataset of one source stands. Each method that changes it saves it (a new
    snapshot is saved with its first unit, or before it for a sink that saves its checkpoint
    after its unit: ``CheckpointGroup.begin``), so a run that stops anywhere resumes at the
    next undelivered unit."""

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
        """The snapshot to deliver: the unfinished one, else a new one taken ``now``.

        Not saved yet: each unit's checkpoint carries it, and a run that stops before the first
        unit leaves nothing of it to resume (the dataset is still due by ``last_success``).
        """
        if self.snapshot is None:
            self.snapshot = Snapshot(run_id, now)
        return self.snapshot

    def save(self) -> None:
        """Store this checkpoint as it stands."""
        self._save()

    def next_due(self, interval_hours: float) -> datetime | None:
        """When the next snapshot is due (None: now)."""
        if not interval_hours or self.last_success is None or self.snapshot is not None:
            return None
        return self.last_success + timedelta(hours=interval_hours)

    def advance(self, resume: Cursor | None, *, saved: bool = False) -> None:
        """The sink holds the next unit: only now may the snapshot move past it. ``saved``:
        the sink stored ``state_after(resume)`` with the unit itself."""
        assert self.snapshot is not None, "advance before begin"
        self.snapshot.resume = resume
        self.snapshot.units += 1
        if not saved:
            self._save()

    def state_after(self, resume: Cursor | None) -> dict[str, Any]:
        """The stored form of this checkpoint once the next unit is delivered."""
        assert self.snapshot is not None, "state_after before begin"
        state = self.dump()
        state["snapshot"] = {**state["snapshot"], "units": self.snapshot.units + 1}
        state["snapshot"]["resume"] = resume
        return state

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


def load_checkpoints(
    sink: Sink, *, scope: str, unit_scope: str, legacy_file: Path
) -> Callable[[str], DatasetCheckpoint]:
    """The checkpoints ``sink`` keeps for one source (``scope``), by dataset; each saves itself
    to the sink. A sink that holds the source's data but no checkpoints (written by a version
    that kept them in the state folder) takes over the state folder's file once."""
    stored = sink.checkpoints.load(scope)
    if not stored and sink.holds(unit_scope):
        stored = read_checkpoint_file(legacy_file)
        for dataset, state in stored.items():
            sink.checkpoints.save(SavedCheckpoint(scope, dataset, state))

    def checkpoint(dataset: str) -> DatasetCheckpoint:
        loaded = DatasetCheckpoint.load(stored.get(dataset, {}), lambda: None)
        loaded._save = lambda: sink.checkpoints.save(SavedCheckpoint(scope, dataset, loaded.dump()))
        return loaded

    return checkpoint


class CheckpointGroup:
    """The checkpoints of the sinks that stand at the same place in one dataset: one collection
    serves them all, and each moves only when its sink holds what moved it."""

    def __init__(self, members: Mapping[Sink, DatasetCheckpoint]) -> None:
        assert members, "a group of no sinks"
        self.members = dict(members)
        self.sinks = list(self.members)
        self._first = next(iter(self.members.values()))

    @staticmethod
    def of(
        sinks: Sequence[Sink], checkpoints: Mapping[Sink, DatasetCheckpoint]
    ) -> list[CheckpointGroup]:
        """``sinks`` grouped by where their checkpoints stand (snapshot in progress, cursor)."""
        groups: dict[bytes, dict[Sink, DatasetCheckpoint]] = {}
        for sink in sinks:
            state = checkpoints[sink].dump()
            key = orjson.dumps(
                [state.get("snapshot"), state.get("cursor")], option=orjson.OPT_SORT_KEYS
            )
            groups.setdefault(key, {})[sink] = checkpoints[sink]
        return [CheckpointGroup(members) for members in groups.values()]

    @property
    def snapshot(self) -> Snapshot | None:
        return self._first.snapshot

    @property
    def cursor(self) -> Cursor | None:
        return self._first.cursor

    def begin(self, run_id: str, now: datetime) -> Snapshot:
        for sink, checkpoint in self.members.items():
            new = checkpoint.snapshot is None
            checkpoint.begin(run_id, now)
            if new and not getattr(sink, "checkpoint_in_unit", False):
                # This sink stores its checkpoint after its unit, not in the unit's commit
                # (Sentinel: the outbox, then the file). Stopped between the two, a run
                # that had not saved the snapshot would start another, and the unit already
                # in the outbox would reach Sentinel twice, under two names.
                checkpoint.save()
        assert self._first.snapshot is not None
        return self._first.snapshot

    def state_after(self, resume: Cursor | None) -> dict[str, Any]:
        return self._first.state_after(resume)

    def advance(self, resume: Cursor | None, *, saved_by: Sequence[Sink]) -> None:
        for sink, checkpoint in self.members.items():
            checkpoint.advance(resume, saved=sink in saved_by)

    def finish(self, rows: int, cursor: Cursor | None) -> None:
        for checkpoint in self.members.values():
            checkpoint.finish(rows, cursor)

    def abandon(self) -> Snapshot | None:
        abandoned = [c.abandon() for c in self.members.values()]
        return abandoned[0]


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
