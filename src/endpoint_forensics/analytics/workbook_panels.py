"""The workbook's panels as data (``analytics.workbook`` makes the document of them): the
dropdown parameters, and each section's panels with their queries. A query takes the
parameters by their tokens (``{Tenant}``, ``{Group}``, ``{OS}``: ``*`` is all) and answers as
of the newest collection in the selected time range. Imports only ``tables``.
"""

from __future__ import annotations

from dataclasses import dataclass

from endpoint_forensics.tables import AGENT_HEALTH_TESTS

__all__ = ["ALL", "PARAMETERS", "SECTIONS", "Panel"]

#: The value of a dropdown parameter that selects everything.
ALL = "*"
_FILTER_GROUP = '| where "{Group}" == "*" or RbacGroupName == "{Group}"'
_FILTER_OS = '| where "{OS}" == "*" or OSPlatform == "{OS}"'
_FILTER_TENANT = '| where "{Tenant}" == "*" or DefenderTenantId == "{Tenant}"'


@dataclass(frozen=True)
class Panel:
    name: str
    title: str
    query: str
    visualization: str  # table, piechart, barchart, timechart, tiles
    empty: str  # what the user should do when the panel has no rows
    width: int = 50  # percent


def _newest(table: str) -> str:
    return f"let newest = toscalar({table} | summarize max(SnapshotTime));\n"


# The vulnerabilities' newest news: a (weekly) snapshot, or the changes collected since it.
_NEWEST_VULNERABILITIES = _newest("union EPF_Vulnerabilities_CL, EPF_VulnerabilityChanges_CL\n    ")


def _it(
    function: str, table: str, rest: str, *, join_group: bool = False, args: str = "newest"
) -> str:
    """A panel over ``function``'s state at the newest collection of ``table``, filtered by
    tenant, group and OS; ``join_group`` takes the group from the device list, for a table
    that has none."""
    group = (
        "| join kind=leftouter (EPF_DevicesAt(newest) | project DeviceId, RbacGroupName)"
        " on DeviceId\n"
        if join_group
        else ""
    )
    filters = "\n".join((_FILTER_TENANT, _FILTER_GROUP, _FILTER_OS))
    return f"{_newest(table)}{function}({args})\n{group}{filters}\n{rest}"


_AGENT_TESTS = AGENT_HEALTH_TESTS
_EACH_TEST = (
    "| extend Tests = pack_array("
    + ", ".join(f'pack("Test", "{t}", "Result", {t})' for t in _AGENT_TESTS)
    + ")\n| mv-expand Test = Tests\n"
    "| extend TestName = tostring(Test.Test), Result = tostring(Test.Result)\n"
)
_NO_COLLECTION = (
    "No collection in this time range: widen it, or check `epf doctor` and EPF_Runs_CL."
)

