"""The tenant-wide catalogues: security recommendations, the CVE catalogue and the tenant's
scores, with the datasets that fill them (one row per item, not per device).

Imports nothing of ours outside this package.
"""

from __future__ import annotations

from endpoint_forensics.tables.posture import with_common_columns
from endpoint_forensics.tables.schema import (
    DatasetSpec,
    KqlType,
    Permission,
    Table,
    json_export_limit,
)

__all__ = [
    "CATALOGUE_DATASETS",
    "CATALOGUE_TABLES",
    "CVE_CATALOG",
    "RECOMMENDATIONS",
    "TENANT_SCORES",
]

S, L, R, B, T, D = (
    KqlType.STRING,
    KqlType.LONG,
    KqlType.REAL,
    KqlType.BOOL,
    KqlType.DATETIME,
    KqlType.DYNAMIC,
)
_VULN_READ = Permission("MDE", "Vulnerability.Read.All")

RECOMMENDATIONS = Table(
    name="EPF_Recommendations_CL",
    description="Security recommendations (/api/recommendations), one row per recommendation per run.",
    source="mde:recommendations",
    key=("DefenderTenantId", "RecommendationId"),
    columns=with_common_columns(
        ("RecommendationId", S, "Recommendation id, e.g. va-_-microsoft-_-windows_10."),
        ("RecommendationName", S, "What to do."),
        ("ProductName", S, "Product concerned."),
        ("Vendor", S, "Vendor of the product."),
        ("RecommendedVersion", S, "Version to move to."),
        ("RecommendedProgram", S, "Program to move to."),
        ("RecommendedVendor", S, "Vendor to move to."),
        ("RecommendationCategory", S, "Accounts, Application, Network, OS or SecurityControls."),
        ("SubCategory", S, "Sub-category."),
        ("SeverityScore", R, "Severity score."),
        ("Weaknesses", L, "Vulnerabilities the recommendation addresses."),
        ("PublicExploit", B, "Whether a public exploit exists."),
        ("ActiveAlert", B, "Whether an active alert is associated."),
        ("AssociatedThreats", D, "Threats associated (array of strings)."),
        ("RemediationType", S, "ConfigurationChange, Update, Upgrade or Uninstall."),
        ("Status", S, "Active or Exception."),
        ("ConfigScoreImpact", R, "Impact on the secure score."),
        ("ExposureImpact", R, "Impact on the exposure score."),
        ("TotalMachineCount", L, "Devices with the product installed."),
        ("ExposedMachinesCount", L, "Devices exposed."),
        ("NonProductivityImpactedAssets", L, "Devices where remediation does not affect users."),
        ("RelatedComponent", S, "Component concerned."),
        ("ExposedCriticalDevices", L, "Critical devices exposed."),
    ),
)

CVE_CATALOG = Table(
    name="EPF_CveCatalog_CL",
    description="The vulnerabilities catalogue (/api/vulnerabilities), one row per CVE per run.",
    source="mde:vulnerabilities",
    key=("DefenderTenantId", "CveId"),
    columns=with_common_columns(
        ("CveId", S, "CVE id."),
        ("Name", S, "Name."),
        ("Description", S, "Description."),
        ("Severity", S, "Low, Medium, High or Critical."),
        ("CvssV3", R, "CVSS v3 base score."),
        ("CvssVector", S, "CVSS v3 vector."),
        ("ExposedMachines", L, "Devices exposed in the tenant."),
        ("PublishedOn", T, "When the CVE was published."),
        ("UpdatedOn", T, "When it was last updated."),
        ("PublicExploit", B, "A public exploit exists."),
        ("ExploitVerified", B, "The exploit is verified."),
        ("ExploitInKit", B, "The exploit is part of an exploit kit."),
        ("ExploitTypes", D, "Exploit types (array)."),
        ("ExploitUris", D, "Exploit references (array)."),
        ("CveSupportability", S, "Supported, Not Supported or SupportedInPremium."),
        ("Epss", R, "EPSS probability of exploitation, 0-1."),
    ),
)

TENANT_SCORES = Table(
    name="EPF_TenantScores_CL",
    description=(
        "The tenant's exposure score and Secure Score for Devices (/api/exposureScore, "
        "/api/configurationScore), one row per score per run."
    ),
    source="mde:scores",
    key=("DefenderTenantId", "ScoreName"),
    columns=with_common_columns(
        (
            "ScoreName",
            S,
            "Exposure (0-100, lower is better) or Configuration (Secure Score for Devices).",
        ),
        ("Score", R, "The score."),
        ("ScoreTime", T, "When Defender computed the score."),
    ),
)


# This module's tables, in registry order: a new table is added here.
CATALOGUE_TABLES: tuple[Table, ...] = (RECOMMENDATIONS, CVE_CATALOG, TENANT_SCORES)

# The datasets that fill them, per Defender tenant, in collection order (after the posture).
CATALOGUE_DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        "recommendations",
        "tenant",
        RECOMMENDATIONS,
        "mde:fetch_recommendations",
        origin="`/api/recommendations`",
        row_per="recommendation per run",
        permissions=(Permission("MDE", "SecurityRecommendation.Read.All"),),
        limits=(json_export_limit("recommendations"),),
    ),
    DatasetSpec(
        "cve_catalog",
        "tenant",
        CVE_CATALOG,
        "mde:fetch_cve_catalog",
        origin="`/api/vulnerabilities` (CVSS, vector, exploit flags, EPSS)",
        row_per="CVE per snapshot (daily)",
        permissions=(_VULN_READ,),
        limits=(json_export_limit("vulnerabilities"),),
        interval_hours=24.0,
    ),
    DatasetSpec(
        "scores",
        "tenant",
        TENANT_SCORES,
        "scores:fetch_scores",
        origin="`/api/exposureScore` and `/api/configurationScore` (Secure Score for Devices)",
        row_per="score per run",
        permissions=(Permission("MDE", "Score.Read.All"),),
        # No limit is documented for the scores (B.6): they get the collections' 30/min.
        limits=(json_export_limit("exposureScore"), json_export_limit("configurationScore")),
    ),
)
