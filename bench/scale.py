"""`make bench-scale`: a simulated MSSP, its tenants collected by 1, 2, 4 and 8 worker processes
through a Storage queue (Azurite), as on Azure Functions.

For each worker count (``--workers 1,2,4,8``), from nothing:
1. Starts `epf emulator --tenants T --devices D` (one process, every tenant with its own fleet,
   credentials and rate limits; its Logs Ingestion endpoint is the destination) and Azurite.
2. The planner (``azure.work_queue.plan_work``) enqueues every unit that is due: each
   (tenant, dataset).
3. Starts W worker processes, each draining the queue as the Functions host would
   (``work_queue.drain_queue`` around ``work_queue.work_message``): a unit under its lease,
   its state in the Blob container, its tenant's endpoint budgets held across workers.
4. When every worker found the queue empty: the wall time, the rows delivered against the
   emulator's truth, each worker's peak RSS, and for every tenant the most requests any of its
   endpoint budgets saw in a minute and in an hour, against the documented limits (which must
   never be exceeded).

``--big N``: one tenant of N devices fanned out into units over 4 workers, beside one
sequential `epf sync` of the same tenant into Sentinel.

Nothing leaves loopback. Usage: python bench/scale.py [--tenants T] [--devices D]
[--workers 1,2,4,8] [--datasets a,b] [--big N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/azurite.py

from tests.azurite import Azurite, start_azurite

EPF = [sys.executable, "-m", "endpoint_forensics"]


@dataclass
class Round:
    workers: int
    wall: float = 0.0
    units: int = 0
    rows: int = 0
    truth: int = 0
    peak_mb: list[float] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    busiest: tuple[str, str, int, int] = ("", "", 0, 0)  # tenant, budget, per minute, its limit
    over_budget: list[str] = field(default_factory=list)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--datasets", help="only these datasets of each tenant (comma-separated)")
    parser.add_argument("--big", type=int, help="one tenant of N devices: fanned out vs sequential")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(*args.worker)
    if args.big:
        return _big(args.big, args.seed)
    rounds = [
        _round(args.tenants, args.devices, int(w), args.seed, args.datasets)
        for w in args.workers.split(",")
    ]
    _print(rounds, args.tenants, args.devices)
    return 0 if all(r.rows == r.truth and not r.over_budget for r in rounds) else 1


def _round(tenants: int, devices: int, workers: int, seed: int, datasets: str | None) -> Round:
    found = Round(workers)
    scratch = Path(tempfile.mkdtemp(prefix="epf-scale-"))
    print(f"\nbench-scale: {tenants} tenants of {devices} devices, {workers} workers", flush=True)
    emulator = _start_emulator(scratch, tenants, devices, seed)
    azurite = start_azurite(scratch / "azurite")
    try:
        config, now = _config(scratch, datasets)
        container, queue = _storage(azurite)
        from endpoint_forensics.azure.work_queue import plan_work
        from endpoint_forensics.config import load_settings
        from endpoint_forensics.state import BlobStateStore

        settings = load_settings(config, environ={}, overrides={"store.enabled": False})
        store = BlobStateStore(_container_client(azurite, container))
        found.units = len(
            plan_work(settings, _queue_client(azurite, queue).send_message, store, now=now)
        )
        print(f"planned {found.units} units", flush=True)
        started = time.monotonic()
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    str(config),
                    azurite.connection_string,
                    str(azurite.ca_bundle),
                    container,
                    queue,
                    now.isoformat(),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(workers)
        ]
        for proc in procs:
            out, _ = proc.communicate()
            said = json.loads(out.strip().splitlines()[-1])
            found.peak_mb.append(said["peak_mb"])
            found.rows += said["rows"]
            for k, v in said["outcomes"].items():
                found.outcomes[k] = found.outcomes.get(k, 0) + v
        found.wall = time.monotonic() - started
        _check(found, _stats(config))
    finally:
        azurite.stop()
        emulator.terminate()
        emulator.wait(timeout=60)
        shutil.rmtree(scratch, ignore_errors=True)
    return found


def _start_emulator(scratch: Path, tenants: int, devices: int, seed: int) -> subprocess.Popen[Any]:
    config = scratch / "emulated.toml"
    proc = subprocess.Popen(
        [*EPF, "emulator", "--tenants", str(tenants), "--devices", str(devices),
         "--seed", str(seed), "--port", "0", "--iot-sensors", "0",
         "--write-config", str(config), "--state-dir", str(scratch / "emulator")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while not config.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the emulator did not start")
        time.sleep(0.2)
    return proc


def _config(scratch: Path, datasets: str | None) -> tuple[Path, datetime]:
    import tomllib

    config = scratch / "emulated.toml"
    text = config.read_text()
    if datasets:  # the same datasets for every tenant
        chosen = ", ".join(f'"{d}"' for d in datasets.split(","))
        text = text.replace("[[tenants]]\n", f"[[tenants]]\ndatasets = [{chosen}]\n")
        config.write_text(text)
    stats = _stats(config)
    home = next(iter(stats["tenants"].values())) if "tenants" in stats else stats
    now = datetime.fromisoformat(home["clock"]["now"].replace("Z", "+00:00"))
    assert tomllib.loads(text)["tenants"]
    return config, now


def _stats(config: Path) -> dict[str, Any]:
    import tomllib

    tenant = tomllib.loads(config.read_text())["tenants"][0]
    answer = httpx.get(
        f"{tenant['mde_base_url']}/_emulator/stats", verify=tenant["ca_bundle"], timeout=600
    )
    answer.raise_for_status()
    stats: dict[str, Any] = answer.json()
    return stats


def _storage(azurite: Azurite) -> tuple[str, str]:
    container, queue = f"state-{uuid.uuid4().hex[:8]}", f"work-{uuid.uuid4().hex[:8]}"
    _container_client(azurite, container).create_container()
    _queue_client(azurite, queue).create_queue()
    return container, queue


def _container_client(azurite: Azurite, name: str) -> Any:
    from azure.storage.blob import ContainerClient

    return ContainerClient.from_connection_string(
        azurite.connection_string, name, connection_verify=str(azurite.ca_bundle)
    )


def _queue_client(azurite: Azurite, name: str) -> Any:
    from azure.storage.queue import QueueClient

    return QueueClient.from_connection_string(
        azurite.connection_string, name, connection_verify=str(azurite.ca_bundle)
    )


def _worker(config: str, connection: str, ca: str, container: str, queue: str, now: str) -> int:
    """One worker process: the queue drained as the Functions host would, one unit at a time."""
    from azure.storage.blob import ContainerClient
    from azure.storage.queue import QueueClient

    from endpoint_forensics.azure.work_queue import drain_queue, work_message
    from endpoint_forensics.config import load_settings
    from endpoint_forensics.state import BlobStateStore

    settings = load_settings(Path(config), environ={}, overrides={"store.enabled": False})
    store = BlobStateStore(
        ContainerClient.from_connection_string(connection, container, connection_verify=ca)
    )
    work_queue = QueueClient.from_connection_string(connection, queue, connection_verify=ca)
    at = datetime.fromisoformat(now)

    def work(text: str, count: int) -> Any:
        return work_message(
            text, settings, store, work_queue.send_message, dequeue_count=count, now=at
        )

    done = drain_queue(work_queue, work)
    outcomes: dict[str, int] = {}
    for d in done:
        outcomes[d.outcome] = outcomes.get(d.outcome, 0) + 1
    rows = sum(o.rows for d in done if d.summary for o in d.summary.outcomes)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": rows, "outcomes": outcomes, "peak_mb": peak}))
    return 0


def _check(found: Round, stats: dict[str, Any]) -> None:
    """The rows delivered against the truth, and each tenant's busiest budget against its
    documented limit (the emulator counts every call a budget saw, admitted or throttled)."""
    tenants = stats.get("tenants") or {"": stats}
    found.truth, found.rows = 0, 0
    for tenant_id, tenant in tenants.items():
        found.truth += sum(n for t, n in tenant.get("truth", {}).items() if t != "EPF_Runs_CL")
        # The destination is the home tenant's workspace: every tenant's rows arrive there.
        found.rows += sum(n for t, n in tenant.get("ingested", {}).items() if t != "EPF_Runs_CL")
        for budget, seen in (tenant.get("budgets") or {}).items():
            limits = {seconds: calls for calls, seconds in seen.get("windows", [])}
            per_minute, per_hour = seen.get("peak_per_minute", 0), seen.get("peak_per_hour", 0)
            share = per_minute / limits[60] if limits.get(60) else 0.0
            busiest = found.busiest[2] / found.busiest[3] if found.busiest[3] else 0.0
            if share > busiest:  # the closest any tenant came to a documented limit
                found.busiest = (tenant_id, budget, per_minute, limits[60])
            if (
                seen.get("throttled")
                or per_minute > limits.get(60, per_minute)
                or per_hour > limits.get(3600, per_hour)
            ):
                found.over_budget.append(f"{tenant_id}/{budget}")


def _print(rounds: list[Round], tenants: int, devices: int) -> None:
    print(f"\n{tenants} tenants of {devices} devices ({tenants * devices:,} devices)")
    print(f"{'workers':>8}{'wall s':>9}{'units':>7}{'rows':>12}{'truth':>12}{'rows/s':>10}"
          f"{'peak MB/worker':>16}{'closest to a limit /min':>30}")  # fmt: skip
    for r in rounds:
        _tenant, budget, per_minute, limit = r.busiest
        print(
            f"{r.workers:>8}{r.wall:>9.1f}{r.units:>7}{r.rows:>12,}{r.truth:>12,}"
            f"{r.rows / r.wall:>10,.0f}{max(r.peak_mb):>16.0f}"
            f"{f'{budget} {per_minute} of {limit}':>30}"
            f"  {'equal' if r.rows == r.truth else 'NOT equal'}"
            f"{', OVER BUDGET: ' + ', '.join(r.over_budget) if r.over_budget else ''}"
            f"  {r.outcomes}"
        )


def _big(devices: int, seed: int, workers: int = 4) -> int:
    """One tenant of ``devices``: its units over ``workers`` worker processes, against one
    sequential `epf sync` of the same tenant into the same kind of destination; a fresh
    emulator for each, so neither finds the other's exports built."""
    print(f"\nbench-scale --big: one tenant of {devices:,} devices", flush=True)
    fanned = _round(1, devices, workers, seed, None)
    scratch = Path(tempfile.mkdtemp(prefix="epf-scale-seq-"))
    emulator = _start_emulator(scratch, 1, devices, seed)
    try:
        config, now = _config(scratch, None)
        env = {**os.environ, "EPF_STORE__ENABLED": "false", "EPF_STATE__DIR": str(scratch / "s")}
        started = time.monotonic()
        process = subprocess.Popen(
            [*EPF, "sync", "--config", str(config), "--now", now.isoformat()],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        _, status, usage = os.wait4(process.pid, 0)
        sequential = time.monotonic() - started
        stats = _stats(config)
        rows = sum(n for t, n in stats["ingested"].items() if t != "EPF_Runs_CL")
        truth = sum(n for t, n in stats["truth"].items() if t != "EPF_Runs_CL")
    finally:
        emulator.terminate()
        emulator.wait(timeout=60)
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"\none tenant of {devices:,} devices:"
        f"\n  fanned out, {workers} workers: {fanned.wall:.1f} s, {fanned.units} units,"
        f" {fanned.rows:,} rows ({'equal' if fanned.rows == fanned.truth else 'NOT equal'}"
        f" to the truth), peak {max(fanned.peak_mb):.0f} MB a worker"
        f"\n  sequential `epf sync`: {sequential:.1f} s (exit {os.waitstatus_to_exitcode(status)}),"
        f" {rows:,} rows ({'equal' if rows == truth else 'NOT equal'} to the truth),"
        f" peak {usage.ru_maxrss / 1024:.0f} MB"
        f"\n  fanned out / sequential: {fanned.wall / sequential:.2f}"
    )
    return 0 if fanned.rows == fanned.truth and rows == truth else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
