"""The template's table plans and its saved KQL functions, as built (no deployment here).

Expectations come from the Tables API and ARM template references: ``retentionInDays`` is
read-only on Basic and Auxiliary tables, Auxiliary is known to api-version 2025-07-01 and not to
2022-10-01, and a saved function is a ``workspaces/savedSearches`` resource with
``category``, ``displayName``, ``query``, ``functionAlias``, ``functionParameters`` and
``version``.
"""

import re

import pytest

from endpoint_forensics.analytics.functions import KqlFunction, functions
from endpoint_forensics.azure import build_arm_template, expression_problems, plan_problem
from endpoint_forensics.tables import COMMON_COLUMNS, TABLES, Table

TABLE_TYPE = "Microsoft.OperationalInsights/workspaces/tables"
SAVED_TYPE = "Microsoft.OperationalInsights/workspaces/savedSearches"
FORENSIC_TABLES = {
    "EPF_Devices_CL",
    "EPF_AgentHealth_CL",
    "EPF_AvHealth_CL",
    "EPF_SecureConfig_CL",
    "EPF_SoftwareInventory_CL",
    "EPF_Vulnerabilities_CL",
    "EPF_VulnerabilityChanges_CL",
}


def _by_name(template, kind):
    found = {}
    for resource in template["resources"]:
        if resource["type"] == kind:
            match = re.fullmatch(
                r"\[concat\(parameters\('workspaceName'\), '/(\w+)'\)\]", resource["name"]
            )
            assert match, resource["name"]
            found[match.group(1)] = resource
    return found


def _table_id(name):
    return (
        "[resourceId('Microsoft.OperationalInsights/workspaces/tables', "
        f"parameters('workspaceName'), '{name}')]"
    )


def test_by_default_every_table_is_analytics_with_its_retention_under_2022_10_01():
    tables = _by_name(build_arm_template(), TABLE_TYPE)
    assert set(tables) == {n for n, t in TABLES.items() if t.profile == "core"}
    for resource in tables.values():
        assert resource["apiVersion"] == "2022-10-01"
        assert resource["properties"]["plan"] == "Analytics"
        assert resource["properties"]["retentionInDays"] == "[parameters('retentionInDays')]"


def test_a_basic_table_sets_no_interactive_retention_and_keeps_the_api_version():
    tables = _by_name(build_arm_template(plans={"EPF_Runs_CL": "Basic"}), TABLE_TYPE)
    runs = tables["EPF_Runs_CL"]["properties"]
    assert runs["plan"] == "Basic"
    assert "retentionInDays" not in runs
    assert runs["totalRetentionInDays"] == "[parameters('totalRetentionInDays')]"
    assert {r["apiVersion"] for r in tables.values()} == {"2022-10-01"}


def test_an_auxiliary_table_moves_every_table_to_an_api_version_that_knows_it():
    template = build_arm_template(
        plans={"EPF_IotEvents_CL": "Auxiliary", "EPF_IotConnections_CL": "Basic"}
    )
    tables = _by_name(template, TABLE_TYPE)
    assert {r["apiVersion"] for r in tables.values()} == {"2025-07-01"}
    events = tables["EPF_IotEvents_CL"]["properties"]
    assert events["plan"] == "Auxiliary" and "retentionInDays" not in events
    assert "retentionInDays" not in tables["EPF_IotConnections_CL"]["properties"]
    assert tables["EPF_Devices_CL"]["properties"]["plan"] == "Analytics"
    assert expression_problems(template) == []


