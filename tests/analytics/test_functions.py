"""The shipped KQL functions run on the local engine as stored functions, exactly as written."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb_kql
import pytest

from endpoint_forensics.analytics.functions import functions, registry, registry_for

_T0 = "datetime(2026-11-01T00:00:00Z)"


@pytest.fixture
def con():  # type: ignore[no-untyped-def]
    """A workspace with three secure-configuration snapshots of two devices."""
    from endpoint_forensics.tables import TABLES

    con = duckdb_kql.connect(":memory:")
    for name in ("EPF_SecureConfig_CL", "EPF_Vulnerabilities_CL", "EPF_VulnerabilityChanges_CL"):
        con.execute(TABLES[name].duckdb_ddl())
    rows = [
        # device, configuration, compliant, snapshot
        ("d1", "scid-1", True, "2026-11-01"),
        ("d1", "scid-2", False, "2026-11-01"),
        ("d2", "scid-1", True, "2026-11-01"),
        ("d1", "scid-1", False, "2026-11-02"),  # d1's scid-2 is gone from the second snapshot
        ("d2", "scid-1", True, "2026-11-02"),
        ("d2", "scid-1", False, "2026-11-06"),  # d1 left the fleet before the third
    ]
    for device, scid, compliant, snapshot in rows:
        con.execute(
            "INSERT INTO EPF_SecureConfig_CL (DefenderTenantId, DeviceId, ConfigurationId,"
            " IsCompliant, IsApplicable, SnapshotTime, TimeGenerated)"
            " VALUES ('t', ?, ?, ?, true, CAST(? AS TIMESTAMPTZ), CAST(? AS TIMESTAMPTZ))",
            [device, scid, compliant, snapshot, snapshot],
        )
    return con


def _rows(con, query: str) -> list[tuple[object, ...]]:  # type: ignore[no-untyped-def]
    return sorted(duckdb_kql.kql(con, query, functions=registry()).fetchall())


def test_the_state_at_t_is_the_newest_snapshot_at_or_before_it(con) -> None:  # type: ignore[no-untyped-def]
    at = "datetime(2026-11-02T12:00:00Z)"
    rows = _rows(con, f"EPF_SecureConfigAt({at}) | project DeviceId, ConfigurationId, IsCompliant")
    # scid-2 of d1 disappeared with the second snapshot: it is not state at T any more.
    assert rows == [("d1", "scid-1", False), ("d2", "scid-1", True)]


def test_a_time_before_the_first_snapshot_has_no_state(con) -> None:  # type: ignore[no-untyped-def]
    assert _rows(con, "EPF_SecureConfigAt(datetime(2026-10-31T23:59:59Z)) | count") == [(0,)]


def test_a_snapshot_older_than_the_look_back_is_not_an_answer(con) -> None:  # type: ignore[no-untyped-def]
    # 31 days after the third snapshot, with none since: nothing within the look-back.
    assert _rows(con, "EPF_SecureConfigAt(datetime(2026-12-07T00:00:01Z)) | count") == [(0,)]
    assert _rows(con, "EPF_SecureConfigAt(datetime(2026-12-06T23:59:59Z)) | count") == [(1,)]


def test_an_argument_may_be_a_let_of_the_query_and_a_function_called_twice(con) -> None:  # type: ignore[no-untyped-def]
    query = (
        "let t1 = datetime(2026-11-01T06:00:00Z);\n"
        "let t2 = t1 + 1d;\n"
        "EPF_SecureConfigAt(t1) | where DeviceId == 'd1' | project ConfigurationId, Before = IsCompliant\n"
        "| join kind=inner (EPF_SecureConfigAt(t2) | where DeviceId == 'd1'"
        " | project ConfigurationId, After = IsCompliant)"
        " on ConfigurationId | project ConfigurationId, Before, After"
    )
    assert _rows(con, query) == [("scid-1", True, False)]


def test_every_function_declares_its_parameters_and_says_what_it_answers() -> None:
    for function in functions().values():
        assert function.parameters, function.name
        assert len(function.description) > 40, function.name
        assert all(t in {"datetime", "string", "timespan", "long"} for _, t in function.parameters)


def test_vulnerabilities_at_t_follow_the_changes_after_the_snapshot(con) -> None:  # type: ignore[no-untyped-def]
    def vuln(table: str, record: str, snapshot: str, status: str = "", event: str = "") -> None:
        extra = ", Status, EventTimestamp" if status else ""
        values = ", ?, CAST(? AS TIMESTAMPTZ)" if status else ""
        con.execute(
            f"INSERT INTO {table} (DefenderTenantId, DeviceId, RecordId, CveId, SnapshotTime,"
            f" TimeGenerated{extra}) VALUES ('t', 'd1', ?, ?, CAST(? AS TIMESTAMPTZ),"
            f" CAST(? AS TIMESTAMPTZ){values})",
            [record, record, snapshot, snapshot, *([status, event] if status else [])],
        )

    vuln("EPF_Vulnerabilities_CL", "CVE-1", "2026-11-01")
    vuln("EPF_Vulnerabilities_CL", "CVE-2", "2026-11-01")
    changes = "EPF_VulnerabilityChanges_CL"
    vuln(changes, "CVE-1", "2026-11-03", "Fixed", "2026-11-02T10:00:00Z")
    vuln(changes, "CVE-3", "2026-11-03", "New", "2026-11-02T11:00:00Z")
    vuln(changes, "CVE-4", "2026-11-03", "New", "2026-10-31T11:00:00Z")  # before the snapshot

    def open_at(at: str) -> list[str]:
        rows = _rows(con, f"EPF_VulnerabilitiesAt(datetime({at})) | project CveId")
        return [str(r[0]) for r in rows]

    assert open_at("2026-11-02T09:00:00Z") == ["CVE-1", "CVE-2"]
    assert open_at("2026-11-02T12:00:00Z") == ["CVE-2", "CVE-3"]
    # The narrow form gives the same rows, whatever the time.
    columns = "DefenderTenantId, DeviceId, RecordId, CveId, SoftwareName, FirstSeenTimestamp"
    for at in ("2026-11-01T12:00:00Z", "2026-11-02T09:00:00Z", "2026-11-02T12:00:00Z"):
        narrow = _rows(con, f"EPF_OpenVulnerabilitiesAt(datetime({at})) | project {columns}")
        wide = _rows(con, f"EPF_VulnerabilitiesAt(datetime({at})) | project {columns}")
        assert narrow == wide and wide, at
    assert datetime(2026, 11, 2, tzinfo=UTC)  # the times above are UTC


_DAILY = [
    # (daily function, its At function, the table, columns compared)
    ("EPF_AgentHealthDaily", "EPF_AgentHealthAt", "EPF_AgentHealth_CL",
     "DeviceId, TamperProtection, SensorEnabled, AntivirusSignatureVersion"),
    ("EPF_AvHealthDaily", "EPF_AvHealthAt", "EPF_AvHealth_CL",
     "DeviceId, AvMode, AvSignatureUpdateTime"),
    ("EPF_SecureConfigDaily", "EPF_SecureConfigAt", "EPF_SecureConfig_CL",
     "DeviceId, ConfigurationId, IsCompliant, IsApplicable"),
]  # fmt: skip


@pytest.mark.e2e
@pytest.mark.parametrize(("daily", "at", "table", "columns"), _DAILY, ids=[d[0] for d in _DAILY])
def test_a_daily_function_gives_the_state_at_each_day(  # type: ignore[no-untyped-def]
    demo, daily: str, at: str, table: str, columns: str
) -> None:
    from datetime import timedelta

    from endpoint_forensics.workspace import store

    def rows(query: str) -> set[tuple[object, ...]]:
        return set(store.run_query(demo, query, functions=registry()).rows)

    ((newest,),) = rows(f"{table} | summarize max(SnapshotTime)")
    until = f"datetime({newest.isoformat()})"
    # The engine's day arithmetic drops the zone; every KQL datetime is UTC.
    by_day = {
        (row[0].replace(tzinfo=newest.tzinfo), *row[1:])
        for row in rows(f"{daily}({until} - 6d, {until}) | project Day, {columns}")
    }
    days = sorted({row[0] for row in by_day})
    assert days == [newest - timedelta(days=k) for k in range(6, -1, -1)]
    states = set()
    for day in days:
        state = rows(f"{at}(datetime({day.isoformat()})) | project {columns}")
        assert {row[1:] for row in by_day if row[0] == day} == state, day
        states.add(frozenset(state))
    assert len(states) > 1  # the fleet changed over the week: the days differ


def test_a_query_is_given_only_the_functions_it_calls(con) -> None:  # type: ignore[no-untyped-def]
    # Parsing the whole registry costs a new process more than half a second (epf forensics).
    def parsed(query: str) -> set[str]:
        return set(registry_for(query)[None])

    assert parsed("EPF_SecureConfig_CL | count") == set()
    assert parsed(f"EPF_SecureConfigAt({_T0}) | count") == {"EPF_SecureConfigAt"}
    assert {"EPF_TriageDevicesAt", "EPF_TriageCvesAt"} <= parsed("EPF_TriageInputs(now())")
    query = f"EPF_SecureConfigAt({_T0} + 1d) | project DeviceId, ConfigurationId, IsCompliant"
    given = sorted(duckdb_kql.kql(con, query, functions=registry_for(query)).fetchall())
    assert given == _rows(con, query) != []
