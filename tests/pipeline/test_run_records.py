"""A run's own EPF_Runs_CL rows are kept like its data: a sink that cannot take them (a full
disk fills the workspace's next block while the outbox's small file still fits) gets them on
the next run, and a run that had to say so says where they wait."""

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from endpoint_forensics.pipeline.runlog import DatasetOutcome, RunSummary, record_runs
from endpoint_forensics.sinks.duckdb import DuckDBSink

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


class FullForRuns:
    """The real workspace, with a full disk for the next ``refusals`` opens."""

    def __init__(self, sink: DuckDBSink, refusals: int) -> None:
        self.sink, self.refusals, self.name = sink, refusals, sink.name

    def delivered(self, unit: str) -> bool:
        return self.sink.delivered(unit)

    @contextmanager
    def open(self, table: Any, **kwargs: Any) -> Iterator[Any]:
        if self.refusals:
            self.refusals -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        with self.sink.open(table, **kwargs) as writer:
            yield writer


def _summary(run: str, at: datetime, outcome: str) -> RunSummary:
    done = DatasetOutcome("contoso", "tid", "machines", "EPF_Devices_CL", outcome=outcome)
    done.start, done.end = at, at + timedelta(seconds=3)
    return RunSummary(run_id=run, time_generated=at, outcomes=[done])


def _runs(db: Path) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(
            'SELECT RunId, Outcome, TimeGenerated, StartTime, EndTime FROM "EPF_Runs_CL"'
            " ORDER BY TimeGenerated"
        ).fetchall()
    finally:
        con.close()


def test_rows_a_sink_could_not_take_go_in_first_on_the_next_run(tmp_path: Path) -> None:
    db, pending = tmp_path / "ws.duckdb", tmp_path / "state" / "runs-pending"
    sink = DuckDBSink(db)
    full = FullForRuns(sink, refusals=1)
    first = _summary("run-1", T0, "Failed")
    record_runs(first, [full], pending)  # type: ignore[list-item]
    (problem,) = first.problems
    assert "No space left on device" in problem and "wait in the state folder" in problem
    assert len(list((pending / "duckdb").glob("*.json"))) == 1

    second = _summary("run-2", T0 + timedelta(hours=1), "Succeeded")
    record_runs(second, [full], pending)  # type: ignore[list-item]
    assert second.problems == []
    assert not list((pending / "duckdb").glob("*.json"))
    sink.close()
    # The first run's row as it would have been written then, times and all.
    assert _runs(db) == [
        ("run-1", "Failed", T0, T0, T0 + timedelta(seconds=3)),
        ("run-2", "Succeeded", T0 + timedelta(hours=1), T0 + timedelta(hours=1),
         T0 + timedelta(hours=1, seconds=3)),
    ]  # fmt: skip


def test_rows_still_refused_keep_waiting_and_the_run_says_where(tmp_path: Path) -> None:
    db, pending = tmp_path / "ws.duckdb", tmp_path / "state" / "runs-pending"
    sink = DuckDBSink(db)
    full = FullForRuns(sink, refusals=3)
    record_runs(_summary("run-1", T0, "Failed"), [full], pending)  # type: ignore[list-item]
    second = _summary("run-2", T0 + timedelta(hours=1), "Failed")
    record_runs(second, [full], pending)  # type: ignore[list-item]
    assert any("an earlier run's EPF_Runs_CL rows still wait in" in p for p in second.problems)
    assert len(list((pending / "duckdb").glob("*.json"))) == 2
    third = _summary("run-3", T0 + timedelta(hours=2), "Succeeded")
    record_runs(third, [full], pending)  # type: ignore[list-item]
    assert third.problems == []
    sink.close()
    assert [r[0] for r in _runs(db)] == ["run-1", "run-2", "run-3"]


def test_rows_already_written_before_a_crash_are_not_written_twice(tmp_path: Path) -> None:
    db, pending = tmp_path / "ws.duckdb", tmp_path / "state" / "runs-pending"
    sink = DuckDBSink(db)
    full = FullForRuns(sink, refusals=1)
    record_runs(_summary("run-1", T0, "Failed"), [full], pending)  # type: ignore[list-item]
    (held,) = (pending / "duckdb").glob("*.json")
    kept = held.read_bytes()
    record_runs(_summary("run-2", T0 + timedelta(hours=1), "Succeeded"), [full], pending)  # type: ignore[list-item]
    held.write_bytes(kept)  # a crash between the write and the file's removal
    third = _summary("run-3", T0 + timedelta(hours=2), "Succeeded")
    record_runs(third, [full], pending)  # type: ignore[list-item]
    assert third.problems == [] and not held.exists()
    sink.close()
    assert [r[0] for r in _runs(db)] == ["run-1", "run-2", "run-3"]
