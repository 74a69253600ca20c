import json
import re
from dataclasses import dataclass

import pytest

from endpoint_forensics.azure import (
    MAX_STREAMS_PER_DCR,
    MONITORING_METRICS_PUBLISHER_ROLE_ID,
    build_arm_template,
    expression_problems,
    legacy_type_problems,
    retention_problem,
    write_arm_template,
)
from endpoint_forensics.tables import COMMON_COLUMNS, TABLES, Column, KqlType, Table

TABLE_TYPE = "Microsoft.OperationalInsights/workspaces/tables"
DCR_TYPE = "Microsoft.Insights/dataCollectionRules"
ROLE_TYPE = "Microsoft.Authorization/roleAssignments"
DEPLOYMENT_TYPE = "Microsoft.Resources/deployments"

LA_TYPES = {
    "string": "string",
    "int": "int",
    "long": "long",
    "real": "real",
    "bool": "boolean",
    "datetime": "dateTime",
    "dynamic": "dynamic",
    "guid": "guid",
}
STREAM_TYPES = {**LA_TYPES, "datetime": "datetime", "guid": "string"}


@dataclass(frozen=True)
class ProfiledTable(Table):
    """A registry Table carrying the profile attribute the registry is about to get."""

    profile: str = "core"


def _table(name, *, profile="core", extra=(), description="A test table."):
    return ProfiledTable(
        name=name,
        description=description,
        source="test",
        key=("RunId",),
        columns=(*COMMON_COLUMNS, *extra),
        profile=profile,
    )


EVERY_TYPE = tuple(Column(f"Col{t.name.title()}", t, f"a {t.value}") for t in KqlType)
LEGACY = _table("AgentHealthStatusWindows_CL", profile="compat", extra=EVERY_TYPE)
# Registry tables without a profile attribute (all of them, until it lands) are core.
CORE = {n: t for n, t in TABLES.items() if getattr(t, "profile", "core") == "core"}


def _of_type(template, kind):
    return [r for r in template["resources"] if r["type"] == kind]


def _nested(template):
    """The one nested deployment: the DCRs and their role assignments."""
    [deployment] = _of_type(template, DEPLOYMENT_TYPE)
    return deployment


def _inner(template):
    return _nested(template)["properties"]["template"]


def _dcrs(template):
    return _of_type(_inner(template), DCR_TYPE)


def _roles(template):
    return _of_type(_inner(template), ROLE_TYPE)


def _table_name(resource):
    match = re.fullmatch(r"\[concat\(parameters\('workspaceName'\), '/(\w+)'\)\]", resource["name"])
    assert match, resource["name"]
    return match.group(1)


def _tables_by_name(template):
    return {_table_name(r): r for r in _of_type(template, TABLE_TYPE)}


def _dcr_by_stream(template):
    """Each stream name -> the one DCR declaring it (a stream in two DCRs fails)."""
    found = {}
    for dcr in _dcrs(template):
        for stream in dcr["properties"]["streamDeclarations"]:
            assert stream not in found, f"{stream} declared by two DCRs"
            found[stream] = dcr
    return found


@pytest.fixture(scope="module")
def template():
    return build_arm_template()


def test_the_template_is_json_with_the_arm_keys(tmp_path, template):
    out = tmp_path / "epf.json"
    write_arm_template(out)
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written == template
    assert written["$schema"] == (
        "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
    )
    assert set(written) == {
        "$schema",
        "contentVersion",
        "parameters",
        "variables",
        "resources",
        "outputs",
    }
    params = written["parameters"]
    assert set(params) == {
        "workspaceName",
        "location",
        "collectorPrincipalId",
        "retentionInDays",
        "totalRetentionInDays",
        "dataCollectionRuleName",
    }
    assert params["location"]["defaultValue"] == ""  # the workspace's region
    assert params["retentionInDays"]["defaultValue"] == 90
    assert params["totalRetentionInDays"]["defaultValue"] == 365
    assert params["dataCollectionRuleName"]["defaultValue"] == "epf-dcr"
    assert "defaultValue" not in params["workspaceName"]
    assert "defaultValue" not in params["collectorPrincipalId"]


