"""The Defender for IoT (OT) tables: devices, connections, CVEs, alerts, events, exposure
findings and sensor health, from OT sensors and the on-premises management console.

Every row names the appliance it came from (``Appliance``, the name given in the config) and
the API that produced it (``Source``), because one device can be seen by a sensor and by the
console that aggregates it. Times are UTC datetimes (the APIs send epoch milliseconds).
Imports only ``tables.schema``.
"""

from __future__ import annotations

from endpoint_forensics.tables.schema import (
    COMMON_COLUMNS,
    Column,
    DatasetSpec,
    KqlType,
    RateLimit,
    Table,
)

__all__ = [
    "CONSOLE_DATASETS",
    "IOT_ALERTS",
    "IOT_APPLIANCE_LIMIT",
    "IOT_CONNECTIONS",
    "IOT_CVES",
    "IOT_DEVICES",
    "IOT_EVENTS",
    "IOT_EXPOSURE",
    "IOT_SENSORS",
    "IOT_TABLES",
    "SENSOR_DATASETS",
]

S, L, R, B, T, D = (
    KqlType.STRING,
    KqlType.LONG,
    KqlType.REAL,
    KqlType.BOOL,
    KqlType.DATETIME,
    KqlType.DYNAMIC,
)

_ORIGIN = (
    ("Appliance", S, "The sensor or management console, by its name in the config."),
    ("ApplianceKind", S, "sensor or console."),
    ("Source", S, "The API the row came from, e.g. sensor/v1/devices, console/v3/devices."),
)


def _columns(*specs: tuple[str, KqlType, str]) -> tuple[Column, ...]:
    extra = Column(
        "AdditionalFields", D, "Fields the API returned that this version does not know."
    )
    return (*COMMON_COLUMNS, *(Column(n, t, d) for n, t, d in (*_ORIGIN, *specs)), extra)


IOT_DEVICES = Table(
    name="EPF_IotDevices_CL",
    description="OT devices seen by Defender for IoT sensors and the management console, one row "
    "per device per snapshot (sensor and console v1), or per change (console v3 deltas).",
    source="iot:devices",
    key=("Appliance", "DeviceId"),
    columns=_columns(
        ("DeviceId", L, "Device id on the appliance (console ids differ from sensor ids)."),
        ("DeviceName", S, "Device name (often its IP address)."),
        ("Vendor", S, "Hardware vendor."),
        ("DeviceType", S, "PLC, HMI, Engineering Station, Historian, Switch, ..."),
        ("DeviceCategory", S, "Device category (console v3), e.g. ICS, IT."),
        ("OperatingSystem", S, "Operating system, when known."),
        ("IpAddresses", D, "IP addresses (array of strings)."),
        ("MacAddresses", D, "MAC addresses (array of strings)."),
        ("Protocols", D, "Protocol names seen (array of strings)."),
        ("Firmware", D, "Firmware modules: model, serial, version, slot, rack, address."),
        ("FirmwareVersion", S, "Firmware version of the first module with one."),
        ("Authorized", B, "Whether the device is authorized on the network."),
        ("EngineeringStation", B, "Whether the device is an engineering station."),
        ("Scanner", B, "Whether the device is a known scanner."),
        ("HasDynamicAddress", B, "Whether the device's address is dynamic."),
        ("SensorId", L, "Sensor id on the console (the appliance itself for a sensor)."),
        ("SensorName", S, "Sensor name, when known."),
        ("Site", S, "Site: from the console, else from the sensor's config."),
        ("Zone", S, "Zone: from the console, else from the sensor's config."),
        ("PurdueLevel", S, "Purdue level (console v3), e.g. Process Control, Supervisory."),
        ("SecurityScore", L, "Security score 0-100 from the devices vulnerability report."),
        ("FirstSeen", T, "When the device was first discovered (console v3)."),
        ("LastActivity", T, "Last activity (console v3)."),
        ("LastUpdate", T, "Last change of the device record (console v3)."),
        ("DeviceStatus", S, "Active, or Deleted for a console v3 deletion."),
    ),
)

IOT_CONNECTIONS = Table(
    name="EPF_IotConnections_CL",
    description="Connections between OT devices, one row per device pair per snapshot "
    "(sensor) or per change (console v3).",
    source="iot:connections",
    key=("Appliance", "FirstDeviceId", "SecondDeviceId"),
    columns=_columns(
        ("FirstDeviceId", L, "One end (the source on the console)."),
        ("SecondDeviceId", L, "The other end (the destination on the console)."),
        ("FirstDeviceName", S, "Name of the first device (console v3)."),
        ("SecondDeviceName", S, "Name of the second device (console v3)."),
        ("Ports", D, "Ports used (array of numbers)."),
        ("Protocols", D, "Protocols with the commands seen: [{name, commands}]."),
        ("ConnectionType", S, "One Way, Two Way or Multicast (console v3)."),
        ("FirstSeen", T, "When the connection was discovered."),
        ("LastSeen", T, "When the connection was last seen."),
    ),
)

