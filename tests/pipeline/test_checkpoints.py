"""The cursor rules, on the typed checkpoint and the workspace that keeps it: a snapshot begins
once and resumes after a stop, moves past a unit only when told the sink holds it, and a cursor
moves only when the whole snapshot is delivered. Every change is stored before the method
returns."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from endpoint_forensics.errors import EpfError
from endpoint_forensics.pipeline.checkpoints import (
    CheckpointGroup,
    DatasetCheckpoint,
    load_checkpoints,
)
from endpoint_forensics.sinks.checkpoint_file import FileCheckpointStore
from endpoint_forensics.sinks.duckdb import DuckDBSink

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
SCOPE = "tenants/contoso"


class Reopened:
    """The workspace's checkpoints as a new run would see them (the workspace opened anew)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    def dataset(self, name: str) -> DatasetCheckpoint:
        sink = DuckDBSink(self.tmp_path / "ws.duckdb")
        legacy = self.tmp_path / "tenants" / "contoso.json"
        return load_checkpoints(sink, scope=SCOPE, unit_scope="tid", legacy_file=legacy)(name)


def reopened(tmp_path: Path) -> Reopened:
    return Reopened(tmp_path)


def test_a_new_dataset_is_due_and_a_finished_one_waits_for_its_interval(tmp_path: Path) -> None:
    checkpoint = reopened(tmp_path).dataset("vulnerabilities")
    assert checkpoint.is_due(T0, 168.0)
    checkpoint.begin("run-1", T0)
    checkpoint.finish(10, None)
    again = reopened(tmp_path).dataset("vulnerabilities")
    assert again.last_success == T0 and again.last_rows == 10
    assert not again.is_due(T0 + timedelta(hours=167), 168.0)
    assert again.is_due(T0 + timedelta(hours=168), 168.0)
    assert again.is_due(T0 + timedelta(minutes=1), 0.0)  # no interval: every run


def test_a_stopped_snapshot_resumes_after_the_last_delivered_unit(tmp_path: Path) -> None:
    checkpoint = reopened(tmp_path).dataset("secure_config")
    snapshot = checkpoint.begin("run-1", T0)
    checkpoint.advance({"part": 0})
    checkpoint.advance({"part": 1})
    # The process stops here. The next run, an hour later, resumes that snapshot as it was.
    later = reopened(tmp_path).dataset("secure_config")
    assert later.is_due(T0 + timedelta(hours=1), 24.0)  # unfinished: due whatever the interval
    resumed = later.begin("run-2", T0 + timedelta(hours=1))
    assert (resumed.run_id, resumed.time, resumed.units, resumed.resume) == (
        snapshot.run_id,
        T0,
        2,
        {"part": 1},
    )


def test_the_cursor_moves_only_when_the_snapshot_finishes(tmp_path: Path) -> None:
    checkpoint = reopened(tmp_path).dataset("vulnerability_changes")
    checkpoint.begin("run-1", T0)
    checkpoint.finish(3, {"since": "a"})
    checkpoint.begin("run-2", T0 + timedelta(hours=1))
    checkpoint.advance(None)
    # A stop before finish: the stored cursor is still the last complete snapshot's.
    assert reopened(tmp_path).dataset("vulnerability_changes").cursor == {"since": "a"}
    checkpoint.finish(4, None)  # a source that returns no cursor keeps the last one
    assert reopened(tmp_path).dataset("vulnerability_changes").cursor == {"since": "a"}
    checkpoint.begin("run-3", T0 + timedelta(hours=2))
    checkpoint.finish(5, {"since": "b"})
    assert reopened(tmp_path).dataset("vulnerability_changes").cursor == {"since": "b"}


