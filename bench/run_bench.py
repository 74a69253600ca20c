"""`make bench`: a full sync of an emulated fleet, measured, beside DuckDB's own JSON reader.

For each fleet size (``--devices N``, or several with ``--sizes``):
1. Starts `epf emulator --devices N` in its own process (its start time and peak RSS are
   reported) and has it build its exports first, so the sync is timed, not the emulator's data
   generation.
2. Runs `epf sync` (a separate process; export mode ``files`` unless ``--mode`` says otherwise)
   into a fresh workspace and reports, per table, the rows, rows/s and seconds (from
   EPF_Runs_CL), the sync's wall time and peak RSS, and whether every table equals the truth.
3. A no-change run: the same sync an hour later on the tenant's clock, nothing changed in the
   tenant; its time and requests against the full run's.
4. The floor: downloads every via-files export the sync reads (vulnerabilities, secure
   configuration, software inventory, AV information) and times DuckDB's `read_json` loading
   each into a table of a fresh on-disk database, the least any reader of these files can do;
   the whole sync is reported against it.
Then each target of the benchmark beside its measured value and ratio, and with several sizes
a table of wall time and peak RSS by size.

Nothing leaves loopback. Usage: python bench/run_bench.py [--devices N | --sizes N,M,...]
[--seed S] [--mode M] [--no-change/--no-no-change]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson

EPF = [sys.executable, "-m", "endpoint_forensics"]
#: The via-files exports a sync reads: vulnerabilities, secure configuration, software
#: inventory, AV information (av_health in files mode).
EXPORTS = (
    "SoftwareVulnerabilitiesExport",
    "SecureConfigurationsAssessmentExport",
    "SoftwareInventoryExport",
    "InfoGatheringExport",
)


@dataclass
class Measured:
    devices: int
    mode: str
    rows: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    peak_mb: float = 0.0
    requests: int = 0
    truth: str = ""
    floor: float = 0.0
    floor_rows: int = 0
    emulator_start: float = 0.0
    emulator_peak_mb: float = 0.0
    emulator_cpu: float = 0.0  # during the full sync: it shares the machine's cores
    no_change: dict[str, float] = field(default_factory=dict)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--sizes", help="several fleet sizes, comma-separated (a scaling table)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mode", choices=("auto", "json", "files"), default="files")
    parser.add_argument("--no-change", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folders")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")] if args.sizes else [args.devices]
    results = []
    for devices in sizes:
        found = measure(devices, args.seed, args.mode, no_change=args.no_change, keep=args.keep)
        if found is None:
            return 1
        results.append(found)
    _targets(results)
    if len(results) > 1:
        _scaling(results)
    return 0


def measure(devices: int, seed: int, mode: str, *, no_change: bool, keep: bool) -> Measured | None:
    """One fleet size: the emulator, the full sync, the no-change run, the floor."""
    scratch = Path(tempfile.mkdtemp(prefix="epf-bench-"))
    config = scratch / "emulated.toml"
    found = Measured(devices, mode)
    print(f"\nbench: {devices:,} devices, seed {seed}, export mode {mode}", flush=True)
    started = time.monotonic()
    emulator = start_emulator(config, devices, seed)
    try:
        _wait_for(config, emulator)
        found.emulator_start = time.monotonic() - started
        base_url, ca = _emulator_facts(config)
        print(f"emulator: up in {found.emulator_start:.1f} s at {base_url}", flush=True)
        warm = time.monotonic()
        _build_exports(config)
        print(f"emulator: exports built in {time.monotonic() - warm:.1f} s", flush=True)
        db = scratch / "bench.duckdb"
        # As of the emulated tenant's clock: its world lives on its own calendar.
        stats = httpx.get(f"{base_url}/_emulator/stats", verify=_ctx(ca), timeout=1800).json()
        clock = stats["clock"]["now"]
        emulator_cpu = _cpu_seconds(emulator.pid)
        sync = _sync(config, db, scratch, mode, clock)
        if sync is None:
            return None
        found.wall, found.cpu, found.peak_mb = sync
        found.emulator_cpu = _cpu_seconds(emulator.pid) - emulator_cpu
        truth = orjson.loads(
            httpx.get(f"{base_url}/_emulator/stats", verify=_ctx(ca), timeout=1800).content
        )["truth"]
        found.rows, found.requests, found.truth = _report(db, found, truth)
        if no_change:
            later = (datetime.fromisoformat(clock) + timedelta(hours=1)).isoformat()
            again = _sync(config, db, scratch, mode, later)
            if again is None:
                return None
            found.no_change = {"wall": again[0], "requests": _requests(db, latest=True)}
            print(
                f"no-change run an hour later: {again[0]:.1f} s wall,"
                f" {found.no_change['requests']:.0f} requests"
                f" (full run: {found.wall:.1f} s, {found.requests} requests)"
            )
        found.floor, found.floor_rows = _floor(config, scratch)
        print(
            f"floor: DuckDB read_json of the same {len(EXPORTS)} exports"
            f" ({found.floor_rows:,} rows): {found.floor:.1f} s;"
            f" the whole sync {found.wall:.1f} s ({found.wall / found.floor:.2f}x the floor)"
        )
        found.emulator_peak_mb = _peak_mb(emulator.pid)
        print(f"emulator: peak RSS {found.emulator_peak_mb:.0f} MB")
    finally:
        stop_emulator(emulator)
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return found


def _sync(
    config: Path, db: Path, scratch: Path, mode: str, now: str
) -> tuple[float, float, float] | None:
    """`epf sync` in a process of its own: (wall s, CPU s, peak RSS MB), None if it failed."""
    env = {
        **os.environ,
        "EPF_TENANTS__0__EXPORT_MODE": mode,
        "EPF_STATE__DIR": str(scratch / "state"),
    }
    t0 = time.monotonic()
    process = subprocess.Popen(
        [*EPF, "sync", "--config", str(config), "--db", str(db), "--now", now],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Waited for alone, so its own usage (wait4), not the emulator's, is what is read.
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - t0
    out = process.stdout.read() if process.stdout else ""
    err = process.stderr.read() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) not in (0, 3):
        print(out, err, sep="\n")
        return None
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def _report(db: Path, found: Measured, truth: dict[str, int]) -> tuple[int, int, str]:
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
    requests = int(_requests(db, latest=False))
    print(
        f"\nsync: {total:,} rows in {found.wall:.1f} s wall ({total / found.wall:,.0f} rows/s),"
        f" {found.cpu:.1f} s CPU, peak RSS {found.peak_mb:.0f} MB, {requests} requests; {verdict}"
    )
    # On one machine the emulator's work (answering hunting queries, serving the files) takes
    # cores the sync would have: what Defender does on its own servers is not the sync's.
    print(f"emulator: {found.emulator_cpu:.1f} s CPU while the sync ran")
    return total, requests, verdict


def _requests(db: Path, *, latest: bool) -> float:
    """The requests of the newest run (``latest``) or of all runs, from EPF_Runs_CL."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        where = (
            ' WHERE RunId = (SELECT arg_max(RunId, StartTime) FROM "EPF_Runs_CL")' if latest else ""
        )
        found = con.execute(f'SELECT coalesce(sum(Requests), 0) FROM "EPF_Runs_CL"{where}')
        return float(found.fetchall()[0][0])
    finally:
        con.close()