IOT_CVES = Table(
    name="EPF_IotCves_CL",
    description="CVEs of OT devices, one row per device address and CVE per snapshot (sensor) "
    "or per change (console v3). Every CVE, not only the top 100 per address.",
    source="iot:cves",
    key=("Appliance", "IpAddress", "CveId"),
    columns=_columns(
        ("DeviceId", L, "Device id (console v3; sensors list CVEs by address)."),
        ("DeviceName", S, "Device name (console v3)."),
        ("IpAddress", S, "The device address the CVE applies to."),
        ("CveId", S, "CVE id."),
        ("Score", R, "CVSS score 0-10 (the APIs send it as a string)."),
        ("AttackVector", S, "NETWORK, ADJACENT_NETWORK, LOCAL or PHYSICAL."),
        ("Description", S, "CVE description."),
        ("LastUpdate", T, "When the device's CVEs last changed (console v3)."),
    ),
)

IOT_ALERTS = Table(
    name="EPF_IotAlerts_CL",
    description="Defender for IoT alerts, one row per alert, collected incrementally by time "
    "and kept once per appliance and alert id.",
    source="iot:alerts",
    key=("Appliance", "AlertId"),
    columns=_columns(
        ("AlertId", S, "Alert id on the appliance."),
        ("AlertTime", T, "When the alert was raised."),
        ("AlertTitle", S, "Alert title."),
        ("Message", S, "Alert message."),
        ("Severity", S, "Warning, Minor, Major or Critical."),
        ("Engine", S, "Protocol Violation, Policy Violation, Malware, Anomaly or Operational."),
        ("SourceDeviceId", L, "Source device id, if any."),
        ("DestinationDeviceId", L, "Destination device id, if any."),
        ("SourceDeviceAddress", S, "Source device address (v2)."),
        ("DestinationDeviceAddress", S, "Destination device address (v2)."),
        ("RemediationSteps", D, "Remediation steps (array of strings, v2)."),
        ("AdditionalInformation", D, "{description, information[]} when given."),
        ("Handled", B, "Whether the alert is handled (console)."),
        ("SensorId", L, "Sensor id (console)."),
        ("SensorName", S, "Sensor name (console v2)."),
        ("SiteId", L, "Site id (console)."),
        ("SiteName", S, "Site name (console v2)."),
        ("ZoneId", L, "Zone id (console)."),
        ("ZoneName", S, "Zone name (console v2)."),
    ),
)

IOT_EVENTS = Table(
    name="EPF_IotEvents_CL",
    description="The sensor event timeline, one row per event, polled often enough that the "
    "API's latest-100 cap drops nothing (gaps that could not be closed are in EPF_Runs_CL).",
    source="iot:events",
    key=("Appliance", "EventKey"),
    columns=_columns(
        ("EventKey", S, "A stable key of the event (the API gives no id): a hash of its fields."),
        ("EventTime", T, "When the event happened."),
        ("EventType", S, "Event type, e.g. DEVICE_CONNECTION_CREATED, REMOTE_ACCESS."),
        ("EventTitle", S, "Event title."),
        ("Severity", S, "INFO, NOTICE or ALERT."),
        ("Owner", S, "Owner, if any."),
        ("Content", S, "Event text."),
    ),
)

IOT_EXPOSURE = Table(
    name="EPF_IotExposure_CL",
    description="Exposure facts from the sensor's vulnerability reports (devices, security, "
    "operational): remote access, open ports, plain-text password findings (protocol and "
    "strength only, never the password), weak authentication, and the report tables.",
    source="iot:reports",
    key=("Appliance", "Report", "Section", "FindingKey"),
    columns=_columns(
        ("Report", S, "devices, security or operational."),
        (
            "Section",
            S,
            "What the row is, e.g. Device, RemoteAccess, OpenPort, PlainTextPassword, "
            "or the report table name (internetConnections, ipNetworks, ...).",
        ),
        ("FindingKey", S, "A stable key of the finding within the report."),
        ("DeviceName", S, "Device name, when the row is about one device."),
        ("IpAddress", S, "Device address, when the row is about one device."),
        ("Protocol", S, "Protocol (open port, password finding, remote access software)."),
        ("Port", L, "Port number."),
        ("Transport", S, "TCP or UDP."),
        ("Peer", S, "The other party (remote access client, firewall peer)."),
        ("Strength", S, "Password strength of a plain-text password finding."),
        ("SecurityScore", L, "The device's security score (Device rows)."),
        ("Details", D, "The rest of the finding, as reported (passwords removed)."),
    ),
)

