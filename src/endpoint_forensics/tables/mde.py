"""The Defender for Endpoint tables and the run log.

Column names are PascalCase like MDE advanced hunting; wire fields map onto them in ``sources``.
Imports only ``tables.schema``.
"""

from __future__ import annotations

from endpoint_forensics.tables.schema import COMMON_COLUMNS as _COMMON
from endpoint_forensics.tables.schema import (
    Column,
    DatasetSpec,
    KqlType,
    Permission,
    RateLimit,
    Table,
    tracked,
)

S, INT, L, R, B, T, D = (
    KqlType.STRING,
    KqlType.INT,
    KqlType.LONG,
    KqlType.REAL,
    KqlType.BOOL,
    KqlType.DATETIME,
    KqlType.DYNAMIC,
)

# The health tests, in the order of the original workbook (shared/reference/original-connector.md).
AGENT_HEALTH_TESTS: tuple[str, ...] = (
    "SensorEnabled",
    "SensorDataCollection",
    "ImpairedCommunications",
    "TamperProtection",
    "AntivirusEnabled",
    "AntivirusSignatureVersion",
    "RealtimeProtection",
    "BehaviorMonitoring",
    "PUAProtection",
    "AntivirusReporting",
    "CloudProtection",
)

DEVICES = tracked(
    Table(
        name="EPF_Devices_CL",
        description="Defender for Endpoint device inventory (GET /api/machines), one row per device per run.",
        source="mde:machines",
        key=("DefenderTenantId", "DeviceId"),
        columns=_COMMON
        + (
            Column("DeviceId", S, "Defender device id (machine id)."),
            Column("DeviceName", S, "Fully qualified computer name (computerDnsName)."),
            Column("FirstSeen", T, "First time the device was seen by Defender."),
            Column("LastSeen", T, "Time of the device's last full report (about daily)."),
            Column("OSPlatform", S, "Operating system platform, e.g. Windows11, macOS, Linux."),
            Column("OSVersion", S, "Operating system version (osVersion); often empty."),
            Column(
                "OSVersionInfo", S, "Operating system release, e.g. 21H2 (the API's `version`)."
            ),
            Column(
                "OSProcessor", S, "Processor (deprecated by Defender in favour of OSArchitecture)."
            ),
            Column("OSArchitecture", S, "32-bit or 64-bit."),
            Column("OSBuild", L, "Operating system build number."),
            Column("LastIpAddress", S, "Last IP address on the local network interface."),
            Column("LastExternalIpAddress", S, "Last IP address seen from the internet."),
            Column(
                "HealthStatus",
                S,
                "Sensor health: Active, Inactive, ImpairedCommunication, NoSensorData, ...",
            ),
            Column(
                "OnboardingStatus", S, "Onboarded, CanBeOnboarded, Unsupported, InsufficientInfo."
            ),
            Column("DeviceValue", S, "Normal, Low or High."),
            Column("RbacGroupId", L, "Device group id (0 when ungrouped)."),
            Column("RbacGroupName", S, "Device group name."),
            Column("RiskScore", S, "None, Informational, Low, Medium or High."),
            Column("ExposureLevel", S, "None, Low, Medium or High."),
            Column("IsAadJoined", B, "Whether the device is joined to Entra ID."),
            Column("AadDeviceId", S, "Entra device id, when joined."),
            Column("MachineTags", D, "Device tags (array of strings)."),
            Column(
                "IpAddresses",
                D,
                "Network interfaces: ipAddress, macAddress, type, operationalStatus.",
            ),
            Column("AgentVersion", S, "Defender sensor version."),
            Column("DefenderAvStatus", S, "Defender Antivirus status as reported with the device."),
            Column("ManagedBy", S, "Management tool, e.g. Intune, ConfigMgr, MDE, Unknown."),
            Column("ManagedByStatus", S, "Status of the management enrolment."),
            Column("IsPotentialDuplication", B, "Defender flags the device as a likely duplicate."),
            Column("MergedIntoMachineId", S, "The device this one was merged into, if any."),
            Column(
                "IsExcluded", B, "Whether the device is excluded from vulnerability management."
            ),
            Column("ExclusionReason", S, "Why the device is excluded."),
            Column(
                "VmMetadata", D, "Cloud VM facts: vmId, cloudProvider, resourceId, subscriptionId."
            ),
            Column(
                "AdditionalFields",
                D,
                "Fields the API returned that this version does not know yet.",
            ),
        ),
    )
)

