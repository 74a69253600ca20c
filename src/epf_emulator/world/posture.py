"""The posture timeline of the emulated fleet, generated in DuckDB SQL.

Owns the tables every TVM dataset is read from, in the in-memory database ``tvm``:

- ``dev``: one row per device (loaded from the fleet), with its TVM facts (OS product and
  version string, device group at the anchor, sensor, staleness, AV mode);
- ``grp``, ``prod``, ``inst``, ``cve``, ``affects``: the small catalogues;
- ``rbac_move``: the few devices that change device group during the timeline;
- ``sw``: installed software as time segments (a version from ``from_us`` until ``to_us``;
  an upgrade ends one segment and starts the next, an uninstall ends it);
- ``vrow``: every vulnerability row that ever exists, one per segment and affecting CVE
  (from the later of the install and the CVE's discovery on that device), plus the
  ``cveId: null`` row of a segment while no CVE affects it.

The timeline runs from 15 days before the anchor (the start) to 7 days after it; the
emulated clock's "now" is a pointer into it, so a snapshot is "rows alive at now" and the
delta is "row starts and ends since then": one source, so they can never disagree.
Randomness is ``hash(seed, ...)`` in SQL: deterministic, with no Python loop per row.

Imports only ``common.clock``, ``world.cve_catalog``, ``world.devices`` and ``world.software`` of
the emulator: it shares no code with the collector.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from epf_emulator.common.clock import epoch_us
from epf_emulator.world.cve_catalog import CVE_COLUMNS, DAY_US, build_cves
from epf_emulator.world.devices import RBAC_GROUPS, Device, device_kind
from epf_emulator.world.software import PRODUCTS, os_product

if TYPE_CHECKING:
    import duckdb

__all__ = ["FUTURE_US", "HISTORY_US", "HOUR_US", "RbacMove", "build_posture", "load_devices", "u"]

HOUR_US = 3_600_000_000
HISTORY_US = 15 * DAY_US  # events older than this before the anchor are never served
FUTURE_US = 7 * DAY_US  # the timeline's events end a week after the anchor
_UPGRADE_SHARE = 0.06  # installs upgraded during the timeline
_UNINSTALL_SHARE = 0.012
_FRESH_SHARE = 0.02  # installs that happen during the timeline
_MOVE_SHARE = 0.01  # devices that change device group during the timeline
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


def u(seed: int, *parts: str) -> str:
    """SQL for a uniform [0, 1) number that depends only on the seed and ``parts``.

    Hashed twice: DuckDB's multi-argument ``hash`` combines its arguments so weakly that two
    tags of the same key come out correlated (r = 0.5); a second hash decorrelates them.
    """
    return f"(hash(hash({seed}, {', '.join(parts)})) / 18446744073709551616.0)"


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
    _load_catalogues(con, seed, anchor_us, per_device)
    _build_moves(con, seed, anchor_us)
    _build_software(con, seed, anchor_us)
    _build_vulnerability_rows(con, seed)
    con.execute("CHECKPOINT tvm")
    rows = con.execute(
        "SELECT d.id, m.move_us, m.old_group, m.new_group FROM tvm.rbac_move m"
        " JOIN tvm.dev d ON d.idx = m.d ORDER BY m.move_us"
    ).fetchall()
    return [RbacMove(str(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in rows]


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


def _load_catalogues(
    con: duckdb.DuckDBPyConnection,
    seed: int,
    anchor_us: int,
    per_device: float,
) -> None:
    _load_cves(con, seed, anchor_us, per_device)
    _load_products(con)
    # Which CVEs affect which (product, version): versions older than the fix.
    con.execute(
        "CREATE TABLE tvm.affects AS SELECT c.prod, v.ver, c.idx AS cve"
        " FROM tvm.cve c JOIN tvm.prod p ON p.idx = c.prod,"
        " range(0, 64) AS v(ver) WHERE v.ver < least(c.fix, p.n)"
    )


def _load_cves(
    con: duckdb.DuckDBPyConnection, seed: int, anchor_us: int, per_device: float
) -> None:
    """``cve``: the catalogue, scaled to the sensor devices' OS versions and kinds."""
    import pyarrow as pa

    sensors = con.execute(
        "SELECT os_prod, os_ver, kind, count(*) FROM tvm.dev WHERE sensor GROUP BY ALL"
    ).fetchall()
    os_versions: dict[tuple[int, int], int] = {}
    kinds: dict[str, int] = {}
    for prod, ver, kind, count in sensors:
        os_versions[(prod, ver)] = os_versions.get((prod, ver), 0) + count
        kinds[kind] = kinds.get(kind, 0) + count
    cves = build_cves(seed, anchor_us, per_device=per_device, os_versions=os_versions, kinds=kinds)
    cve_columns = {name: [getattr(c, name) for c in cves] for name in CVE_COLUMNS}
    con.register("_cve_source", pa.table(cve_columns))
    try:
        casts = ", ".join(f'CAST("{c}" AS {t}) AS "{c}"' for c, t in CVE_COLUMNS.items())
        con.execute(f"CREATE TABLE tvm.cve AS SELECT {casts} FROM _cve_source ORDER BY idx")
    finally:
        con.unregister("_cve_source")


