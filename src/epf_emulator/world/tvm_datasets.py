"""What each TVM dataset is at an instant, and how its records look on the wire and in files.

Owns, per dataset, the SQL that selects its rows as of an instant T (ordered, numbered by
``rn``; ``world.snapshots`` materialises it) and the SQL that renders a range of them: camelCase
JSON for the API pages, PascalCase columns for the via-files parts (the property names of
the docs' tables). Quirks (defender-apis.md B.2, B.5, F): TVM times are not ISO
(``2020-12-30 14:17:26``, ``...34.8476880`` on events, ``...58.854`` on assessments), AV
times are ISO with ``Z``, ``avMode`` and ``avIs*UpToDate`` are strings, ``rbacGroupId`` and
``configurationImpact`` are numbers, ``cveId`` is null on rows of software without CVEs, and
a few records carry a column no document lists (every record of a file has it, mostly null,
since a part's lines share their columns).

The datasets: ``vulnerabilities`` (one row per device, software version and CVE), ``changes``
(the delta: row starts, ends and exploit updates since a 6-hour bucket, plus the Fixed/New
pair of every row of a device that moved device group), ``software``, ``secure_config``
and ``av``.

Imports only ``world.av_health``, ``world.posture``, ``world.scid_catalog`` and
``world.secure_config_history`` of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from epf_emulator.world.av_health import av_columns, av_snapshot_sql, info_gathering_columns
from epf_emulator.world.posture import HOUR_US, u
from epf_emulator.world.scid_catalog import PUA_SCIDS
from epf_emulator.world.secure_config_history import ASSESSMENTS_TABLE

__all__ = ["DATASETS", "Dataset", "group_at", "seen_sql"]

Columns = list[tuple[str, str, str]]  # (camelCase, PascalCase, SQL)

_DAY_US = 24 * HOUR_US
_PUA = ", ".join(f"'{scid}'" for scid in sorted(PUA_SCIDS))


def _fmt(us: str, pattern: str = "%Y-%m-%d %H:%M:%S") -> str:
    return f"strftime(make_timestamp({us}), '{pattern}')"


def _fmt7(us: str) -> str:
    """``2020-11-03 10:13:34.8476880``: seven digits, as the service's 100 ns ticks."""
    return f"({_fmt(us, '%Y-%m-%d %H:%M:%S.%f')} || '0')"


def group_at(at: str) -> str:
    """SQL: the device group of ``dv`` at ``at``, given ``m`` = its RBAC move (LEFT JOINed)."""
    return (
        f"(CASE WHEN m.d IS NULL THEN dv.group0 WHEN {at} >= m.move_us THEN m.new_group"
        " ELSE m.old_group END)"
    )


def seen_sql(seed: int, at: str) -> str:
    """When device ``dv`` last reported, as of ``at``: within the last 8 hours unless stale."""
    offset = u(seed, "dv.idx", "'seen'")
    return (
        f"(CASE WHEN dv.stale THEN least(dv.last_us, {at})"
        f" ELSE greatest(least(dv.first_us, {at}), {at} - CAST({offset} * {8 * HOUR_US} AS BIGINT)) END)"
    )


# --- vulnerabilities and changes ---------------------------------------------------------
_VULN_JOINS = (
    " JOIN tvm.dev dv ON dv.idx = s.d JOIN tvm.prod p ON p.idx = s.p"
    " LEFT JOIN tvm.cve c ON c.idx = s.cve JOIN tvm.grp g ON g.id = s.grp"
)


def _vuln_snapshot(seed: int, at: int, since: int | None, anchor_us: int) -> str:
    return f"""
        SELECT v.d, v.p, v.seg, v.ver, v.cve, v.first_us, {group_at(str(at))} AS grp,
               CAST(NULL AS BIGINT) AS t_event, CAST(NULL AS VARCHAR) AS status,
               false AS artefact
        FROM tvm.vrow v JOIN tvm.dev dv ON dv.idx = v.d LEFT JOIN tvm.rbac_move m ON m.d = v.d
        WHERE v.t_from <= {at} AND (v.t_to IS NULL OR v.t_to > {at})
    """


