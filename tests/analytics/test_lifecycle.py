"""The remediation lifecycle (EPF_VulnerabilityLifecycle, EPF_ConfigurationLifecycle) on a
workspace written through the real sink, in both history modes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb_kql
import pytest

from endpoint_forensics.analytics.functions import registry
from endpoint_forensics.contracts import Batch, HistoryPlan
from endpoint_forensics.sinks.duckdb import DuckDBSink
from endpoint_forensics.tables import DEVICES, SECURE_CONFIG, VULNERABILITIES, VULNERABILITY_CHANGES

T0 = datetime(2026, 10, 1, tzinfo=UTC)
TENANT = "tenant-1"


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


class Workspace:
    def __init__(self, path: Path, mode: Any) -> None:
        self.path = path
        self.mode = mode
        self.sink = DuckDBSink(path)
        self.units = 0
        self.windows: list[tuple[datetime, datetime]] = []  # of the lifecycles asked for

    def write(
        self, table: Any, rows: list[dict[str, Any]], at: datetime, *, full: bool = True
    ) -> None:
        stamp = {
            "TimeGenerated": at,
            "SnapshotTime": at,
            "RunId": f"r{at:%j%H}",
            "DefenderTenantId": TENANT,
        }
        plan = HistoryPlan(self.mode, at, baseline_days=7) if table.changes and full else None
        self.units += 1
        with self.sink.open(table, unit=f"u{self.units}", history=plan) as writer:
            writer.write(Batch(table, rows=rows), stamp)
        if plan is not None:
            self.sink.finish_snapshot(table, plan, unit=f"u{self.units}/removed", stamp=stamp)

    def query(self, kql: str) -> list[dict[str, Any]]:
        for since, until in _WINDOW.findall(kql):
            self.windows.append((_kql_time(since), _kql_time(until)))
        self.sink.close()
        con = duckdb_kql.connect(str(self.path), read_only=True)
        try:
            rel = duckdb_kql.kql(con, kql, functions=registry())
            return [
                {c: _utc(v) for c, v in zip(rel.columns, row, strict=True)}
                for row in rel.fetchall()
            ]
        finally:
            con.close()
            self.sink = DuckDBSink(self.path)


_WINDOW = re.compile(r"(?:Lifecycle|Sla)\(datetime\(([^)]*)\), datetime\(([^)]*)\)")


def _kql_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=UTC)


def _utc(value: Any) -> Any:
    # A time the function rebuilt from text comes back naive; the workspace keeps UTC.
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _device(device: str, at: datetime, health: str = "Active") -> dict[str, Any]:
    return {"DeviceId": device, "DeviceName": device, "HealthStatus": health, "LastSeen": at,
            "RbacGroupName": "Servers"}  # fmt: skip


def _vuln(device: str, cve: str, first: datetime) -> dict[str, Any]:
    return {
        "DeviceId": device, "DeviceName": device, "RecordId": f"{device}_app_1.0_{cve}_",
        "CveId": cve, "VulnerabilitySeverityLevel": "Critical", "SoftwareName": "app",
        "SoftwareVersion": "1.0", "FirstSeenTimestamp": first, "RbacGroupName": "Servers",
    }  # fmt: skip


def _event(row: dict[str, Any], status: str, at: datetime) -> dict[str, Any]:
    return {**row, "Status": status, "EventTimestamp": at}


@pytest.fixture(params=["snapshot", "changes"])
def workspace(request: pytest.FixtureRequest, tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "w.duckdb", request.param)


def test_a_fixed_reopened_and_fixed_again_vulnerability(workspace: Workspace) -> None:
    a = _vuln("d1", "CVE-1", day(0.5))
    # Open on day 1, fixed on day 3, open again on day 5, fixed on day 8; weekly snapshots
    # and the daily changes, as the collector takes them.
    for n in range(11):
        workspace.write(DEVICES, [_device("d1", day(n))], day(n))
    workspace.write(VULNERABILITIES, [a], day(1))
    workspace.write(VULNERABILITIES, [], day(8))
    events = [_event(a, "Fixed", day(3)), _event(a, "New", day(5)), _event(a, "Fixed", day(8))]
    workspace.write(VULNERABILITY_CHANGES, events, day(9), full=False)
    (row,) = workspace.query(
        "EPF_VulnerabilityLifecycle(datetime(2026-09-30), datetime(2026-10-11))"
    )
    assert row["FirstSeen"] == day(0.5)
    assert row["FixedAt"] == day(8)
    assert row["ReopenCount"] == 1
    assert row["DaysOpen"] == pytest.approx(2.5 + 3.0)  # 0.5 -> 3, then 5 -> 8
    assert row["Status"] == "Fixed"


def test_a_vulnerability_still_open_counts_until_the_end(workspace: Workspace) -> None:
    a = _vuln("d1", "CVE-2", day(1))
    for n in range(6):
        workspace.write(DEVICES, [_device("d1", day(n))], day(n))
    workspace.write(VULNERABILITIES, [a], day(2))
    (row,) = workspace.query(
        "EPF_VulnerabilityLifecycle(datetime(2026-09-30), datetime(2026-10-06))"
    )
    assert (row["Status"], row["FixedAt"], row["DaysOpen"]) == ("Open", None, pytest.approx(4.0))


def test_a_device_that_goes_silent_is_not_a_fix(workspace: Workspace) -> None:
    a = _vuln("d2", "CVE-3", day(1))
    for n in range(3):
        workspace.write(DEVICES, [_device("d2", day(n))], day(n))
    for n in range(3, 12):  # last report on day 2; Inactive after a week, then gone
        workspace.write(DEVICES, [_device("d2", day(2), "Inactive")] if n < 10 else [], day(n))
    workspace.write(VULNERABILITIES, [a], day(1))
    workspace.write(VULNERABILITY_CHANGES, [_event(a, "Fixed", day(2))], day(3), full=False)
    (row,) = workspace.query(
        "EPF_VulnerabilityLifecycle(datetime(2026-09-30), datetime(2026-10-12))"
    )
    assert row["Status"] == "DeviceGone"


def test_a_configuration_that_failed_then_was_fixed(workspace: Workspace) -> None:
    def config(compliant: bool) -> dict[str, Any]:
        return {"DeviceId": "d3", "DeviceName": "d3", "ConfigurationId": "scid-2003",
                "ConfigurationName": "Turn on Tamper Protection", "ConfigurationImpact": 8.0,
                "IsApplicable": True, "IsCompliant": compliant}  # fmt: skip

    states = [True, True, False, False, False, True, True, False, True, True]
    for n, compliant in enumerate(states):
        workspace.write(DEVICES, [_device("d3", day(n))], day(n))
        workspace.write(
            SECURE_CONFIG,
            [config(compliant), {**config(True), "ConfigurationId": "scid-1"}],
            day(n),
        )
    rows = workspace.query("EPF_ConfigurationLifecycle(datetime(2026-09-30), datetime(2026-10-10))")
    (row,) = rows  # scid-1 never failed: it has no lifecycle
    assert row["ConfigurationId"] == "scid-2003"
    assert (row["FirstSeen"], row["FixedAt"], row["ReopenCount"]) == (day(2), day(8), 1)
    assert row["DaysOpen"] == pytest.approx(3 + 1)
    assert row["Status"] == "Fixed"


def test_a_window_that_starts_between_baselines_starts_from_the_state_then(
    workspace: Workspace,
) -> None:
    """In change-only history the rows inside such a window hold only what changed: an item
    already open at `since` must still have its lifecycle, the same as in snapshot mode."""
    config = {"DeviceId": "d4", "DeviceName": "d4", "ConfigurationId": "scid-2003",
              "ConfigurationName": "Turn on Tamper Protection", "ConfigurationImpact": 8.0,
              "IsApplicable": True}  # fmt: skip
    a, b = _vuln("d4", "CVE-4", day(0.5)), _vuln("d4", "CVE-5", day(0.5))
    for n in range(7):  # the next baseline (day 7) is after the window
        workspace.write(DEVICES, [_device("d4", day(n))], day(n))
        still_failing = {**config, "ConfigurationId": "scid-91", "IsCompliant": False}
        workspace.write(SECURE_CONFIG, [{**config, "IsCompliant": n >= 5}, still_failing], day(n))
        workspace.write(VULNERABILITIES, [a, b] if n < 6 else [b], day(n))
    workspace.write(VULNERABILITY_CHANGES, [_event(a, "Fixed", day(6))], day(6.5), full=False)
    window = "datetime(2026-10-03T12:00:00Z), datetime(2026-10-07T18:00:00Z)"

    configs = workspace.query(
        f"EPF_ConfigurationLifecycle({window}) | order by ConfigurationId asc"
    )
    assert [(r["ConfigurationId"], r["FirstSeen"], r["FixedAt"], r["Status"]) for r in configs] == [
        ("scid-2003", day(2.5), day(5), "Fixed"),
        ("scid-91", day(2.5), None, "Open"),  # no row inside the window: the state at its start
    ]
    assert configs[0]["DaysOpen"] == pytest.approx(2.5)
    assert configs[1]["ConfigurationName"] == "Turn on Tamper Protection"
    vulns = workspace.query(f"EPF_VulnerabilityLifecycle({window}) | order by CveId asc")
    assert [(r["CveId"], r["FirstSeen"], r["FixedAt"], r["Status"]) for r in vulns] == [
        ("CVE-4", day(0.5), day(6), "Fixed"),
        ("CVE-5", day(0.5), None, "Open"),
    ]
    assert vulns[0]["DaysOpen"] == pytest.approx(5.5)


def test_a_vulnerability_fixed_before_the_window_is_no_item_of_it(workspace: Workspace) -> None:
    """Change-only history writes a fixed record's tombstone at the next snapshot, inside the
    window: it repeats the Fixed event from before it, and opens or closes nothing."""
    a, b = _vuln("d5", "CVE-6", day(0.5)), _vuln("d5", "CVE-7", day(0.5))
    for n in range(6):
        workspace.write(DEVICES, [_device("d5", day(n))], day(n))
    workspace.write(VULNERABILITIES, [a, b], day(1))
    workspace.write(VULNERABILITY_CHANGES, [_event(a, "Fixed", day(1.5))], day(1.6), full=False)
    workspace.write(VULNERABILITIES, [b], day(4))  # change-only: CVE-6's tombstone
    window = "datetime(2026-10-03), datetime(2026-10-06)"
    items = workspace.query(f'EPF_RemediationLifecycle({window}, "Vulnerability")')
    assert [(r["Item"], r["Status"]) for r in items] == [(b["RecordId"], "Open")]
    vulns = workspace.query(f"EPF_VulnerabilityLifecycle({window})")
    assert [r["CveId"] for r in vulns] == ["CVE-7"]


def test_the_sla_takes_triages_bod_clock_where_it_knows_one(workspace: Workspace) -> None:
    from endpoint_forensics.tables import TRIAGE

    kev, upgrade, untriaged = (
        _vuln("d1", "CVE-10", day(1)),
        _vuln("d1", "CVE-11", day(1)),
        _vuln("d1", "CVE-12", day(1)),
    )
    for n in range(12):
        workspace.write(DEVICES, [_device("d1", day(n))], day(n))
    workspace.write(VULNERABILITIES, [kev, upgrade, untriaged], day(1))

    def decided(cve: str, outcome: str, due: datetime | None) -> dict[str, Any]:
        return {"DeviceId": "d1", "CveId": cve, "Bod2604Outcome": outcome, "DueDate": due}

    # Triage on day 2 gave CVE-10 three days; a later triage (day 6) keeps the clock.
    workspace.write(TRIAGE, [decided("CVE-10", "3 days", day(4)),
                             decided("CVE-11", "fix on system upgrade", None)], day(2))  # fmt: skip
    workspace.write(TRIAGE, [decided("CVE-10", "3 days", day(4))], day(6))
    rows = {
        r["CveId"]: r
        for r in workspace.query("EPF_VulnerabilitySla(datetime(2026-09-30), datetime(2026-10-11))")
    }
    assert (rows["CVE-10"]["SlaSource"], rows["CVE-10"]["DueDate"]) == ("BOD 26-04", day(4))
    assert rows["CVE-10"]["Breached"] and rows["CVE-10"]["OverdueDays"] == pytest.approx(6.0)
    assert rows["CVE-10"]["Bod2604Outcome"] == "3 days"
    # No BOD date (fix on system upgrade), or no triage at all: the days by severity.
    for cve in ("CVE-11", "CVE-12"):
        assert (rows[cve]["SlaSource"], rows[cve]["DueDate"]) == ("severity", day(1 + 15))
        assert not rows[cve]["Breached"]


def _sla_both_ways(db: Path, since: datetime, until: datetime) -> tuple[list[Any], list[Any]]:
    """EPF_VulnerabilitySla's rows, and those of the SQL the report runs for it."""
    from endpoint_forensics.analytics.functions import kql_datetime
    from endpoint_forensics.analytics.lifecycle import vulnerability_sla_sql
    from endpoint_forensics.workspace import store

    con = duckdb_kql.connect(str(db), read_only=True)
    try:
        kql = f"EPF_VulnerabilitySla({kql_datetime(since)}, {kql_datetime(until)})"
        shipped = duckdb_kql.kql(con, kql, functions=registry())
        columns, found = shipped.columns, shipped.fetchall()
    finally:
        con.close()
    con = store.connect(db, read_only=True)
    try:
        local = con.execute(vulnerability_sla_sql(con, since, until))
        local_columns = [d[0] for d in local.description]
        local_rows = local.fetchall()
    finally:
        con.close()

    def rows(names: list[str], values: list[Any]) -> list[Any]:
        records = [{c: _utc(v) for c, v in zip(names, r, strict=True)} for r in values]
        return sorted(records, key=lambda r: (r["DeviceId"], r["RecordId"]))

    return rows(columns, found), rows(local_columns, local_rows)


