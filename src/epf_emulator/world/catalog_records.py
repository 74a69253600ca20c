"""Security recommendations and the CVE catalogue of the emulated tenant, as of an instant.

Owns the records of ``GET /api/recommendations`` (defender-apis.md B.5.7: one per software
product in use, ``va-_-vendor-_-product``, with weaknesses, exposed and total device counts
taken from the vulnerability and inventory snapshots; one per secure configuration in use,
``sca-_-scid-N``, counted from the secure-configuration snapshot) and of
``GET /api/vulnerabilities`` (B.5.8: every CVE published by then, in use or not, with
``exposedMachines``, exploit facts as of then, ``CveSupportability`` and ``EPSS``, spelled
as the property table spells it). Both are small, so they are rendered in SQL and filtered
in Python.

Blocking (DuckDB): call from worker threads.
Imports only ``world.database``, ``world.posture`` and ``world.tvm_datasets`` of the emulator:
it shares no code with the collector.
"""

from __future__ import annotations

from typing import Any

import orjson

from epf_emulator.world.database import Store
from epf_emulator.world.posture import u
from epf_emulator.world.tvm_datasets import DATASETS

__all__ = ["cve_records", "recommendation_records"]


def recommendation_records(store: Store, *, seed: int, at: int) -> list[dict[str, Any]]:
    """Every recommendation as of ``at``: software products first, then configurations."""
    software = _software_recommendations_sql(seed, at)
    configurations = _configuration_recommendations_sql(seed, at)
    return _records(store, software) + _records(store, configurations)


def cve_records(store: Store, *, at: int) -> list[dict[str, Any]]:
    """Every CVE published by ``at``, with its exposure and exploit facts as of then."""
    level = _level(at)
    updated = _iso(
        f"CASE WHEN c.exploit_us <= {at} THEN greatest(c.updated_us, c.exploit_us)"
        " ELSE c.updated_us END"
    )
    sql = f"""
        WITH exposed AS (
            SELECT v.cve, count(DISTINCT v.d) AS devices FROM tvm.vrow v
            WHERE v.cve IS NOT NULL AND {_alive("v", at)} GROUP BY v.cve
        )
        SELECT CAST(to_json({{
            'id': c.id, 'name': c.id, 'description': c.description, 'severity': c.severity,
            'cvssV3': c.score, 'cvssVector': c.vector,
            'exposedMachines': coalesce(e.devices, 0),
            'publishedOn': {_iso("c.pub_us")},
            'updatedOn': {updated},
            'publicExploit': {level} <> 'NoExploit',
            'exploitVerified': {level} IN ('ExploitIsVerified', 'ExploitIsInKit'),
            'exploitInKit': {level} = 'ExploitIsInKit',
            'exploitTypes': CASE WHEN {level} = 'NoExploit' THEN CAST([] AS VARCHAR[]) ELSE c.exploit_types END,
            'exploitUris': CASE WHEN {level} = 'NoExploit' THEN CAST([] AS VARCHAR[]) ELSE c.exploit_uris END,
            'CveSupportability': c.supportability,
            'EPSS': c.epss
        }}) AS VARCHAR)
        FROM tvm.cve c LEFT JOIN exposed e ON e.cve = c.idx
        WHERE c.pub_us <= {at}
        ORDER BY c.pub_us, c.idx
    """
    return _records(store, sql)