@pytest.mark.parametrize(
    "plans, total, problem",
    [
        ({"EPF_Nope_CL": "Basic"}, 365, "unknown table 'EPF_Nope_CL'"),
        ({"EPF_Runs_CL": "Archive"}, 365, "unknown plan 'Archive'"),
        ({"EPF_Runs_CL": "basic"}, 365, "unknown plan 'basic'"),
        ({"AD4IOT_Events_CL": "Basic"}, 365, "unknown table"),  # compat tables only with compat
        ({"EPF_Devices_CL": "Basic"}, 365, "cannot serve the function EPF_DevicesAt"),
        ({"EPF_VulnerabilityChanges_CL": "Auxiliary"}, 365, "plan Auxiliary cannot serve"),
        ({"EPF_IotEvents_CL": "Auxiliary"}, 20, "must be -1 or at least 30"),
    ],
)
def test_plans_azure_or_the_functions_cannot_take_are_refused(plans, total, problem):
    found = plan_problem(plans, total_retention_days=total)
    assert found is not None and problem in found
    with pytest.raises(ValueError, match=re.escape(problem)):
        build_arm_template(plans=plans, retention_days=10, total_retention_days=total)


def test_plans_the_template_takes():
    assert plan_problem({}) is None
    assert plan_problem({"EPF_IotEvents_CL": "Auxiliary", "EPF_Runs_CL": "Basic"}) is None
    assert plan_problem({"EPF_Devices_CL": "Analytics"}, total_retention_days=-1) is None
    assert plan_problem({"AD4IOT_Events_CL": "Auxiliary"}, compat=True) is None


def test_every_shipped_function_is_a_saved_function_depending_on_the_tables_it_reads():
    shipped = functions()
    assert shipped, "the product ships KQL functions"
    template = build_arm_template()
    saved = _by_name(template, SAVED_TYPE)
    assert set(saved) == set(shipped)
    for name, resource in saved.items():
        function = shipped[name]
        assert resource["apiVersion"] == "2020-08-01"
        props = resource["properties"]
        assert props["category"] == "Endpoint Forensics"
        assert props["displayName"] == name
        assert props["functionAlias"] == name
        assert props["query"] == function.body
        assert props["functionParameters"] == function.signature
        assert props["version"] == 2
        named = set(re.findall(r"\b\w+_CL\b", function.body))
        called = {f for f in re.findall(r"\b(EPF_\w+)\(", function.body) if f != name}
        assert resource["dependsOn"] == [_table_id(t) for t in sorted(named)] + [
            _search_id(f) for f in sorted(called)
        ]
    # The posture of vulnerabilities joins the snapshot table and the events table.
    assert saved["EPF_VulnerabilitiesAt"]["dependsOn"] == [
        _table_id("EPF_Vulnerabilities_CL"),
        _table_id("EPF_VulnerabilityChanges_CL"),
    ]
    # The SLA reads the vulnerability lifecycle, which must be saved first, and triage's clocks.
    assert saved["EPF_VulnerabilitySla"]["dependsOn"] == [
        _table_id("EPF_Triage_CL"),
        _search_id("EPF_VulnerabilityLifecycle"),
    ]
    read = {d for r in saved.values() for d in r["dependsOn"]}
    assert read >= {_table_id(t) for t in FORENSIC_TABLES if t != "EPF_VulnerabilityChanges_CL"}
    assert build_arm_template() == template  # deterministic names and order
    assert expression_problems(template) == []


def test_given_tables_take_no_functions_unless_asked_and_a_function_needs_its_tables():
    runs = TABLES["EPF_Runs_CL"]
    assert not _by_name(build_arm_template(tables=[runs]), SAVED_TYPE)
    reads_runs = KqlFunction(
        "EPF_LastRun", (), "The newest run.", "EPF_Runs_CL | top 1 by TimeGenerated"
    )
    template = build_arm_template(tables=[runs], kql_functions=[reads_runs])
    [saved] = _by_name(template, SAVED_TYPE).values()
    assert "functionParameters" not in saved["properties"]  # none declared
    assert saved["dependsOn"] == [_table_id("EPF_Runs_CL")]
    other = Table("EPF_Other_CL", "d", "test", ("RunId",), COMMON_COLUMNS)
    with pytest.raises(ValueError, match="EPF_LastRun reads EPF_Runs_CL, not in the template"):
        build_arm_template(tables=[other], kql_functions=[reads_runs])


def _search_id(name: str) -> str:
    return (
        "[resourceId('Microsoft.OperationalInsights/workspaces/savedSearches', "
        f"parameters('workspaceName'), '{name}')]"
    )