def test_the_reports_sla_sql_is_the_shipped_functions_rows(workspace: Workspace) -> None:
    from endpoint_forensics.tables import TRIAGE

    test_the_sla_takes_triages_bod_clock_where_it_knows_one(workspace)
    # A newer decision replaces an older one: CVE-11 gets a BOD clock on day 7.
    later = {"DeviceId": "d1", "CveId": "CVE-11", "Bod2604Outcome": "3 days", "DueDate": day(9)}
    workspace.write(TRIAGE, [later], day(7))
    workspace.sink.close()
    shipped, local = _sla_both_ways(workspace.path, day(-1), day(11))
    assert [(r["CveId"], r["SlaSource"], r["Breached"]) for r in shipped] == [
        ("CVE-10", "BOD 26-04", True), ("CVE-11", "BOD 26-04", True), ("CVE-12", "severity", False)
    ]  # fmt: skip
    assert local == shipped


@pytest.mark.e2e
def test_the_reports_sla_sql_is_the_shipped_functions_rows_on_the_demo(demo: Path) -> None:
    from endpoint_forensics.analytics.lifecycle import history_end

    until = history_end(demo)
    assert until is not None
    shipped, local = _sla_both_ways(demo, until - timedelta(days=6), until)
    assert len(shipped) > 1000 and any(r["SlaSource"] == "BOD 26-04" for r in shipped)
    assert any(r["Breached"] for r in shipped) and any(r["Status"] == "Fixed" for r in shipped)
    assert local == shipped