def _changes_snapshot(seed: int, at: int, since: int | None, anchor_us: int) -> str:
    lo = since if since is not None else at
    alive = "v.t_from < {t} AND (v.t_to IS NULL OR v.t_to > {t})"
    return f"""
        WITH events AS (
            SELECT v.*, v.t_from AS t_event, 'New' AS status,
                   CAST(NULL AS INTEGER) AS fixed_group, false AS artefact
            FROM tvm.vrow v WHERE v.t_from BETWEEN {lo} AND {at}
            UNION ALL
            SELECT v.*, v.t_to, 'Fixed', NULL, false
            FROM tvm.vrow v WHERE v.t_to BETWEEN {lo} AND {at}
            UNION ALL
            SELECT v.*, c.exploit_us, 'Updated', NULL, false
            FROM tvm.vrow v JOIN tvm.cve c ON c.idx = v.cve
            WHERE c.exploit_us BETWEEN {lo} AND {at} AND {alive.format(t="c.exploit_us")}
            UNION ALL
            -- the documented RBAC-move duplicate: Fixed under the old group, New under the new
            SELECT v.*, m.move_us, e.status,
                   CASE e.status WHEN 'Fixed' THEN m.old_group ELSE m.new_group END, true
            FROM tvm.vrow v JOIN tvm.rbac_move m ON m.d = v.d,
                 (VALUES ('Fixed'), ('New')) AS e(status)
            WHERE m.move_us BETWEEN {lo} AND {at} AND {alive.format(t="m.move_us")}
        )
        SELECT e.d, e.p, e.seg, e.ver, e.cve, e.first_us,
               coalesce(e.fixed_group, {group_at("e.t_event")}) AS grp,
               e.t_event, e.status, e.artefact
        FROM events e JOIN tvm.dev dv ON dv.idx = e.d LEFT JOIN tvm.rbac_move m ON m.d = e.d
    """


def _vuln_columns(seed: int, at: int, *, delta: bool) -> Columns:
    when = "s.t_event" if delta else str(at)
    version = "(CASE WHEN s.p = dv.os_prod THEN dv.os_version ELSE p.versions[s.ver + 1] END)"
    exploit = (
        f"(CASE WHEN c.idx IS NULL OR (c.exploit_us IS NOT NULL AND {when} < c.exploit_us)"
        " THEN 'NoExploit' ELSE c.level END)"
    )
    last_seen = f"greatest(s.first_us, {seen_sql(seed, when)})"
    columns = [
        (
            "id",
            "Id",
            f"dv.id || '_' || p.name || '_' || {version} || '_' || coalesce(c.id, '') || '_'",
        ),
        ("deviceId", "DeviceId", "dv.id"),
        ("rbacGroupName", "RbacGroupName", "g.name"),
        ("rbacGroupId", "RbacGroupId", "s.grp"),
        ("deviceName", "DeviceName", "dv.name"),
        ("osPlatform", "OSPlatform", "dv.platform"),
        ("osVersion", "OSVersion", "dv.os_version"),
        ("osArchitecture", "OSArchitecture", "dv.os_arch"),
        ("softwareVendor", "SoftwareVendor", "p.vendor"),
        ("softwareName", "SoftwareName", "p.name"),
        ("softwareVersion", "SoftwareVersion", version),
        ("cveId", "CveId", "c.id"),
        ("cvssScore", "CvssScore", "c.score"),
        ("vulnerabilitySeverityLevel", "VulnerabilitySeverityLevel", "c.severity"),
        ("recommendedSecurityUpdate", "RecommendedSecurityUpdate", "c.update_name"),
        ("recommendedSecurityUpdateId", "RecommendedSecurityUpdateId", "c.update_id"),
        ("recommendedSecurityUpdateUrl", "RecommendedSecurityUpdateUrl", "c.update_url"),
        ("diskPaths", "DiskPaths", "CASE WHEN p.disk IS NULL THEN [] ELSE [p.disk] END"),
        (
            "registryPaths",
            "RegistryPaths",
            "CASE WHEN p.registry IS NULL THEN [] ELSE [p.registry] END",
        ),
        ("lastSeenTimestamp", "LastSeenTimestamp", _fmt(last_seen)),
        ("firstSeenTimestamp", "FirstSeenTimestamp", _fmt("s.first_us")),
        ("exploitabilityLevel", "ExploitabilityLevel", exploit),
        (
            "recommendationReference",
            "RecommendationReference",
            "'va-_-' || p.vendor || '-_-' || p.name",
        ),
        (
            "securityUpdateAvailable",
            "SecurityUpdateAvailable",
            "CASE WHEN c.idx IS NULL THEN s.ver < p.n - 1 ELSE c.update_available END",
        ),
    ]
    if delta:
        columns += [
            ("isOnboarded", "IsOnboarded", "dv.onboarded"),
            ("status", "Status", "s.status"),
            ("eventTimestamp", "EventTimestamp", _fmt7("s.t_event")),
        ]
    return columns


# --- software inventory ------------------------------------------------------------------
def _software_snapshot(seed: int, at: int, since: int | None, anchor_us: int) -> str:
    return f"""
        WITH weak AS (
            SELECT d, p, seg, count(cve) AS weaknesses FROM tvm.vrow
            WHERE t_from <= {at} AND (t_to IS NULL OR t_to > {at}) GROUP BY ALL
        )
        SELECT w.d, w.p, w.seg, w.ver, w.from_us, coalesce(k.weaknesses, 0) AS weaknesses,
               {group_at(str(at))} AS grp
        FROM tvm.sw w JOIN tvm.dev dv ON dv.idx = w.d LEFT JOIN tvm.rbac_move m ON m.d = w.d
        LEFT JOIN weak k ON k.d = w.d AND k.p = w.p AND k.seg = w.seg
        WHERE w.from_us <= {at} AND (w.to_us IS NULL OR w.to_us > {at})
    """