SECTIONS: tuple[tuple[str, str, tuple[Panel, ...]], ...] = (
    (
        "Fleet posture now",
        "The state at the newest collection in the time range, for the selected tenant, group and OS.",
        (
            Panel(
                "agent-health-tests",
                "Agent health: devices failing each test",
                _it(
                    "EPF_AgentHealthAt",
                    "EPF_AgentHealth_CL",
                    join_group=True,
                    rest=_EACH_TEST
                    + '| summarize Failing = countif(Result == "Fail"), Passing = countif(Result == "Pass"),'
                    ' NotApplicable = countif(Result == "NotApplicable") by TestName\n'
                    "| order by Failing desc, TestName asc",
                ),
                "barchart",
                _NO_COLLECTION,
            ),
            Panel(
                "av-mode",
                "Antivirus mode",
                _it(
                    "EPF_AvHealthAt",
                    "EPF_AvHealth_CL",
                    "| summarize Devices = count() by AvMode\n| order by Devices desc, AvMode asc",
                ),
                "piechart",
                _NO_COLLECTION,
            ),
            Panel(
                "signature-age",
                "Antivirus signature age",
                _it(
                    "EPF_AvHealthAt",
                    "EPF_AvHealth_CL",
                    "| extend AgeDays = (newest - AvSignatureUpdateTime) / 1d\n"
                    '| extend Age = case(isnull(AgeDays), "unknown", AgeDays <= 1, "up to a day",'
                    ' AgeDays <= 3, "1-3 days", AgeDays <= 7, "3-7 days", "over a week")\n'
                    "| summarize Devices = count() by Age\n| order by Devices desc, Age asc",
                ),
                "piechart",
                _NO_COLLECTION,
            ),
            Panel(
                "failing-configurations",
                "Security settings failing on most devices",
                _it(
                    "EPF_SecureConfigAt",
                    "EPF_SecureConfig_CL",
                    "| where IsApplicable and not(IsCompliant)\n"
                    "| summarize Devices = dcount(DeviceId) by ConfigurationId, ConfigurationName,"
                    " ConfigurationImpact\n| order by Devices desc, ConfigurationId asc\n| take 15",
                ),
                "table",
                "No failing setting, or no secure configuration collected: check the"
                " secure_config dataset in EPF_Runs_CL.",
            ),
            Panel(
                "open-vulnerabilities",
                "Open vulnerabilities by severity",
                _NEWEST_VULNERABILITIES
                + "EPF_OpenVulnerabilitiesAt(newest)\n"
                + _FILTER_TENANT
                + "\n| summarize Devices = dcount(DeviceId), Vulnerabilities = count()"
                " by VulnerabilitySeverityLevel\n"
                "| order by Vulnerabilities desc, VulnerabilitySeverityLevel asc",
                "barchart",
                "No open vulnerability, or none collected: check the vulnerabilities dataset in"
                " EPF_Runs_CL.",
            ),
        ),
    ),
    (
        "Fleet posture over time",
        "The state at the end of each of the 14 days up to the newest collection (the Daily"
        " functions), for the selected tenant, group and OS.",
        (
            Panel(
                "agent-health-trend",
                "Agent health over 14 days: devices failing each test, day by day",
                _it(
                    "EPF_AgentHealthDaily",
                    "EPF_AgentHealth_CL",
                    join_group=True,
                    args="newest - 13d, newest",
                    rest=_EACH_TEST + '| where Result == "Fail"\n'
                    "| summarize Failing = count() by Day, TestName\n| order by Day asc, TestName asc",
                ),
                "timechart",
                "No failing test in 14 days, or no agent health collected: check the"
                " agent_health dataset in EPF_Runs_CL.",
                100,
            ),
            Panel(
                "av-trend",
                "Antivirus over 14 days: devices not in active mode, and with signatures over a"
                " week old",
                _it(
                    "EPF_AvHealthDaily",
                    "EPF_AvHealth_CL",
                    args="newest - 13d, newest",
                    rest='| summarize NotActive = countif(AvMode != "Active"),'
                    " StaleSignatures = countif(Day - AvSignatureUpdateTime > 7d) by Day\n"
                    "| order by Day asc",
                ),
                "timechart",
                "No antivirus health collected in 14 days: check the av_health dataset in"
                " EPF_Runs_CL.",
            ),
            Panel(
                "secure-config-trend",
                "Security settings over 14 days: failing (device, setting) pairs by category",
                _it(
                    "EPF_SecureConfigDaily",
                    "EPF_SecureConfig_CL",
                    args="newest - 13d, newest",
                    rest="| where IsApplicable and not(IsCompliant)\n"
                    "| summarize Failing = count() by Day, ConfigurationCategory\n"
                    "| order by Day asc, ConfigurationCategory asc",
                ),
                "timechart",
                "No failing setting in 14 days, or no secure configuration collected: check the"
                " secure_config dataset in EPF_Runs_CL.",
            ),
            Panel(
                "vulnerability-flow",
                "Vulnerabilities found and fixed per day",
                _NEWEST_VULNERABILITIES + "EPF_VulnerabilityChanges_CL\n"
                '| where EventTimestamp > newest - 14d and Status in ("New", "Fixed")\n'
                + _FILTER_TENANT
                + "\n"
                + _FILTER_GROUP
                + "\n"
                # A device-group move is reported as Fixed under the old group and New under
                # the new one at the same instant: not a finding, not a fix.
                "| summarize Statuses = make_set(Status) by DefenderTenantId, DeviceId, RecordId,"
                " EventTimestamp\n"
                "| where array_length(Statuses) == 1\n"
                "| extend Status = tostring(Statuses[0])\n"
                '| summarize Found = countif(Status == "New"), Fixed = countif(Status == "Fixed")'
                " by Day = bin(EventTimestamp, 1d)\n"
                "| order by Day asc",
                "timechart",
                "No vulnerability found or fixed in 14 days, or no changes collected: check the"
                " vulnerability_changes dataset in EPF_Runs_CL.",
                100,
            ),
        ),
    ),
    (
        "Triage",
        "SSVC decisions and CISA BOD 26-04 due dates of the newest triage run (docs/triage.md).",
        (
            Panel(
                "decisions",
                "Decisions (CISA Coordinator)",
                _newest("EPF_Triage_CL")
                + "EPF_Triage_CL\n| where SnapshotTime == newest\n"
                + _FILTER_TENANT
                + "\n"
                + _FILTER_GROUP
                + "\n| summarize Items = count() by Decision, DeviceKind"
                "\n| order by Decision asc, DeviceKind asc",
                "barchart",
                "No triage run in this time range: triage runs after a sync that brought"
                " posture or a feed copy, with the local workspace (`epf sync`).",
            ),
            Panel(
                "bod-outcomes",
                "BOD 26-04 outcomes and due dates",
                _newest("EPF_Triage_CL")
                + "EPF_Triage_CL\n| where SnapshotTime == newest\n"
                + _FILTER_TENANT
                + "\n"
                + _FILTER_GROUP
                + "\n| summarize Items = count(), Overdue = countif(DueDate < newest),"
                " NextDue = min(iff(DueDate >= newest, DueDate, datetime(null))) by Bod2604Outcome"
                "\n| order by Bod2604Outcome asc",
                "table",
                "No triage run in this time range: see the Decisions panel.",
            ),
            Panel(
                "forensic-items",
                "Forensic investigations BOD 26-04 asks for",
                _newest("EPF_Triage_CL")
                + "EPF_Triage_CL\n| where SnapshotTime == newest and ForensicInvestigation\n"
                + _FILTER_TENANT
                + "\n"
                + _FILTER_GROUP
                + "\n| project DeviceName, DeviceKind, CveId, ClockStart, DueDate, PubliclyExposed,"
                " DeviceId\n| order by DueDate asc, DeviceName asc, DeviceId asc, CveId asc",
                "table",
                "Nothing to investigate: no known-exploited CVE with forensicTriage is open on a"
                " publicly exposed device.",
                100,
            ),
        ),
    ),
    (
        "Remediation",
        "How fast vulnerabilities are fixed over the 30 days before the newest collection.",
        (
            Panel(
                "mttr",
                "Mean time to remediate by severity (days)",
                _NEWEST_VULNERABILITIES
                + "EPF_VulnerabilityLifecycle(newest - 30d, newest)\n"
                + _FILTER_TENANT
                + "\n"
                + _FILTER_GROUP
                + '\n| where Status == "Fixed"\n'
                "| summarize MeanDays = round(avg(DaysOpen), 1), Fixed = count()"
                " by VulnerabilitySeverityLevel\n| order by VulnerabilitySeverityLevel asc",
                "barchart",
                "Nothing fixed in 30 days of history: the history may be younger than that.",
            ),
            Panel(
                "sla-breaches",
                "SLA breaches (BOD 26-04 where triage set a date, else by severity)",
                _NEWEST_VULNERABILITIES
                + "EPF_VulnerabilitySla(newest - 30d, newest, 15, 30, 90, 180)\n"
                + _FILTER_TENANT
                + "\n"
                + _FILTER_GROUP
                + "\n| where Breached\n"
                "| summarize Breaches = count(), Devices = dcount(DeviceId) by SlaSource,"
                " VulnerabilitySeverityLevel\n"
                "| order by Breaches desc, SlaSource asc, VulnerabilitySeverityLevel asc",
                "table",
                "No breach in the last 30 days.",
            ),
        ),
    ),
    (
        "Staleness",
        "What is not reporting: devices Defender has not heard from, sensors, failed datasets.",
        (
            Panel(
                "silent-devices",
                "Devices silent for more than 7 days",
                _it(
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
                _newest("EPF_IotDevices_CL")
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
                _newest("EPF_IotCves_CL")
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
                _it(
                    "EPF_AgentHealthAt",
                    "EPF_AgentHealth_CL",
                    join_group=True,
                    rest="| project DeviceName, OSPlatform, FailingTests, "
                    + ", ".join(_AGENT_TESTS)
                    + ", DeviceId\n| order by FailingTests desc, DeviceName asc, DeviceId asc",
                ),
                "table",
                _NO_COLLECTION,
                100,
            ),
            Panel(
                "iot-devices",
                "IoT devices",
                _newest("EPF_IotDevices_CL")
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
                _newest("EPF_IotCves_CL") + "EPF_OtOpenVulnerabilitiesAt(newest)\n"
                "| project Appliance, DeviceName, IpAddress, CveId, CvssScore, AttackVector\n"
                "| order by CvssScore desc, Appliance asc, IpAddress asc, CveId asc",
                "table",
                "No OT CVE listed, or no sensor configured.",
                100,
            ),
        ),
    ),
)

#: The dropdown parameters: (name, label, query of its values).
PARAMETERS: tuple[tuple[str, str, str], ...] = (
    (
        "Tenant",
        "Defender tenant",
        'EPF_Devices_CL | summarize by Value = DefenderTenantId | union (print Value = "*")'
        " | order by Value asc",
    ),
    (
        "Group",
        "Device group",
        'EPF_Devices_CL | summarize by Value = RbacGroupName | union (print Value = "*")'
        " | order by Value asc",
    ),
    (
        "OS",
        "OS platform",
        'EPF_Devices_CL | summarize by Value = OSPlatform | union (print Value = "*")'
        " | order by Value asc",
    ),
)