def _rows(names: list[str], values: list[Any]) -> list[dict[str, Any]]:
    records = [{c: _utc(v) for c, v in zip(names, r, strict=True)} for r in values]
    return sorted(records, key=lambda r: tuple(str(v) for v in r.values()))


def _lifecycles_both_ways(db: Path, since: datetime, until: datetime) -> dict[str, Any]:
    """Each shipped lifecycle function's rows, and those of the tables the report makes."""
    from endpoint_forensics.analytics.functions import kql_datetime
    from endpoint_forensics.analytics.lifecycle import create_lifecycle_tables
    from endpoint_forensics.analytics.lifecycle_sql import REMEDIATION_TABLE
    from endpoint_forensics.workspace import store

    window = f"{kql_datetime(since)}, {kql_datetime(until)}"
    shipped = {
        REMEDIATION_TABLE: f"EPF_RemediationLifecycle({window})",
        "epf_vulnerability_lifecycle": f"EPF_VulnerabilitySla({window})",
        "epf_configuration_lifecycle": f"EPF_ConfigurationLifecycle({window})",
    }
    found: dict[str, Any] = {}
    con = duckdb_kql.connect(str(db), read_only=True)
    try:
        for table, kql in shipped.items():
            rel = duckdb_kql.kql(con, kql, functions=registry())
            found[table] = [_rows(rel.columns, rel.fetchall())]
    finally:
        con.close()
    con = store.connect(db, read_only=True)
    try:
        create_lifecycle_tables(con, since, until)
        for table in shipped:
            cursor = con.execute(f"SELECT * FROM {table}")
            found[table].append(_rows([d[0] for d in cursor.description], cursor.fetchall()))
    finally:
        con.close()
    return found


