"""The Defender Vulnerability Management posture tables: AV health, secure configuration,
vulnerabilities and their changes, software inventory, recommendations, the CVE catalogue.

Each table holds one snapshot per collection (``SnapshotTime``); the changes table holds the
delta events as Defender reports them. Imports only ``tables.schema``.
"""

from __future__ import annotations

from endpoint_forensics.tables.schema import (
    COMMON_COLUMNS,
    Column,
    DatasetSpec,
    KqlType,
    Permission,
    RateLimit,
    Table,
    files_export_limit,
    json_export_limit,
    tracked,
)

__all__ = [
    "AV_HEALTH",
    "POSTURE_DATASETS",
    "POSTURE_TABLES",
    "SECURE_CONFIG",
    "SOFTWARE_INVENTORY",
    "VULNERABILITIES",
    "VULNERABILITY_CHANGES",
    "with_common_columns",
]

S, L, R, B, T, D = (
    KqlType.STRING,
    KqlType.LONG,
    KqlType.REAL,
    KqlType.BOOL,
    KqlType.DATETIME,
    KqlType.DYNAMIC,
)


def with_common_columns(*specs: tuple[str, KqlType, str]) -> tuple[Column, ...]:
    extra = Column(
        "AdditionalFields", D, "Fields the API returned that this version does not know."
    )
    return (*COMMON_COLUMNS, *(Column(n, t, d) for n, t, d in specs), extra)


_DEVICE = (
    ("DeviceId", S, "Defender device id."),
    ("DeviceName", S, "Device name."),
)

AV_HEALTH = tracked(
    Table(
        name="EPF_AvHealth_CL",
        description="Microsoft Defender Antivirus health per device (/api/deviceavinfo or the "
        "InfoGatheringExport files), one row per device and AV state per run.",
        source="mde:deviceavinfo",
        key=("DefenderTenantId", "DeviceId"),
        columns=with_common_columns(
            *_DEVICE,
            ("OSKind", S, "windows, mac or linux."),
            ("OSPlatform", S, "Operating system platform."),
            ("OSVersion", S, "Operating system version."),
            ("AvMode", S, "Active, Passive, Disabled, EDRBlocked, PassiveAudit or Other."),
            ("AvModeCode", S, "avMode as reported: '' or 0-5."),
            ("AvSignatureVersion", S, "Security intelligence (signature) version."),
            ("AvEngineVersion", S, "Antivirus engine version."),
            ("AvPlatformVersion", S, "Antimalware platform version."),
            (
                "AvIsSignatureUpToDate",
                B,
                "Signatures up to date (null when Defender says Unknown).",
            ),
            ("AvIsEngineUpToDate", B, "Engine up to date (null when Unknown)."),
            ("AvIsPlatformUpToDate", B, "Platform up to date (null when Unknown)."),
            ("AvSignatureUpdateTime", T, "When the device last updated its signatures."),
            ("AvSignaturePublishTime", T, "When the installed signatures were published."),
            ("AvEngineUpdateTime", T, "When the device last updated its engine."),
            ("AvPlatformUpdateTime", T, "When the device last updated its platform."),
            (
                "SignatureAgeHours",
                R,
                "Hours from the installed signatures' publish time (else their update time) to "
                "SnapshotTime: how old the protection was when the snapshot was taken.",
            ),
            ("QuickScanResult", S, "Completed, Canceled, Failed or empty."),
            ("QuickScanError", S, "Error code of the last quick scan, e.g. 0x80508023."),
            ("QuickScanTime", T, "When the last quick scan ran."),
            ("FullScanResult", S, "Completed, Canceled, Failed or empty."),
            ("FullScanError", S, "Error code of the last full scan."),
            ("FullScanTime", T, "When the last full scan ran."),
            ("LastSeenTime", T, "When the device last reported."),
            ("DataRefreshTimestamp", T, "When Defender refreshed this record."),
            ("RbacGroupId", L, "Device group id."),
            ("RbacGroupName", S, "Device group name."),
        ),
    ),
    ignores=("SignatureAgeHours", "DataRefreshTimestamp", "LastSeenTime"),
)