def _floor(config: Path, scratch: Path) -> tuple[float, int]:
    """Time DuckDB's read_json on every export's parts (downloaded first, untimed)."""
    from endpoint_forensics.config import load_settings
    from endpoint_forensics.identity.credentials import CredentialTokenProvider

    tenant = load_settings(config).tenants[0]
    token = CredentialTokenProvider(tenant).get_token(tenant.mde_scope)
    parts: dict[str, list[str]] = {}
    with httpx.Client(verify=_ctx(Path(str(tenant.ca_bundle))), timeout=600) as http:
        for name in EXPORTS:
            answer = http.get(
                f"{tenant.mde_base_url}/api/machines/{name}",
                headers={"Authorization": f"Bearer {token}"},
            ).json()
            for i, url in enumerate(answer["exportFiles"]):
                path = scratch / "floor" / name / f"part-{i:05d}.json.gz"
                path.parent.mkdir(parents=True, exist_ok=True)
                with http.stream("GET", url) as response, path.open("wb") as fh:
                    response.raise_for_status()
                    for chunk in response.iter_bytes(1 << 20):
                        fh.write(chunk)
                parts.setdefault(name, []).append(str(path))
    con = duckdb.connect(str(scratch / "floor.duckdb"))
    t0 = time.monotonic()
    for i, (_name, files) in enumerate(parts.items()):
        con.execute(
            f"CREATE TABLE t{i} AS SELECT * FROM read_json($parts, format = 'newline_delimited')",
            {"parts": files},
        )
    floor = time.monotonic() - t0
    rows = sum(
        con.execute(f"SELECT count(*) FROM t{i}").fetchall()[0][0] for i in range(len(parts))
    )
    con.close()
    return floor, int(rows)


