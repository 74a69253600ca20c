"""The posture timeline of the emulated fleet, generated in DuckDB SQL.

Owns the tables every TVM dataset is read from, in the in-memory database ``tvm``:

- ``dev``: one row per device (loaded from the fleet), with its TVM facts (OS product and
  version string, device group at the anchor, sensor, staleness, AV mode);
- ``grp``, ``prod``, ``inst``, ``cve``, ``affects`` (``world.posture_catalogues``), ``patch_day``:
  the small catalogues;
- ``rbac_move``: the few devices that change device group during the timeline;
- ``sw``: installed software as time segments (a version from ``from_us`` until ``to_us``;
  an upgrade ends one segment and starts the next, an uninstall ends it);
- ``vrow``: every vulnerability row that ever exists, one per segment and affecting CVE
  (from the later of the install and the CVE's discovery on that device), plus the
  ``cveId: null`` row of a segment while no CVE row of it is open (before the first CVE is
  found, and again once patches have fixed them all).

The timeline runs from 120 days before the anchor (``common.clock.WORLD_ANCHOR``, a fixed
instant) to 14 days after it; the emulated clock's "now" is a pointer into it, so a snapshot
is "rows alive at now" and the delta is "row starts and ends since then": one source, so they
can never disagree, and the same whenever the emulator started. Randomness is
``hash(seed, ...)`` in SQL: deterministic, with no Python loop per row.

Change over the timeline (134 days; rates at 2,000 devices, about 10 installs each): software
upgrades (25% of the installs that have a newer version, once: about 13 a day, each ending the
rows of the CVEs the new version fixes), uninstalls (5%), new installs (8%), device-group moves
(3% of the active devices, a third of them in the three weeks around the anchor), an
application update rolled back on one device in 250 (``world.rollbacks``: the vulnerabilities
it fixed reopen, days before the anchor), and monthly OS patching: on each month's second
Tuesday (``patch_days``) a device installs its OS's update within 10 days (85% of devices each
month; the others catch up the next month), which fixes the OS CVEs published (and found)
before that Tuesday, except CVEs published before the timeline, which stay as the device's
backlog (about 400 OS rows fixed in the two weeks before the anchor, fewer early on, when fewer
timeline CVEs exist). In all, about 1,100 vulnerability rows are fixed and 3,600 found in the
two weeks before the anchor. New CVEs are published throughout (``world.cve_catalog``).

Imports only ``common.clock``, ``world.cve_catalog``, ``world.devices``, ``world.incident``,
``world.posture_catalogues``, ``world.rollbacks``, ``world.seeded`` and ``world.software`` of
the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from epf_emulator.common.clock import epoch_us
from epf_emulator.world.cve_catalog import DAY_US
from epf_emulator.world.devices import RBAC_GROUPS, Device, device_kind
from epf_emulator.world.incident import incident_hold_sql
from epf_emulator.world.posture_catalogues import load_catalogues
from epf_emulator.world.rollbacks import build_rollbacks
from epf_emulator.world.seeded import u
from epf_emulator.world.software import os_product

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "FUTURE_US",
    "HISTORY_US",
    "HOUR_US",
    "RbacMove",
    "build_posture",
    "load_devices",
    "patch_days",
    "u",
]

HOUR_US = 3_600_000_000
HISTORY_US = 120 * DAY_US  # the timeline starts 120 days before the anchor
FUTURE_US = 14 * DAY_US  # and ends 14 days after it
_UPGRADE_SHARE = 0.25  # installs upgraded during the timeline
_UNINSTALL_SHARE = 0.05
_FRESH_SHARE = 0.08  # installs that happen during the timeline
_MOVE_SHARE = 0.03  # devices that change device group during the timeline
_PATCH_SHARE = 0.85  # devices that install a month's OS update (within _PATCH_DAYS)
_PATCH_DAYS = 10
_NEVER = 1 << 62  # an open row's end, for comparisons
_CHECKPOINT_TRIES = 120
_CHECKPOINT_PAUSE_SECONDS = 0.25
_log = logging.getLogger(__name__)
#: (osPlatform family) -> DeviceAvInfo ``osKind``.
_OS_KIND = {"Windows": "windows", "macOS": "mac", "Linux": "linux"}
_GROUPS_BY_KIND = {
    "client": (140, 141, 0),
    "server": (210, 211, 0),
    "macOS": (305, 0),
    "Linux": (410, 0),
}
DEV_COLUMNS: dict[str, str] = {
    "idx": "INTEGER",
    "id": "VARCHAR",
    "name": "VARCHAR",
    "platform": "VARCHAR",
    "family": "VARCHAR",
    "kind": "VARCHAR",
    "os_kind": "VARCHAR",
    "server": "BOOLEAN",
    "os_prod": "INTEGER",
    "os_ver": "INTEGER",
    "os_version": "VARCHAR",
    "os_arch": "VARCHAR",
    "group0": "INTEGER",
    "alt_group": "INTEGER",
    "sensor": "BOOLEAN",
    "stale": "BOOLEAN",
    "health": "VARCHAR",
    "first_us": "BIGINT",
    "last_us": "BIGINT",
    "av_mode": "VARCHAR",
    "onboarded": "BOOLEAN",
    "value": "VARCHAR",
}


@dataclass(frozen=True)
class RbacMove:
    device_id: str
    move_us: int
    old_group: int
    new_group: int


def build_posture(
    con: duckdb.DuckDBPyConnection,
    *,
    seed: int,
    anchor: datetime,
    per_device: float,
) -> list[RbacMove]:
    """Create the ``tvm`` tables after ``dev``; returns the device-group moves (for the records)."""
    anchor_us = epoch_us(anchor)
    load_catalogues(con, seed, anchor_us, per_device)
    _build_moves(con, seed, anchor_us)
    _build_software(con, seed, anchor_us)
    build_rollbacks(con, seed=seed, anchor_us=anchor_us)
    _load_patch_days(con, anchor)
    _build_vulnerability_rows(con, seed, anchor_us)
    _compress(con)
    rows = con.execute(
        "SELECT d.id, m.move_us, m.old_group, m.new_group FROM tvm.rbac_move m"
        " JOIN tvm.dev d ON d.idx = m.d ORDER BY m.move_us"
    ).fetchall()
    return [RbacMove(str(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows]


def _compress(con: duckdb.DuckDBPyConnection) -> None:
    """Checkpoint ``tvm`` (compressing it about tenfold). Requests are served meanwhile, and
    DuckDB refuses a checkpoint while another write transaction (a request's temporary
    views) is open: try again for a while, then leave the tables uncompressed."""
    import duckdb

    for _ in range(_CHECKPOINT_TRIES):
        try:
            con.execute("CHECKPOINT tvm")
            return
        except duckdb.TransactionException:
            time.sleep(_CHECKPOINT_PAUSE_SECONDS)
    _log.warning("the posture timeline stays uncompressed: requests kept the database busy")


def load_devices(con: duckdb.DuckDBPyConnection, devices: list[Device], anchor: datetime) -> None:
    """``tvm.dev`` and ``tvm.grp`` from the fleet (the secure-configuration history uses them)."""
    import pyarrow as pa

    anchor_us = epoch_us(anchor)
    columns: dict[str, list[Any]] = {name: [] for name in DEV_COLUMNS}
    for index, device in enumerate(devices):
        info, record = device.info, device.record
        kind = device_kind(device.family, device.server)
        if device.family == "Windows":
            # The revision is the last part of the sensor version "10.8760.<build>.<revision>".
            client = str(info.get("ClientVersion") or "10.8760.0.5247")
            build, revision = client.split(".")[2:4]
            os_version = f"10.0.{build}.{revision}"
            prod, ver = os_product(device.platform, device.platform, revision)
        else:
            os_version = str(info["OSVersionInfo"])
            prod, ver = os_product(device.platform, str(info["OSDistribution"]), os_version)
        groups = _GROUPS_BY_KIND[kind]
        group0 = int(record.get("rbacGroupId") or 0)
        alt = groups[(groups.index(group0) + 1) % len(groups)] if group0 in groups else groups[0]
        values = (
            index,
            device.id,
            device.name,
            device.platform,
            device.family,
            kind,
            _OS_KIND[device.family],
            device.server,
            prod,
            ver,
            os_version,
            "arm64" if record.get("osProcessor") == "arm64" else "x64",
            group0,
            alt,
            device.has_sensor,
            device.stale,
            device.health,
            anchor_us - int(device.first_seen_ago * 1_000_000),
            anchor_us - int(device.last_seen_ago * 1_000_000),
            "" if device.av_mode < 0 else str(device.av_mode),
            device.duplicate_of is None,
            str(record.get("deviceValue") or "Normal"),
        )
        for name, value in zip(DEV_COLUMNS, values, strict=True):
            columns[name].append(value)
    con.register("_dev_source", pa.table(columns))
    try:
        casts = ", ".join(f'CAST("{c}" AS {t}) AS "{c}"' for c, t in DEV_COLUMNS.items())
        con.execute(f"CREATE TABLE tvm.dev AS SELECT {casts} FROM _dev_source ORDER BY idx")
    finally:
        con.unregister("_dev_source")
    groups_sql = ", ".join(f"({k}, '{v}')" for k, v in RBAC_GROUPS.items())
    con.execute(f"CREATE TABLE tvm.grp AS SELECT * FROM (VALUES {groups_sql}) AS g(id, name)")


def _build_moves(con: duckdb.DuckDBPyConnection, seed: int, anchor_us: int) -> None:
    """A few active devices change group once: a third of them in the three weeks around the
    anchor (13 days before to a week after), the others anywhere in the timeline."""
    near_lo, near_hi = anchor_us - 13 * DAY_US, anchor_us + 7 * DAY_US - HOUR_US
    lo, hi = anchor_us - HISTORY_US + DAY_US, anchor_us + FUTURE_US - HOUR_US
    move_at, moves = u(seed, "idx", "'move-at'"), u(seed, "idx", "'move'")
    move = (
        f"CAST(CASE WHEN {moves} < {_MOVE_SHARE / 3} THEN {near_lo} + {move_at} * {near_hi - near_lo}"
        f" ELSE {lo} + {move_at} * {hi - lo} END AS BIGINT)"
    )
    con.execute(
        f"""
        CREATE TABLE tvm.rbac_move AS
        SELECT idx AS d, move_us,
               CASE WHEN move_us <= {anchor_us} THEN alt_group ELSE group0 END AS old_group,
               CASE WHEN move_us <= {anchor_us} THEN group0 ELSE alt_group END AS new_group
        FROM (SELECT *, {move} AS move_us FROM tvm.dev)
        WHERE sensor AND NOT stale AND alt_group <> group0
          AND {moves} < {_MOVE_SHARE}
          AND move_us > first_us + {HOUR_US}
        """
    )


def _build_software(con: duckdb.DuckDBPyConnection, seed: int, anchor_us: int) -> None:
    """Installed software as segments, with upgrades, uninstalls and new installs."""

    def r(tag: str) -> str:
        return u(seed, "d", "p", f"'{tag}'")

    window_lo = anchor_us - HISTORY_US
    version = u(seed, "d.idx", "p.idx", "'version'")
    installed = u(seed, "d.idx", "p.idx", "'installed'")
    con.execute(
        f"""
        CREATE TABLE tvm.sw AS
        WITH picked AS (
            SELECT d.idx AS d, p.idx AS p, p.n, false AS is_os,
                   len(list_filter(p.cum, lambda x: x < {version})) AS v0
            FROM tvm.dev d JOIN tvm.inst i ON i.kind = d.kind JOIN tvm.prod p ON p.idx = i.prod
            WHERE d.sensor AND {installed} < i.share
            UNION ALL
            SELECT d.idx, d.os_prod, p.n, true, d.os_ver
            FROM tvm.dev d JOIN tvm.prod p ON p.idx = d.os_prod WHERE d.sensor
        ), framed AS (
            SELECT k.*, d.first_us, d.last_us,
                   -- events only while the device reports: a stale one stopped at lastSeen
                   greatest({window_lo}, d.first_us + {HOUR_US}) AS w_lo,
                   CASE WHEN d.stale THEN least(d.last_us, {anchor_us + FUTURE_US})
                        ELSE {anchor_us + FUTURE_US} END AS w_hi
            FROM picked k JOIN tvm.dev d ON d.idx = k.d
        ), timed AS (
            SELECT *,
                   CASE WHEN NOT is_os AND w_lo < w_hi AND {r("fresh")} < {_FRESH_SHARE}
                        THEN CAST(w_lo + {r("fresh-at")} * (w_hi - w_lo) AS BIGINT)
                        ELSE least(greatest(first_us + CAST({r("onboard")} * {HOUR_US} AS BIGINT),
                                            {anchor_us} - CAST((30 + 870 * {r("age")}) * {DAY_US} AS BIGINT)),
                                   last_us - {HOUR_US})
                   END AS from_us
            FROM framed
        ), changed AS (
            SELECT *,
                   CASE WHEN NOT is_os AND v0 < n - 1 AND {r("upgrade")} < {_UPGRADE_SHARE}
                        THEN CAST(greatest(w_lo, from_us) + {r("upgrade-at")}
                                  * (w_hi - greatest(w_lo, from_us)) AS BIGINT) END AS up_us,
                   CASE WHEN NOT is_os AND {r("remove")} < {_UNINSTALL_SHARE}
                        THEN CAST(greatest(w_lo, from_us) + {r("remove-at")}
                                  * (w_hi - greatest(w_lo, from_us)) AS BIGINT) END AS rm_us,
                   v0 + 1 + CAST(floor({r("upgrade-to")} * (n - 1 - v0)) AS INTEGER) AS v1
            FROM timed
        ), valid AS (
            SELECT * REPLACE (
                CASE WHEN up_us > from_us AND up_us < w_hi THEN up_us END AS up_us,
                CASE WHEN rm_us > from_us AND rm_us < w_hi THEN rm_us END AS rm_us)
            FROM changed
        )
        SELECT d, p, 0 AS seg, v0 AS ver, from_us, coalesce(up_us, rm_us) AS to_us FROM valid
        UNION ALL
        SELECT d, p, 1, v1, up_us, NULL FROM valid WHERE up_us IS NOT NULL
        ORDER BY d, p, seg
        """
    )


def patch_days(anchor: datetime) -> list[datetime]:
    """Each month's second Tuesday (OS update day), from a month before the timeline to its end."""
    first = anchor - timedelta(microseconds=HISTORY_US + 31 * DAY_US)
    last = anchor + timedelta(microseconds=FUTURE_US)
    days: list[datetime] = []
    year, month = first.year, first.month
    while True:
        day = datetime(year, month, 1, 18, tzinfo=anchor.tzinfo)
        day += timedelta(days=(1 - day.weekday()) % 7 + 7)  # weekday 1 is Tuesday
        if day > last:
            return days
        days.append(day)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def _load_patch_days(con: duckdb.DuckDBPyConnection, anchor: datetime) -> None:
    values = ", ".join(f"({m}, {epoch_us(day)})" for m, day in enumerate(patch_days(anchor)))
    con.execute(f"CREATE TABLE tvm.patch_day AS SELECT * FROM (VALUES {values}) AS p(m, t_us)")


