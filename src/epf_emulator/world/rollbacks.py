"""Application updates rolled back: the fixed vulnerabilities come back.

Owns rewriting ``tvm.sw`` (``world.posture``) before the vulnerability rows are made of it: on
``max(1, devices // 250)`` devices an application is updated to its newest version 4-5 days
before the anchor and rolled back to the old version 1.5-2.5 days later (the update broke
something). Defender keys a vulnerability row by device, software, version and CVE, so each CVE
the update fixed opens again under the id of the row that was fixed: a reopened vulnerability.

The devices are a seeded choice among the active sensor devices, one install each: a non-OS
install present since before the update, never changed in the timeline, whose version has a
CVE published before the update that the newest version fixes. The install becomes three
segments: the old version, the newest, the old again.

Imports only ``world.cve_catalog`` and ``world.seeded`` of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from epf_emulator.world.cve_catalog import DAY_US
from epf_emulator.world.seeded import u

if TYPE_CHECKING:
    import duckdb

__all__ = ["ROLLBACK_DEVICES_PER", "build_rollbacks"]

#: One device in this many rolls an update back (at least one in any fleet with a candidate).
ROLLBACK_DEVICES_PER = 250
_UPDATE_FROM_US = -5 * DAY_US  # the update: in the day from 5 days before the anchor
_ROLLBACK_AFTER_US = DAY_US * 3 // 2  # the rollback: 1.5-2.5 days after it


def build_rollbacks(con: duckdb.DuckDBPyConnection, *, seed: int, anchor_us: int) -> int:
    """Rewrite ``tvm.sw`` with the rolled-back updates; return how many devices roll back."""
    update_lo = anchor_us + _UPDATE_FROM_US
    devices = int(con.execute("SELECT count(*) FROM tvm.dev").fetchone()[0])  # type: ignore[index]
    con.execute(
        f"""
        CREATE TEMP TABLE rollback AS
        WITH candidate AS (
            SELECT s.d, s.p, s.ver, p.n - 1 AS newest
            FROM tvm.sw s
            JOIN tvm.dev dv ON dv.idx = s.d
            JOIN tvm.prod p ON p.idx = s.p
            WHERE s.seg = 0 AND s.to_us IS NULL AND s.p <> dv.os_prod
              AND s.from_us < {update_lo - DAY_US} AND s.ver < p.n - 1
              AND dv.sensor AND NOT dv.stale AND dv.onboarded AND dv.health = 'Active'
              AND EXISTS (
                  SELECT 1 FROM tvm.affects a JOIN tvm.cve c ON c.idx = a.cve
                  WHERE a.prod = s.p AND a.ver = s.ver AND c.pub_us < {update_lo - DAY_US}
                    AND NOT EXISTS (SELECT 1 FROM tvm.affects b
                                    WHERE b.prod = a.prod AND b.ver = p.n - 1 AND b.cve = a.cve))
            QUALIFY row_number() OVER (
                PARTITION BY s.d ORDER BY hash({seed}, s.d, s.p, 'rollback-app')) = 1
        ), chosen AS (
            SELECT * FROM candidate
            ORDER BY hash({seed}, d, 'rollback'), d
            LIMIT {max(1, devices // ROLLBACK_DEVICES_PER)}
        )
        SELECT d, p, ver, newest,
               {update_lo} + CAST({u(seed, "d", "'update-at'")} * {DAY_US} AS BIGINT)
                   AS update_us
        FROM chosen
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TABLE tvm.sw AS
        WITH back AS (
            SELECT *, update_us + {_ROLLBACK_AFTER_US}
                      + CAST({u(seed, "d", "'rollback-at'")} * {DAY_US} AS BIGINT) AS back_us
            FROM rollback
        )
        SELECT s.d, s.p, s.seg, s.ver, s.from_us, coalesce(b.update_us, s.to_us) AS to_us
        FROM tvm.sw s LEFT JOIN back b ON b.d = s.d AND b.p = s.p
        UNION ALL
        SELECT d, p, 1, newest, update_us, back_us FROM back
        UNION ALL
        SELECT d, p, 2, ver, back_us, NULL FROM back
        ORDER BY d, p, seg
        """
    )
    count = int(con.execute("SELECT count(*) FROM rollback").fetchone()[0])  # type: ignore[index]
    con.execute("DROP TABLE rollback")
    return count
