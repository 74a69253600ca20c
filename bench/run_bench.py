"""`make bench`: a full sync of an emulated fleet, measured, beside DuckDB's own JSON reader.

1. Starts `epf emulator --devices N` in its own process and has it build its exports first, so
   the sync is timed, not the emulator's data generation.
2. Runs `epf sync` (a separate process, export mode `files` above the threshold) into a fresh
   workspace and reports, per table, the rows, rows/s and seconds (from EPF_Runs_CL), plus the
   sync's wall time and peak RSS.
3. The floor: downloads the same vulnerability export parts and times DuckDB's `read_json`
   loading them into a table of a fresh on-disk database, the least any reader of these files
   can do; prints our time for that dataset against it.

Nothing leaves loopback. Usage: python bench/run_bench.py [--devices N] [--seed S] [--mode M]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson

EPF = [sys.executable, "-m", "endpoint_forensics"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mode", choices=("auto", "json", "files"), default="auto")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="epf-bench-"))
    config = scratch / "emulated.toml"
    print(f"bench: {args.devices:,} devices, seed {args.seed}, export mode {args.mode}", flush=True)
    started = time.monotonic()
    emulator = start_emulator(config, args.devices, args.seed)
    try:
        _wait_for(config, emulator)
        base_url, ca = _emulator_facts(config)
        print(f"emulator: up in {time.monotonic() - started:.1f} s at {base_url}", flush=True)
        warm = time.monotonic()
        _build_exports(config)
        print(f"emulator: exports built in {time.monotonic() - warm:.1f} s", flush=True)

        db = scratch / "bench.duckdb"
        env = {
            **os.environ,
            "EPF_TENANTS__0__EXPORT_MODE": args.mode,
            "EPF_STATE__DIR": str(scratch / "state"),
        }
        # As of the emulated tenant's clock: its world lives on its own calendar.
        clock = httpx.get(f"{base_url}/_emulator/stats", verify=_ctx(ca)).json()["clock"]["now"]
        # The sync is the only child waited for, so the children's peak RSS is its own.
        t0 = time.monotonic()
        sync = subprocess.run(
            [*EPF, "sync", "--config", str(config), "--db", str(db), "--now", clock],
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.monotonic() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if sync.returncode != 0:
            print(sync.stdout, sync.stderr, sep="\n")
            return 1
        truth = orjson.loads(httpx.get(f"{base_url}/_emulator/stats", verify=_ctx(ca)).content)[
            "truth"
        ]
        _report(db, wall, peak_mb, truth)
        floor, ours = _floor(base_url, ca, config, scratch, db)
        print(
            f"\nfloor: DuckDB read_json of the same vulnerability export: {floor:.1f} s; "
            f"epf vulnerabilities dataset: {ours:.1f} s ({ours / floor:.2f}x the floor)"
        )
    finally:
        emulator.send_signal(signal.SIGTERM)
        try:
            emulator.wait(timeout=30)
        except subprocess.TimeoutExpired:
            emulator.kill()
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _report(db: Path, wall: float, peak_mb: float, truth: dict[str, int]) -> None:
    con = duckdb.connect(str(db), read_only=True)
    runs = con.execute(
        'SELECT SourceName, Dataset, TableName, "Rows", DurationSeconds, Outcome, SourceKind '
        'FROM "EPF_Runs_CL" ORDER BY StartTime'
    ).fetchall()
    con.close()
    print(f"\n{'source':<12}{'dataset':<24}{'table':<30}{'rows':>12}{'seconds':>10}{'rows/s':>12}")
    total = 0
    per_table: dict[str, int] = {}
    for source, dataset, table, rows, seconds, outcome, _kind in runs:
        total += rows
        per_table[table] = per_table.get(table, 0) + rows
        rate = rows / seconds if seconds else 0.0
        print(
            f"{source:<12}{dataset:<24}{table:<30}{rows:>12,}{seconds:>10.1f}{rate:>12,.0f}"
            f"  {outcome}"
        )
    # The emulator knows the datasets a sync collects, not the stages after them (triage).
    per_table["EPF_Runs_CL"] = sum(1 for run in runs if run[6] != "triage")
    wrong: dict[str, object] = {
        t: (per_table.get(t, 0), n) for t, n in truth.items() if per_table.get(t, 0) != n
    }
    failed = [f"{run[0]}/{run[1]}" for run in runs if run[5] != "Succeeded"]
    if failed:
        wrong["not Succeeded"] = failed
    verdict = "every table equals the truth" if not wrong else f"NOT the truth: {wrong}"
    print(
        f"\nsync: {total:,} rows in {wall:.1f} s wall ({total / wall:,.0f} rows/s), "
        f"peak RSS {peak_mb:.0f} MB; {verdict}"
    )


def _floor(base_url: str, ca: Path, config: Path, scratch: Path, db: Path) -> tuple[float, float]:
    """Time DuckDB's read_json on the vulnerability export parts (downloaded first, untimed)."""
    from endpoint_forensics.config import load_settings
    from endpoint_forensics.identity.credentials import CredentialTokenProvider

    tenant = load_settings(config).tenants[0]
    token = CredentialTokenProvider(tenant).get_token(tenant.mde_scope)
    with httpx.Client(verify=_ctx(ca), timeout=600) as http:
        answer = http.get(
            f"{base_url}/api/machines/SoftwareVulnerabilitiesExport",
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        parts = []
        for i, url in enumerate(answer["exportFiles"]):
            path = scratch / "floor" / f"part-{i:05d}.json.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            with http.stream("GET", url) as response, path.open("wb") as fh:
                response.raise_for_status()
                for chunk in response.iter_bytes(1 << 20):
                    fh.write(chunk)
            parts.append(str(path))
    con = duckdb.connect(str(scratch / "floor.duckdb"))
    t0 = time.monotonic()
    con.execute(
        "CREATE TABLE v AS SELECT * FROM read_json($parts, format = 'newline_delimited')",
        {"parts": parts},
    )
    floor = time.monotonic() - t0
    con.close()
    ours_con = duckdb.connect(str(db), read_only=True)
    ours = ours_con.execute(
        "SELECT DurationSeconds FROM \"EPF_Runs_CL\" WHERE Dataset = 'vulnerabilities'"
    ).fetchall()[0][0]
    ours_con.close()
    return floor, float(ours)


def start_emulator(config: Path, devices: int, seed: int, *options: str) -> subprocess.Popen[Any]:
    """`epf emulator` in its own process, writing ``config`` when it serves (the local store
    only: bench/sentinel.py measures delivery), its state beside ``config``."""
    return subprocess.Popen(
        [
            *EPF,
            "emulator",
            "--devices",
            str(devices),
            "--seed",
            str(seed),
            "--port",
            "0",
            "--write-config",
            str(config),
            "--state-dir",
            str(config.parent / "emulator"),
            "--no-sentinel",
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(config: Path, process: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 600
    while not config.exists():
        if process.poll() is not None:
            raise SystemExit(
                f"the emulator exited: {process.stderr.read() if process.stderr else ''}"
            )
        if time.monotonic() > deadline:
            raise SystemExit("the emulator did not start within 10 minutes")
        time.sleep(0.2)


def _emulator_facts(config: Path) -> tuple[str, Path]:
    import tomllib

    tenant = tomllib.loads(config.read_text())["tenants"][0]
    return tenant["mde_base_url"], Path(tenant["ca_bundle"])


def _ctx(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def _build_exports(config: Path) -> None:
    """Ask for each export once, so the emulator writes its files before the timed sync."""
    from endpoint_forensics.config import load_settings
    from endpoint_forensics.identity.credentials import CredentialTokenProvider

    tenant = load_settings(config).tenants[0]
    token = CredentialTokenProvider(tenant).get_token(tenant.mde_scope)
    exports = (
        "SoftwareVulnerabilitiesExport",
        "SecureConfigurationsAssessmentExport",
        "SoftwareInventoryExport",
        "InfoGatheringExport",
    )
    with httpx.Client(verify=_ctx(Path(str(tenant.ca_bundle))), timeout=1800) as http:
        for name in exports:
            answer = http.get(
                f"{tenant.mde_base_url}/api/machines/{name}",
                headers={"Authorization": f"Bearer {token}"},
            )
            answer.raise_for_status()
            # The files are written in the background: the first byte of the last part waits.
            last = answer.json()["exportFiles"][-1]
            with http.stream("GET", last) as part:
                part.raise_for_status()


if __name__ == "__main__":
    sys.exit(main())