def _software_columns(seed: int, at: int, anchor_us: int) -> Columns:
    version = "(CASE WHEN s.p = dv.os_prod THEN dv.os_version ELSE p.versions[s.ver + 1] END)"
    status = (
        "(CASE WHEN p.eos_status <> 'None' THEN p.eos_status"
        " WHEN s.ver < p.eos_before THEN 'EOS Version'"
        " WHEN p.eos_before > 0 AND s.ver = p.eos_before THEN 'Upcoming EOS Version'"
        " ELSE 'None' END)"
    )
    date = (
        f"(CASE WHEN {status} = 'None' THEN NULL"
        f" WHEN {status} = 'Upcoming EOS Version'"
        " THEN strftime(CAST(p.eos_date AS DATE) + INTERVAL 1 YEAR, '%Y-%m-%d')"
        " ELSE p.eos_date END || 'T00:00:00+00:00')"
    )
    return [
        ("deviceId", "DeviceId", "dv.id"),
        ("rbacGroupName", "RbacGroupName", "g.name"),
        ("rbacGroupId", "RbacGroupId", "s.grp"),
        ("deviceName", "DeviceName", "dv.name"),
        ("osPlatform", "OSPlatform", "dv.platform"),
        ("softwareVendor", "SoftwareVendor", "p.vendor"),
        ("softwareName", "SoftwareName", "p.name"),
        ("softwareVersion", "SoftwareVersion", version),
        ("numberOfWeaknesses", "NumberOfWeaknesses", "s.weaknesses"),
        ("diskPaths", "DiskPaths", "CASE WHEN p.disk IS NULL THEN [] ELSE [p.disk] END"),
        (
            "registryPaths",
            "RegistryPaths",
            "CASE WHEN p.registry IS NULL THEN [] ELSE [p.registry] END",
        ),
        ("softwareFirstSeenTimestamp", "SoftwareFirstSeenTimestamp", _fmt("s.from_us")),
        ("endOfSupportStatus", "EndOfSupportStatus", status),
        ("endOfSupportDate", "EndOfSupportDate", date),
    ]


# --- secure configuration ----------------------------------------------------------------
def _config_snapshot(seed: int, at: int, since: int | None, anchor_us: int) -> str:
    return f"""
        SELECT dv.idx AS d, h.scid, make_timestamp(max(h.t_us)) AS ts,
               arg_max(h.state, h.t_us) AS compliant,
               arg_max(h.applicable, h.t_us) AS applicable,
               h.scid IN ({_PUA}) AS user_impact,
               any_value({group_at(str(at))}) AS grp
        FROM {ASSESSMENTS_TABLE} h JOIN tvm.dev dv ON dv.idx = h.d
        LEFT JOIN tvm.rbac_move m ON m.d = dv.idx
        WHERE h.t_us <= {at}
        GROUP BY dv.idx, h.scid
    """


def _config_columns(seed: int, at: int, anchor_us: int) -> Columns:
    return [
        ("deviceId", "DeviceId", "dv.id"),
        ("rbacGroupName", "RbacGroupName", "g.name"),
        ("rbacGroupId", "RbacGroupId", "s.grp"),
        ("deviceName", "DeviceName", "dv.name"),
        ("osPlatform", "OSPlatform", "dv.platform"),
        ("osVersion", "OSVersion", "dv.os_version"),
        ("timestamp", "Timestamp", "strftime(CAST(s.ts AS TIMESTAMP), '%Y-%m-%d %H:%M:%S.%g')"),
        ("configurationId", "ConfigurationId", "s.scid"),
        ("configurationCategory", "ConfigurationCategory", "k.category"),
        ("configurationSubcategory", "ConfigurationSubcategory", "k.subcategory"),
        ("configurationImpact", "ConfigurationImpact", "CAST(k.impact AS INTEGER)"),
        ("isCompliant", "IsCompliant", "s.compliant"),
        ("isApplicable", "IsApplicable", "s.applicable"),
        ("isExpectedUserImpact", "IsExpectedUserImpact", "s.user_impact"),
        ("configurationName", "ConfigurationName", "k.name"),
        ("recommendationReference", "RecommendationReference", "'sca-_-' || s.scid"),
    ]