def test_every_registry_table_has_its_columns_and_types_in_order(template):
    by_name = _tables_by_name(template)
    assert set(by_name) == set(CORE)
    for table in CORE.values():
        resource = by_name[table.name]
        assert resource["apiVersion"] >= "2022-10-01"
        props = resource["properties"]
        assert props["plan"] == "Analytics"
        assert props["retentionInDays"] == "[parameters('retentionInDays')]"
        assert props["totalRetentionInDays"] == "[parameters('totalRetentionInDays')]"
        assert props["schema"]["name"] == table.name
        assert props["schema"]["columns"] == [
            {"name": c.name, "type": LA_TYPES[c.type.value], "description": c.description}
            for c in table.columns
        ]


def test_every_table_has_a_stream_with_its_columns_and_a_flow_to_itself(template):
    dcrs = _dcr_by_stream(template)
    for table in CORE.values():
        stream = f"Custom-{table.name}"
        props = dcrs[stream]["properties"]
        assert props["streamDeclarations"][stream]["columns"] == [
            {"name": c.name, "type": STREAM_TYPES[c.type.value]} for c in table.columns
        ]
        flows = [f for f in props["dataFlows"] if f["streams"] == [stream]]
        assert len(flows) == 1
        assert flows[0]["outputStream"] == stream
        assert flows[0]["transformKql"] == "source"
        destination = props["destinations"]["logAnalytics"][0]
        assert flows[0]["destinations"] == [destination["name"]]
        assert destination["workspaceResourceId"] == "[parameters('workspaceResourceId')]"
        # The DCRs' deployment waits for every table (an output stream must exist).
        table_id = (
            "[resourceId('Microsoft.OperationalInsights/workspaces/tables', "
            f"parameters('workspaceName'), '{table.name}')]"
        )
        assert table_id in _nested(template)["dependsOn"]
    workspace = _nested(template)["properties"]["parameters"]["workspaceResourceId"]
    assert workspace == {"value": "[variables('workspaceResourceId')]"}


