import duckdb
import pytest

from endpoint_forensics.tables import (
    AGENT_HEALTH_TESTS,
    RESERVED_COLUMN_NAMES,
    TABLES,
    KqlType,
    get_table,
    name_problem,
)

ARCHITECTURE_TABLES = {
    "EPF_Devices_CL",
    "EPF_AgentHealth_CL",
    "EPF_Runs_CL",
    "EPF_IotDevices_CL",
    "EPF_IotCves_CL",
    "EPF_IotAlerts_CL",
    "EPF_IotEvents_CL",
    "EPF_IotConnections_CL",
}


def test_the_skeleton_tables_are_registered():
    assert ARCHITECTURE_TABLES <= set(TABLES)


@pytest.mark.parametrize("table", TABLES.values(), ids=lambda t: t.name)
def test_table_and_column_names_follow_log_analytics_rules(table):
    assert name_problem(table.name, table=True) is None
    names = [c.name for c in table.columns]
    assert len(names) == len(set(n.lower() for n in names)), "duplicate column (case-insensitive)"
    assert len(names) <= 500
    for name in names:
        assert name_problem(name) is None, name
        assert name.lower() not in RESERVED_COLUMN_NAMES


@pytest.mark.parametrize("table", TABLES.values(), ids=lambda t: t.name)
def test_every_table_has_the_common_columns_and_its_key(table):
    assert table.column("TimeGenerated").type is KqlType.DATETIME
    # The snapshot time that survives a late delivery (Azure may replace TimeGenerated).
    assert table.column("SnapshotTime").type is KqlType.DATETIME
    assert table.column("RunId").type is KqlType.STRING
    assert table.column("DefenderTenantId").type is KqlType.STRING
    for key in table.key:
        table.column(key)


@pytest.mark.parametrize(
    "name, problem",
    [
        ("a", "2-45"),
        ("1abc", "2-45"),
        ("has-dash", "2-45"),
        ("x" * 46, "2-45"),
        ("TenantId", "reserved"),
        ("type", "reserved"),
        ("_ItemId", "2-45"),  # leading underscore is not a letter either
        ("Été", "2-45"),
    ],
)
def test_name_rules_reject_bad_names(name, problem):
    assert problem in (name_problem(name) or "")


def test_custom_table_names_must_end_in_cl():
    assert "_CL" in (name_problem("EPF_Devices", table=True) or "")


def test_agent_health_has_the_eleven_tests_in_order():
    cols = get_table("EPF_AgentHealth_CL").column_names
    assert [c for c in cols if c in AGENT_HEALTH_TESTS] == list(AGENT_HEALTH_TESTS)
    assert len(AGENT_HEALTH_TESTS) == 11


def test_generated_ddl_creates_every_table_with_its_columns():
    con = duckdb.connect(":memory:")
    for table in TABLES.values():
        con.execute(table.duckdb_ddl())
        got = [r[0] for r in con.execute(f'DESCRIBE "{table.name}"').fetchall()]
        assert got == list(table.column_names)


def test_get_table_names_the_known_tables_when_missing():
    with pytest.raises(KeyError, match="EPF_Devices_CL"):
        get_table("Nope_CL")
