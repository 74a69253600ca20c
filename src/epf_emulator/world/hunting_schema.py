"""The documented schemas of the advanced-hunting tables the emulator serves.

Owns one declaration per served table, column -> KQL type exactly as Microsoft's schema pages
give them (defender-docs ``defender-xdr/advanced-hunting-<table>-table.md``, checked on the
2026 pages), and the two mappings generated from it: the DuckDB type each column is stored as,
and the type name the APIs report in a response's ``schema`` (``String``, ``DateTime``,
``Int64``, ``Boolean``, ``Double``, ``Object``...). Notable: ``DeviceInfo.DeviceManualTags``,
``DeviceDynamicTags`` and ``LoggedOnUsers`` are ``string`` (JSON text), not ``dynamic``; and a
Kusto ``string`` is never null (an empty string stands for a missing value).

Imports nothing of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

__all__ = [
    "DOCUMENTED_TABLES",
    "DUCKDB_TYPES",
    "SCHEMA_TYPES",
    "duckdb_columns",
    "schema_type_of_duckdb",
]

#: KQL type -> the DuckDB type the emulator stores it as.
DUCKDB_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "datetime": "TIMESTAMP WITH TIME ZONE",
    "long": "BIGINT",
    "int": "INTEGER",
    "bool": "BOOLEAN",
    "boolean": "BOOLEAN",
    "real": "DOUBLE",
    "double": "DOUBLE",
    "dynamic": "JSON",
}

#: KQL type -> the type name of a response's ``schema`` (defender-apis.md B.3: only
#: ``DateTime`` and ``String`` appear in the docs; the others are the .NET names Kusto uses).
SCHEMA_TYPES: dict[str, str] = {
    "string": "String",
    "datetime": "DateTime",
    "long": "Int64",
    "int": "Int32",
    "bool": "Boolean",
    "boolean": "Boolean",
    "real": "Double",
    "double": "Double",
    "dynamic": "Object",
}

#: Table -> column -> documented KQL type, in the documented order.
DOCUMENTED_TABLES: dict[str, dict[str, str]] = {
    # advanced-hunting-deviceinfo-table.md (ms.date 2026-07-27)
    "DeviceInfo": {
        "Timestamp": "datetime",
        "DeviceId": "string",
        "DeviceName": "string",
        "ClientVersion": "string",
        "PublicIP": "string",
        "OSArchitecture": "string",
        "OSPlatform": "string",
        "OSBuild": "long",
        "IsAzureADJoined": "boolean",
        "JoinType": "string",
        "AadDeviceId": "string",
        "LoggedOnUsers": "string",
        "RegistryDeviceTag": "string",
        "OSVersion": "string",
        "MachineGroup": "string",
        "ReportId": "long",
        "OnboardingStatus": "string",
        "AdditionalFields": "string",
        "DeviceCategory": "string",
        "DeviceType": "string",
        "DeviceSubtype": "string",
        "Model": "string",
        "Vendor": "string",
        "OSDistribution": "string",
        "OSVersionInfo": "string",
        "MergedDeviceIds": "string",
        "MergedToDeviceId": "string",
        "IsInternetFacing": "boolean",
        "SensorHealthState": "string",
        "IsExcluded": "bool",
        "ExclusionReason": "string",
        "ExposureLevel": "string",
        "AssetValue": "string",
        "DeviceManualTags": "string",
        "DeviceDynamicTags": "string",
        "ConnectivityType": "string",
        "HostDeviceId": "string",
        "AzureResourceId": "string",
        "AwsResourceName": "string",
        "GcpFullResourceName": "string",
        "HardwareUuid": "string",
        "CloudPlatforms": "string",
        "AzureVmId": "string",
        "AzureVmSubscriptionId": "string",
        "IsTransient": "boolean",
        "OsBuildRevision": "string",
        "MitigationStatus": "string",
        "Site": "string",
        "DiscoverySources": "string",
        "DeviceRoles": "string",
        "DlpInfo": "string",
    },
    # advanced-hunting-devicetvmsecureconfigurationassessment-table.md (ms.date 2026-06-14)
    "DeviceTvmSecureConfigurationAssessment": {
        "DeviceId": "string",
        "DeviceName": "string",
        "OSPlatform": "string",
        "Timestamp": "datetime",
        "ConfigurationId": "string",
        "ConfigurationCategory": "string",
        "ConfigurationSubcategory": "string",
        "ConfigurationImpact": "real",
        "IsCompliant": "boolean",
        "IsApplicable": "boolean",
        "Context": "dynamic",
        "IsExpectedUserImpact": "boolean",
    },
    # advanced-hunting-devicetvmsecureconfigurationassessmentkb-table.md (ms.date 2026-06-14)
    "DeviceTvmSecureConfigurationAssessmentKB": {
        "ConfigurationId": "string",
        "ConfigurationImpact": "real",
        "ConfigurationName": "string",
        "ConfigurationDescription": "string",
        "RiskDescription": "string",
        "ConfigurationCategory": "string",
        "ConfigurationSubcategory": "string",
        "ConfigurationBenchmarks": "dynamic",
        "Tags": "dynamic",
        "RemediationOptions": "string",
    },
}

# DuckDB result types that no documented column has but computed columns may (counts,
# toint()...): their schema type.
_COMPUTED_SCHEMA_TYPES: dict[str, str] = {
    "TINYINT": "Int32",
    "SMALLINT": "Int32",
    "UTINYINT": "Int32",
    "USMALLINT": "Int32",
    "UINTEGER": "Int64",
    "UBIGINT": "Int64",
    "HUGEINT": "Int64",
    "UHUGEINT": "Int64",
    "FLOAT": "Double",
    "REAL": "Double",
    "DATE": "DateTime",
    "TIMESTAMP": "DateTime",
}
_SCHEMA_OF_DUCKDB: dict[str, str] = {
    DUCKDB_TYPES[kql]: SCHEMA_TYPES[kql] for kql in DUCKDB_TYPES
} | _COMPUTED_SCHEMA_TYPES


def duckdb_columns(table: str) -> dict[str, str]:
    """Column -> DuckDB type of a served table, in the documented order."""
    return {name: DUCKDB_TYPES[kind] for name, kind in DOCUMENTED_TABLES[table].items()}


def schema_type_of_duckdb(kind: str) -> str:
    """The response ``schema`` type of a DuckDB result column type."""
    kind = kind.upper()
    if kind.endswith("]") or kind.startswith(("STRUCT", "MAP", "UNION")):
        return "Object"  # lists and records are dynamic values
    if kind.startswith("DECIMAL"):
        return "Double"
    if kind.startswith("TIMESTAMP"):
        return "DateTime"
    return _SCHEMA_OF_DUCKDB.get(kind, "String")