def _cpu_seconds(pid: int) -> float:
    """A running process's CPU time so far (Linux: /proc), 0 where /proc is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime and stime: fields 14 and 15 of stat(5), counted after the command's ")".
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_mb(pid: int) -> float:
    """A running process's peak RSS (Linux: VmHWM), 0 where /proc is not there."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _targets(results: list[Measured]) -> None:
    """Each target beside its measured value and ratio (issue 16's numbers)."""
    print("\ntargets (measured in this run, on this machine):")
    for m in results:
        at = f"{m.devices:,} devices, {m.mode}"
        lines = []
        if m.mode == "json" and m.devices <= 20_000:
            lines.append(("peak RSS of the sync", m.peak_mb, 200, "MB"))
        if m.mode != "json" and m.devices == 100_000:
            lines.append(("sync wall time", m.wall, 60, "s"))
            lines.append(("peak RSS of the sync", m.peak_mb, 300, "MB"))
        if m.floor:
            lines.append(("sync / read_json floor", m.wall / m.floor, 2.0, "x"))
        if m.devices == 100_000:
            lines.append(("emulator peak RSS", m.emulator_peak_mb, 1536, "MB"))
        if m.no_change and m.devices == 20_000:
            lines.append(("no-change run, share of time", m.no_change["wall"] / m.wall, 0.05, ""))
            lines.append(
                ("no-change run, share of requests", m.no_change["requests"] / m.requests, 0.05, "")
            )
        for name, value, limit, unit in lines:
            verdict = "met" if value <= limit else "NOT met"
            print(
                f"  {at:<26}{name:<34} target <= {limit:g}{unit}: measured {value:.2f}{unit}"
                f" ({value / limit:.2f} of the target) {verdict}"
            )
        print(f"  {at:<26}{'emulator start':<34} {m.emulator_start:.1f} s (reported)")


def _scaling(results: list[Measured]) -> None:
    print(
        f"\n{'devices':>10}{'rows':>12}{'wall s':>9}{'CPU s':>8}{'rows/s':>10}{'peak MB':>9}"
        f"{'emulator CPU s':>16}"
    )
    for m in results:
        print(
            f"{m.devices:>10,}{m.rows:>12,}{m.wall:>9.1f}{m.cpu:>8.1f}"
            f"{m.rows / m.wall:>10,.0f}{m.peak_mb:>9.0f}{m.emulator_cpu:>16.1f}"
        )


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


def stop_emulator(process: subprocess.Popen[Any], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not stopped within ``timeout`` seconds."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()


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
    with httpx.Client(verify=_ctx(Path(str(tenant.ca_bundle))), timeout=1800) as http:
        for name in EXPORTS:
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
