"""The threat feeds triage reads: CISA's Known Exploited Vulnerabilities catalogue, FIRST's
EPSS scores and CISA's Vulnrichment SSVC options, with the datasets that fill them (source
kind ``feed``: a URL, a file or folder for air-gapped sites, or the emulator's mirrors).

Every row carries its provenance: the feed's own version or date (``FeedVersion``) and where
it was read from (``FeedSource``, a URL without its query or a file path). Each run that reads
a feed writes all of it, so the history shows which copy was in use at any time; a run whose
read failed writes nothing, and the last good copy stays the newest.
Imports nothing of ours outside this package.
"""

from __future__ import annotations

from endpoint_forensics.tables.posture import with_common_columns
from endpoint_forensics.tables.schema import DatasetSpec, KqlType, Table

__all__ = ["EPSS", "FEED_DATASETS", "FEED_TABLES", "KEV", "VULNRICHMENT"]

S, R, B, T, D = KqlType.STRING, KqlType.REAL, KqlType.BOOL, KqlType.DATETIME, KqlType.DYNAMIC

_PROVENANCE = (
    ("FeedVersion", S, "The feed's own version of the copy read (see each table)."),
    ("FeedSource", S, "Where the copy was read: a URL without its query, or a file path."),
)

KEV = Table(
    name="EPF_Kev_CL",
    description=(
        "CISA's Known Exploited Vulnerabilities catalogue, one row per CVE per read "
        "(known_exploited_vulnerabilities.json)."
    ),
    source="feed:kev",
    key=("CveId",),
    columns=with_common_columns(
        ("CveId", S, "CVE id (cveID)."),
        ("VendorProject", S, "Vendor or project (vendorProject)."),
        ("Product", S, "Product (product)."),
        ("VulnerabilityName", S, "Name (vulnerabilityName)."),
        ("DateAdded", T, "When CISA added it to the catalogue (dateAdded)."),
        ("ShortDescription", S, "Description (shortDescription)."),
        ("RequiredAction", S, "What CISA requires (requiredAction)."),
        ("DueDate", T, "The catalogue's remediation due date for federal agencies (dueDate)."),
        (
            "KnownRansomwareCampaignUse",
            S,
            "Known, Unknown: whether ransomware campaigns use it (knownRansomwareCampaignUse).",
        ),
        (
            "ForensicTriage",
            B,
            "CISA asks for a forensic triage of affected assets (forensicTriage, BOD 26-04); "
            "empty when the catalogue does not say.",
        ),
        ("Notes", S, "Notes and references (notes)."),
        ("Cwes", D, "CWE ids (cwes, an array)."),
        ("DateReleased", T, "When this catalogue version was released (dateReleased)."),
        *_PROVENANCE,
    ),
)

EPSS = Table(
    name="EPF_Epss_CL",
    description=(
        "FIRST's Exploit Prediction Scoring System, one row per CVE per daily score read "
        "(epss_scores-YYYY-MM-DD.csv.gz); its history is kept, scores move fast."
    ),
    source="feed:epss",
    key=("CveId",),
    columns=with_common_columns(
        ("CveId", S, "CVE id."),
        ("Epss", R, "Probability of exploitation activity in the next 30 days, 0-1."),
        ("Percentile", R, "Rank of the score among all scored CVEs, 0-1."),
        ("ScoreDate", T, "The day the scores are for (score_date)."),
        ("ModelVersion", S, "The EPSS model that scored them (model_version)."),
        *_PROVENANCE,
    ),
)

VULNRICHMENT = Table(
    name="EPF_Vulnrichment_CL",
    description=(
        "CISA's Vulnrichment: the SSVC options CISA's ADP container gives a CVE record, one row "
        "per enriched CVE per read."
    ),
    source="feed:vulnrichment",
    key=("CveId",),
    columns=with_common_columns(
        ("CveId", S, "CVE id."),
        ("Exploitation", S, "none, poc or active, as CISA assessed it."),
        ("Automatable", S, "no or yes."),
        ("TechnicalImpact", S, "partial or total."),
        ("SsvcRole", S, "The decision role the options are for (CISA Coordinator)."),
        ("SsvcVersion", S, "The SSVC version of the options."),
        ("AssessedAt", T, "When CISA assessed them (the options' timestamp)."),
        ("RecordUpdated", T, "When CISA's ADP container was last updated (dateUpdated)."),
        *_PROVENANCE,
    ),
)

# This module's tables, in registry order: a new table is added here.
FEED_TABLES: tuple[Table, ...] = (KEV, EPSS, VULNRICHMENT)

FEED_DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        "kev",
        "feed",
        KEV,
        "feeds:fetch_kev",
        origin="CISA KEV catalogue (JSON), from a URL or a file",
        row_per="CVE per read (FeedVersion: catalogVersion)",
        interval_hours=12.0,
    ),
    DatasetSpec(
        "epss",
        "feed",
        EPSS,
        "feeds:fetch_epss",
        origin="FIRST EPSS daily scores (gzip CSV), from a URL or a file",
        row_per="CVE per daily read (FeedVersion: model version and score date)",
        interval_hours=24.0,
    ),
    DatasetSpec(
        "vulnrichment",
        "feed",
        VULNRICHMENT,
        "vulnrichment:fetch_vulnrichment",
        origin="CISA Vulnrichment CVE records (a zip of the repository, or a folder)",
        row_per="enriched CVE per read (FeedVersion: the archive's SHA-256 or the folder's time)",
        interval_hours=24.0,
    ),
)