def test_abandon_forgets_the_snapshot(tmp_path: Path) -> None:
    checkpoint = reopened(tmp_path).dataset("machines")
    checkpoint.begin("run-1", T0)
    checkpoint.advance({"page": 1})
    assert reopened(tmp_path).dataset("machines").snapshot is not None
    abandoned = checkpoint.abandon()
    assert abandoned is not None and abandoned.run_id == "run-1"
    assert reopened(tmp_path).dataset("machines").snapshot is None
    assert checkpoint.begin("run-2", T0).run_id == "run-2"  # starts afresh


def test_a_snapshot_is_saved_with_its_first_unit(tmp_path: Path) -> None:
    checkpoint = reopened(tmp_path).dataset("machines")
    checkpoint.begin("run-1", T0)
    # Nothing delivered yet: a run that stops here leaves nothing to resume.
    assert reopened(tmp_path).dataset("machines").snapshot is None
    checkpoint.advance({"page": 1})
    saved = reopened(tmp_path).dataset("machines").snapshot
    assert saved is not None and (saved.run_id, saved.units) == ("run-1", 1)


def test_a_sink_that_saves_its_checkpoint_after_its_unit_knows_the_snapshot_first(
    tmp_path: Path,
) -> None:
    # Sentinel commits a unit to its outbox, then saves its checkpoint file. A run stopped
    # between the two must resume the same snapshot (the same unit names, which the outbox
    # knows as delivered), not start another that sends the same rows under new names.
    store = FileCheckpointStore(tmp_path / "sentinel")

    class Outbox:  # a sink whose checkpoint is not part of its unit's commit
        checkpoints = store

        def holds(self, unit_scope: str) -> bool:
            return False

    workspace = DuckDBSink(tmp_path / "ws.duckdb")
    outbox = Outbox()
    loaders = {
        sink: load_checkpoints(
            sink, scope=SCOPE, unit_scope="tid", legacy_file=tmp_path / "none.json"
        )
        for sink in (workspace, outbox)
    }
    group = CheckpointGroup({sink: load("machines") for sink, load in loaders.items()})
    group.begin("run-1", T0)
    saved = DatasetCheckpoint.load(store.load(SCOPE)["machines"], lambda: None).snapshot
    assert saved is not None and (saved.run_id, saved.units) == ("run-1", 0)
    # The workspace saves it with the unit, in one transaction: nothing before.
    assert reopened(tmp_path).dataset("machines").snapshot is None
    workspace.close()


def test_advance_or_finish_without_a_snapshot_is_a_programming_error(tmp_path: Path) -> None:
    checkpoint = reopened(tmp_path).dataset("machines")
    with pytest.raises(AssertionError):
        checkpoint.advance(None)
    with pytest.raises(AssertionError):
        checkpoint.finish(0, None)


def test_the_file_store_keeps_its_format_so_existing_state_carries_over(tmp_path: Path) -> None:
    stored = {
        "version": 1,
        "datasets": {
            "machines": {"last_success": T0.isoformat(), "last_rows": 250},
            "vulnerabilities": {
                "snapshot": {
                    "run_id": "r",
                    "time_generated": T0.isoformat(),
                    "units": 4,
                    "resume": {"part": 3},
                },
                "cursor": {"x": 1},
            },
        },
    }
    path = tmp_path / "tenants" / "contoso.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(orjson.dumps(stored))
    store = FileCheckpointStore(tmp_path)
    loaded = store.load(SCOPE)
    assert DatasetCheckpoint.load(loaded["machines"], lambda: None).last_rows == 250
    snapshot = DatasetCheckpoint.load(loaded["vulnerabilities"], lambda: None).snapshot
    assert snapshot is not None and (snapshot.units, snapshot.resume) == (4, {"part": 3})
    machines = DatasetCheckpoint.load(loaded["machines"], lambda: None)
    from endpoint_forensics.contracts import SavedCheckpoint

    store.save(SavedCheckpoint(SCOPE, "machines", machines.dump()))
    assert orjson.loads(path.read_bytes()) == stored


def test_an_unreadable_file_is_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "tenants" / "contoso.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(EpfError, match="move it away"):
        FileCheckpointStore(tmp_path).load(SCOPE)