SECURE_CONFIG = tracked(
    Table(
        name="EPF_SecureConfig_CL",
        description="Secure configuration assessment by device (SecureConfigurationsAssessmentByMachine "
        "or its export files), one row per device and configuration per run.",
        source="mde:SecureConfigurationsAssessmentByMachine",
        key=("DefenderTenantId", "DeviceId", "ConfigurationId"),
        columns=with_common_columns(
            *_DEVICE,
            ("OSPlatform", S, "Operating system platform."),
            ("OSVersion", S, "Operating system version."),
            ("RbacGroupName", S, "Device group name."),
            ("RbacGroupId", L, "Device group id, when reported."),
            ("ConfigurationId", S, "Security configuration id, e.g. scid-2011."),
            ("ConfigurationName", S, "What the configuration checks."),
            (
                "ConfigurationCategory",
                S,
                "Application, OS, Network, Accounts or Security controls.",
            ),
            ("ConfigurationSubcategory", S, "Sub-category."),
            ("ConfigurationImpact", R, "Impact on the exposure score, 1-10."),
            ("IsCompliant", B, "Whether the device complies."),
            ("IsApplicable", B, "Whether the configuration applies to the device."),
            ("IsExpectedUserImpact", B, "Whether fixing it is expected to affect users."),
            ("RecommendationReference", S, "The related security recommendation id."),
            ("AssessedTime", T, "When Defender assessed it (the record's timestamp)."),
        ),
    ),
    ignores=("AssessedTime",),
)

_VULN = (
    *_DEVICE,
    ("RecordId", S, "Defender's record id: device, software, version and CVE."),
    ("RbacGroupName", S, "Device group name."),
    ("RbacGroupId", L, "Device group id, when reported."),
    ("OSPlatform", S, "Operating system platform."),
    ("OSVersion", S, "Operating system version."),
    ("OSArchitecture", S, "Operating system architecture."),
    ("SoftwareVendor", S, "Vendor of the vulnerable software."),
    ("SoftwareName", S, "Name of the vulnerable software."),
    ("SoftwareVersion", S, "Installed version."),
    ("CveId", S, "CVE id; empty for installed software with no known vulnerability."),
    ("VulnerabilitySeverityLevel", S, "Low, Medium, High or Critical."),
    ("CvssScore", R, "CVSS score."),
    ("ExploitabilityLevel", S, "NoExploit, ExploitIsPublic, ExploitIsVerified or ExploitIsInKit."),
    ("SecurityUpdateAvailable", B, "Whether a security update fixes it."),
    ("RecommendedSecurityUpdate", S, "Name or KB of the fixing update."),
    ("RecommendedSecurityUpdateId", S, "Id of the fixing update."),
    ("RecommendedSecurityUpdateUrl", S, "Where the fixing update is described."),
    ("RecommendationReference", S, "The related security recommendation id."),
    ("DiskPaths", D, "Where the software was found on disk."),
    ("RegistryPaths", D, "Where the software was found in the registry."),
    ("FirstSeenTimestamp", T, "When Defender first saw the vulnerability on the device."),
    ("LastSeenTimestamp", T, "When Defender last saw it."),
)

VULNERABILITIES = tracked(
    Table(
        name="EPF_Vulnerabilities_CL",
        description="Software vulnerabilities by device (SoftwareVulnerabilitiesByMachine or its "
        "export files): the full baseline, one row per device, software, version and CVE.",
        source="mde:SoftwareVulnerabilitiesByMachine",
        key=("DefenderTenantId", "RecordId"),
        columns=with_common_columns(*_VULN),
    ),
    ignores=("LastSeenTimestamp",),
)

VULNERABILITY_CHANGES = Table(
    name="EPF_VulnerabilityChanges_CL",
    description="Changes in software vulnerabilities (SoftwareVulnerabilityChangesByMachine): New, "
    "Fixed and Updated events, without the duplicates a device-group move produces.",
    source="mde:SoftwareVulnerabilityChangesByMachine",
    key=("DefenderTenantId", "RecordId", "RbacGroupName", "Status", "EventTimestamp"),
    columns=with_common_columns(
        *_VULN,
        ("Status", S, "New, Fixed or Updated."),
        ("EventTimestamp", T, "When Defender recorded the change."),
        ("IsOnboarded", B, "Whether the device was onboarded at the time."),
    ),
)

