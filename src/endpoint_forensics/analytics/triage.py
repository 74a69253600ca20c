"""Triage: each open (device, CVE) at a time T, its SSVC inputs with a reason for each, the CISA
Coordinator decision, the BOD 26-04 outcome with its due date, and the Deployer patch priority.

The inputs are the parts the shipped KQL function ``EPF_TriageInputs`` joins (the same text
runs in Sentinel; ``analytics.triage_inputs``); the rules that turn them into SSVC values are
the SQL below, each value with its source, why, and the feed version; the decisions are a
lookup in a table built from the vendored decision tables (``triage.ssvc``), never branches.
The rules (docs/triage.md):

- Exploitation: ``active`` when the CVE is in KEV (whatever Vulnrichment says), when
  Vulnrichment says so, or when Defender knows an exploit kit; ``poc`` when Defender knows a
  public or verified exploit, or Vulnrichment says poc; else ``none``.
- Automatable and Technical Impact: Vulnrichment's; else derived from the CVSS vector (network
  attack vector, no privileges, no user interaction; high confidentiality and integrity impact),
  marked derived; with neither, the more urgent value, marked assumed. An OT device's sensor
  gives only the attack vector: one not over the network makes Automatable ``no`` (derived).
- Mission and well-being: the first ``[[triage.mission]]`` rule the device matches, else the
  configured default.
- Publicly exposed: Defender's internet-facing signal (for an OT device, internet connections
  in its sensor's security report), or an ``[[triage.exposed]]`` rule.
- The BOD 26-04 clock starts when Defender (or an OT device's sensor) first saw the CVE on the
  device, or when KEV added it if later; ``fix on system upgrade`` sets no due date.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from endpoint_forensics.analytics.triage_inputs import TriageParts, triage_parts
from endpoint_forensics.analytics.triage_reasons import (
    automatable_reason,
    case,
    epss_reason,
    exploitation_reason,
    exposed_reason,
    impact_reason,
    kev_reason,
    reason,
)
from endpoint_forensics.config import DeviceRule, TriageConfig
from endpoint_forensics.tables import TRIAGE
from endpoint_forensics.tables.schema import COMMON_COLUMNS
from endpoint_forensics.triage import ssvc

__all__ = ["triage_batches", "triage_query", "triage_sql"]

_STAMPS = {c.name for c in COMMON_COLUMNS}
_FILE_TO_OURS = {"public poc": "poc"}


def _ours(value: str) -> str:
    return _FILE_TO_OURS.get(value, value)


def _values(rows: list[tuple[Any, ...]], alias: str, columns: tuple[str, ...]) -> str:
    """A decision table as an SQL relation ``alias``, its columns prefixed ``alias_``."""
    literal = ", ".join("(" + ", ".join(_sql_literal(v) for v in row) + ")" for row in rows)
    return f"(VALUES {literal}) AS {alias}({', '.join(f'{alias}_{c}' for c in columns)})"


def _sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


# The inputs' values in the order that numbers them: a CVE's part of a decision (Exploitation,
# Automatable, Technical Impact, in KEV) is one of 24 codes, a device's (Mission and
# Well-being, publicly exposed) one of 6; each row looks its decisions up by the pair.
_EXPLOITATION = ("none", "poc", "active")
_AUTOMATABLE = ("no", "yes")
_IMPACT = ("partial", "total")
_MISSION = ("low", "medium", "high")
_BOOL = (False, True)
_CVE_PARTS = [(e, a, ti, kev) for e in _EXPLOITATION for a in _AUTOMATABLE for ti in _IMPACT for kev in _BOOL]  # fmt: skip
_DEVICE_PARTS = [(mwi, exposed) for mwi in _MISSION for exposed in _BOOL]


def _code(columns: tuple[str, ...], domains: tuple[tuple[Any, ...], ...]) -> str:
    """SQL for the number of the columns' values among ``domains`` (in the order of the
    nested loops above); NULL for a value outside them, which then matches no decision."""
    code, weight = [], 1
    for column, domain in reversed(list(zip(columns, domains, strict=True))):
        whens = " ".join(
            f"WHEN {column} THEN {i}" if value is True else
            f"WHEN NOT {column} THEN {i}" if value is False else
            f"WHEN {column} = {_sql_literal(value)} THEN {i}"
            for i, value in enumerate(domain)
        )  # fmt: skip
        code.append(f"(CASE {whens} END) * {weight}")
        weight *= len(domain)
    return " + ".join(reversed(code))


def _lookup(table: ssvc.DecisionTable) -> dict[tuple[str, ...], str]:
    return {tuple(_ours(v) for v in c): table.decide(*c) for c in table.combinations()}


def _decisions() -> str:
    """Every decision for every (CVE part, device part), each a lookup in the vendored
    tables: the CISA Coordinator decision, the BOD 26-04 outcome with its days and forensic
    flag, the Deployer priority; keyed by CVE code * 6 + device code."""
    coordinator = _lookup(ssvc.COORDINATOR)
    bod = _lookup(ssvc.BOD_2604)
    deployer = _lookup(ssvc.DEPLOYER)
    yes_no = {True: "yes", False: "no"}
    rows = []
    for c, (e, a, ti, kev) in enumerate(_CVE_PARTS):
        for d, (mwi, exposed) in enumerate(_DEVICE_PARTS):
            outcome = bod[(yes_no[kev], yes_no[exposed], a, ti)]
            rows.append(
                (
                    c * len(_DEVICE_PARTS) + d,
                    ssvc.display(ssvc.COORDINATOR, coordinator[(e, a, ti, mwi)]),
                    outcome,
                    ssvc.bod_due_days(outcome),
                    ssvc.is_forensic(outcome),
                    ssvc.display(
                        ssvc.DEPLOYER, deployer[(e, "open" if exposed else "controlled", a, mwi)]
                    ),
                    e, a, ti, kev, mwi, exposed,
                )
            )  # fmt: skip
    columns = ("key", "decision", "outcome", "days", "forensic", "priority")
    inputs = ("exploitation", "automatable", "impact", "kev", "mission", "exposed")
    return _values(rows, "x", columns + inputs)


_CVE_CODE = _code(
    ("Exploitation", "Automatable", "TechnicalImpact", "InKev"),
    (_EXPLOITATION, _AUTOMATABLE, _IMPACT, _BOOL),
)
_DEVICE_CODE = _code(("MissionWellbeing", "PubliclyExposed"), (_MISSION, _BOOL))


def _matches(rule: DeviceRule, params: list[Any]) -> str:
    """SQL that is true for a device the rule picks (``*``/``?`` patterns, any case)."""
    if rule.group is not None:
        params.append(rule.group.lower())
        return "lower(coalesce(RbacGroupName, '')) GLOB ?"
    if rule.tag is not None:
        params.append(rule.tag.lower())
        return (
            "len(list_filter(coalesce(TRY_CAST(MachineTags AS VARCHAR[]), []),"
            " lambda t: lower(t) GLOB ?)) > 0"
        )
    assert rule.name is not None
    params.append(rule.name.lower())
    return "lower(coalesce(DeviceName, '')) GLOB ?"


def triage_sql(
    parts: TriageParts, config: TriageConfig, at: datetime, *, by_device: bool = False
) -> tuple[str, list[Any]]:
    """The SELECT of ``EPF_Triage_CL``'s own columns from ``parts`` (what
    ``EPF_TriageInputs`` joins), and its parameters; ``by_device``: its rows sorted by
    DeviceId (as the workspace stores them, for one device's reads)."""
    mission_params: list[Any] = []
    mission_cases = [
        (_matches(rule, mission_params), rule.value, f"triage.mission {rule.described}")
        for rule in config.mission
    ]
    mission = case(
        [(c, _sql_literal(v)) for c, v, _ in mission_cases], _sql_literal(config.mission_default)
    )
    mission_why = case(
        [(c, _sql_literal(w)) for c, _, w in mission_cases],
        _sql_literal("triage.mission_default"),
    )
    exposed_params: list[Any] = []
    exposed_rules = [(_matches(rule, exposed_params), rule.described) for rule in config.exposed]
    by_rule = " OR ".join(f"({c})" for c, _ in exposed_rules) or "FALSE"
    rule_why = case([(c, _sql_literal(f"triage.exposed {d}")) for c, d in exposed_rules], "NULL")
    # In the order the placeholders appear: the mission rules twice (value, why), then the
    # exposed rules twice (value, why).
    params = mission_params * 2 + exposed_params * 2
    at_sql = f"TIMESTAMPTZ '{at.astimezone(UTC).isoformat()}'"
    versions = _sql_literal(orjson.dumps(ssvc.model_versions(short=True)).decode())
    # The CVE's own inputs are decided once per (CVE, Defender exploit level, device kind,
    # sensor attack vector), the device's once per device, each part with its reasons as JSON
    # text and its code; the rows only join them, and their decisions by the two codes: at
    # 3M rows a regular expression, a JSON object or a join key per input per row costs more
    # than the rest of triage. The reasons of a CVE part and of a device part are each one of
    # a few dozen texts (nothing in them is unique to a CVE or a device: the EPSS score is a
    # column), so every pair of them is put together and checked as JSON once, numbered; a
    # row carries that number and its decision's (the two codes) through the sort (by device,
    # a number too) and takes its Reasons, its decision and the inputs' values it was decided
    # on by them at the end: neither the sort nor the store handles 3M distinct texts of 700
    # bytes (docs/triage.md has bench-triage's figures).
    sql = f"""
WITH pairs AS (
    -- _variant: what besides the CVE its values depend on (Defender's exploit level, or
    -- an OT sensor's attack vector), one key for the join with the CVE part.
    SELECT DefenderTenantId, DeviceId, CveId, VulnerabilitySeverityLevel, CvssScore,
        coalesce(ExploitabilityLevel, '') AS _variant, FirstSeen, 'IT' AS DeviceKind
    FROM {parts.it_pairs}
    UNION ALL
    SELECT '', DeviceId, CveId, VulnerabilitySeverityLevel, CvssScore,
        'OT ' || coalesce(AttackVector, ''), FirstSeen, 'OT'
    FROM {parts.ot_pairs}
),
cve_facts_all AS ({parts.cves}),
copies AS (
    SELECT max(KevCopy) AS KevCopy, max(EpssCopy) AS EpssCopy, max(VrCopy) AS VrCopy
    FROM cve_facts_all
),
cve_facts AS (
    SELECT k.CveId, k._variant, k.DeviceKind,
        CASE WHEN k.DeviceKind = 'OT' THEN substr(k._variant, 4) ELSE '' END AS _sensor_av,
        CASE WHEN k.DeviceKind = 'IT' THEN nullif(k._variant, '') END AS ExploitabilityLevel,
        coalesce(f.InKev, FALSE) AS InKev,
        f.KevDateAdded, f.KevForensicTriage, copies.KevCopy, f.Epss, f.EpssPercentile,
        copies.EpssCopy, f.VrExploitation, f.VrAutomatable, f.VrTechnicalImpact, copies.VrCopy,
        f.CvssVector
    FROM (SELECT DISTINCT CveId, _variant, DeviceKind FROM pairs) k
    LEFT JOIN cve_facts_all f ON f.CveId = k.CveId
    CROSS JOIN copies
),
cve_vectors AS (
    SELECT *,
        regexp_extract(coalesce(CvssVector, ''), '/AV:([NALP])', 1) AS _av,
        regexp_extract(coalesce(CvssVector, ''), '/PR:([NLH])', 1) AS _pr,
        regexp_extract(coalesce(CvssVector, ''), '/UI:([NRPA])', 1) AS _ui,
        coalesce(nullif(regexp_extract(coalesce(CvssVector, ''), '/C:([NLH])', 1), ''),
            regexp_extract(coalesce(CvssVector, ''), '/VC:([NLH])', 1)) AS _c,
        coalesce(nullif(regexp_extract(coalesce(CvssVector, ''), '/I:([NLH])', 1), ''),
            regexp_extract(coalesce(CvssVector, ''), '/VI:([NLH])', 1)) AS _i
    FROM cve_facts
),
cve_values AS (
    SELECT *,
        CASE WHEN InKev THEN 'active'
             WHEN VrExploitation = 'active' THEN 'active'
             WHEN ExploitabilityLevel = 'ExploitIsInKit' THEN 'active'
             WHEN ExploitabilityLevel IN ('ExploitIsVerified', 'ExploitIsPublic') THEN 'poc'
             WHEN VrExploitation = 'poc' THEN 'poc'
             ELSE 'none' END AS Exploitation,
        CASE WHEN VrAutomatable IS NOT NULL THEN VrAutomatable
             WHEN _av <> '' THEN CASE WHEN _av = 'N' AND _pr = 'N' AND _ui = 'N' THEN 'yes' ELSE 'no' END
             WHEN _sensor_av NOT IN ('', 'NETWORK') THEN 'no'
             ELSE 'yes' END AS Automatable,
        CASE WHEN VrTechnicalImpact IS NOT NULL THEN VrTechnicalImpact
             WHEN _c <> '' THEN CASE WHEN _c = 'H' AND _i = 'H' THEN 'total' ELSE 'partial' END
             ELSE 'total' END AS TechnicalImpact
    FROM cve_vectors
),
cve_reasons AS (
    SELECT CveId, _variant, InKev, KevDateAdded, KevForensicTriage, Epss,
        EpssPercentile, Exploitation, Automatable, TechnicalImpact, {_CVE_CODE} AS _code,
        '"Exploitation":' || CAST({exploitation_reason()} AS VARCHAR)
            || ',"Automatable":' || CAST({automatable_reason()} AS VARCHAR)
            || ',"TechnicalImpact":' || CAST({impact_reason()} AS VARCHAR)
            || ',"InKev":' || CAST({kev_reason()} AS VARCHAR)
            || ',"Epss":' || CAST({epss_reason()} AS VARCHAR) AS _reasons
    FROM cve_values
),
cves AS (SELECT *, CAST(dense_rank() OVER (ORDER BY _reasons) AS INTEGER) AS _cr FROM cve_reasons),
device_facts AS (
    SELECT k.DefenderTenantId, k.DeviceId, f.DeviceName, f.RbacGroupName,
        CAST(f.MachineTags AS JSON) AS MachineTags, f.IsInternetFacing, 'IT' AS DeviceKind,
        '' AS Appliance
    FROM (SELECT DISTINCT DefenderTenantId, DeviceId FROM pairs WHERE DeviceKind = 'IT') k
    LEFT JOIN {parts.it_devices} f ON f.DefenderTenantId IS NOT DISTINCT FROM k.DefenderTenantId
        AND f.DeviceId = k.DeviceId
    UNION ALL
    SELECT '', DeviceId, any_value(DeviceName), any_value(RbacGroupName),
        CAST(any_value(MachineTags) AS JSON), any_value(IsInternetFacing), 'OT',
        any_value(Appliance)
    FROM {parts.ot_pairs} GROUP BY DeviceId
),
device_values AS (
    SELECT *,
        {mission} AS MissionWellbeing,
        {mission_why} AS _mission_why,
        coalesce(IsInternetFacing, FALSE) OR {by_rule} AS PubliclyExposed,
        {rule_why} AS _exposed_rule
    FROM device_facts
),
device_reasons AS (
    SELECT DefenderTenantId, DeviceId, DeviceKind, DeviceName, RbacGroupName, MissionWellbeing,
        PubliclyExposed, {_DEVICE_CODE} AS _code,
        -- The rows' order as stored (by_device): DeviceId's, as a number sorts faster.
        CAST(row_number() OVER (ORDER BY DeviceId, DefenderTenantId, DeviceKind) AS INTEGER)
            AS _di,
        '"MissionWellbeing":'
            || CAST({reason("MissionWellbeing", "'config'", "_mission_why")} AS VARCHAR)
            || ',"PubliclyExposed":' || CAST({exposed_reason()} AS VARCHAR) AS _reasons
    FROM device_values
),
devices AS (
    SELECT *, CAST(dense_rank() OVER (ORDER BY _reasons) AS INTEGER) AS _dr FROM device_reasons
),
reasons AS (
    -- Every pair of a CVE part's and a device part's reasons, numbered as a row finds it.
    SELECT (c._cr - 1) * (SELECT max(_dr) FROM devices) + d._dr AS _ri,
        CAST('{{' || c._reasons || ',' || d._reasons || '}}' AS JSON) AS Reasons
    FROM (SELECT DISTINCT _cr, _reasons FROM cves) c,
        (SELECT DISTINCT _dr, _reasons FROM devices) d
),
decided AS (
    -- A row's decision and its inputs' values (by the codes) and its reasons are numbers
    -- until after the sort, then looked up: the sort and the joins move fewer columns.
    SELECT i.DefenderTenantId, i.DeviceId, d.DeviceKind, d.DeviceName, d.RbacGroupName,
        i.CveId, i.VulnerabilitySeverityLevel, i.CvssScore, c.Epss, c.EpssPercentile,
        i.FirstSeen, c.KevForensicTriage, d._di,
        c._code * {len(_DEVICE_PARTS)} + d._code + 1 AS _xi,
        CASE WHEN c.InKev AND c.KevDateAdded > coalesce(i.FirstSeen, c.KevDateAdded)
             THEN c.KevDateAdded ELSE coalesce(i.FirstSeen, {at_sql}) END AS ClockStart,
        (c._cr - 1) * (SELECT max(_dr) FROM devices) + d._dr AS _ri
    FROM pairs i
    JOIN cves c ON c.CveId = i.CveId AND c._variant = i._variant
    JOIN devices d ON d.DefenderTenantId IS NOT DISTINCT FROM i.DefenderTenantId
        AND d.DeviceId = i.DeviceId
    WHERE c._code IS NOT NULL AND d._code IS NOT NULL  -- a value no decision table knows
),
looked_up AS (
    SELECT * EXCLUDE (_xi, _ri),
        (SELECT list(x ORDER BY x_key) FROM {_decisions()})[_xi] AS _x,
        (SELECT list(Reasons ORDER BY _ri) FROM reasons)[_ri] AS Reasons
    FROM {"(FROM decided ORDER BY _di)" if by_device else "decided"}
)
SELECT DefenderTenantId, DeviceId, DeviceKind, DeviceName, RbacGroupName, CveId,
    VulnerabilitySeverityLevel, CvssScore, Epss, EpssPercentile, FirstSeen,
    _x.x_exploitation AS Exploitation, _x.x_automatable AS Automatable,
    _x.x_impact AS TechnicalImpact, _x.x_mission AS MissionWellbeing,
    _x.x_exposed AS PubliclyExposed, _x.x_kev AS InKev, KevForensicTriage,
    _x.x_decision AS Decision, _x.x_outcome AS Bod2604Outcome, ClockStart,
    CASE WHEN _x.x_days IS NULL THEN NULL ELSE ClockStart + to_days(_x.x_days) END AS DueDate,
    _x.x_forensic AS ForensicInvestigation, _x.x_priority AS DeployerPriority, Reasons,
    {versions} AS ModelVersions
FROM looked_up
"""
    return sql, params


def triage_query(
    con: Any, at: datetime, config: TriageConfig, *, by_device: bool = False
) -> tuple[str, list[Any]]:
    """The SELECT of ``EPF_Triage_CL``'s rows at ``at`` over the workspace connection ``con``
    (the stamps are the caller's, DefenderTenantId comes with each row: a workspace may hold
    several tenants), and its parameters; ``by_device``: sorted by DeviceId."""
    sql, params = triage_sql(triage_parts(con, at), config, at, by_device=by_device)
    columns = [c for c in TRIAGE.column_names if c not in _STAMPS or c == "DefenderTenantId"]
    return f"SELECT {', '.join(columns)} FROM ({sql})", params


def triage_batches(con: Any, at: datetime, config: TriageConfig) -> Iterator[Any]:
    """``EPF_Triage_CL``'s rows at ``at`` as Arrow record batches (see ``triage_query``)."""
    sql, params = triage_query(con, at, config)
    yield from con.sql(sql, params=params).to_arrow_reader(50_000)
