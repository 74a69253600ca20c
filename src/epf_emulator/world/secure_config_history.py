"""Secure-configuration history: ``DeviceTvmSecureConfigurationAssessment`` rows, in DuckDB SQL.

Owns which SCIDs each device with a sensor reports (its platform's agent-health SCIDs, a few
devices missing one or two, plus others up to 24-28 configurations per device), whether each
is applicable and compliant, when it flipped, and the ``Context`` payloads (AV mode for
scid-2010, signature versions for scid-2011/5095/6095, null for scid-20000). The rows are the
hunting table's; the secure-configuration export is their latest row per device and SCID as
of now, so the two always agree. Also the ``...AssessmentKB`` catalogue.

The history covers the whole timeline (``world.posture``: 120 days before the anchor to 14
after): each pair's first assessment lies in the timeline's first 12 hours (or soon after the
device joined), every pair is assessed again every 28 days with its current state, and a
device that stops reporting has a last assessment at its last report, so advanced hunting's
30-day window holds every reporting device's configurations (and health) at any clock time,
as the export does. The rows are stored compactly (``ASSESSMENTS_TABLE``); the documented
table is a view over them.

Settings drift throughout: 55% of the applicable pairs flip 1-5 times (1.1 flips a pair on
average over the 134 days: at 2,000 devices, about 26 configurations a device, 5,000-6,000
flips every 14 days, some 50-70 of them tamper protection switched off), each at a uniform instant of the timeline; flips alternate, so a pair
that flips twice is an episode (tamper protection, scid-2003 and scid-5092, switched off and
on again, among them). The incident device (``world.incident``) has its scid-2003 (tamper
protection) and scid-2011 (signatures outdated) episodes at fixed times around the incident.

Imports only ``common.clock``, ``world.hunting_schema``, ``world.incident``, ``world.posture``
and ``world.scid_catalog`` of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from epf_emulator.common.clock import epoch_us
from epf_emulator.world.hunting_schema import duckdb_columns
from epf_emulator.world.incident import (
    HOLD_UNTIL_US,
    INCIDENT_TABLE,
    SIGNATURES_OUTDATED_FROM_US,
    TAMPER_OFF_FROM_US,
    choose_incident,
)
from epf_emulator.world.posture import FUTURE_US, HISTORY_US, HOUR_US, u
from epf_emulator.world.scid_catalog import (
    HEALTH_SCIDS,
    IMPAIRED_SCIDS,
    NEEDS_ACTIVE_AV,
    OTHER_SCIDS,
    PUA_SCIDS,
    SCID_CATALOG,
    SENSOR_DATA_SCIDS,
    SIGNATURE_SCIDS,
)

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "ASSESSMENTS_TABLE",
    "HISTORY_TABLE",
    "KB_TABLE",
    "assessments_sql",
    "build_history",
    "signature_build_sql",
]

HISTORY_TABLE = 'raw.main."DeviceTvmSecureConfigurationAssessment"'
#: The rows behind it: (d: device index, scid, t_us, state: compliant, applicable).
ASSESSMENTS_TABLE = "raw.main._assessments"
KB_TABLE = 'raw.main."DeviceTvmSecureConfigurationAssessmentKB"'
_DAY_US = 24 * HOUR_US
_CHUNK_DEVICES = 20_000
_REASSESSED_US = 28 * _DAY_US  # a row at least this often: hunting keeps 30 days
_MAX_FLIPS = 5


def signature_build_sql(updated_us: str, anchor_us: int) -> str:
    """SQL for the signature version updated at ``updated_us``: four builds a day."""
    build = f"3000 + CAST(floor(({updated_us} - {anchor_us}) / {_DAY_US / 4}) AS BIGINT)"
    return f"'1.421.' || CAST({build} AS VARCHAR) || '.0'"


def build_history(con: duckdb.DuckDBPyConnection, *, seed: int, anchor: datetime) -> None:
    """Create the hunting tables ``DeviceTvmSecureConfigurationAssessment`` and its KB.

    The rows are stored compactly (``ASSESSMENTS_TABLE``: device index, SCID, time, state);
    the documented table is a view that adds the device's and the configuration's columns and
    the ``Context``, so only what a query reads is ever rendered.
    """
    anchor_us = epoch_us(anchor)
    _load_catalogue(con)
    con.execute(_pairs_sql(seed, anchor_us))
    choose_incident(con, seed=seed, anchor_us=anchor_us)
    # The incident's episodes: tamper protection off, and its signatures reported outdated
    # (scid-2011), then both right again (two flips, compliant last).
    con.execute(
        "UPDATE tvm.sca_pairs SET final = true, changes = 2"
        f" WHERE scid IN ('scid-2003', 'scid-2011') AND d IN (SELECT d FROM {INCIDENT_TABLE})"
    )
    rows = _rows_sql(seed, anchor_us)

    # In chunks of devices, each compressed before the next: the peak memory stays small.
    def chunk(low: int, high: int) -> str:
        return rows.replace("{low}", str(low)).replace("{high}", str(high))

    con.execute(f"CREATE TABLE {ASSESSMENTS_TABLE} AS {chunk(0, -1)}")
    devices = int(con.execute("SELECT count(*) FROM tvm.dev").fetchall()[0][0])
    for low in range(0, devices, _CHUNK_DEVICES):
        con.execute(f"INSERT INTO {ASSESSMENTS_TABLE} {chunk(low, low + _CHUNK_DEVICES - 1)}")
        con.execute("CHECKPOINT raw")
    con.execute(f"CREATE VIEW {HISTORY_TABLE} AS {assessments_sql(seed, anchor_us)}")
    _create_kb(con)


def _pairs_sql(seed: int, anchor_us: int) -> str:
    """``tvm.sca_pairs``: the (device, SCID) pairs, each with its applicability, its first and
    last assessment, its final state and how many times it flips."""

    def r(*parts: str) -> str:
        return u(seed, *parts)

    missing, how_many = r("d.idx", "'missing'"), r("d.idx", "'missing-count'")
    others = r("d.idx", "'others'")
    pick = r("d.idx", "c.scid", "'pick'")
    first = r("d", "scid", "'first'")
    joined = r("d", "scid", "'joined'")
    compliant = r("d", "scid", "'compliant'")
    changes = r("d", "scid", "'changes'")
    applies = r("d", "scid", "'applies'")
    av_needed = _list(NEEDS_ACTIVE_AV)
    return f"""
        CREATE TABLE tvm.sca_pairs AS
        WITH candidates AS (
            SELECT d.idx AS d, c.scid, c.health, d.stale, d.health AS state, d.server,
                   d.av_mode, d.first_us, d.last_us,
                   row_number() OVER (PARTITION BY d.idx, c.health ORDER BY {pick}) AS rank,
                   {missing} < 0.03 AS lacks, 1 + CAST({how_many} < 0.5 AS INTEGER) AS lacking,
                   -- 24-28 configurations per device, whatever its health SCIDs
                   {_health_gap("d.family")} + CAST(floor({others} * 5) AS INTEGER) AS other_count
            FROM tvm.dev d JOIN tvm.scid c ON c.family = d.family
            WHERE d.sensor
        ), chosen AS (
            SELECT * FROM candidates
            WHERE (health AND NOT (lacks AND rank <= lacking)) OR (NOT health AND rank <= other_count)
        ), ruled AS (
            SELECT *,
                   CASE WHEN av_mode <> '0' AND scid IN ({av_needed}) THEN false
                        WHEN scid = 'scid-2013' AND server THEN {applies} < 0.5
                        WHEN scid = 'scid-6091' THEN {applies} < 0.8
                        ELSE true END AS applicable,
                   (scid IN ({_list(SENSOR_DATA_SCIDS)}) AND state LIKE 'NoSensorData%')
                   OR (scid IN ({_list(IMPAIRED_SCIDS)}) AND state LIKE '%ImpairedCommunication')
                       AS broken,
                   -- the first assessment: at the timeline's start, or soon after joining
                   least(greatest({anchor_us - HISTORY_US} + CAST({first} * {12 * HOUR_US} AS BIGINT),
                                  first_us + CAST((1 + 5 * {joined}) * {HOUR_US} AS BIGINT)),
                         last_us) AS start_us,
                   CASE WHEN stale THEN last_us ELSE {anchor_us + FUTURE_US} END AS end_us
            FROM chosen
        )
        SELECT d, scid, applicable, start_us, end_us, stale,
               applicable AND NOT broken AND {compliant} >= (CASE WHEN stale THEN 0.2 ELSE 0.06 END)
                   AS final,
               CASE WHEN NOT applicable OR broken OR end_us <= start_us THEN 0
                    WHEN {changes} < 0.45 THEN 0 WHEN {changes} < 0.70 THEN 1
                    WHEN {changes} < 0.85 THEN 2 WHEN {changes} < 0.94 THEN 3
                    WHEN {changes} < 0.98 THEN 4 ELSE {_MAX_FLIPS} END AS changes,
               health
        FROM ruled
        """


def _rows_sql(seed: int, anchor_us: int) -> str:
    """The history rows of the devices ``{low}``..``{high}`` (placeholders): the first
    assessment of each pair, its flips, its re-assessments and a stale device's last one,
    each in the state the flips up to it leave."""
    flip_at = u(seed, "p.d", "p.scid", "k.k")
    random_flip = f"CAST(p.start_us + {flip_at} * (p.end_us - p.start_us) AS BIGINT)"
    on = anchor_us + HOLD_UNTIL_US
    tamper_off, outdated = anchor_us + TAMPER_OFF_FROM_US, anchor_us + SIGNATURES_OUTDATED_FROM_US
    incident_flip = (
        f"(CASE WHEN k.k > 0 THEN {on} WHEN p.scid = 'scid-2003' THEN {tamper_off}"
        f" ELSE {outdated} END)"
    )
    rounds = (HISTORY_US + FUTURE_US) // _REASSESSED_US + 1
    return f"""
        WITH pairs AS (
            SELECT * FROM tvm.sca_pairs WHERE d BETWEEN {{low}} AND {{high}}
        ), flips AS (
            SELECT p.d, p.scid,
                   CASE WHEN p.scid IN ('scid-2003', 'scid-2011')
                         AND p.d IN (SELECT d FROM {INCIDENT_TABLE})
                        THEN {incident_flip} ELSE {random_flip} END AS t_us,
                   1 AS flip
            FROM pairs p, range(0, {_MAX_FLIPS}) AS k(k) WHERE k.k < p.changes
        ), times AS (
            SELECT d, scid, start_us AS t_us, 0 AS flip FROM pairs
            UNION ALL SELECT * FROM flips
            UNION ALL  -- re-assessed every 28 days
            SELECT p.d, p.scid, p.start_us + k.k * {_REASSESSED_US}, 0
            FROM pairs p, range(1, {rounds}) AS k(k)
            WHERE p.start_us + k.k * {_REASSESSED_US} < p.end_us
            UNION ALL  -- a device that stopped reporting: its last assessment, at lastSeen
            SELECT d, scid, end_us, 0 FROM pairs WHERE stale AND end_us > start_us
        ), flip_times AS (
            SELECT d, scid, list(t_us) AS ts FROM flips GROUP BY d, scid
        )
        -- each flip flips the posture; after the last one it is the final state (at one
        -- instant a re-assessment comes before a flip)
        SELECT CAST(t.d AS INTEGER) AS d, t.scid, t.t_us,
               CASE WHEN (p.changes - len(list_filter(coalesce(f.ts, []),
                              lambda x: x < t.t_us OR (t.flip = 1 AND x = t.t_us)))) % 2 = 0
                    THEN p.final ELSE NOT p.final END AS state,
               p.applicable
        FROM times t JOIN pairs p USING (d, scid) LEFT JOIN flip_times f USING (d, scid)
    """


def assessments_sql(seed: int, anchor_us: int, window_us: tuple[int, int] | None = None) -> str:
    """The documented table over the stored rows, every column of its documented type; with
    ``window_us`` (epoch µs, both ends included) only the rows assessed in it.

    The window is a range on the stored microseconds, which the scan applies before it
    computes anything, where a filter on the documented ``Timestamp`` would compute the
    timestamp of every stored row first (most of an agent-health query's time).
    """
    age = u(seed, "s.d", "s.scid", "s.t_us")
    values = {
        "DeviceId": "dv.id",
        "DeviceName": "dv.name",
        "OSPlatform": "dv.platform",
        "Timestamp": "make_timestamp(s.t_us)",
        "ConfigurationId": "s.scid",
        "ConfigurationCategory": "c.category",
        "ConfigurationSubcategory": "c.subcategory",
        "ConfigurationImpact": "c.impact",
        "IsCompliant": "s.state",
        "IsApplicable": "s.applicable",
        "Context": _context_sql(anchor_us, age),
        "IsExpectedUserImpact": f"s.scid IN ({_list(PUA_SCIDS)})",
    }
    columns = ", ".join(
        f'CAST({values[name]} AS {kind}) AS "{name}"'
        for name, kind in duckdb_columns("DeviceTvmSecureConfigurationAssessment").items()
    )
    where = f"WHERE s.t_us BETWEEN {window_us[0]} AND {window_us[1]}" if window_us else ""
    return f"""
        SELECT {columns}
        FROM {ASSESSMENTS_TABLE} s JOIN tvm.dev dv ON dv.idx = s.d
        JOIN tvm.scid c ON c.scid = s.scid AND c.family = dv.family
        {where}
    """


def _create_kb(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        f"""
        CREATE TABLE {KB_TABLE} AS
        SELECT scid AS "ConfigurationId", impact AS "ConfigurationImpact",
               name AS "ConfigurationName", name || '.' AS "ConfigurationDescription",
               'Devices without this are easier to attack (' || subcategory || ').'
                   AS "RiskDescription",
               category AS "ConfigurationCategory", subcategory AS "ConfigurationSubcategory",
               CAST('[]' AS JSON) AS "ConfigurationBenchmarks",
               CAST(to_json([subcategory]) AS JSON) AS "Tags",
               'Use Intune or Group Policy to ' || lower(name[1]) || name[2:] || '.'
                   AS "RemediationOptions"
        FROM (SELECT DISTINCT scid, name, category, subcategory, impact FROM tvm.scid)
        ORDER BY scid
        """
    )


def _context_sql(anchor_us: int, age: str) -> str:
    """The JSON ``Context`` of a row (original-connector.md: AV mode, signature versions)."""
    # Out-of-date definitions are what makes the signature test fail: older than a week.
    updated = (
        f"(s.t_us - CAST((CASE WHEN s.state THEN 1.5 * {age} ELSE 8 + 32 * {age} END)"
        f" * {_DAY_US} AS BIGINT))"
    )
    product = "CASE WHEN dv.family = 'Windows' THEN '4.18.24090.11' ELSE '101.24092.0012' END"
    versions = (
        f"to_json([[{signature_build_sql(updated, anchor_us)}, '1.1.24090.11',"
        f" strftime(make_timestamp({updated}), '%Y-%m-%dT%H:%M:%SZ'), {product}]])"
    )
    return (
        "CASE WHEN s.scid = 'scid-2010' THEN to_json([[dv.av_mode]])"
        f" WHEN s.scid IN ({_list(SIGNATURE_SCIDS)}) THEN {versions}"
        " WHEN s.scid = 'scid-20000' THEN NULL ELSE '[]' END"
    )


def _load_catalogue(con: duckdb.DuckDBPyConnection) -> None:
    rows = []
    for family, health in HEALTH_SCIDS.items():
        for scid in health:
            rows.append((family, scid, True))
        for scid in OTHER_SCIDS[family]:
            rows.append((family, scid, False))
    values = ", ".join(
        f"({_quote(family)}, {_quote(scid)}, {health}, {_quote(SCID_CATALOG[scid][0])},"
        f" {_quote(SCID_CATALOG[scid][1])}, {_quote(SCID_CATALOG[scid][2])},"
        f" {SCID_CATALOG[scid][3]})"
        for family, scid, health in rows
    )
    con.execute(
        "CREATE TABLE tvm.scid AS SELECT * FROM (VALUES "
        + values
        + ") AS c(family, scid, health, name, category, subcategory, impact)"
    )


def _health_gap(family: str) -> str:
    cases = " ".join(f"WHEN {_quote(f)} THEN {24 - len(s)}" for f, s in HEALTH_SCIDS.items())
    return f"(CASE {family} {cases} ELSE 12 END)"


def _list(values: frozenset[str]) -> str:
    return ", ".join(_quote(v) for v in sorted(values))


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
