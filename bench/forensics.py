"""`make bench-forensics`: history that is cheap to keep, and answers from it, measured.

1. Starts `epf emulator --devices N --start <anchor - days>` in its own process (no IoT, no
   Sentinel) and syncs it once per simulated day, for `--days` days, into workspace A, every
   dataset in snapshot mode (every row, every run).
2. Each day, every change-tracked table's new snapshot in A is written through the workspace
   sink again, into workspace B, in change-only mode (`sinks.history`): the same rows the
   pipeline would hand it, so both modes see identical snapshots. The tables that are not
   change-tracked are copied to B as they are.
3. Per mode: rows and compressed bytes a day (gzip JSON lines, as DuckDB writes them: the
   shape of what the Sentinel sink uploads), and the workspace's size.
4. Answers, in both workspaces: `epf forensics` for 50 sampled (device, time) pairs (p50, p95;
   the two modes' answers must be equal), a fleet predicate, and the remediation lifecycle over
   the whole history (seconds and the peak RSS of a process doing only that).

Usage: python bench/forensics.py [--devices N] [--days D] [--seed S] [--keep]
       python bench/forensics.py --answers-only SCRATCH [--days D]   (step 4 again)
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_bench import EPF, _ctx, _emulator_facts, _wait_for, start_emulator

from endpoint_forensics.analytics.forensics import device_posture, fleet_posture
from endpoint_forensics.config import load_settings
from endpoint_forensics.config.history import DEFAULT_BASELINE_DAYS
from endpoint_forensics.contracts import Batch, HistoryPlan
from endpoint_forensics.pipeline.run import run_sync
from endpoint_forensics.sinks.duckdb import DuckDBSink
from endpoint_forensics.tables import COMMON_COLUMNS, TABLES
from endpoint_forensics.workspace import store
from epf_emulator.common.clock import WORLD_ANCHOR

TRACKED = [t for t in TABLES.values() if t.changes is not None]
_STAMPS = [c.name for c in COMMON_COLUMNS]
_BATCH_ROWS = 50_000
_LIFECYCLE_TIMEOUT_S = 900  # reported as "inf s" beyond it


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--baseline-days", type=float, default=DEFAULT_BASELINE_DAYS)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument(
        "--answers-only",
        type=Path,
        metavar="SCRATCH",
        help="measure the answers again on the workspaces a --keep run left in SCRATCH",
    )
    args = parser.parse_args()
    if args.answers_only:
        a, b = args.answers_only / "snapshot.duckdb", args.answers_only / "changes.duckdb"
        _report_answers(args, a, b, WORLD_ANCHOR - timedelta(days=args.days))
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="epf-bench-forensics-"))
    start = WORLD_ANCHOR - timedelta(days=args.days)
    print(
        f"bench-forensics: {args.devices:,} devices, {args.days} days from {start:%Y-%m-%d},"
        f" seed {args.seed}, baseline every {args.baseline_days:g} days ({scratch})",
        flush=True,
    )
    emulator, config = _start_emulator(args, scratch, start)
    try:
        base_url, ca = _emulator_facts(config)
        a, b = scratch / "snapshot.duckdb", scratch / "changes.duckdb"
        days = _collect(args, config, scratch, a, b, base_url, ca)
    finally:
        emulator.terminate()
        emulator.wait(timeout=60)
    _report_volume(days, a, b)
    _report_answers(args, a, b, start)
    if not args.keep:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _start_emulator(
    args: argparse.Namespace, scratch: Path, start: datetime
) -> tuple[subprocess.Popen[Any], Path]:
    config = scratch / "emulated.toml"
    began = time.monotonic()
    emulator = start_emulator(
        config, args.devices, args.seed, "--iot-sensors", "0", "--start", start.isoformat()
    )
    _wait_for(config, emulator)
    print(f"emulator: up in {time.monotonic() - began:.1f} s", flush=True)
    return emulator, config


def _collect(
    args: argparse.Namespace, config: Path, scratch: Path, a: Path, b: Path, base_url: str, ca: Path
) -> list[dict[str, Any]]:
    settings = load_settings(
        config,
        overrides={
            "store.path": str(a),
            "state.dir": str(scratch / "state"),
            "history.mode": {_dataset_of(t): "snapshot" for t in TRACKED},
            # As a large tenant runs: vulnerabilities through the "via files" export.
            "tenants.0.export_mode": "files",
            "tenants.0.interval_hours": {"cve_catalog": 168.0},
        },
    )
    days: list[dict[str, Any]] = []
    control = httpx.Client(base_url=base_url, verify=_ctx(ca), timeout=600)
    for day in range(args.days + 1):
        if day:
            control.post("/_emulator/advance", params={"hours": 24}).raise_for_status()
        now = datetime.fromisoformat(control.get("/_emulator/stats").json()["clock"]["now"])
        began = time.monotonic()
        sink = DuckDBSink(a)
        try:
            summary = run_sync(settings, [sink], now=now)
        finally:
            sink.close()
        if summary.exit_code:
            raise SystemExit(f"day {day}: the sync failed: {summary.errors()}")
        synced = time.monotonic() - began
        days.append({"day": day, "at": now, **_replay(a, b, now, args.baseline_days, day)})
        d = days[-1]
        print(
            f"day {day:>3} {now:%Y-%m-%d}: sync {synced:5.1f} s, rows snapshot"
            f" {d['rows_snapshot']:>10,} changes {d['rows_changes']:>9,}; MB gzip JSON snapshot"
            f" {d['bytes_snapshot'] / 1e6:6.1f} changes {d['bytes_changes'] / 1e6:6.1f}",
            flush=True,
        )
    return days


def _dataset_of(table: Any) -> str:
    from endpoint_forensics.tables.datasets import DATASETS

    return next(d.name for d in DATASETS if d.kind == "tenant" and d.table is table)


def _replay(a: Path, b: Path, now: datetime, baseline_days: float, day: int) -> dict[str, Any]:
    """Write A's rows of ``now`` into B: change-tracked tables through the change-only sink,
    the others as they are. Rows and compressed bytes each mode wrote this day."""
    source = duckdb.connect(str(a), read_only=True)
    sink = DuckDBSink(b)
    out = {"rows_snapshot": 0, "rows_changes": 0, "bytes_snapshot": 0, "bytes_changes": 0}
    try:
        for table in TABLES.values():
            if table.profile != "core":
                continue
            rows = source.sql(
                f'SELECT * EXCLUDE ({", ".join(_STAMPS)}) FROM "{table.name}"'
                " WHERE SnapshotTime = $now ORDER BY ALL",
                params={"now": now},
            ).to_arrow_table()
            if rows.num_rows == 0:
                continue
            stamp = _stamp_of(source, table.name, now)
            plan = HistoryPlan("changes", now, baseline_days) if table.changes else None
            unit = f"replay/{day}/{table.name}"
            with sink.open(table, unit=unit, history=plan) as writer:
                for part in rows.to_batches(max_chunksize=_BATCH_ROWS):  # as pages arrive
                    writer.write(Batch(table, arrow=pa.Table.from_batches([part])), stamp)
            if plan is not None:
                sink.finish_snapshot(table, plan, unit=f"{unit}/removed", stamp=stamp)
        sink.close()
        target = duckdb.connect(str(b), read_only=True)
        try:
            for mode, con in (("snapshot", source), ("changes", target)):
                rows, size = _written(con, now)
                out[f"rows_{mode}"], out[f"bytes_{mode}"] = rows, size
        finally:
            target.close()
    finally:
        source.close()
    return out


def _stamp_of(con: Any, table: str, now: datetime) -> dict[str, Any]:
    run_id, tenant = con.execute(
        f'SELECT RunId, DefenderTenantId FROM "{table}" WHERE SnapshotTime = ? LIMIT 1', [now]
    ).fetchall()[0]
    return {"TimeGenerated": now, "SnapshotTime": now, "RunId": run_id, "DefenderTenantId": tenant}


def _written(con: Any, now: datetime) -> tuple[int, int]:
    """Rows a workspace took at ``now`` in the change-tracked tables, and their gzip JSON size."""
    rows = size = 0
    with tempfile.TemporaryDirectory() as tmp:
        for table in TRACKED:
            path = Path(tmp) / f"{table.name}.json.gz"
            count = con.execute(
                f'SELECT count(*) FROM "{table.name}" WHERE SnapshotTime = ?', [now]
            ).fetchall()[0][0]
            if not count:
                continue
            con.execute(
                f"COPY (SELECT * FROM \"{table.name}\" WHERE SnapshotTime = TIMESTAMPTZ '{now.isoformat()}')"
                f" TO '{path}' (FORMAT json, COMPRESSION gzip)"
            )
            rows += count
            size += path.stat().st_size
    return rows, size


def _report_volume(days: list[dict[str, Any]], a: Path, b: Path) -> None:
    print("\nHistory volume of the change-tracked tables (devices, agent health, AV health,")
    print("secure configuration, vulnerabilities, software), per simulated day:")
    print(f"{'':<28}{'snapshot mode':>18}{'change-only':>18}{'ratio':>8}")
    for label, chosen in (("first day (baseline)", days[:1]), ("each later day, mean", days[1:])):
        if not chosen:
            continue
        for unit, key, scale in (("rows", "rows", 1), ("MB gzip JSON", "bytes", 1e6)):
            snap = statistics.mean(d[f"{key}_snapshot"] for d in chosen) / scale
            change = statistics.mean(d[f"{key}_changes"] for d in chosen) / scale
            ratio = snap / change if change else float("inf")
            print(f"{label + ', ' + unit:<28}{snap:>18,.1f}{change:>18,.1f}{ratio:>7.1f}x")
    total = {m: sum(d[f"bytes_{m}"] for d in days) / 1e6 for m in ("snapshot", "changes")}
    print(f"{'all days, MB gzip JSON':<28}{total['snapshot']:>18,.1f}{total['changes']:>18,.1f}")
    print(
        f"{'workspace file, MB':<28}{a.stat().st_size / 1e6:>18,.1f}{b.stat().st_size / 1e6:>18,.1f}"
    )


def _report_answers(args: argparse.Namespace, a: Path, b: Path, start: datetime) -> None:
    rng = random.Random(args.seed)
    con = duckdb.connect(str(a), read_only=True)
    times = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT SnapshotTime FROM EPF_Devices_CL ORDER BY ALL"
        ).fetchall()
    ]
    pairs = []
    for _ in range(50):  # a time, then a device listed in that snapshot
        snapshot = rng.choice(times)
        listed = con.execute(
            "SELECT DeviceId FROM EPF_Devices_CL WHERE SnapshotTime = ? ORDER BY ALL", [snapshot]
        ).fetchall()
        pairs.append((rng.choice(listed)[0], snapshot + timedelta(hours=rng.uniform(0, 23))))
    con.close()
    print("\nAnswers (the same 50 device and time pairs in both workspaces):")
    answers: dict[str, list[Any]] = {}
    for mode, db in (("snapshot", a), ("changes", b)):
        device_posture(db, pairs[0][0], pairs[0][1], window=timedelta(days=7))  # warm
        seconds, answers[mode] = [], []
        for device, at in pairs:
            began = time.perf_counter()
            answers[mode].append(device_posture(db, device, at, window=timedelta(days=7)))
            seconds.append(time.perf_counter() - began)
        seconds.sort()
        # As `epf serve` answers: its workspace held open, so each answer's connection shares
        # the database instance instead of starting one (web.snapshot).
        held, served = store.connect(db, read_only=True), []
        try:
            for device, at in pairs:
                began = time.perf_counter()
                device_posture(db, device, at, window=timedelta(days=7))
                served.append(time.perf_counter() - began)
        finally:
            held.close()
        served.sort()
        began = time.perf_counter()
        fleet = fleet_posture(db, pairs[0][1], 'TamperProtection == "Fail"')
        fleet_s = time.perf_counter() - began
        lifecycle = _lifecycle_in_subprocess(db, start, pairs)
        print(
            f"  {mode:<9} epf forensics p50 {statistics.median(seconds) * 1000:6.0f} ms,"
            f" p95 {seconds[int(len(seconds) * 0.95) - 1] * 1000:6.0f} ms"
            f" (workspace held open, as epf serve: p50 {statistics.median(served) * 1000:4.0f}"
            f" ms, p95 {served[int(len(served) * 0.95) - 1] * 1000:4.0f} ms);"
            f" fleet predicate {fleet_s * 1000:6.0f} ms ({len(fleet):,} devices);"
            f" lifecycle {lifecycle['seconds']:5.1f} s, peak RSS {lifecycle['peak_mb']:,.0f} MB"
        )
    device, at = pairs[0]
    runs = []
    for _ in range(5):
        began = time.perf_counter()
        subprocess.run(
            [*EPF, "forensics", "--db", str(b), "--device", device, "--at", at.isoformat(),
             "--format", "json"],
            capture_output=True, check=True,
        )  # fmt: skip
        runs.append(time.perf_counter() - began)
    print(
        f"  `epf forensics` as a command (a new process: start, load the functions, answer),"
        f" change-only workspace: median {statistics.median(runs):.2f} s of 5"
    )
    same = sum(
        _comparable(x) == _comparable(y)
        for x, y in zip(answers["snapshot"], answers["changes"], strict=True)
    )
    print(f"  answers equal in both modes: {same}/{len(pairs)}")


def _comparable(answer: dict[str, Any]) -> str:
    # The snapshot each answer came from is the same run in both; the rest must match exactly.
    return json.dumps(
        {k: v for k, v in answer.items() if k != "snapshots"}, sort_keys=True, default=str
    )


def _lifecycle_in_subprocess(db: Path, start: datetime, pairs: list[Any]) -> dict[str, float]:
    code = (
        "import json, resource, sys, time\n"
        "from datetime import datetime\n"
        "from pathlib import Path\n"
        "from endpoint_forensics.analytics.lifecycle import lifecycle_report\n"
        "began = time.perf_counter()\n"
        f"report = lifecycle_report(Path({str(db)!r}), datetime.fromisoformat({start.isoformat()!r}),"
        f" datetime.fromisoformat({(WORLD_ANCHOR + timedelta(days=1)).isoformat()!r}))\n"
        "seconds = time.perf_counter() - began\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print(json.dumps({'seconds': seconds, 'peak_mb': peak,"
        " 'items': report['vulnerabilities']['items']}))\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            timeout=_LIFECYCLE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return {"seconds": float("inf"), "peak_mb": float("nan"), "items": 0}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    sys.exit(main())