IOT_SENSORS = Table(
    name="EPF_IotSensors_CL",
    description="Sensor health from the management console (v3 sensors): connection state, "
    "version and counts, one row per sensor per run.",
    source="iot:console/sensors",
    key=("Appliance", "SensorId"),
    columns=_columns(
        ("SensorId", L, "Sensor id on the console."),
        ("SensorName", S, "Sensor name."),
        ("SensorUid", S, "Sensor unique id."),
        ("ConnectionState", S, "SYNCED, OUT_OF_SYNC, TIME_DIFF_OFFSET or DISCONNECTED."),
        ("Healthy", B, "True when the connection state is SYNCED."),
        ("Version", S, "Sensor software version."),
        ("IsActivated", B, "Whether the sensor is activated."),
        ("DeviceCount", L, "Devices the sensor sees."),
        ("AlertCount", L, "Alerts on the sensor."),
        ("UnhandledAlertCount", L, "Unhandled alerts on the sensor."),
    ),
)

# This module's tables, in registry order: a new table is added here.
IOT_TABLES: tuple[Table, ...] = (
    IOT_DEVICES,
    IOT_CONNECTIONS,
    IOT_CVES,
    IOT_ALERTS,
    IOT_EVENTS,
    IOT_EXPOSURE,
    IOT_SENSORS,
)

# Defender for IoT documents no limit (C.1). Sensors and consoles are on-premises appliances,
# often small ones: one budget per appliance keeps the collector to 10 calls a second.
IOT_APPLIANCE_LIMIT = RateLimit("iot_appliance", per_minute=600, per_hour=20_000)
_IOT = (IOT_APPLIANCE_LIMIT,)


# The datasets that fill them, per OT sensor, in collection order.
SENSOR_DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        "devices",
        "sensor",
        IOT_DEVICES,
        "iot:fetch_devices",
        origin="sensor `/api/v1/devices`, with its security score from the devices "
        "vulnerability report",
        row_per="OT device per run",
        limits=_IOT,
    ),
    DatasetSpec(
        "connections",
        "sensor",
        IOT_CONNECTIONS,
        "iot:fetch_connections",
        origin="sensor `/api/v1/devices/connections`",
        row_per="device pair per snapshot (daily)",
        limits=_IOT,
        interval_hours=24.0,
    ),
    DatasetSpec(
        "cves",
        "sensor",
        IOT_CVES,
        "iot:fetch_cves",
        origin="sensor `/api/v1/devices/cves` (every CVE: an address that fills `top` is "
        "asked again)",
        row_per="address and CVE per snapshot (daily)",
        limits=_IOT,
        interval_hours=24.0,
    ),
    DatasetSpec(
        "alerts",
        "sensor",
        IOT_ALERTS,
        "iot:fetch_alerts",
        origin="sensor alerts (v2), by `fromTime`/`toTime` since the last run",
        row_per="alert, once",
        limits=_IOT,
    ),
    DatasetSpec(
        "events",
        "sensor",
        IOT_EVENTS,
        "iot_events:fetch_events",
        origin="the sensor event timeline, polled so the latest-100 cap drops nothing",
        row_per="event, once",
        limits=_IOT,
    ),
    DatasetSpec(
        "exposure",
        "sensor",
        IOT_EXPOSURE,
        "iot_reports:fetch_exposure",
        origin="the sensor's devices, security and operational vulnerability reports: remote "
        "access, open ports, plain-text password findings (protocol and strength, never the "
        "password), weak authentication",
        row_per="finding per snapshot (daily)",
        limits=_IOT,
        interval_hours=24.0,
    ),
)


# The datasets that fill them, per on-premises management console.
CONSOLE_DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        "devices",
        "console",
        IOT_DEVICES,
        "iot_console:fetch_console_devices",
        origin="console `/external/v1/devices`",
        row_per="OT device per snapshot (daily)",
        limits=_IOT,
        interval_hours=24.0,
    ),
    DatasetSpec(
        "device_changes",
        "console",
        IOT_DEVICES,
        "iot_console:fetch_device_changes",
        origin="console v3 device changes and deletions since the last run",
        row_per="device change",
        limits=_IOT,
    ),
    DatasetSpec(
        "connections",
        "console",
        IOT_CONNECTIONS,
        "iot_console:fetch_console_connections",
        origin="console v3 connections since the last run",
        row_per="device pair per change",
        limits=_IOT,
    ),
    DatasetSpec(
        "cves",
        "console",
        IOT_CVES,
        "iot_console:fetch_console_cves",
        origin="console v3 device CVEs since the last run",
        row_per="device and CVE per change",
        limits=_IOT,
    ),
    DatasetSpec(
        "alerts",
        "console",
        IOT_ALERTS,
        "iot_console:fetch_console_alerts",
        origin="console alerts (v2), by `fromTime`/`toTime` since the last run",
        row_per="alert, once",
        limits=_IOT,
    ),
    DatasetSpec(
        "sensors",
        "console",
        IOT_SENSORS,
        "iot_console:fetch_sensors",
        origin="console v3 sensors: connection state (`Healthy` when SYNCED), version, counts",
        row_per="sensor per run",
        limits=_IOT,
    ),
)
