"""The workbook's panels as data (``analytics.workbook`` makes the document of them): the
dropdown parameters, and each section's panels with their queries. A query takes the
parameters by their tokens (``{Tenant}``, ``{Group}``, ``{OS}``: ``*`` is all) and answers as
of the newest collection in the selected time range. The sections on posture, triage and
remediation are here; those on collection and coverage in
``analytics.workbook_coverage_panels``; what they share in ``analytics.panel_kit``.
"""

from __future__ import annotations

from endpoint_forensics.analytics.panel_kit import (
    ALL,
    EACH_TEST,
    FILTER_GROUP,
    FILTER_TENANT,
    NEWEST_VULNERABILITIES,
    NO_COLLECTION,
    Panel,
    newest,
    panel_query,
)
from endpoint_forensics.analytics.workbook_coverage_panels import COVERAGE_SECTIONS

__all__ = ["ALL", "PARAMETERS", "SECTIONS", "Panel"]

SECTIONS: tuple[tuple[str, str, tuple[Panel, ...]], ...] = (
    (
        "Fleet posture now",
        "The state at the newest collection in the time range, for the selected tenant, group and OS.",
        (
            Panel(
                "agent-health-tests",
                "Agent health: devices failing each test",
                panel_query(
                    "EPF_AgentHealthAt",
                    "EPF_AgentHealth_CL",
                    join_group=True,
                    rest=EACH_TEST
                    + '| summarize Failing = countif(Result == "Fail"), Passing = countif(Result == "Pass"),'
                    ' NotApplicable = countif(Result == "NotApplicable") by TestName\n'
                    "| order by Failing desc, TestName asc",
                ),
                "barchart",
                NO_COLLECTION,
            ),
            Panel(
                "av-mode",
                "Antivirus mode",
                panel_query(
                    "EPF_AvHealthAt",
                    "EPF_AvHealth_CL",
                    "| summarize Devices = count() by AvMode\n| order by Devices desc, AvMode asc",
                ),
                "piechart",
                NO_COLLECTION,
            ),
            Panel(
                "signature-age",
                "Antivirus signature age",
                panel_query(
                    "EPF_AvHealthAt",
                    "EPF_AvHealth_CL",
                    "| extend AgeDays = (newest - AvSignatureUpdateTime) / 1d\n"
                    '| extend Age = case(isnull(AgeDays), "unknown", AgeDays <= 1, "up to a day",'
                    ' AgeDays <= 3, "1-3 days", AgeDays <= 7, "3-7 days", "over a week")\n'
                    "| summarize Devices = count() by Age\n| order by Devices desc, Age asc",
                ),
                "piechart",
                NO_COLLECTION,
            ),
            Panel(
                "failing-configurations",
                "Security settings failing on most devices",
                panel_query(
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
                NEWEST_VULNERABILITIES
                + "EPF_OpenVulnerabilitiesAt(newest)\n"
                + FILTER_TENANT
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
                panel_query(
                    "EPF_AgentHealthDaily",
                    "EPF_AgentHealth_CL",
                    join_group=True,
                    args="newest - 13d, newest",
                    rest=EACH_TEST + '| where Result == "Fail"\n'
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
                panel_query(
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
                panel_query(
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
                NEWEST_VULNERABILITIES + "EPF_VulnerabilityChanges_CL\n"
                '| where EventTimestamp > newest - 14d and Status in ("New", "Fixed")\n'
                + FILTER_TENANT
                + "\n"
                + FILTER_GROUP
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
                newest("EPF_Triage_CL")
                + "EPF_Triage_CL\n| where SnapshotTime == newest\n"
                + FILTER_TENANT
                + "\n"
                + FILTER_GROUP
                + "\n| summarize Items = count() by Decision, DeviceKind"
                "\n| order by Decision asc, DeviceKind asc",
                "barchart",
                "No triage run in this time range: triage runs after a sync that brought"
                " posture or a feed copy, with the local workspace (`epf sync`).",
            ),
            Panel(
                "bod-outcomes",
                "BOD 26-04 outcomes and due dates",
                newest("EPF_Triage_CL")
                + "EPF_Triage_CL\n| where SnapshotTime == newest\n"
                + FILTER_TENANT
                + "\n"
                + FILTER_GROUP
                + "\n| summarize Items = count(), Overdue = countif(DueDate < newest),"
                " NextDue = min(iff(DueDate >= newest, DueDate, datetime(null))) by Bod2604Outcome"
                "\n| order by Bod2604Outcome asc",
                "table",
                "No triage run in this time range: see the Decisions panel.",
            ),
            Panel(
                "forensic-items",
                "Forensic investigations BOD 26-04 asks for",
                newest("EPF_Triage_CL")
                + "EPF_Triage_CL\n| where SnapshotTime == newest and ForensicInvestigation\n"
                + FILTER_TENANT
                + "\n"
                + FILTER_GROUP
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
                NEWEST_VULNERABILITIES
                + "EPF_VulnerabilityLifecycle(newest - 30d, newest)\n"
                + FILTER_TENANT
                + "\n"
                + FILTER_GROUP
                + '\n| where Status == "Fixed"\n'
                "| summarize MeanDays = round(avg(DaysOpen), 1), Fixed = count()"
                " by VulnerabilitySeverityLevel\n| order by VulnerabilitySeverityLevel asc",
                "barchart",
                "Nothing fixed in 30 days of history: the history may be younger than that.",
            ),
            Panel(
                "sla-breaches",
                "SLA breaches (BOD 26-04 where triage set a date, else by severity)",
                NEWEST_VULNERABILITIES
                + "EPF_VulnerabilitySla(newest - 30d, newest, 15, 30, 90, 180)\n"
                + FILTER_TENANT
                + "\n"
                + FILTER_GROUP
                + "\n| where Breached\n"
                "| summarize Breaches = count(), Devices = dcount(DeviceId) by SlaSource,"
                " VulnerabilitySeverityLevel\n"
                "| order by Breaches desc, SlaSource asc, VulnerabilitySeverityLevel asc",
                "table",
                "No breach in the last 30 days.",
            ),
        ),
    ),
    *COVERAGE_SECTIONS,
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
