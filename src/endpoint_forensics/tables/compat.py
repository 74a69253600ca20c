"""The original connector's legacy tables, written by the "compat" output profile.

Names, suffixed columns and value vocabularies are exactly those the original Logic App wrote
through the HTTP Data Collector API (original-connector.md), so its workbook's queries run
unchanged while users move to the ``EPF_*`` tables. Each table also has our common
columns first, ``SnapshotTime`` among them: the legacy ``TimeGenerated`` the workbook reads is
replaced by the receive time in a delivery more than 2 days late, ``SnapshotTime`` is not.
The rows are derived from ours by ``endpoint_forensics.transforms.compat``.
Imports only ``tables.schema`` and ``tables.mde``.
"""

from __future__ import annotations

from endpoint_forensics.tables.mde import AGENT_HEALTH_TESTS
from endpoint_forensics.tables.schema import COMMON_COLUMNS, Column, KqlType, Table

__all__ = [
    "COMPAT_TABLES",
    "LEGACY_IOT_CVES",
    "LEGACY_IOT_DEVICES",
    "LEGACY_IOT_EVENTS",
    "LEGACY_MAC_HEALTH",
    "LEGACY_MAC_TESTS",
    "LEGACY_WINDOWS_HEALTH",
    "LEGACY_WINDOWS_TESTS",
]

S, R, B = KqlType.STRING, KqlType.REAL, KqlType.BOOL

# Every test has a Windows SCID; only these have a macOS one (the SCID table of the reference).
LEGACY_WINDOWS_TESTS: tuple[str, ...] = AGENT_HEALTH_TESTS
LEGACY_MAC_TESTS: tuple[str, ...] = (
    "SensorDataCollection",
    "ImpairedCommunications",
    "TamperProtection",
    "AntivirusSignatureVersion",
    "RealtimeProtection",
    "BehaviorMonitoring",
    "PUAProtection",
    "CloudProtection",
)

LEGACY_WINDOWS_HEALTH = Table(
    name="AgentHealthStatusWindows_CL",
    description="Legacy (compat): Defender agent health of Windows devices as the original "
    "connector wrote it, one row per device per run, one <Test>_s column per test "
    "(ENABLED, DISABLED or N/A; empty when unknown). Derived from EPF_AgentHealth_CL.",
    source="compat:EPF_AgentHealth_CL",
    key=("DefenderTenantId", "DeviceId_s"),
    columns=COMMON_COLUMNS
    + (
        Column("DeviceId_s", S, "Defender device id."),
        Column("DeviceName_s", S, "Device name (new: the original wrote none)."),
    )
    + tuple(
        Column(f"{test}_s", S, "ENABLED, DISABLED or N/A; empty when unknown.")
        for test in LEGACY_WINDOWS_TESTS
    ),
    profile="compat",
)

LEGACY_MAC_HEALTH = Table(
    name="MDE_MAC_devicehealth_CL",
    description="Legacy (compat): Defender agent health of macOS devices as the original "
    "connector's workbook reads it: Results_s is a JSON array holding one object "
    "{DeviceId, DeviceName, <Test>: GOOD|BAD|N/A} (the original put the whole fleet in one "
    "row and truncated it), one row per device per run. Derived from EPF_AgentHealth_CL.",
    source="compat:EPF_AgentHealth_CL",
    key=("DefenderTenantId", "DeviceId_s"),
    columns=COMMON_COLUMNS
    + (
        Column(
            "Results_s",
            S,
            "JSON array text of one {DeviceId, DeviceName, <Test>...} object; a test is "
            "GOOD, BAD or N/A, and absent when unknown.",
        ),
        Column("DeviceId_s", S, "Defender device id (new)."),
        Column("DeviceName_s", S, "Device name (new)."),
    ),
    profile="compat",
)

LEGACY_IOT_DEVICES = Table(
    name="AD4IOT_Devices_CL",
    description="Legacy (compat): OT devices from the sensors' /api/v1/devices as the original "
    "connector wrote them, one row per device per run. Derived from EPF_IotDevices_CL.",
    source="compat:EPF_IotDevices_CL",
    key=("Appliance", "id_d"),
    columns=COMMON_COLUMNS
    + (
        Column("id_d", R, "Device id on the sensor."),
        Column("name_s", S, "Device name (often its IP address)."),
        Column("vendor_s", S, "Hardware vendor."),
        Column("type_s", S, "Device type, e.g. PLC, HMI."),
        Column("operatingSystem_s", S, "Operating system, when known."),
        Column("ipAddresses_s", S, "IP addresses (JSON array text)."),
        Column("macAddresses_s", S, "MAC addresses (JSON array text)."),
        Column("protocols_s", S, "Protocol names (JSON array text)."),
        Column("firmware_s", S, "Firmware modules as the sensor reported them (JSON array text)."),
        Column("authorized_b", B, "Whether the device is authorized on the network."),
        Column("engineeringStation_b", B, "Whether the device is an engineering station."),
        Column("scanner_b", B, "Whether the device is a known scanner."),
        Column("hasDynamicAddress_b", B, "Whether the device's address is dynamic."),
        Column(
            "Appliance", S, "The sensor, by its name in the config (new: the original read one)."
        ),
    ),
    profile="compat",
)

LEGACY_IOT_CVES = Table(
    name="AD4IOT_CVE_CL",
    description="Legacy (compat): CVEs of OT devices from the sensors' /api/v1/devices/cves as "
    "the original connector wrote them, one row per address and CVE per run (every CVE, not "
    "the top 100). Derived from EPF_IotCves_CL.",
    source="compat:EPF_IotCves_CL",
    key=("Appliance", "IPAddress", "cveId_s"),
    columns=COMMON_COLUMNS
    + (
        Column("cveId_s", S, "CVE id."),
        Column("score_s", S, "CVSS score as text, e.g. 9.3."),
        Column("attackVector_s", S, "NETWORK, ADJACENT_NETWORK, LOCAL or PHYSICAL."),
        Column("description_s", S, "CVE description."),
        Column("IPAddress", S, "The device address (the name the workbook reads)."),
        Column("ipAddress_s", S, "The device address again, under its suffixed wire name."),
        Column(
            "Appliance", S, "The sensor, by its name in the config (new: the original read one)."
        ),
    ),
    profile="compat",
)

LEGACY_IOT_EVENTS = Table(
    name="AD4IOT_Events_CL",
    description="Legacy (compat): the sensors' event timeline as the original connector wrote "
    "it (every event, not the latest 100 a day). Derived from EPF_IotEvents_CL.",
    source="compat:EPF_IotEvents_CL",
    key=("Appliance", "timestamp_d", "type_s", "title_s", "content_s"),
    columns=COMMON_COLUMNS
    + (
        Column("timestamp_d", R, "When the event happened, epoch milliseconds."),
        Column("type_s", S, "Event type, e.g. DEVICE_CONNECTION_CREATED."),
        Column("title_s", S, "Event title."),
        Column("severity_s", S, "INFO, NOTICE or ALERT."),
        Column("content_s", S, "Event text."),
        Column("owner_s", S, "Owner, if any."),
        Column(
            "Appliance", S, "The sensor, by its name in the config (new: the original read one)."
        ),
    ),
    profile="compat",
)

COMPAT_TABLES: tuple[Table, ...] = (
    LEGACY_WINDOWS_HEALTH,
    LEGACY_MAC_HEALTH,
    LEGACY_IOT_DEVICES,
    LEGACY_IOT_CVES,
    LEGACY_IOT_EVENTS,
)