# --- the registry ------------------------------------------------------------------------
@dataclass(frozen=True)
class Dataset:
    """One TVM dataset: its snapshot, its renderings and its names on the wire."""

    name: str
    context: str  # the @odata.context fragment after $metadata#
    export_folder: str | None  # the blob folder of its via-files export
    order: str  # ORDER BY of the snapshot: defines ``rn``, the paging order
    joins: str  # how a snapshot row ``s`` reaches the dimensions it renders from
    snapshot: Callable[[int, int, int | None, int], str]  # (seed, at, since, anchor_us) -> SQL
    columns: Callable[[int, int, int], Columns]  # (seed, at, anchor_us) -> JSON columns
    file_columns: Callable[[int, int, int], Columns]  # the via-files line
    # (camelCase, PascalCase, value, condition): the undocumented column of a few records
    extra: Callable[[int], tuple[str, str, str, str]]


def _few(seed: int, *parts: str) -> str:
    share = u(seed, *parts, "'extra'")
    return f"{share} < 0.01"


_VERSION = "(CASE WHEN s.p = dv.os_prod THEN dv.os_version ELSE p.versions[s.ver + 1] END)"
_CONTEXT = "Collection(microsoft.windowsDefenderATP.api.{})"
_SOFTWARE_JOINS = (
    " JOIN tvm.dev dv ON dv.idx = s.d JOIN tvm.prod p ON p.idx = s.p JOIN tvm.grp g ON g.id = s.grp"
)
_CONFIG_JOINS = (
    " JOIN tvm.dev dv ON dv.idx = s.d JOIN tvm.scid k ON k.scid = s.scid AND k.family = dv.family"
    " JOIN tvm.grp g ON g.id = s.grp"
)
_AV_JOINS = " JOIN tvm.dev dv ON dv.idx = s.d JOIN tvm.grp g ON g.id = s.grp"


def _vulns(seed: int, at: int, anchor_us: int) -> Columns:
    return _vuln_columns(seed, at, delta=False)


def _deltas(seed: int, at: int, anchor_us: int) -> Columns:
    return _vuln_columns(seed, at, delta=True)


def _av(seed: int, at: int, anchor_us: int) -> Columns:
    return av_columns(seed, at, anchor_us)


def _info(seed: int, at: int, anchor_us: int) -> Columns:
    return info_gathering_columns(seed, at, anchor_us)


def _av_snapshot(seed: int, at: int, since: int | None, anchor_us: int) -> str:
    return av_snapshot_sql(seed, group_at(str(at)), at, seen_sql(seed, str(at)), anchor_us)


DATASETS: dict[str, Dataset] = {
    "vulnerabilities": Dataset(
        "vulnerabilities",
        _CONTEXT.format("AssetVulnerability"),
        "VaExport",
        "d, p, seg, cve NULLS FIRST",
        _VULN_JOINS,
        _vuln_snapshot,
        _vulns,
        _vulns,
        lambda seed: (
            "cveMitigationStatus",
            "CveMitigationStatus",
            "'NotMitigated'",
            _few(seed, "s.d", "s.p"),
        ),
    ),
    "changes": Dataset(
        "changes",
        _CONTEXT.format("DeltaAssetVulnerability"),
        None,
        "t_event, d, p, seg, cve NULLS FIRST, status, artefact",
        _VULN_JOINS,
        _changes_snapshot,
        _deltas,
        _deltas,
        lambda seed: (
            "cveMitigationStatus",
            "CveMitigationStatus",
            "'NotMitigated'",
            _few(seed, "s.d", "s.p"),
        ),
    ),
    "software": Dataset(
        "software",
        _CONTEXT.format("AssetSoftware"),
        "SoftwareInventory",
        "d, p, seg",
        _SOFTWARE_JOINS,
        _software_snapshot,
        _software_columns,
        _software_columns,
        lambda seed: (
            "productCodeCpe",
            "ProductCodeCpe",
            f"'cpe:2.3:a:' || p.vendor || ':' || p.name || ':' || {_VERSION} || ':*:*:*:*:*:*:*'",
            _few(seed, "s.d", "s.p"),
        ),
    ),
    "secure_config": Dataset(
        "secure_config",
        _CONTEXT.format("AssetConfiguration"),
        "ScaExport",
        "d, scid",
        _CONFIG_JOINS,
        _config_snapshot,
        _config_columns,
        _config_columns,
        lambda seed: (
            "assessmentSource",
            "AssessmentSource",
            "'Agent'",
            _few(seed, "s.d", "s.scid"),
        ),
    ),
    "av": Dataset(
        "av",
        "DeviceAvInfo",
        "InfoGatheringExport",
        "d",
        _AV_JOINS,
        _av_snapshot,
        _av,
        _info,
        lambda seed: (
            "lastScanTriggeredBy",
            "LastScanTriggeredBy",
            "'Scheduled'",
            _few(seed, "s.d"),
        ),
    ),
}
