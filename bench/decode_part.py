"""Decode throughput of one large export part: `decode_part` on a vulnerability export part.

Writes (once, then reuses) a gzip JSON-lines part shaped like ``SoftwareVulnerabilitiesExport``
(every documented field, a few records with an undocumented one, as the emulator writes them),
then times ``decode_part`` on it: the fast (SQL) path by default, the careful (line by line)
path with ``--careful``. ``--late-unknown N`` adds an unknown field to line N only (past the
first lines the fast path samples), the rare case where a field first appears late: the fast
path gives up and the part is read line by line, as the pipeline does (both timed).

Usage: python bench/decode_part.py [--lines 500000] [--repeat 3] [--careful]
       [--late-unknown N] [--dir /tmp/epf-bench-decode]
"""

from __future__ import annotations

import argparse
import gzip
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

from endpoint_forensics.contracts import RedoUnit
from endpoint_forensics.sources.decode import decode_part
from endpoint_forensics.sources.tvm import VULNERABILITY_EXPORT

_SEVERITIES = ("Low", "Medium", "High", "Critical")
_EXPLOITS = ("NoExploit", "ExploitIsPublic", "ExploitIsVerified", "ExploitIsInKit")
_PLATFORMS = ("Windows11", "Windows10", "WindowsServer2022", "macOS", "Linux")


def _record(rng: random.Random, number: int) -> dict[str, object]:
    device = f"{rng.getrandbits(160):040x}"
    vendor, software = rng.choice(
        [("microsoft", "edge"), ("google", "chrome"), ("mozilla", "firefox"), ("oracle", "jre")]
    )
    version = f"{rng.randint(1, 120)}.0.{rng.randint(0, 9999)}.{rng.randint(0, 99)}"
    cve = f"CVE-20{rng.randint(15, 25)}-{rng.randint(1000, 49999)}" if number % 7 else None
    record: dict[str, object] = {
        "id": f"{device}_{vendor}_{software}_{version}_{cve or ''}",
        "deviceId": device,
        "rbacGroupName": f"group-{rng.randint(1, 40)}",
        "rbacGroupId": rng.randint(1, 40),
        "deviceName": f"ws-{number:07d}.contoso.com",
        "osPlatform": rng.choice(_PLATFORMS),
        "osVersion": f"10.0.{rng.randint(17000, 26000)}",
        "osArchitecture": "x64",
        "softwareVendor": vendor,
        "softwareName": software,
        "softwareVersion": version,
        "cveId": cve,
        "vulnerabilitySeverityLevel": rng.choice(_SEVERITIES),
        "cvssScore": round(rng.uniform(0, 10), 1) if cve else None,
        "recommendedSecurityUpdate": f"KB{rng.randint(4000000, 5999999)}" if number % 3 else None,
        "recommendedSecurityUpdateId": f"{rng.getrandbits(32):08x}" if number % 3 else None,
        "recommendedSecurityUpdateUrl": None,
        "recommendationReference": f"va-_-{vendor}-_-{software}",
        "diskPaths": [f"C:\\Program Files\\{vendor}\\{software}\\{software}.exe"],
        "registryPaths": [f"HKEY_LOCAL_MACHINE\\SOFTWARE\\{vendor}\\{software}"],
        "firstSeenTimestamp": f"2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)} "
        f"{rng.randint(10, 23)}:{rng.randint(10, 59)}:{rng.randint(10, 59)}",
        "lastSeenTimestamp": f"2024-10-{rng.randint(10, 28)} 0{rng.randint(0, 9)}:13:34.8476880",
        "exploitabilityLevel": rng.choice(_EXPLOITS),
        "securityUpdateAvailable": bool(number % 3),
    }
    if rng.random() < 0.01:  # the emulator's undocumented column of a few records
        record["cveSupportability"] = "Supported"
    return record


def make_part(folder: Path, lines: int, late_unknown: int | None) -> Path:
    """The part (written once per shape, then reused)."""
    late = f"-late{late_unknown}" if late_unknown else ""
    path = folder / f"vulnerabilities-{lines}{late}.json.gz"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    partial = path.with_suffix(".partial")
    with gzip.open(partial, "wb", compresslevel=6) as fh:
        for number in range(1, lines + 1):
            record = _record(rng, number)
            if number == late_unknown:
                record["fieldAddedWithoutNotice"] = {"late": True}
            fh.write(orjson.dumps(record) + b"\n")
    partial.rename(path)
    return path


def _decode(path: Path, *, careful: bool) -> tuple[int, int, int]:
    rows = tolerant = rejects = 0
    for batch in decode_part(path, VULNERABILITY_EXPORT, careful=careful):
        rows += batch.arrow.num_rows if batch.arrow is not None else 0
        tolerant += len(batch.rows)
        rejects += len(batch.rejects)
    return rows, tolerant, rejects


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # DuckDB's threads included
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--careful", action="store_true", help="time the line-by-line path")
    parser.add_argument("--late-unknown", type=int, default=None, metavar="LINE")
    parser.add_argument(
        "--dir", type=Path, default=Path(tempfile.gettempdir()) / "epf-bench-decode"
    )
    args = parser.parse_args()

    t0 = time.monotonic()
    path = make_part(args.dir, args.lines, args.late_unknown)
    with gzip.open(path, "rb") as fh:
        raw_mb = sum(len(line) for line in fh) / 1e6
    print(
        f"part: {path} ({args.lines:,} lines, {path.stat().st_size / 1e6:.1f} MB gzip, "
        f"{raw_mb:.1f} MB of JSON; ready in {time.monotonic() - t0:.1f} s)",
        flush=True,
    )
    times = []
    for _ in range(args.repeat):
        started, cpu = time.monotonic(), _cpu_seconds()
        path_taken = "careful" if args.careful else "fast"
        try:
            rows, tolerant, rejects = _decode(path, careful=args.careful)
        except RedoUnit as exc:  # as the pipeline does: the unit again, line by line
            path_taken = f"fast, then careful ({str(exc)[:60]}...)"
            rows, tolerant, rejects = _decode(path, careful=True)
        elapsed, cpu = time.monotonic() - started, _cpu_seconds() - cpu
        times.append(elapsed)
        print(
            f"{path_taken}: {elapsed:.2f} s ({cpu:.2f} s of CPU), "
            f"{(rows + tolerant) / elapsed:,.0f} rows/s, {raw_mb / elapsed:.0f} MB/s "
            f"({rows:,} Arrow rows, {tolerant:,} tolerant rows, {rejects} rejects)",
            flush=True,
        )
    best, median = min(times), statistics.median(times)
    print(
        f"best {best:.2f} s ({args.lines / best:,.0f} rows/s), median {median:.2f} s "
        f"({args.lines / median:,.0f} rows/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