def _load_products(con: duckdb.DuckDBPyConnection) -> None:
    """``prod`` (products, versions with cumulative install weights, end of support) and
    ``inst`` (the share of each device kind that installs each product)."""
    import pyarrow as pa

    products: dict[str, list[Any]] = {
        k: []
        for k in (
            "idx",
            "vendor",
            "name",
            "category",
            "n",
            "versions",
            "cum",
            "eos_status",
            "eos_date",
            "eos_before",
            "disk",
            "registry",
        )
    }
    install: dict[str, list[Any]] = {"prod": [], "kind": [], "share": []}
    for index, product in enumerate(PRODUCTS):
        cumulative, total = [], 0.0
        for weight in product.version_weights():
            total += weight
            cumulative.append(total)
        values = (
            index,
            product.vendor,
            product.name,
            product.category,
            len(product.versions),
            list(product.versions),
            cumulative,
            product.eos_status,
            product.eos_date,
            product.eos_before,
            product.disk_path,
            product.registry_path,
        )
        for key, value in zip(products, values, strict=True):
            products[key].append(value)
        for kind, share in product.install:
            install["prod"].append(index)
            install["kind"].append(kind)
            install["share"].append(share)
    for name, columns in (("prod", products), ("inst", install)):
        con.register("_catalogue", pa.table(columns))
        try:
            con.execute(f"CREATE TABLE tvm.{name} AS SELECT * FROM _catalogue")
        finally:
            con.unregister("_catalogue")


def _build_moves(con: duckdb.DuckDBPyConnection, seed: int, anchor_us: int) -> None:
    """A few active devices change group once, somewhere in the timeline."""
    lo, hi = anchor_us - 13 * DAY_US, anchor_us + FUTURE_US - HOUR_US
    move_at, moves = u(seed, "idx", "'move-at'"), u(seed, "idx", "'move'")
    move = f"CAST({lo} + {move_at} * {hi - lo} AS BIGINT)"
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

    window_lo = anchor_us - 14 * DAY_US
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


def _build_vulnerability_rows(con: duckdb.DuckDBPyConnection, seed: int) -> None:
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
        ), alive AS (
            SELECT * FROM cve_rows WHERE t_to IS NULL OR t_from < t_to
        ), first_cve AS (
            SELECT d, p, seg, min(t_from) AS first_from FROM alive GROUP BY ALL
        ), null_rows AS (
            SELECT s.d, s.p, s.seg, s.ver, CAST(NULL AS INTEGER) AS cve, s.from_us AS t_from,
                   CASE WHEN f.first_from IS NULL THEN s.to_us
                        ELSE least(coalesce(s.to_us, f.first_from), f.first_from) END AS t_to
            FROM tvm.sw s LEFT JOIN first_cve f USING (d, p, seg)
        ), rows AS (
            SELECT * FROM alive
            UNION ALL
            SELECT * FROM null_rows WHERE t_to IS NULL OR t_from < t_to
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
