"""Secure-configuration history: ``DeviceTvmSecureConfigurationAssessment`` rows, in DuckDB SQL.

Owns which SCIDs each device with a sensor reports (its platform's agent-health SCIDs, a few
devices missing one or two, plus others up to 24-28 configurations per device), whether each
is applicable and compliant, when it flipped (up to three times between about 22 days before
the start and a week after it: the flips after the start are what ``advance`` reveals), and
the ``Context`` payloads (AV mode for scid-2010, signature versions for scid-2011/5095/6095,
null for scid-20000). The rows go to the hunting table itself; the secure-configuration
export is its latest row per device and SCID as of now, so the two always agree. Also the
``...AssessmentKB`` catalogue.

The first row is about 22 days old, so the history stays inside the hunting window's 30
days for a week of ``advance``.

Imports only ``common.clock``, ``world.posture`` and ``world.scid_catalog`` of the emulator: it
shares no code with the collector.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from epf_emulator.common.clock import epoch_us
from epf_emulator.world.posture import FUTURE_US, HOUR_US, u
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

__all__ = ["HISTORY_TABLE", "KB_TABLE", "build_history", "signature_build_sql"]

HISTORY_TABLE = 'raw.main."DeviceTvmSecureConfigurationAssessment"'
KB_TABLE = 'raw.main."DeviceTvmSecureConfigurationAssessmentKB"'
_DAY_US = 24 * HOUR_US
_CHUNK_DEVICES = 20_000


def signature_build_sql(updated_us: str, anchor_us: int) -> str:
    """SQL for the signature version updated at ``updated_us``: four builds a day."""
    build = f"3000 + CAST(floor(({updated_us} - {anchor_us}) / {_DAY_US / 4}) AS BIGINT)"
    return f"'1.421.' || CAST({build} AS VARCHAR) || '.0'"


def build_history(con: duckdb.DuckDBPyConnection, *, seed: int, anchor: datetime) -> None:
    """Create the hunting tables ``DeviceTvmSecureConfigurationAssessment`` and its KB."""
    anchor_us = epoch_us(anchor)
    _load_catalogue(con)
    con.execute(_pairs_sql(seed, anchor_us))
    rows = _rows_sql(seed, anchor_us)

    # In chunks of devices, each compressed before the next: the peak memory stays small.
    def chunk(low: int, high: int) -> str:
        return rows.replace("{low}", str(low)).replace("{high}", str(high))

    con.execute(f"CREATE TABLE {HISTORY_TABLE} AS {chunk(0, -1)}")
    devices = int(con.execute("SELECT count(*) FROM tvm.dev").fetchall()[0][0])
    for low in range(0, devices, _CHUNK_DEVICES):
        con.execute(f"INSERT INTO {HISTORY_TABLE} {chunk(low, low + _CHUNK_DEVICES - 1)}")
        con.execute("CHECKPOINT raw")
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
                   -- the first assessment: ~22 days before the start, or soon after joining
                   least(greatest({anchor_us} - {22 * _DAY_US} - CAST({first} * {12 * HOUR_US} AS BIGINT),
                                  first_us + CAST((1 + 5 * {joined}) * {HOUR_US} AS BIGINT)),
                         last_us) AS start_us,
                   CASE WHEN stale THEN last_us ELSE {anchor_us + FUTURE_US} END AS end_us
            FROM chosen
        )
        SELECT d, scid, applicable, start_us, end_us,
               applicable AND NOT broken AND {compliant} >= (CASE WHEN stale THEN 0.2 ELSE 0.06 END)
                   AS final,
               CASE WHEN NOT applicable OR broken OR end_us <= start_us THEN 0
                    WHEN {changes} < 0.72 THEN 0 WHEN {changes} < 0.89 THEN 1
                    WHEN {changes} < 0.96 THEN 2 ELSE 3 END AS changes
        FROM ruled
        """


def _rows_sql(seed: int, anchor_us: int) -> str:
    """The history rows of the devices ``{low}``..``{high}`` (placeholders): the first
    assessment of each pair, then its flips."""
    flip_at = u(seed, "p.d", "p.scid", "k.k")
    age = u(seed, "s.d", "s.scid", "s.t_us")
    context = _context_sql(anchor_us, age)
    return f"""
        WITH flips AS (
            SELECT p.d, p.scid, CAST(p.start_us + {flip_at} * (p.end_us - p.start_us) AS BIGINT) AS t_us
            FROM tvm.sca_pairs p, range(0, 3) AS k(k)
            WHERE k.k < p.changes AND p.d BETWEEN {{low}} AND {{high}}
        ), times AS (
            SELECT d, scid, start_us AS t_us FROM tvm.sca_pairs WHERE d BETWEEN {{low}} AND {{high}}
            UNION ALL SELECT * FROM flips
        ), numbered AS (
            SELECT t.*, p.applicable, p.final, p.changes,
                   row_number() OVER (PARTITION BY t.d, t.scid ORDER BY t.t_us) - 1 AS j
            FROM times t JOIN tvm.sca_pairs p USING (d, scid)
        ), stated AS (
            -- each row flips the posture; the latest row carries the final state
            SELECT *, CASE WHEN (changes - j) % 2 = 0 THEN final ELSE NOT final END AS state
            FROM numbered
        )
        SELECT dv.id AS "DeviceId", dv.name AS "DeviceName", dv.platform AS "OSPlatform",
               CAST(make_timestamp(s.t_us) AS TIMESTAMPTZ) AS "Timestamp",
               s.scid AS "ConfigurationId", c.category AS "ConfigurationCategory",
               c.subcategory AS "ConfigurationSubcategory", c.impact AS "ConfigurationImpact",
               s.state AS "IsCompliant", s.applicable AS "IsApplicable",
               CAST({context} AS JSON) AS "Context",
               s.scid IN ({_list(PUA_SCIDS)}) AS "IsExpectedUserImpact"
        FROM stated s JOIN tvm.dev dv ON dv.idx = s.d
        JOIN tvm.scid c ON c.scid = s.scid AND c.family = dv.family
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
