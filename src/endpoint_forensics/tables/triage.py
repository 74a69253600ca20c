"""The triage decisions: one row per open (device, CVE) per triage run, each input with the
reason it has its value, the SSVC decision and the CISA BOD 26-04 outcome and due date looked
up in the vendored decision tables (docs/triage.md).
Imports nothing of ours outside this package.
"""

from __future__ import annotations

from endpoint_forensics.tables.schema import COMMON_COLUMNS, Column, KqlType, Table

__all__ = ["TRIAGE", "TRIAGE_TABLES"]

S, R, B, T, D = KqlType.STRING, KqlType.REAL, KqlType.BOOL, KqlType.DATETIME, KqlType.DYNAMIC

TRIAGE = Table(
    name="EPF_Triage_CL",
    description=(
        "Triage of each open vulnerability (device, CVE) per triage run: SSVC inputs with their "
        "reasons, the CISA Coordinator decision, the BOD 26-04 outcome and due date."
    ),
    source="triage",
    key=("DefenderTenantId", "DeviceId", "CveId"),
    columns=(
        *COMMON_COLUMNS,
        Column(
            "DeviceId",
            S,
            "Defender device id; for an OT device, ot:<sensor>/<address> (EPF_IotCves_CL).",
        ),
        Column("DeviceName", S, "Device name at the triage time."),
        Column(
            "RbacGroupName",
            S,
            "Device group at the triage time; for an OT device, its zone, site or sensor.",
        ),
        Column("CveId", S, "CVE id."),
        Column("VulnerabilitySeverityLevel", S, "Defender's severity of the CVE."),
        Column("DeviceKind", S, "IT (Defender for Endpoint) or OT (a Defender for IoT sensor)."),
        Column("CvssScore", R, "CVSS base score (the highest of the device's software rows)."),
        Column("Epss", R, "EPSS probability from the newest EPSS copy; empty if not scored."),
        Column("EpssPercentile", R, "EPSS percentile from the same copy."),
        Column(
            "FirstSeen", T, "When Defender (for OT, the sensor) first saw the CVE on the device."
        ),
        Column("Exploitation", S, "SSVC Exploitation: none, poc or active."),
        Column("Automatable", S, "SSVC Automatable: no or yes."),
        Column("TechnicalImpact", S, "SSVC Technical Impact: partial or total."),
        Column("MissionWellbeing", S, "SSVC Mission and Well-being impact: low, medium or high."),
        Column("PubliclyExposed", B, "Whether the device is publicly exposed (BOD 26-04)."),
        Column("InKev", B, "Whether the CVE is in the newest CISA KEV copy."),
        Column("KevForensicTriage", B, "KEV asks for a forensic triage (forensicTriage)."),
        Column("Decision", S, "CISA Coordinator 2.0.3 decision: Track, Track*, Attend or Act."),
        Column("Bod2604Outcome", S, "CISA BOD 26-04 outcome, as its table spells it."),
        Column("ClockStart", T, "When the BOD 26-04 clock started: first seen, or added to KEV."),
        Column(
            "DueDate", T, "ClockStart plus the outcome's days; empty for 'fix on system upgrade'."
        ),
        Column(
            "ForensicInvestigation",
            B,
            "The outcome asks for a forensic investigation of the device (scope in 2 h, evidence "
            "in 24 h, triage decision in 72 h).",
        ),
        Column(
            "DeployerPriority",
            S,
            "SSVC Deployer patch priority: Defer, Scheduled, Out-of-Cycle or Immediate.",
        ),
        Column(
            "Reasons",
            D,
            "Each input's value, its source, why, and the feed version it came from.",
        ),
        Column("ModelVersions", D, "The decision tables used, with their versions."),
    ),
)

TRIAGE_TABLES: tuple[Table, ...] = (TRIAGE,)
