"""The small catalogues of the posture timeline, loaded into DuckDB's ``tvm`` database.

Owns ``tvm.cve`` (the CVE catalogue of ``world.cve_catalog``, scaled to the sensor devices' OS
versions and kinds, with the incident story's CVE for the incident device's OS when
``world.incident`` chose one), ``tvm.prod`` and ``tvm.inst`` (the products of
``world.software``: versions with cumulative install weights, end of support; the share of
each device kind that installs each), and ``tvm.affects`` (which CVEs affect which product
version: those older than the fix). ``world.posture`` builds the timeline over them.

Imports only ``world.cve_catalog``, ``world.incident`` and ``world.software`` of the emulator:
it shares no code with the collector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from epf_emulator.world.cve_catalog import CVE_COLUMNS, build_cves
from epf_emulator.world.incident import INCIDENT_TABLE
from epf_emulator.world.software import PRODUCTS

if TYPE_CHECKING:
    import duckdb

__all__ = ["load_catalogues"]


def load_catalogues(
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
    incident = con.execute(
        f"SELECT dv.os_prod, dv.os_ver FROM {INCIDENT_TABLE} i JOIN tvm.dev dv ON dv.idx = i.d"
    ).fetchall()
    cves = build_cves(
        seed,
        anchor_us,
        per_device=per_device,
        os_versions=os_versions,
        kinds=kinds,
        incident_os=(int(incident[0][0]), int(incident[0][1])) if incident else None,
    )
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