def _software_recommendations_sql(seed: int, at: int) -> str:
    """One ``va-_-vendor-_-product`` record per product installed at ``at``."""
    exception = u(seed, "p.idx", "'exception'")
    status = f"CASE WHEN {exception} < 0.05 THEN 'Exception' ELSE 'Active' END"
    return f"""
        WITH installed AS (
            SELECT s.p, count(DISTINCT s.d) AS total FROM tvm.sw s
            WHERE {_alive("s", at, "from_us", "to_us")} GROUP BY s.p
        ), exposed AS (
            SELECT v.p, count(DISTINCT v.d) AS exposed, count(DISTINCT v.cve) AS weaknesses,
                   count(DISTINCT v.d) FILTER (WHERE dv.value = 'High') AS critical,
                   max(c.score) AS score, bool_or({_level(at)} <> 'NoExploit') AS exploit
            FROM tvm.vrow v JOIN tvm.cve c ON c.idx = v.cve JOIN tvm.dev dv ON dv.idx = v.d
            WHERE {_alive("v", at)} GROUP BY v.p
        ), fleet AS (SELECT greatest(count(*), 1) AS devices FROM tvm.dev WHERE sensor)
        SELECT CAST(to_json({{
            'id': 'va-_-' || p.vendor || '-_-' || p.name,
            'productName': p.name,
            'recommendationName': 'Update ' || replace(p.name, '_', ' '),
            'weaknesses': coalesce(e.weaknesses, 0),
            'vendor': p.vendor,
            'recommendedVersion': CASE WHEN p.category = 'OS' THEN '' ELSE p.versions[p.n] END,
            'recommendedProgram': NULL, 'recommendedVendor': NULL,
            'recommendationCategory': CASE WHEN p.category = 'OS' THEN 'OS' ELSE 'Application' END,
            'subCategory': '',
            'severityScore': coalesce(e.score, 0.0),
            'publicExploit': coalesce(e.exploit, false),
            'activeAlert': false, 'associatedThreats': CAST([] AS VARCHAR[]),
            'remediationType': CASE WHEN p.eos_status = 'EOS Software' THEN 'Upgrade' ELSE 'Update' END,
            'status': {status},
            'configScoreImpact': 0.0,
            'exposureImpact': round(coalesce(e.exposed, 0) * coalesce(e.score, 0.0) / f.devices, 6),
            'totalMachineCount': i.total,
            'exposedMachinesCount': coalesce(e.exposed, 0),
            'nonProductivityImpactedAssets': 0,
            'relatedComponent': replace(p.name, '_', ' '),
            'exposedCriticalDevices': coalesce(e.critical, 0)
        }}) AS VARCHAR)
        FROM installed i JOIN tvm.prod p ON p.idx = i.p LEFT JOIN exposed e ON e.p = i.p, fleet f
        ORDER BY p.vendor, p.name
    """


def _configuration_recommendations_sql(seed: int, at: int) -> str:
    """One ``sca-_-scid-N`` record per configuration assessed at ``at``."""
    config_snapshot = DATASETS["secure_config"].snapshot(seed, at, None, 0)  # anchor unused
    return f"""
        WITH current AS ({config_snapshot}), counted AS (
            SELECT s.scid, count(*) FILTER (WHERE s.applicable) AS total,
                   count(*) FILTER (WHERE s.applicable AND NOT s.compliant) AS exposed,
                   count(*) FILTER (WHERE s.applicable AND NOT s.compliant AND dv.value = 'High')
                       AS critical
            FROM current s JOIN tvm.dev dv ON dv.idx = s.d GROUP BY s.scid
        ), names AS (
            SELECT scid, any_value(name) AS name, any_value(category) AS category,
                   any_value(subcategory) AS subcategory, any_value(impact) AS impact
            FROM tvm.scid GROUP BY scid
        )
        SELECT CAST(to_json({{
            'id': 'sca-_-' || k.scid, 'productName': NULL,
            'recommendationName': k.name, 'weaknesses': 0, 'vendor': NULL,
            'recommendedVersion': NULL, 'recommendedProgram': NULL, 'recommendedVendor': NULL,
            'recommendationCategory': CASE WHEN k.category = 'Security controls'
                THEN 'SecurityControls' ELSE k.category END,
            'subCategory': k.subcategory, 'severityScore': k.impact,
            'publicExploit': false, 'activeAlert': false,
            'associatedThreats': CAST([] AS VARCHAR[]),
            'remediationType': 'ConfigurationChange', 'status': 'Active',
            'configScoreImpact': round(k.impact * n.exposed / greatest(n.total, 1), 6),
            'exposureImpact': 0.0,
            'totalMachineCount': n.total, 'exposedMachinesCount': n.exposed,
            'nonProductivityImpactedAssets': 0, 'relatedComponent': k.subcategory,
            'exposedCriticalDevices': n.critical
        }}) AS VARCHAR)
        FROM counted n JOIN names k ON k.scid = n.scid
        ORDER BY CAST(substr(k.scid, 6) AS INTEGER)
    """


def _records(store: Store, sql: str) -> list[dict[str, Any]]:
    cursor = store.cursor()
    try:
        return [orjson.loads(row[0]) for row in cursor.execute(sql).fetchall()]
    finally:
        cursor.close()


def _alive(alias: str, at: int, start: str = "t_from", end: str = "t_to") -> str:
    return f"{alias}.{start} <= {at} AND ({alias}.{end} IS NULL OR {alias}.{end} > {at})"


def _iso(us: str) -> str:
    return f"strftime(make_timestamp({us}), '%Y-%m-%dT%H:%M:%SZ')"


def _level(at: int) -> str:
    return (
        f"(CASE WHEN c.exploit_us IS NOT NULL AND {at} < c.exploit_us THEN 'NoExploit'"
        " ELSE c.level END)"
    )