def test_the_dcrs_are_direct_and_within_the_documented_stream_and_flow_limits(template):
    dcrs = _dcrs(template)
    # 17 core tables today: more than one DCR can hold.
    assert len(CORE) > MAX_STREAMS_PER_DCR
    assert len(dcrs) == -(-len(CORE) // MAX_STREAMS_PER_DCR)
    for dcr in dcrs:
        assert dcr["kind"] == "Direct"
        assert dcr["apiVersion"] == "2023-03-11"
        assert dcr["location"] == "[parameters('location')]"
        props = dcr["properties"]
        # Azure Monitor service limits: 10 data flows and 10 data streams per DCR.
        assert 0 < len(props["streamDeclarations"]) <= 10
        assert 0 < len(props["dataFlows"]) <= 10
    assert len({d["name"] for d in dcrs}) == len(dcrs)


def test_no_stream_without_a_table_and_no_table_without_a_stream(template):
    tables = set(_tables_by_name(template))
    declared = set(_dcr_by_stream(template))
    flowing = {
        stream
        for dcr in _dcrs(template)
        for flow in dcr["properties"]["dataFlows"]
        for stream in flow["streams"]
    }
    outputs = {f["outputStream"] for dcr in _dcrs(template) for f in dcr["properties"]["dataFlows"]}
    expected = {f"Custom-{name}" for name in tables}
    assert declared == flowing == outputs == expected


def test_each_dcr_grants_monitoring_metrics_publisher_to_the_collector(template):
    dcrs = _dcrs(template)
    roles = _roles(template)
    assert len(roles) == len(dcrs)
    for dcr in dcrs:
        name = dcr["name"][1:-1]
        [role] = [r for r in roles if r["scope"] == f"[format('{DCR_TYPE}/{{0}}', {name})]"]
        assert role["dependsOn"] == [f"[resourceId('{DCR_TYPE}', {name})]"]
        assert role["name"].startswith(f"[guid(resourceId('{DCR_TYPE}', {name}), ")
        props = role["properties"]
        assert props["principalId"] == "[parameters('collectorPrincipalId')]"
        assert props["principalType"] == "ServicePrincipal"
        assert props["roleDefinitionId"] == (
            "[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', "
            "variables('monitoringMetricsPublisherRoleId'))]"
        )
    assert _inner(template)["variables"]["monitoringMetricsPublisherRoleId"] == (
        "3913510d-42f4-4e42-8a64-420c390055eb"
    )
    assert _nested(template)["properties"]["parameters"]["collectorPrincipalId"] == {
        "value": "[parameters('collectorPrincipalId')]"
    }
    assert MONITORING_METRICS_PUBLISHER_ROLE_ID == "3913510d-42f4-4e42-8a64-420c390055eb"
    assert len({r["name"] for r in roles}) == len(roles)


def test_outputs_give_each_dcr_its_immutable_id_endpoint_and_streams(template):
    dcrs = _dcrs(template)
    routes = _inner(template)["outputs"]["dataCollectionRules"]["value"]
    assert [r["name"] for r in routes] == [d["name"] for d in dcrs]
    for route, dcr in zip(routes, dcrs, strict=True):
        ref = f"reference(resourceId('{DCR_TYPE}', {dcr['name'][1:-1]}), '2023-03-11')"
        assert route["immutableId"] == f"[{ref}.immutableId]"
        assert route["endpoint"] == f"[{ref}.endpoints.logsIngestion]"
        assert route["streams"] == list(dcr["properties"]["streamDeclarations"])
    # Several DCRs: a single id/endpoint pair would be wrong for most streams.
    assert "dataCollectionRuleImmutableId" not in _inner(template)["outputs"]
    # The template passes the nested deployment's outputs through.
    nested = (
        "reference(resourceId('Microsoft.Resources/deployments', "
        "variables('dcrDeploymentName')), '2022-09-01')"
    )
    assert template["outputs"] == {
        "dataCollectionRules": {
            "type": "array",
            "value": f"[{nested}.outputs.dataCollectionRules.value]",
        }
    }
    assert template["variables"]["dcrDeploymentName"] == (
        "[format('{0}-dcrs', parameters('dataCollectionRuleName'))]"
    )


def test_a_single_dcr_also_gets_the_sentinel_config_outputs():
    small = build_arm_template(tables=[_table("EPF_One_CL"), _table("EPF_Two_CL")])
    [dcr] = _dcrs(small)
    ref = f"reference(resourceId('{DCR_TYPE}', {dcr['name'][1:-1]}), '2023-03-11')"
    inner = _inner(small)["outputs"]
    assert inner["dataCollectionRuleImmutableId"]["value"] == f"[{ref}.immutableId]"
    assert inner["logsIngestionEndpoint"]["value"] == f"[{ref}.endpoints.logsIngestion]"
    for key in ("dataCollectionRuleImmutableId", "logsIngestionEndpoint"):
        assert small["outputs"][key]["type"] == "string"
        assert small["outputs"][key]["value"].endswith(f".outputs.{key}.value]")


def test_every_type_maps_to_its_table_and_stream_type_guid_as_string_in_the_stream():
    built = build_arm_template(tables=[_table("EPF_Types_CL", extra=EVERY_TYPE)])
    [table] = _of_type(built, TABLE_TYPE)
    [dcr] = _dcrs(built)
    table_types = {c["name"]: c["type"] for c in table["properties"]["schema"]["columns"]}
    stream = dcr["properties"]["streamDeclarations"]["Custom-EPF_Types_CL"]["columns"]
    stream_types = {c["name"]: c["type"] for c in stream}
    assert [table_types[c.name] for c in EVERY_TYPE] == [
        "string",
        "int",
        "long",
        "real",
        "boolean",
        "dateTime",
        "dynamic",
        "guid",
    ]
    assert [stream_types[c.name] for c in EVERY_TYPE] == [
        "string",
        "int",
        "long",
        "real",
        "boolean",
        "datetime",
        "dynamic",
        "string",
    ]


def test_compat_tables_only_with_compat_and_in_their_own_dcr():
    # The registry has no compat table yet: a local one stands in for the legacy tables.
    tables = [*CORE.values(), LEGACY]
    core = build_arm_template(tables=tables)
    both = build_arm_template(tables=tables, compat=True)
    assert set(_tables_by_name(core)) == set(CORE)
    assert f"Custom-{LEGACY.name}" not in _dcr_by_stream(core)
    assert set(_tables_by_name(both)) == {*CORE, LEGACY.name}
    compat_dcr = _dcr_by_stream(both)[f"Custom-{LEGACY.name}"]
    assert list(compat_dcr["properties"]["streamDeclarations"]) == [f"Custom-{LEGACY.name}"]
    # Turning compat on adds a DCR; it does not move a core stream to another one.
    assert _dcrs(core) == [d for d in _dcrs(both) if d is not compat_dcr]


def test_compat_deploys_every_registry_table():
    assert set(_tables_by_name(build_arm_template(compat=True))) == set(TABLES)


def test_an_unknown_profile_or_a_table_without_time_generated_is_refused():
    with pytest.raises(ValueError, match="unknown profile"):
        build_arm_template(tables=[_table("EPF_X_CL", profile="preview")])
    no_time = Table("EPF_NoTime_CL", "d", "test", (), (Column("RunId", KqlType.STRING, "r"),))
    with pytest.raises(ValueError, match="TimeGenerated"):
        build_arm_template(tables=[no_time])


def test_extra_resources_are_appended_and_empty_ones_refused():
    workbook = {
        "type": "Microsoft.Insights/workbooks",
        "apiVersion": "2023-06-01",
        "name": "[guid(resourceGroup().id, 'epf-workbook')]",
        "properties": {},
    }
    built = build_arm_template(extra_resources=[workbook])
    assert built["resources"][-1] == workbook
    assert built["resources"][:-1] == build_arm_template()["resources"]
    with pytest.raises(ValueError, match="type"):
        build_arm_template(extra_resources=[{"apiVersion": "x", "name": "y"}])


def test_registry_text_that_looks_like_an_expression_is_escaped():
    built = build_arm_template(tables=[_table("EPF_Odd_CL", description="[legacy]")])
    [table] = _of_type(built, TABLE_TYPE)
    assert table["properties"]["schema"]["description"] == "[[legacy]"


@pytest.mark.parametrize("compat", [False, True])
def test_every_expression_is_balanced(compat):
    built = build_arm_template(tables=[*CORE.values(), LEGACY], compat=compat)
    assert expression_problems(built) == []


@pytest.mark.parametrize(
    "bad, problem",
    [
        ("[concat('a', 'b'))]", "unexpected"),
        ("[concat('a', 'b'", "does not end"),
        ("[concat('a, 'b')]", "unterminated string"),
        ("[reference(resourceId('x', 'y').id]", "missing"),
        ("[]", "empty"),
    ],
)
def test_the_expression_check_finds_malformed_expressions(bad, problem):
    [found] = expression_problems({"resources": [{"name": bad}]})
    assert found.startswith("$.resources[0].name: ")
    assert problem in found


@pytest.mark.parametrize("fine", ["[[literal]", "plain", "[concat('it''s', '(')]", "[a()[0]]"])
def test_the_expression_check_accepts_literals_escapes_and_quoted_brackets(fine):
    assert expression_problems([fine]) == []


# --- the DCRs' region ---------------------------------------------------------------------


def _walk(value, path="$"):
    """Every (path, resource) of a template, nested deployments' resources included."""
    for index, resource in enumerate(value.get("resources", [])):
        where = f"{path}.resources[{index}]"
        yield where, resource
        inner = resource.get("properties", {}).get("template")
        if resource["type"] == DEPLOYMENT_TYPE and inner:
            yield from _walk(inner, f"{where}.properties.template")


def test_the_dcrs_are_deployed_in_the_workspaces_region(template):
    nested = _nested(template)
    assert nested["apiVersion"] == "2022-09-01"
    props = nested["properties"]
    assert props["mode"] == "Incremental"
    # Inner scope: the nested template's parameters carry the outer values in.
    assert props["expressionEvaluationOptions"] == {"scope": "inner"}
    workspace_location = (
        "reference(variables('workspaceResourceId'), '2022-10-01', 'Full').location"
    )
    assert props["parameters"]["location"] == {
        "value": f"[if(empty(parameters('location')), {workspace_location}, "
        "parameters('location'))]"
    }
    assert set(props["parameters"]) == set(_inner(template)["parameters"])
    for dcr in _dcrs(template):
        assert dcr["location"] == "[parameters('location')]"  # the inner parameter


@pytest.mark.parametrize("compat", [False, True])
def test_no_resource_takes_its_location_from_reference_or_the_resource_group(compat):
    # ARM allows reference() only in properties and outputs, never in a resource's location
    # (template-functions-resource, "reference", Valid uses); and a DCR must be in the
    # workspace's region, whatever the resource group's is.
    built = build_arm_template(compat=compat)
    assert "resourceGroup().location" not in json.dumps(built)
    located = 0
    for where, resource in _walk(built):
        for key in ("location", "name", "type", "apiVersion"):
            assert "reference(" not in str(resource.get(key, "")), f"{where}.{key}"
        located += "location" in resource
    assert located == len(_dcrs(built))  # only the DCRs have one


# --- retention ----------------------------------------------------------------------------


def test_the_retention_parameters_declare_the_documented_limits(template):
    retention = template["parameters"]["retentionInDays"]
    total = template["parameters"]["totalRetentionInDays"]
    # -1 (the default retention) is the only value below 4 ARM must let through.
    assert (retention["minValue"], retention["maxValue"]) == (-1, 730)
    assert (total["minValue"], total["maxValue"]) == (-1, 4383)
    assert "4-730" in retention["metadata"]["description"]
    assert "4-4383" in total["metadata"]["description"]
    assert "-1" in retention["metadata"]["description"]


@pytest.mark.parametrize(
    "retention, total",
    [(-1, -1), (4, 4), (730, 4383), (90, -1), (-1, 4383), (30, 30)],
)
def test_retention_within_the_limits_becomes_the_parameters_default(retention, total):
    built = build_arm_template(retention_days=retention, total_retention_days=total)
    assert built["parameters"]["retentionInDays"]["defaultValue"] == retention
    assert built["parameters"]["totalRetentionInDays"]["defaultValue"] == total


@pytest.mark.parametrize(
    "retention, total, problem",
    [
        (0, 365, "interactive retention must be -1"),
        (3, 365, "4-730"),
        (731, 800, "4-730"),
        (-2, 365, "not -2"),
        (90, 3, "4-4383"),
        (90, 4384, "4-4383"),
        (90, 60, "must not be less than the interactive retention"),
    ],
)
def test_retention_outside_the_limits_is_refused(retention, total, problem):
    assert retention_problem(retention, total) is not None
    with pytest.raises(ValueError, match=problem):
        build_arm_template(retention_days=retention, total_retention_days=total)


# --- the compat tables' legacy column types -------------------------------------------------

# The Data Collector API's suffixes (data-collector-api, "Record type and properties"), in
# the registry's KQL spelling: a GUID is "stored as a string".
SUFFIX_TYPES = {"_s": "string", "_b": "bool", "_d": "real", "_t": "datetime", "_g": "string"}
COMPAT = [t for t in TABLES.values() if t.profile == "compat"]


def test_every_compat_column_keeps_the_type_its_suffix_gave_it_in_the_classic_table():
    assert {t.name for t in COMPAT} == {
        "AgentHealthStatusWindows_CL",
        "MDE_MAC_devicehealth_CL",
        "AD4IOT_Devices_CL",
        "AD4IOT_CVE_CL",
        "AD4IOT_Events_CL",
    }
    suffixed = 0
    for table in COMPAT:
        for column in table.columns:
            wanted = SUFFIX_TYPES.get(column.name[-2:])
            if wanted is not None:
                suffixed += 1
                assert column.type.value == wanted, f"{table.name}.{column.name}"
    assert suffixed >= 40  # every legacy field of the five tables is suffixed
    assert legacy_type_problems(COMPAT) == []
    # And the template declares them so: boolean, real and string in the Tables API spelling.
    by_name = _tables_by_name(build_arm_template(compat=True))
    devices = {
        c["name"]: c["type"]
        for c in by_name["AD4IOT_Devices_CL"]["properties"]["schema"]["columns"]
    }
    assert (devices["id_d"], devices["authorized_b"], devices["name_s"]) == (
        "real",
        "boolean",
        "string",
    )


def test_a_compat_table_that_retypes_a_legacy_column_is_never_in_a_template():
    retyped = _table(
        "AD4IOT_Events_CL",
        profile="compat",
        extra=(Column("timestamp_d", KqlType.DATETIME, "When, as a datetime."),),
    )
    with pytest.raises(ValueError, match=r"AD4IOT_Events_CL\.timestamp_d is datetime"):
        build_arm_template(tables=[*CORE.values(), retyped], compat=True)
    # Only the compat profile's columns are legacy ones.
    core = _table("EPF_Core_CL", extra=(Column("Mode_d", KqlType.STRING, "not legacy"),))
    assert _tables_by_name(build_arm_template(tables=[core]))
