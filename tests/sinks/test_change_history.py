"""Change-only history rebuilds exactly the full snapshot at every run (a property test).

Random sequences of snapshots of a change-tracked table, written through the workspace sink
in either history mode, are read back with the shipped function ``EPF_SecureConfigAt``: at
each snapshot's time, and between two snapshots, the state is the snapshot's rows exactly.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb_kql
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from endpoint_forensics.analytics.functions import registry
from endpoint_forensics.contracts import Batch, HistoryPlan
from endpoint_forensics.sinks.duckdb import DuckDBSink
from endpoint_forensics.sinks.history import ChangeHistory
from endpoint_forensics.sinks.rows import to_arrow
from endpoint_forensics.tables import SECURE_CONFIG

_T0 = datetime(2026, 10, 1, tzinfo=UTC)
_KEYS = [(f"dev-{d}", f"scid-{c}") for d in range(4) for c in range(3)]
_STATE = st.tuples(st.booleans(), st.booleans(), st.sampled_from(["A", "B", "a 'quoted' name"]))
# Not empty: a snapshot without a single row leaves no trace in snapshot mode (change-only
# history writes its removals; test_an_empty_snapshot_removes_everything).
_SNAPSHOT = st.dictionaries(st.sampled_from(_KEYS), _STATE, min_size=1, max_size=len(_KEYS))
_HISTORY = st.lists(st.tuples(st.integers(1, 120), _SNAPSHOT), min_size=1, max_size=6)


def _rows(snapshot: dict[tuple[str, str], tuple[bool, bool, str]], n: int) -> list[dict[str, Any]]:
    return [
        {
            "DeviceId": device,
            "DeviceName": f"{device}.contoso.com",
            "ConfigurationId": scid,
            "IsCompliant": compliant,
            "IsApplicable": applicable,
            "ConfigurationName": name,
            # Ignored by the comparison: it moves on every snapshot.
            "AssessedTime": _T0 + timedelta(minutes=n),
        }
        for (device, scid), (compliant, applicable, name) in sorted(snapshot.items())
    ]


def _state_at(con: Any, at: datetime) -> set[tuple[Any, ...]]:
    query = (
        f"EPF_SecureConfigAt(datetime({at.strftime('%Y-%m-%dT%H:%M:%SZ')}))"
        " | project DeviceId, ConfigurationId, IsCompliant, IsApplicable, ConfigurationName"
    )
    return set(duckdb_kql.kql(con, query, functions=registry()).fetchall())


def _write(sink: DuckDBSink, rows: list[dict[str, Any]], plan: HistoryPlan, n: int) -> None:
    stamp = {
        "TimeGenerated": plan.snapshot_time,
        "SnapshotTime": plan.snapshot_time,
        "RunId": f"run-{n}",
        "DefenderTenantId": "tenant-1",
    }
    # Two units, as a paged snapshot arrives, then the end of the snapshot. The second as a
    # decoded export part arrives: an Arrow record batch.
    half = len(rows) // 2
    for part, chunk in enumerate((rows[:half], rows[half:])):
        batch = Batch(SECURE_CONFIG, rows=chunk)
        if part and chunk:
            arrow = to_arrow(SECURE_CONFIG, chunk, stamped=set(stamp)).combine_chunks()
            batch = Batch(SECURE_CONFIG, arrow=arrow.to_batches()[0])
        with sink.open(SECURE_CONFIG, unit=f"u/{n}/{part}", history=plan) as writer:
            writer.write(batch, stamp)
    sink.finish_snapshot(SECURE_CONFIG, plan, unit=f"u/{n}/removed", stamp=stamp)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    history=_HISTORY,
    mode=st.sampled_from(["snapshot", "changes"]),
    baseline_days=st.sampled_from([0.5, 2.0, 7.0]),
)
def test_the_state_read_back_is_each_snapshot_exactly(
    tmp_path_factory: Any, history: list[tuple[int, Any]], mode: Any, baseline_days: float
) -> None:
    db = tmp_path_factory.mktemp("history") / "w.duckdb"
    sink = DuckDBSink(db)
    times, snapshots, when = [], [], _T0
    try:
        for n, (hours, snapshot) in enumerate(history):
            when += timedelta(hours=hours)
            plan = HistoryPlan(mode, when, baseline_days=baseline_days)
            _write(sink, _rows(snapshot, n), plan, n)
            times.append(when)
            snapshots.append({(d, c, *state) for (d, c), state in snapshot.items()})
    finally:
        sink.close()
    con = duckdb_kql.connect(str(db), read_only=True)
    try:
        for n, (at, expected) in enumerate(zip(times, snapshots, strict=True)):
            assert _state_at(con, at) == expected, f"at snapshot {n} ({mode})"
            following = times[n + 1] if n + 1 < len(times) else at + timedelta(hours=5)
            between = following - timedelta(seconds=1)
            assert _state_at(con, between) == expected, f"between snapshots {n} and {n + 1}"
    finally:
        con.close()


def test_change_only_history_writes_only_what_changed(tmp_path: Path) -> None:
    sink = DuckDBSink(tmp_path / "w.duckdb")
    first = {key: (True, True, "A") for key in _KEYS}
    second = dict(first)
    second[_KEYS[0]] = (False, True, "A")  # a change
    del second[_KEYS[1]]  # a removal
    try:
        for n, snapshot in enumerate((first, second, second)):
            plan = HistoryPlan("changes", _T0 + timedelta(days=n), baseline_days=7)
            _write(sink, _rows(snapshot, n), plan, n)
    finally:
        sink.close()
    con = duckdb_kql.connect(str(tmp_path / "w.duckdb"), read_only=True)
    kinds = con.execute(
        "SELECT RunId, HistoryKind, count(*) FROM EPF_SecureConfig_CL GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    con.close()
    # The baseline, then one change and one removal, then nothing (the third is unchanged).
    assert kinds == [("run-0", "Baseline", 12), ("run-1", "Changed", 1), ("run-1", "Removed", 1)]


def test_a_baseline_is_written_again_after_baseline_days(tmp_path: Path) -> None:
    sink = DuckDBSink(tmp_path / "w.duckdb")
    snapshot = {key: (True, True, "A") for key in _KEYS}
    try:
        for n, day in enumerate((0, 1, 2, 3)):
            plan = HistoryPlan("changes", _T0 + timedelta(days=day), baseline_days=2)
            _write(sink, _rows(snapshot, n), plan, n)
    finally:
        sink.close()
    con = duckdb_kql.connect(str(tmp_path / "w.duckdb"), read_only=True)
    runs = con.execute(
        "SELECT RunId, count(*) FROM EPF_SecureConfig_CL GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    con.close()
    assert runs == [("run-0", 12), ("run-2", 12)]


def test_an_empty_snapshot_removes_everything(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    sink = DuckDBSink(db)
    try:
        for n, snapshot in enumerate(({key: (True, True, "A") for key in _KEYS}, {})):
            plan = HistoryPlan("changes", _T0 + timedelta(days=n), baseline_days=7)
            _write(sink, _rows(snapshot, n), plan, n)
    finally:
        sink.close()
    con = duckdb_kql.connect(str(db), read_only=True)
    try:
        assert len(_state_at(con, _T0)) == len(_KEYS)
        assert _state_at(con, _T0 + timedelta(days=1)) == set()
    finally:
        con.close()


def test_the_state_keeps_each_snapshot_and_takes_only_what_changed(tmp_path: Path) -> None:
    """The kept state is the last snapshot's keys and states; a snapshot writes to it only the
    keys whose state changed; finishing a snapshot twice (a crash between Sentinel's outbox and
    its history file) removes nothing the second time."""
    import duckdb

    con = duckdb.connect(str(tmp_path / "h.duckdb"))
    history = ChangeHistory(con)
    stamp = {"DefenderTenantId": "tenant-1"}
    first = {key: (True, True, "A") for key in _KEYS}
    second = dict(first)
    second[_KEYS[0]] = (False, True, "A")  # a change
    del second[_KEYS[1]]  # a removal
    second[("dev-9", "scid-0")] = (True, True, "A")  # an addition
    for n, snapshot in enumerate((first, second, second)):
        plan = HistoryPlan("changes", _T0 + timedelta(days=n), baseline_days=7)
        data = to_arrow(SECURE_CONFIG, _rows(snapshot, n), stamped=set())
        written = history.rows_to_write(SECURE_CONFIG, data, stamp, plan)
        gone = history.removed(SECURE_CONFIG, stamp, plan)
        assert history.removed(SECURE_CONFIG, stamp, plan).num_rows == 0  # the second time
        kinds = sorted(written.column("HistoryKind").to_pylist() + ["Removed"] * gone.num_rows)
        assert (
            kinds
            == [
                ["Baseline"] * len(_KEYS),
                ["Added", "Changed", "Removed"],
                [],
            ][n]
        )
        state = con.execute(
            "SELECT json_extract_string(key, '$.DeviceId'),"
            " json_extract_string(key, '$.ConfigurationId'), seen FROM _epf_history"
        ).fetchall()
        assert {(d, c) for d, c, _ in state} == set(snapshot)
        # Only the keys written by this snapshot carry its time: the others were not rewritten.
        rewritten = sum(seen == plan.snapshot_time for _, _, seen in state)
        assert rewritten == [len(_KEYS), 2, 0][n]
        assert con.execute("SELECT count(*) FROM _epf_history_staged").fetchall() == [(0,)]
    con.close()


def test_a_key_shown_twice_keeps_the_state_of_the_row_written(tmp_path: Path) -> None:
    """A snapshot that shows a key twice, once as the state holds it and once changed, writes
    the changed row; the state then takes that row's state, so the next snapshot showing it
    again writes nothing."""
    import duckdb

    con = duckdb.connect(str(tmp_path / "h.duckdb"))
    history = ChangeHistory(con)
    stamp = {"DefenderTenantId": "tenant-1"}
    key = _KEYS[0]
    same, changed = {key: (True, True, "A")}, {key: (False, True, "A")}
    for n, rows in enumerate(
        (_rows(same, 0), _rows(same, 1) + _rows(changed, 1), _rows(changed, 2))
    ):
        plan = HistoryPlan("changes", _T0 + timedelta(days=n), baseline_days=7)
        data = to_arrow(SECURE_CONFIG, rows, stamped=set())
        written = history.rows_to_write(SECURE_CONFIG, data, stamp, plan)
        history.removed(SECURE_CONFIG, stamp, plan)
        kinds = written.column("HistoryKind").to_pylist()
        assert kinds == [["Baseline"], ["Changed"], []][n], f"snapshot {n}"
    con.close()


def test_a_unit_rolled_back_leaves_the_next_one_to_prepare_the_snapshot_again(
    tmp_path: Path,
) -> None:
    # A unit drops what an abandoned snapshot staged and marks a baseline once, not for each
    # of its batches; a unit that failed rolled both back, so the next one does them again:
    # the history is as if the failed unit had never been.
    snapshot = {key: (True, True, "A") for key in _KEYS}
    rows = _rows(snapshot, 0)

    def history(folder: Path, *, fail: bool) -> list[Any]:
        sink = DuckDBSink(folder / "w.duckdb")
        stamp = {"TimeGenerated": _T0, "RunId": "run-0", "DefenderTenantId": "tenant-1"}
        try:
            # A snapshot abandoned after one unit: its staged keys are no part of the next.
            abandoned = HistoryPlan("changes", _T0, baseline_days=7)
            with sink.open(SECURE_CONFIG, unit="u/0/0", history=abandoned) as writer:
                writer.write(Batch(SECURE_CONFIG, rows=rows[:4]), stamp)
            plan = HistoryPlan("changes", _T0 + timedelta(hours=1), baseline_days=7)
            stamp = {**stamp, "TimeGenerated": plan.snapshot_time, "RunId": "run-1"}
            if fail:
                with contextlib.suppress(RuntimeError):
                    with sink.open(SECURE_CONFIG, unit="u/1/0", history=plan) as writer:
                        writer.write(Batch(SECURE_CONFIG, rows=rows[:6]), stamp)
                        raise RuntimeError("the source failed mid-unit")
            for part, chunk in enumerate((rows[:6], rows[6:])):
                with sink.open(SECURE_CONFIG, unit=f"u/1/{part}", history=plan) as writer:
                    writer.write(Batch(SECURE_CONFIG, rows=chunk[:3]), stamp)
                    writer.write(Batch(SECURE_CONFIG, rows=chunk[3:]), stamp)
            sink.finish_snapshot(SECURE_CONFIG, plan, unit="u/1/removed", stamp=stamp)
            return [
                sink._con.execute(sql).fetchall()
                for sql in (
                    "SELECT RunId, HistoryKind, count(*) FROM EPF_SecureConfig_CL"
                    " GROUP BY ALL ORDER BY ALL",
                    "SELECT count(*) FROM _epf_history_staged",
                    "SELECT snapshot_time FROM _epf_history_baselines",
                    "SELECT count(*) FROM _epf_history",
                )
            ]
        finally:
            sink.close()

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    found = history(tmp_path / "a", fail=True)
    assert found == history(tmp_path / "b", fail=False)
    kinds, staged, _, state = found
    assert sum(n for run, _, n in kinds if run == "run-1") == len(rows) and state == [(12,)]
    assert staged == [(0,)]