def _os_patch_sql(seed: int, anchor_us: int) -> str:
    """``os_patch``: when each OS CVE row of the timeline is fixed by a monthly update."""
    skips = u(seed, "r.d", "pd.m", "'patch-skip'")
    at = u(seed, "r.d", "pd.m", "'patch-at'")
    delay = f"CAST({at} * {_PATCH_DAYS * DAY_US} AS BIGINT)"
    return f"""
        os_patch_any AS (
            SELECT r.d, r.p, r.seg, r.cve, min(pd.t_us + {delay}) AS patched_us
            FROM cve_rows r JOIN tvm.dev dv ON dv.idx = r.d AND dv.os_prod = r.p
            JOIN tvm.cve c ON c.idx = r.cve
            JOIN tvm.patch_day pd ON pd.t_us >= r.t_from
            WHERE c.update_available AND c.pub_us >= {anchor_us - HISTORY_US}
              AND {skips} < {_PATCH_SHARE}
            GROUP BY r.d, r.p, r.seg, r.cve
        ), os_patch AS (
            SELECT d, p, seg, cve, {incident_hold_sql("d", "patched_us", anchor_us)} AS patched_us
            FROM os_patch_any
        )"""


def _build_vulnerability_rows(con: duckdb.DuckDBPyConnection, seed: int, anchor_us: int) -> None:
    """Every vulnerability row of the timeline; see the module docstring."""
    # A CVE is found on a device up to 6 hours after it is published (one TVM cycle).
    found = u(seed, "s.d", "a.cve", "'found'")
    lag = f"CAST({found} * {6 * HOUR_US} AS BIGINT)"
    con.execute(
        f"""
        CREATE TABLE tvm.vrow AS
        WITH cve_rows AS (
            SELECT s.d, s.p, s.seg, s.ver, a.cve, greatest(s.from_us, c.pub_us + {lag}) AS t_from,
                   s.to_us AS t_to
            FROM tvm.sw s
            JOIN tvm.affects a ON a.prod = s.p AND a.ver = s.ver
            JOIN tvm.cve c ON c.idx = a.cve
        ), {_os_patch_sql(seed, anchor_us).strip()}, patched AS (
            SELECT r.d, r.p, r.seg, r.ver, r.cve, r.t_from,
                   CASE WHEN o.patched_us IS NULL THEN r.t_to
                        ELSE least(coalesce(r.t_to, o.patched_us), o.patched_us) END AS t_to
            FROM cve_rows r LEFT JOIN os_patch o USING (d, p, seg, cve)
        ), alive AS (
            SELECT * FROM patched WHERE t_to IS NULL OR t_from < t_to
        ), covered AS (
            -- how far the segment's earlier CVE rows reach, before each row starts
            SELECT d, p, seg, t_from,
                   max(coalesce(t_to, {_NEVER})) OVER (
                       PARTITION BY d, p, seg ORDER BY t_from, t_to
                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach,
                   max(coalesce(t_to, {_NEVER})) OVER (PARTITION BY d, p, seg) AS last_reach,
                   min(t_from) OVER (PARTITION BY d, p, seg) AS first_from
            FROM alive
        ), gaps AS (
            -- the null row covers every stretch of a segment where no CVE row is open
            SELECT s.d, s.p, s.seg, s.ver, s.from_us AS t_from,
                   CASE WHEN f.first_from IS NULL THEN s.to_us
                        ELSE least(coalesce(s.to_us, f.first_from), f.first_from) END AS t_to
            FROM tvm.sw s
            LEFT JOIN (SELECT DISTINCT d, p, seg, first_from, last_reach FROM covered) f
                USING (d, p, seg)
            UNION ALL
            SELECT c.d, c.p, c.seg, s.ver, c.reach, c.t_from
            FROM covered c JOIN tvm.sw s USING (d, p, seg) WHERE c.reach < c.t_from
            UNION ALL
            SELECT DISTINCT c.d, c.p, c.seg, s.ver, c.last_reach, s.to_us
            FROM covered c JOIN tvm.sw s USING (d, p, seg) WHERE c.last_reach < {_NEVER}
        ), rows AS (
            SELECT * FROM alive
            UNION ALL
            SELECT d, p, seg, ver, CAST(NULL AS INTEGER) AS cve, t_from, t_to FROM gaps
            WHERE t_to IS NULL OR t_from < t_to
        )
        SELECT *,
               -- a CVE's first sighting survives upgrades (get-assessment-software-
               -- vulnerabilities.md, "Clarifications"); a null row's is its own start
               CASE WHEN cve IS NULL THEN t_from
                    ELSE min(t_from) OVER (PARTITION BY d, p, cve) END AS first_us
        FROM rows
        ORDER BY d, p, seg, cve NULLS FIRST
        """
    )
