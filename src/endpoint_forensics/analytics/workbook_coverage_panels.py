"""The workbook's sections on collection and coverage: staleness, IT and OT, the collector's
health, and the original connector's views kept (``analytics.workbook_panels`` puts them after
the posture, triage and remediation sections)."""

from __future__ import annotations

from endpoint_forensics.analytics.panel_kit import (
    AGENT_TESTS,
    NO_COLLECTION,
    Panel,
    newest,
    panel_query,
)

__all__ = ["COVERAGE_SECTIONS"]

COVERAGE_SECTIONS: tuple[tuple[str, str, tuple[Panel, ...]], ...] = (
    (
        "Staleness",
        "What is not reporting: devices Defender has not heard from, sensors, failed datasets.",
        (
            Panel(
                "silent-devices",
                "Devices silent for more than 7 days",
                panel_query(
                    "EPF_DevicesAt",
                    "EPF_Devices_CL",
                    '| where LastSeen < newest - 7d and OnboardingStatus == "Onboarded"\n'
                    "| project DeviceName, OSPlatform, RbacGroupName, LastSeen, DeviceId\n"
                    "| order by LastSeen asc, DeviceName asc, DeviceId asc",
                ),
                "table",
                "Every onboarded device reported within 7 days of the newest collection.",
            ),
            Panel(
                "failed-datasets",
                "Datasets whose newest run failed",
                "EPF_Runs_CL\n"
                "| summarize arg_max(SnapshotTime, Outcome, Error) by SourceName, Dataset\n"
                '| where Outcome == "Failed"\n| project SourceName, Dataset, SnapshotTime, Error\n'
                "| order by SourceName asc, Dataset asc",
                "table",
                "Every dataset's newest run succeeded or was skipped as not due.",
            ),
        ),
    ),
    (
        "IT and OT",
        "Defender for IoT: OT devices that Defender for Endpoint also knows, critical CVEs, alerts.",
        (
            Panel(
                "ot-also-it",
                "OT devices that are also Defender for Endpoint devices",
                newest("EPF_IotDevices_CL")
                + "let it = EPF_DevicesAt(newest) | project ItName = tolower(DeviceName), ItDeviceId = DeviceId,"
                " OSPlatform, HealthStatus;\n"
                'EPF_IotDevices_CL\n| where SnapshotTime == newest and Source == "sensor/v1/devices"\n'
                "| extend ItName = tolower(DeviceName)\n"
                "| join kind=inner it on ItName\n"
                # DeviceId: the Defender for Endpoint device's, so the name leads to its posture.
                "| project Appliance, DeviceName, DeviceType, OSPlatform, HealthStatus,"
                " DeviceId = ItDeviceId\n"
                "| order by Appliance asc, DeviceName asc, DeviceId asc",
                "table",
                "No OT device carries the name of a Defender for Endpoint device, or no sensor is"
                " configured ([[iot.sensors]]).",
            ),
            Panel(
                "ot-critical-cves",
                "Critical OT CVEs (CVSS 9 or more) per sensor",
                newest("EPF_IotCves_CL")
                + "EPF_OtOpenVulnerabilitiesAt(newest)\n| where CvssScore >= 9.0\n"
                "| summarize Cves = dcount(CveId), Devices = dcount(DeviceId) by Appliance\n"
                "| order by Appliance asc",
                "barchart",
                "No OT CVE of CVSS 9 or more, or no sensor configured.",
            ),
            Panel(
                "ot-alerts",
                "OT alerts by severity",
                "EPF_IotAlerts_CL\n| summarize Alerts = count() by Severity, Appliance\n"
                "| order by Alerts desc, Severity asc, Appliance asc",
                "barchart",
                "No OT alert in this time range, or no sensor configured.",
            ),
        ),
    ),
    (
        "Collector health",
        "The collector's own runs (EPF_Runs_CL): rows per run, failures, throttling.",
        (
            Panel(
                "rows-per-run",
                "Rows per run",
                "EPF_Runs_CL\n| summarize Rows = sum(Rows) by bin(SnapshotTime, 1d), TableName\n"
                "| order by SnapshotTime asc, TableName asc",
                "timechart",
                "No run in this time range: is the collector scheduled (`epf run`)?",
                100,
            ),
            Panel(
                "throttling",
                "Throttled requests and failures per source",
                "EPF_Runs_CL\n"
                '| summarize Throttled = sum(Throttled), Failed = countif(Outcome == "Failed"),'
                " Runs = dcount(RunId) by SourceName\n| order by SourceName asc",
                "table",
                "No run in this time range.",
            ),
        ),
    ),
    (
        "The original workbook's views",
        "The IT-OT Forensic Workbook's tabs, fixed: device names rather than ids, the newest state"
        " per device and test, every OS, and CVEs without duplicates.",
        (
            Panel(
                "devices-grid",
                "Agent health by device",
                panel_query(
                    "EPF_AgentHealthAt",
                    "EPF_AgentHealth_CL",
                    join_group=True,
                    rest="| project DeviceName, OSPlatform, FailingTests, "
                    + ", ".join(AGENT_TESTS)
                    + ", DeviceId\n| order by FailingTests desc, DeviceName asc, DeviceId asc",
                ),
                "table",
                NO_COLLECTION,
                100,
            ),
            Panel(
                "iot-devices",
                "IoT devices",
                newest("EPF_IotDevices_CL")
                + 'EPF_IotDevices_CL\n| where SnapshotTime == newest and Source == "sensor/v1/devices"\n'
                "| project Appliance, DeviceName, Vendor, DeviceType, OperatingSystem, IpAddresses,"
                " Authorized, FirmwareVersion, OtDeviceId = DeviceId\n"
                "| order by Appliance asc, DeviceName asc, OtDeviceId asc",
                "table",
                "No sensor configured, or its devices were not collected in this time range.",
                100,
            ),
            Panel(
                "iot-events",
                "IoT events",
                "EPF_IotEvents_CL\n| project EventTime, Appliance, EventType, EventTitle, Severity,"
                " Content, EventKey\n"
                "| order by EventTime desc, Appliance asc, EventKey asc\n| take 500",
                "table",
                "No OT event in this time range, or no sensor configured.",
                100,
            ),
            Panel(
                "iot-cves",
                "IoT CVEs",
                newest("EPF_IotCves_CL") + "EPF_OtOpenVulnerabilitiesAt(newest)\n"
                "| project Appliance, DeviceName, IpAddress, CveId, CvssScore, AttackVector\n"
                "| order by CvssScore desc, Appliance asc, IpAddress asc, CveId asc",
                "table",
                "No OT CVE listed, or no sensor configured.",
                100,
            ),
        ),
    ),
)
