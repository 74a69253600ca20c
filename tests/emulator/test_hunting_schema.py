"""The hunting tables the emulator serves have their documented schemas (defender-apis.md B.4).

The expected columns are copied here from Microsoft's schema pages (defender-docs
``defender-xdr/advanced-hunting-<table>-table.md``), not taken from the emulator's code, so
the test stays an independent check.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from epf_emulator import Emulator

from .conftest import hunt

# KQL type -> the type name a response's schema reports (B.3).
SCHEMA_TYPE = {
    "string": "String",
    "datetime": "DateTime",
    "long": "Int64",
    "boolean": "Boolean",
    "bool": "Boolean",
    "real": "Double",
    "dynamic": "Object",
}
DOCUMENTED = {
    "DeviceInfo": (
        "Timestamp datetime, DeviceId string, DeviceName string, ClientVersion string,"
        " PublicIP string, OSArchitecture string, OSPlatform string, OSBuild long,"
        " IsAzureADJoined boolean, JoinType string, AadDeviceId string, LoggedOnUsers string,"
        " RegistryDeviceTag string, OSVersion string, MachineGroup string, ReportId long,"
        " OnboardingStatus string, AdditionalFields string, DeviceCategory string,"
        " DeviceType string, DeviceSubtype string, Model string, Vendor string,"
        " OSDistribution string, OSVersionInfo string, MergedDeviceIds string,"
        " MergedToDeviceId string, IsInternetFacing boolean, SensorHealthState string,"
        " IsExcluded bool, ExclusionReason string, ExposureLevel string, AssetValue string,"
        " DeviceManualTags string, DeviceDynamicTags string, ConnectivityType string,"
        " HostDeviceId string, AzureResourceId string, AwsResourceName string,"
        " GcpFullResourceName string, HardwareUuid string, CloudPlatforms string,"
        " AzureVmId string, AzureVmSubscriptionId string, IsTransient boolean,"
        " OsBuildRevision string, MitigationStatus string, Site string,"
        " DiscoverySources string, DeviceRoles string, DlpInfo string"
    ),
    "DeviceTvmSecureConfigurationAssessment": (
        "DeviceId string, DeviceName string, OSPlatform string, Timestamp datetime,"
        " ConfigurationId string, ConfigurationCategory string, ConfigurationSubcategory string,"
        " ConfigurationImpact real, IsCompliant boolean, IsApplicable boolean, Context dynamic,"
        " IsExpectedUserImpact boolean"
    ),
    "DeviceTvmSecureConfigurationAssessmentKB": (
        "ConfigurationId string, ConfigurationImpact real, ConfigurationName string,"
        " ConfigurationDescription string, RiskDescription string, ConfigurationCategory string,"
        " ConfigurationSubcategory string, ConfigurationBenchmarks dynamic, Tags dynamic,"
        " RemediationOptions string"
    ),
}


def documented(table: str) -> list[tuple[str, str]]:
    pairs = (item.split() for item in DOCUMENTED[table].split(","))
    return [(name, SCHEMA_TYPE[kind]) for name, kind in pairs]


def schema_and_rows(
    response: httpx.Response, *, graph: bool
) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    assert response.status_code == 200, response.text
    body = response.json()
    if graph:
        return [(c["name"], c["type"]) for c in body["schema"]], body["results"]
    return [(c["Name"], c["Type"]) for c in body["Schema"]], body["Results"]


@pytest.mark.parametrize("graph", [True, False], ids=["graph", "mde"])
@pytest.mark.parametrize("table", sorted(DOCUMENTED))
def test_each_served_table_has_its_documented_schema(
    emu: Emulator,
    client: httpx.Client,
    mde_token: str,
    graph_token: str,
    table: str,
    graph: bool,
) -> None:
    token = graph_token if graph else mde_token
    schema, rows = schema_and_rows(
        hunt(client, emu, token, f"{table} | take 50", graph=graph), graph=graph
    )
    assert schema == documented(table)
    assert rows and all(list(row) == [name for name, _ in schema] for row in rows)
    # A Kusto string is never null: a missing value is an empty string.
    strings = [name for name, kind in schema if kind == "String"]
    assert all(isinstance(row[name], str) for row in rows for name in strings)


def test_device_tags_and_logged_on_users_arrive_as_json_text(
    emu: Emulator, client: httpx.Client, graph_token: str, machines: list[dict[str, Any]]
) -> None:
    query = (
        "DeviceInfo | summarize arg_max(Timestamp, *) by DeviceId"
        " | project DeviceId, DeviceManualTags, DeviceDynamicTags, LoggedOnUsers"
    )
    schema, rows = schema_and_rows(hunt(client, emu, graph_token, query, graph=True), graph=True)
    assert dict(schema) == dict.fromkeys(
        ("DeviceId", "DeviceManualTags", "DeviceDynamicTags", "LoggedOnUsers"), "String"
    )
    tags = {m["id"]: m["machineTags"] for m in machines}
    for row in rows:
        for column in ("DeviceManualTags", "DeviceDynamicTags", "LoggedOnUsers"):
            assert isinstance(row[column], str)
            assert isinstance(orjson.loads(row[column]), list)
        assert orjson.loads(row["DeviceManualTags"]) == tags[row["DeviceId"]]
    assert any(orjson.loads(r["DeviceManualTags"]) for r in rows)  # some devices have tags
    # Being text, it takes string operators and parse_json, as on the service.
    query = (
        'DeviceInfo | where DeviceManualTags startswith "["'
        " | extend FirstTag = tostring(parse_json(DeviceManualTags)[0]) | take 5"
        " | project DeviceManualTags, FirstTag"
    )
    _, rows = schema_and_rows(hunt(client, emu, graph_token, query, graph=True), graph=True)
    assert rows
    for row in rows:
        parsed = orjson.loads(row["DeviceManualTags"])
        assert row["FirstTag"] == (parsed[0] if parsed else "")
