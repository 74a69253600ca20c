"""The emulator's own cost: start time, export build time and peak RSS, at a fleet size.

1. Starts `epf emulator --devices N` in its own process (as bench/run_bench.py does) and times
   it from the process's start to serving, then to its posture timeline being ready (the first
   `/_emulator/stats` answer waits for it).
2. Asks for every via-files export and waits for its last part (`run_bench._build_exports`).
3. Runs one full `epf sync` (export mode `files`) against it, timed.

After each step it prints the emulator's peak RSS (`VmHWM` of its process) and what the
emulator says of itself (`/_emulator/stats` `process`, when it has it). With `--state-dir`
the emulator keeps its state (and so any export cache) there between runs.

Nothing leaves loopback. Usage: python bench/emulator.py [--devices N] [--seed S] [--no-sync]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from run_bench import EPF, _build_exports, _ctx, _emulator_facts, _wait_for, stop_emulator


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--state-dir", type=Path, help="the emulator's state (kept)")
    parser.add_argument("--no-sync", action="store_true", help="stop after the exports")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="epf-bench-emulator-"))
    config = scratch / "emulated.toml"
    state = args.state_dir.resolve() if args.state_dir else scratch / "emulator"
    print(f"emulator bench: {args.devices:,} devices, seed {args.seed}", flush=True)
    started = time.monotonic()
    emulator = subprocess.Popen(
        [
            *EPF,
            "emulator",
            *("--devices", str(args.devices), "--seed", str(args.seed), "--port", "0"),
            *("--write-config", str(config), "--state-dir", str(state), "--no-sentinel"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(config, emulator)
        _step("serving", time.monotonic() - started, emulator.pid)
        base_url, ca = _emulator_facts(config)
        stats = httpx.get(f"{base_url}/_emulator/stats", verify=_ctx(ca), timeout=600).json()
        _step("ready", time.monotonic() - started, emulator.pid, stats.get("process"))
        t0 = time.monotonic()
        _build_exports(config)
        _step("exports built", time.monotonic() - t0, emulator.pid)
        if not args.no_sync:
            env = {
                **os.environ,
                "EPF_TENANTS__0__EXPORT_MODE": "files",
                "EPF_STATE__DIR": str(scratch / "state"),
            }
            now = stats["clock"]["now"]
            t0 = time.monotonic()
            sync = subprocess.run(
                [*EPF, "sync", "--config", str(config), "--db", str(scratch / "ws.duckdb")]
                + ["--now", now],
                env=env,
                capture_output=True,
                text=True,
            )
            if sync.returncode != 0:
                print(sync.stdout, sync.stderr, sep="\n")
                return 1
            _step("synced", time.monotonic() - t0, emulator.pid)
        stats = httpx.get(f"{base_url}/_emulator/stats", verify=_ctx(ca), timeout=600).json()
        print(f"emulator says: {stats.get('process')}", flush=True)
    finally:
        stop_emulator(emulator, timeout=60)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _step(what: str, seconds: float, pid: int, said: object = None) -> None:
    status = Path(f"/proc/{pid}/status").read_text()
    memory = {
        line.split(":")[0]: int(line.split()[1]) // 1024
        for line in status.splitlines()
        if line.startswith(("VmHWM", "VmRSS"))
    }
    extra = f"; emulator says {said}" if said else ""
    print(
        f"{what:<14}{seconds:>7.1f} s   peak RSS {memory['VmHWM']:>6,} MB"
        f"  (now {memory['VmRSS']:,} MB){extra}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