_SCENARIOS = [
    test_a_fixed_reopened_and_fixed_again_vulnerability,
    test_a_vulnerability_still_open_counts_until_the_end,
    test_a_device_that_goes_silent_is_not_a_fix,
    test_a_configuration_that_failed_then_was_fixed,
    test_a_window_that_starts_between_baselines_starts_from_the_state_then,
    test_the_sla_takes_triages_bod_clock_where_it_knows_one,
]


@pytest.mark.parametrize("scenario", _SCENARIOS, ids=lambda f: f.__name__.removeprefix("test_"))
def test_the_reports_tables_are_the_shipped_lifecycles_rows(
    scenario: Any, workspace: Workspace
) -> None:
    scenario(workspace)
    workspace.sink.close()
    assert workspace.windows
    for since, until in workspace.windows:
        for table, (shipped, local) in _lifecycles_both_ways(workspace.path, since, until).items():
            assert local == shipped, table


@pytest.mark.e2e
def test_the_reports_tables_are_the_shipped_lifecycles_rows_on_the_demo(demo: Path) -> None:
    from endpoint_forensics.analytics.lifecycle import history_end

    until = history_end(demo)
    assert until is not None
    for since in (until - timedelta(days=6), until - timedelta(days=2, hours=7)):
        found = _lifecycles_both_ways(demo, since, until)
        shipped = found["epf_vulnerability_lifecycle"][0]
        assert len(shipped) > 1000 and any(r["Status"] == "Fixed" for r in shipped)
        assert len(found["epf_configuration_lifecycle"][0]) > 100
        for table, (shipped, local) in found.items():
            assert local == shipped, table
