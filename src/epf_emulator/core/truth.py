"""Ground truth of the posture datasets: what a complete sync as of now must contain.

Owns the row counts ``/_emulator/stats`` reports for the posture tables, computed with plain
SQL over the emulator's own timeline tables, separately from the snapshot and paging code
(so a paging or rendering bug shows up as a mismatch instead of hiding behind shared code),
and never through collector logic: AV records, device x configuration rows, the full
vulnerability export (``cveId: null`` rows included), software inventory, recommendations,
the CVE catalogue, and the real changes of the delta for ``sinceTime`` = now - 14 days
(New, Fixed, Updated; the Fixed/New pairs of RBAC moves excluded, and counted apart).

Blocking (DuckDB): call from worker threads.
Imports only ``common.clock``, ``world.database`` and ``world.secure_config_history`` of the
emulator: it shares no code with the collector.
"""

from __future__ import annotations

from typing import Any

from epf_emulator.common.clock import from_epoch_us
from epf_emulator.world.database import Store
from epf_emulator.world.secure_config_history import ASSESSMENTS_TABLE

__all__ = ["DELTA_DAYS", "posture_truth"]

DELTA_DAYS = 14
_BUCKET_US = 6 * 3_600_000_000
_DAY_US = 86_400_000_000


def posture_truth(store: Store, now_us: int) -> tuple[dict[str, int], dict[str, Any]]:
    """(table -> rows, details) of the posture tables as of ``now_us``."""
    since = now_us - DELTA_DAYS * _DAY_US
    lo = since - since % _BUCKET_US
    cursor = store.cursor()
    try:
        counts = {
            name: int(cursor.execute(sql).fetchall()[0][0])
            for name, sql in _count_queries(now_us, lo).items()
        }
    finally:
        cursor.close()
    real = counts.pop("new") + counts.pop("fixed") + counts.pop("updated")
    artefacts = 2 * counts.pop("moved_rows")
    counts["EPF_VulnerabilityChanges_CL"] = real
    cursor = store.cursor()
    try:
        by_status = dict(
            cursor.execute(
                f"SELECT 'New', count(*) FROM tvm.vrow WHERE t_from BETWEEN {lo} AND {now_us}"
                " UNION ALL SELECT 'Fixed', count(*) FROM tvm.vrow"
                f" WHERE t_to BETWEEN {lo} AND {now_us}"
            ).fetchall()
        )
    finally:
        cursor.close()
    by_status["Updated"] = real - by_status["New"] - by_status["Fixed"]
    details = {
        "EPF_VulnerabilityChanges_CL": {
            "since_time": from_epoch_us(since).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "bucket_start": from_epoch_us(lo).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "served_rows": real + artefacts,
            "real_changes": real,
            "rbac_move_artefact_rows": artefacts,
            "by_status": by_status,
        }
    }
    return counts, details


def _count_queries(t: int, lo: int) -> dict[str, str]:
    """SQL counting each posture table's rows at ``t``, and the delta's changes since the
    bucket starting at ``lo`` (new, fixed, updated, rows of devices that moved group)."""
    alive = f"t_from <= {t} AND (t_to IS NULL OR t_to > {t})"
    installed = f"from_us <= {t} AND (to_us IS NULL OR to_us > {t})"
    assessed = f"SELECT DISTINCT d, scid FROM {ASSESSMENTS_TABLE} WHERE t_us <= {t}"
    return {
        "EPF_AvHealth_CL": f"SELECT count(*) FROM tvm.dev WHERE sensor AND first_us <= {t}",
        "EPF_SecureConfig_CL": f"SELECT count(*) FROM ({assessed})",
        "EPF_Vulnerabilities_CL": f"SELECT count(*) FROM tvm.vrow WHERE {alive}",
        "EPF_SoftwareInventory_CL": f"SELECT count(*) FROM tvm.sw WHERE {installed}",
        "EPF_Recommendations_CL": (
            f"SELECT (SELECT count(DISTINCT p) FROM tvm.sw WHERE {installed})"
            f" + (SELECT count(DISTINCT scid) FROM ({assessed}))"
        ),
        "EPF_CveCatalog_CL": f"SELECT count(*) FROM tvm.cve WHERE pub_us <= {t}",
        "new": f"SELECT count(*) FROM tvm.vrow WHERE t_from BETWEEN {lo} AND {t}",
        "fixed": f"SELECT count(*) FROM tvm.vrow WHERE t_to BETWEEN {lo} AND {t}",
        "updated": (
            "SELECT count(*) FROM tvm.vrow v JOIN tvm.cve c ON c.idx = v.cve"
            f" WHERE c.exploit_us BETWEEN {lo} AND {t} AND v.t_from < c.exploit_us"
            " AND (v.t_to IS NULL OR v.t_to > c.exploit_us)"
        ),
        "moved_rows": (
            "SELECT count(*) FROM tvm.vrow v JOIN tvm.rbac_move m ON m.d = v.d"
            f" WHERE m.move_us BETWEEN {lo} AND {t} AND v.t_from < m.move_us"
            " AND (v.t_to IS NULL OR v.t_to > m.move_us)"
        ),
    }
