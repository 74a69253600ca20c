"""`make bench-triage`: triage of a large fleet, measured, beside the simplest alternative.

1. Builds a workspace of N devices (default 100,000) with V open vulnerability rows each
   (default 30: 3M rows) over a catalogue of C CVEs, as a baseline one day before T, in the
   registry's own tables (DuckDB SQL: the emulator would spend minutes generating what triage
   reads in seconds), with the threat feeds: a KEV copy, a full EPSS day, Vulnrichment records
   for 70% of the CVEs. A tenth of the devices are servers (mission rule), 2% internet-facing.
2. In a process of its own each (peak RSS per process):
   - `compute`: `analytics.triage.triage_batches` over the workspace, the batches counted;
   - `stage`: the run's triage stage (`pipeline.triage.run_triage`) into the workspace itself;
   - `python`: the simplest alternative, `EPF_TriageInputs`' rows fetched into Python and each
     decided with `triage.ssvc` lookups (decisions only, no reasons): what a script would do.
   Prints rows, seconds, rows per second and peak RSS of each.

Usage: python bench/triage.py [--devices N] [--per-device V] [--cves C] [--seed S] [--keep]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

AT = datetime(2026, 11, 5, tzinfo=UTC)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--per-device", type=int, default=30)
    parser.add_argument("--cves", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--measure", choices=("compute", "stage", "python"), help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return _measure(args.measure, args.db)
    scratch = Path(tempfile.mkdtemp(prefix="epf-bench-triage-"))
    db = scratch / "ws.duckdb"
    try:
        started = time.perf_counter()
        vulnerabilities = _build(db, args.devices, args.per_device, args.cves, args.seed)
        print(
            f"bench-triage: {args.devices:,} devices, {vulnerabilities:,} open vulnerability rows,"
            f" {args.cves:,} CVEs, seed {args.seed} (built in {time.perf_counter() - started:.1f} s,"
            f" {scratch})",
            flush=True,
        )
        print(f"{'run':<9}{'rows':>12}{'seconds':>10}{'rows/s':>12}{'peak MB':>10}")
        for kind in ("compute", "stage", "python"):
            result = subprocess.run(
                [sys.executable, __file__, "--measure", kind, "--db", str(db)],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                print(f"{kind}: failed\n{result.stderr[-2000:]}")
                return 1
            m = json.loads(result.stdout.strip().splitlines()[-1])
            print(
                f"{kind:<9}{m['rows']:>12,}{m['seconds']:>10.2f}"
                f"{m['rows'] / m['seconds']:>12,.0f}{m['peak_mb']:>10,.0f}",
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _build(db: Path, devices: int, per_device: int, cves: int, seed: int) -> int:
    from endpoint_forensics.workspace import store

    con = store.connect(db)
    con.execute("SET memory_limit = '4GB'")
    con.execute(f"SELECT setseed({(seed % 1000) / 1000})")
    at = f"TIMESTAMPTZ '{(AT - timedelta(days=1)).isoformat()}'"
    common = f"{at} AS TimeGenerated, {at} AS SnapshotTime, 'bench' AS RunId, 'tenant' AS DefenderTenantId"
    device = "md5(i::VARCHAR) || substr(md5((i + 1)::VARCHAR), 1, 8)"
    con.execute(
        f"INSERT INTO EPF_Devices_CL BY NAME SELECT {common}, {device} AS DeviceId,"
        " CASE WHEN i % 10 = 0 THEN 'srv-' ELSE 'ws-' END || i || '.contoso.com' AS DeviceName,"
        " CASE WHEN i % 10 = 0 THEN 'Servers-' || (i % 4) ELSE 'Workstations-' || (i % 6) END"
        " AS RbacGroupName, '[]' AS MachineTags, 'Windows11' AS OSPlatform,"
        f" 'Active' AS HealthStatus, 'Baseline' AS HistoryKind FROM range({devices}) r(i)"
    )
    con.execute(
        f"INSERT INTO EPF_AgentHealth_CL BY NAME SELECT {common}, {device} AS DeviceId,"
        " 'Windows' AS OSFamily, random() < 0.02 AS IsInternetFacing,"
        f" 'Baseline' AS HistoryKind FROM range({devices}) r(i)"
    )
    cve = f"'CVE-2026-' || (100000 + ((i * 7919 + k * 104729) % {cves}))"
    con.execute(
        f"INSERT INTO EPF_Vulnerabilities_CL BY NAME SELECT {common}, {device} AS DeviceId,"
        f" {device} || '-' || k AS RecordId, {cve} AS CveId, 'product' || (k % 50) AS SoftwareName,"
        " '1.' || (k % 7) AS SoftwareVersion,"
        " ['Low', 'Medium', 'High', 'Critical'][1 + ((i + k) % 4)] AS VulnerabilitySeverityLevel,"
        " round(3 + ((i * 31 + k) % 70) / 10, 1) AS CvssScore,"
        " ['NoExploit', 'NoExploit', 'ExploitIsPublic', 'ExploitIsVerified', 'ExploitIsInKit']"
        "[1 + ((i + 3 * k) % 5)] AS ExploitabilityLevel,"
        f" {at} - to_days(CAST(1 + (i + k) % 200 AS INT)) AS FirstSeenTimestamp,"
        f" 'Baseline' AS HistoryKind FROM range({devices}) r(i), range({per_device}) s(k)"
    )
    vectors = [
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        "CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H",
        "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H",
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N",
    ]
    cve_i = "'CVE-2026-' || (100000 + i)"
    con.execute(
        f"INSERT INTO EPF_CveCatalog_CL BY NAME SELECT {common}, {cve_i} AS CveId,"
        f" {vectors}[1 + (i % 4)] AS CvssVector FROM range({cves}) r(i)"
    )
    feed = f"{at} AS TimeGenerated, {at} AS SnapshotTime, 'bench' AS RunId, '' AS DefenderTenantId"
    con.execute(
        f"INSERT INTO EPF_Kev_CL BY NAME SELECT {feed}, {cve_i} AS CveId,"
        f" {at} - INTERVAL 30 DAY AS DateAdded, i % 4 = 0 AS ForensicTriage,"
        f" '2026.11.04' AS FeedVersion FROM range(0, {cves}, 13) r(i)"
    )
    con.execute(
        f"INSERT INTO EPF_Epss_CL BY NAME SELECT {feed}, 'CVE-2026-' || (100000 + i) AS CveId,"
        " random() AS Epss, random() AS Percentile, 'v2025.03.14 2026-11-04' AS FeedVersion"
        f" FROM range({max(cves, 250_000)}) r(i)"
    )
    con.execute(
        f"INSERT INTO EPF_Vulnrichment_CL BY NAME SELECT {feed}, {cve_i} AS CveId,"
        " ['none', 'poc', 'active'][1 + (i % 3)] AS Exploitation,"
        " CASE WHEN i % 2 = 0 THEN 'yes' ELSE 'no' END AS Automatable,"
        " CASE WHEN i % 3 = 0 THEN 'total' ELSE 'partial' END AS TechnicalImpact,"
        f" {at} AS AssessedAt, 'archive sha256:bench' AS FeedVersion"
        f" FROM range({cves}) r(i) WHERE i % 10 < 7"
    )
    con.execute("CHECKPOINT")
    con.close()
    return devices * per_device


def _config():  # type: ignore[no-untyped-def]
    from endpoint_forensics.config import TriageConfig

    return TriageConfig.model_validate(
        {"mission": [{"group": "servers-*", "value": "high"}], "exposed": [{"name": "srv-1*"}]}
    )


def _measure(kind: str, db: Path) -> int:
    started = time.perf_counter()
    if kind == "compute":
        from endpoint_forensics.analytics.triage import triage_batches
        from endpoint_forensics.workspace import store

        con = store.connect(db, read_only=True)
        rows = sum(b.num_rows for b in triage_batches(con, AT, _config()))
        con.close()
    elif kind == "stage":
        rows = _stage(db)
    else:
        rows = _python(db)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_mb": peak_mb}))
    return 0


def _stage(db: Path) -> int:
    from endpoint_forensics.config import settings_from_mapping
    from endpoint_forensics.pipeline.runlog import DatasetOutcome, RunSummary
    from endpoint_forensics.pipeline.triage import run_triage
    from endpoint_forensics.sinks.duckdb import DuckDBSink

    settings = settings_from_mapping(
        {
            "store": {"path": str(db)},
            "state": {"dir": str(db.parent / "state")},
            "feeds": {"datasets": ["kev"]},
            "triage": _config().model_dump(exclude_none=True),
        },
        base_dir=db.parent,
    )
    summary = RunSummary(run_id="bench-triage", time_generated=AT)
    summary.outcomes.append(
        DatasetOutcome("t", "tenant", "vulnerabilities", "EPF_Vulnerabilities_CL")
    )
    sink = DuckDBSink(db)
    try:
        run_triage(settings, [sink], summary)
    finally:
        sink.close()
    outcome = summary.outcomes[-1]
    if outcome.outcome != "Succeeded":
        raise SystemExit(f"triage {outcome.outcome}: {outcome.error or outcome.reason}")
    return outcome.rows


def _python(db: Path) -> int:
    """The simplest alternative: the inputs into Python, each row decided by lookups."""
    import duckdb_kql

    from endpoint_forensics.analytics.functions import kql_datetime, registry
    from endpoint_forensics.triage import ssvc
    from endpoint_forensics.workspace import store

    con = store.connect(db, read_only=True)
    sql = str(
        duckdb_kql.to_sql(
            f"EPF_TriageInputs({kql_datetime(AT)})",
            schema=store.table_columns(con),
            functions=registry(),
        )
    )
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    at = {n: i for i, n in enumerate(names)}
    rows = 0
    while chunk := cursor.fetchmany(50_000):
        for r in chunk:
            kev = bool(r[at["InKev"]])
            level = r[at["ExploitabilityLevel"]]
            vr = r[at["VrExploitation"]]
            if kev or vr == "active" or level == "ExploitIsInKit":
                exploitation = "active"
            elif level in ("ExploitIsVerified", "ExploitIsPublic") or vr == "poc":
                exploitation = "poc"
            else:
                exploitation = "none"
            automatable = r[at["VrAutomatable"]] or "yes"
            impact = r[at["VrTechnicalImpact"]] or "total"
            group = (r[at["RbacGroupName"]] or "").lower()
            mission = "high" if group.startswith("servers-") else "medium"
            exposed = bool(r[at["IsInternetFacing"]])
            ssvc.COORDINATOR.decide(exploitation, automatable, impact, mission)
            ssvc.BOD_2604.decide(kev, exposed, automatable, impact)
            rows += 1
    con.close()
    return rows


if __name__ == "__main__":
    sys.exit(main())