SOFTWARE_INVENTORY = tracked(
    Table(
        name="EPF_SoftwareInventory_CL",
        description="Software inventory by device (SoftwareInventoryByMachine or its export files), "
        "one row per device and software version per run.",
        source="mde:SoftwareInventoryByMachine",
        key=("DefenderTenantId", "DeviceId", "SoftwareVendor", "SoftwareName", "SoftwareVersion"),
        columns=with_common_columns(
            *_DEVICE,
            ("RbacGroupName", S, "Device group name."),
            ("RbacGroupId", L, "Device group id, when reported."),
            ("OSPlatform", S, "Operating system platform."),
            ("SoftwareVendor", S, "Vendor."),
            ("SoftwareName", S, "Name."),
            ("SoftwareVersion", S, "Version."),
            ("NumberOfWeaknesses", L, "Known vulnerabilities of this version."),
            ("EndOfSupportStatus", S, "None, EOS Version, Upcoming EOS Version, EOS Software, ..."),
            ("EndOfSupportDate", T, "When support ends or ended."),
            ("DiskPaths", D, "Where the software was found on disk."),
            ("RegistryPaths", D, "Where the software was found in the registry."),
            (
                "SoftwareFirstSeenTimestamp",
                T,
                "When Defender first saw the software on the device.",
            ),
            ("ProductCodeCpe", S, "The software's CPE, when known."),
        ),
    )
)


# This module's tables, in registry order: a new table is added here.
POSTURE_TABLES: tuple[Table, ...] = (
    AV_HEALTH,
    SECURE_CONFIG,
    VULNERABILITIES,
    VULNERABILITY_CHANGES,
    SOFTWARE_INVENTORY,
)

# Per tenant and endpoint, as documented (defender-apis.md B.6). /api/recommendations and
# /api/vulnerabilities state no limit: they get the JSON exports' 30/min.
_AV_INFO = RateLimit("deviceavinfo", per_minute=30, per_hour=1_000)
# Two doc pages disagree (30/min and 1,000/h, or 5/min and 20/h, B.2): budget the stricter.
_AV_FILES = files_export_limit("InfoGatheringExport")
_MACHINE_READ = Permission("MDE", "Machine.Read.All")
_VULN_READ = Permission("MDE", "Vulnerability.Read.All")
_FILES = Permission("MDE", "Vulnerability.Read.All", when="files")


# The datasets that fill them, per Defender tenant, in collection order.
POSTURE_DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        "av_health",
        "tenant",
        AV_HEALTH,
        "mde:fetch_av_health",
        origin="`/api/deviceavinfo`, or the `InfoGatheringExport` files; AV mode decoded, "
        "signature age in hours at collection time",
        row_per="device per run",
        permissions=(_MACHINE_READ, _FILES),
        limits=(_AV_INFO, _AV_FILES),
    ),
    DatasetSpec(
        "secure_config",
        "tenant",
        SECURE_CONFIG,
        "tvm:fetch_secure_config",
        origin="`SecureConfigurationsAssessmentByMachine` (JSON pages or export files)",
        row_per="device and configuration per snapshot (daily)",
        permissions=(_VULN_READ,),
        limits=(
            json_export_limit("SecureConfigurationsAssessmentByMachine"),
            files_export_limit("SecureConfigurationsAssessmentExport"),
        ),
        interval_hours=24.0,
        resumable=True,
    ),
    DatasetSpec(
        "vulnerabilities",
        "tenant",
        VULNERABILITIES,
        "tvm:fetch_vulnerabilities",
        origin="`SoftwareVulnerabilitiesByMachine` (JSON pages or export files), rows without "
        "a CVE included",
        row_per="device, software, version and CVE per baseline (weekly)",
        permissions=(_VULN_READ,),
        limits=(
            json_export_limit("SoftwareVulnerabilitiesByMachine"),
            files_export_limit("SoftwareVulnerabilitiesExport"),
        ),
        # The full baseline is weekly; the changes delta runs in between (B.5.4).
        interval_hours=168.0,
        resumable=True,
    ),
    DatasetSpec(
        "vulnerability_changes",
        "tenant",
        VULNERABILITY_CHANGES,
        "tvm_changes:fetch_vulnerability_changes",
        origin="`SoftwareVulnerabilityChangesByMachine` since the last run (at most 14 days), "
        "device-group move pairs removed",
        row_per="New, Fixed or Updated event",
        permissions=(_VULN_READ,),
        limits=(json_export_limit("SoftwareVulnerabilityChangesByMachine"),),
    ),
    DatasetSpec(
        "software_inventory",
        "tenant",
        SOFTWARE_INVENTORY,
        "tvm:fetch_software_inventory",
        origin="`SoftwareInventoryByMachine` (JSON pages or export files)",
        row_per="device and software version per snapshot (daily)",
        permissions=(Permission("MDE", "Software.Read.All"),),
        limits=(
            json_export_limit("SoftwareInventoryByMachine"),
            files_export_limit("SoftwareInventoryExport"),
        ),
        interval_hours=24.0,
        resumable=True,
    ),
)