AGENT_HEALTH = tracked(
    Table(
        name="EPF_AgentHealth_CL",
        description=(
            "Defender agent health tests per device (secure configuration assessment SCIDs through "
            "advanced hunting), one row per device per run, for Windows, macOS and Linux."
        ),
        source="hunting:DeviceTvmSecureConfigurationAssessment",
        key=("DefenderTenantId", "DeviceId"),
        columns=_COMMON
        + (
            Column("DeviceId", S, "Defender device id."),
            Column("DeviceName", S, "Device name as reported with the assessment."),
            Column("OSPlatform", S, "Operating system platform."),
            Column("OSFamily", S, "Windows, macOS or Linux: which SCID set was applied."),
            Column(
                "LastAssessed", T, "Newest assessment timestamp among the device's health SCIDs."
            ),
        )
        + tuple(
            Column(test, S, "Pass, Fail, NotApplicable or Unknown.") for test in AGENT_HEALTH_TESTS
        )
        + (
            Column("FailingTests", INT, "How many of the tests are Fail."),
            Column(
                "IsInternetFacing",
                B,
                "Defender's internet-facing signal (DeviceInfo.IsInternetFacing, newest in the "
                "last 2 days); empty when the device sent no DeviceInfo row then.",
            ),
            Column(
                "AdditionalFields",
                D,
                "Values of the hunting result that did not convert (e.g. a LastAssessed that "
                "is not a time), raw under their own names.",
            ),
        ),
    ),
    # A raw LastAssessed changes as often as LastAssessed does: neither is a change.
    ignores=("LastAssessed", "AdditionalFields"),
)

RUNS = Table(
    name="EPF_Runs_CL",
    description="One row per dataset per source per collection run: rows, duration, outcome, "
    "error, and any gap in what could be collected.",
    source="pipeline",
    key=("RunId", "SourceName", "Dataset"),
    columns=_COMMON
    + (
        Column("SourceName", S, "The tenant, sensor or console, by its name in the config."),
        Column("SourceKind", S, "tenant, sensor, console or feed."),
        Column("Dataset", S, "The dataset collected, e.g. machines, agent_health."),
        Column("TableName", S, "The table the dataset writes."),
        Column("Outcome", S, "Succeeded, Failed or Skipped."),
        Column("Rows", L, "Rows written."),
        Column("Quarantined", L, "Records set aside as malformed (see the quarantine folder)."),
        Column("Requests", L, "HTTP requests made for the dataset."),
        Column("Throttled", L, "Responses that were 429 and were waited out."),
        Column("StartTime", T, "When the dataset started."),
        Column("EndTime", T, "When the dataset ended."),
        Column("DurationSeconds", R, "Wall time of the dataset."),
        Column("Error", S, "What went wrong, one line, no secrets; empty on success."),
        Column(
            "Reason",
            S,
            "Why a dataset was Skipped, with when it is next due "
            "(e.g. not due: next snapshot 2026-12-09T06:00Z); empty otherwise.",
        ),
        Column(
            "Gaps",
            D,
            "Time ranges that may have lost records and could not be closed, and the "
            "destinations concerned: [{start, end, reason, sinks}] (e.g. a full IoT events "
            "window, or changes older than 14 days for a workspace restored from a backup).",
        ),
    ),
)

# This module's collected tables, in registry order (`RUNS` is the collector's own, last).
MDE_TABLES: tuple[Table, ...] = (
    DEVICES,
    AGENT_HEALTH,
)

# Per tenant and endpoint, as documented (defender-apis.md B.6). Both advanced hunting APIs
# share one quota.
_MACHINES_LIMIT = RateLimit("machines", per_minute=100, per_hour=1_500)
_HUNTING_LIMIT = RateLimit("advanced_hunting", per_minute=45, per_hour=1_500)
_MACHINE_READ = Permission("MDE", "Machine.Read.All")


# The datasets that fill them, per Defender tenant, in collection order.
MDE_DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        "machines",
        "tenant",
        DEVICES,
        "mde:fetch_machines",
        origin="`GET /api/machines` (every documented field; unknown fields kept in `AdditionalFields`)",
        row_per="device per run",
        permissions=(_MACHINE_READ,),
        limits=(_MACHINES_LIMIT,),
    ),
    DatasetSpec(
        "agent_health",
        "tenant",
        AGENT_HEALTH,
        "hunting:fetch_agent_health",
        origin="advanced hunting over `DeviceTvmSecureConfigurationAssessment` (Graph "
        "`runHuntingQuery`), the latest row per device and SCID",
        row_per="device per run (Windows, macOS, Linux)",
        permissions=(
            Permission("Graph", "ThreatHunting.Read.All", when="graph_hunting"),
            Permission("MDE", "AdvancedQuery.Read.All", when="mde_hunting"),
        ),
        limits=(_HUNTING_LIMIT,),
    ),
)
