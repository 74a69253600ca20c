"""`make chaos`: full syncs under injected faults, then every table compared with the truth.

For each fault kind, a fresh emulated tenant (MDE, Defender for IoT sensors and console, the
Logs Ingestion endpoint) strikes a share of requests with that fault (``epf_emulator.Chaos``),
and the collector syncs it into both sinks (the workspace and Sentinel) until a run ends clean,
at most ``--max-runs`` runs; the emulated clock stands still, and every dataset's interval is a
day, so each dataset is collected exactly once when nothing is lost or repeated. The kinds
``ingestion_down`` and ``keyvault_down`` strike every request of the first run (the endpoint or
the vault down for a whole run), then none. ``token_expiry`` is a 401 from an API on a valid
token. ``kill`` runs `epf sync` as a process and SIGKILLs it at ``--kills`` random moments
(mid-export, mid-commit, mid-upload: wherever they fall), then lets the runs finish.

Then, per table the emulator knows the truth of (its ``/_emulator/stats``; the run log and the
vulnerability changes aside, which a first sync does not read):
- stored: the workspace's rows; lost = truth - distinct rows; duplicated = rows - distinct rows,
  distinct meaning the same values once the stamps (``TimeGenerated``, ``SnapshotTime``,
  ``RunId``, ``BatchId``) are left out: a row collected twice is a duplicate whatever its ids;
- Sentinel: the rows the endpoint accepted, raw and after the documented dedup (the same
  ``BatchId`` and values: an upload re-sent after a lost answer), as the emulator counts them;
  lost = the workspace's distinct rows missing there, duplicated = rows left after the dedup
  beyond the distinct ones (re-collected with new ids: a defect);
- secrets: the client secret, the client certificate's private key (the kinds in
  ``CERTIFICATE_KINDS`` authenticate with the certificate, the others with the secret), the
  IoT tokens, and every SAS signature, access token and client assertion (its signature) the
  emulator handed out or received, searched for in the logs, the errors, the workspace, the
  state folder (outbox, checkpoints, quarantine; gzip files read), the run summaries, and the
  output of the other commands and the dashboard's pages afterwards (bench/chaos_outputs.py).
  The count must be 0.

Prints one table: fault kind, credential, runs, rows expected, rows stored, lost, duplicated, Sentinel raw,
after dedup, lost and duplicated, faults injected, secrets found, files left behind (the outbox
waiting or staged, downloads, half-written files), seconds.

Usage: python bench/chaos.py [--devices N] [--seed S] [--rate R] [--max-runs M] [--kinds K,...]
"""

from __future__ import annotations

import argparse
import io
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chaos_outputs import as_environment, read_commands, secrets_found

KINDS = (
    "none",
    "throttle",
    "server_error",
    "reset",
    "slow",
    "truncated_export",
    "expired_link",
    "token_expiry",
    "ingestion_down",
    "keyvault_down",
    "kill",
)
_WHOLE_RUN = ("ingestion_down", "keyvault_down")
# Kinds whose syncs authenticate with the app's certificate (the others with its client
# secret): token requests are many under these, so the key has many chances to leak.
CERTIFICATE_KINDS = ("throttle", "reset", "token_expiry", "kill")
# Faults that only export files meet: few requests, so a higher share to be sure of some.
_EXPORT_RATE = 0.5
_STAMPS = ("TimeGenerated", "SnapshotTime", "RunId", "BatchId")
# The run log has a row per dataset and run (more runs, more rows, by design); a first sync
# reads no vulnerability changes (the full export it takes covers the state).
_IGNORED = {"EPF_Runs_CL", "EPF_VulnerabilityChanges_CL"}


@dataclass
class FaultResult:
    kind: str
    credential: str = "secret"
    runs: int = 0
    clean: bool = False
    expected: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    sentinel_raw: int = 0
    sentinel_dedup: int = 0
    sentinel_lost: int = 0
    sentinel_duplicated: int = 0
    struck: int = 0
    secrets_found: int = 0
    read_failures: int = 0  # other commands or dashboard pages that failed afterwards
    assertions: int = 0  # client assertions the token endpoint received (certificate kinds)
    leftovers: int = 0  # files left in the outbox, its staging, the work folder, or half-written
    seconds: float = 0.0
    by_table: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def run_fault(
    kind: str,
    *,
    devices: int,
    seed: int,
    rate: float,
    max_runs: int,
    work: Path,
    kills: int = 7,
    kill_horizon: float = 10.0,
) -> FaultResult:
    """Sync an emulated tenant under ``kind`` until a run is clean; compare with the truth."""
    from endpoint_forensics.config import load_settings
    from endpoint_forensics.errors import EpfError
    from endpoint_forensics.identity.keyvault import resolve_references
    from endpoint_forensics.pipeline.run import run_sync
    from endpoint_forensics.sinks import close_sinks, open_sinks
    from epf_emulator import Chaos, Emulator, EmulatorSettings

    started = time.perf_counter()
    result = FaultResult(kind)
    chaos = None
    if kind not in ("none", "kill"):
        share = 1.0 if kind in _WHOLE_RUN else _EXPORT_RATE if "export" in kind or "link" in kind else rate  # fmt: skip
        chaos = Chaos(kind, share, seed=seed, slow_seconds=3.0)
    settings_kw: dict[str, Any] = {"devices": devices, "seed": seed, "chaos": chaos}
    if kind == "keyvault_down":
        settings_kw["keyvault_secrets"] = {}
    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger("endpoint_forensics")
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.DEBUG)
    logging.getLogger("azure").setLevel(logging.CRITICAL)  # as the CLI: we report, once
    try:
        with Emulator(EmulatorSettings(**settings_kw)) as emu:
            config = work / "epf.toml"
            result.credential = "certificate" if kind in CERTIFICATE_KINDS else "secret"
            emu.write_config(config, credential=result.credential)
            environ: dict[str, str] = {}
            if kind == "keyvault_down":
                _read_secret_from_vault(emu, config)
                environ["VAULT_APP_SECRET"] = emu.client_secret
            overrides = {
                "store.path": str(work / "ws.duckdb"),
                "state.dir": str(work / "state"),
                **_chaos_overrides(config),
            }
            outputs: list[str] = []
            if kind == "kill":
                result.struck = _kill_syncs(
                    config, overrides, environ, kills, kill_horizon, seed, outputs
                )
            for number in range(1, max_runs + 1):
                result.runs = number
                try:
                    settings = load_settings(
                        config,
                        environ=environ,
                        overrides=overrides,
                        keyvault_resolver=resolve_references,
                    )
                except EpfError as exc:  # the vault is down: no run can start
                    result.errors.append(f"run {number}: no run: {exc}")
                    if kind in _WHOLE_RUN:
                        emu.set_chaos(None)
                    continue
                sinks = open_sinks(settings)
                try:
                    summary = run_sync(settings, sinks)
                finally:
                    close_sinks(sinks)
                result.errors += [f"run {number}: {line}" for line in summary.errors()]
                if kind in _WHOLE_RUN:
                    emu.set_chaos(None)
                if summary.exit_code == 0:
                    result.clean = True
                    break
            if kind != "kill":
                result.struck = sum(emu.stats()["chaos"]["struck"].values())
            _compare(result, emu, settings)
            left = _leftovers(work / "state")
            result.leftovers = len(left)
            result.errors += [f"left behind: {path}" for path in left]
            read = read_commands(config, work, environ, overrides)
            failures = [line for line in read if line.startswith("epf ")]
            result.read_failures = len(failures)
            result.errors += failures
            outputs += read
            said = logs.getvalue() + "\n".join(outputs)
            result.secrets_found = secrets_found(emu, work, said, result.errors)
            result.assertions = len(emu.received_assertion_signatures())
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    result.seconds = time.perf_counter() - started
    return result


def _kill_syncs(
    config: Path,
    overrides: dict[str, Any],
    environ: dict[str, str],
    kills: int,
    horizon: float,
    seed: int,
    outputs: list[str],
) -> int:
    """`epf sync` in a process of its own, SIGKILLed after a random time up to ``horizon``
    seconds, up to ``kills`` times, each next one resuming the last; until one finishes before
    its kill. Returns how many it killed."""
    import os
    import random
    import subprocess

    env = {**os.environ, **environ, **as_environment(overrides)}
    env.pop("EPF_CONFIG", None)
    chooser = random.Random(seed)
    killed = 0
    for _ in range(kills):
        process = subprocess.Popen(
            [sys.executable, "-m", "endpoint_forensics", "sync", "--config", str(config)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            out, err = process.communicate(timeout=chooser.uniform(0.5, horizon))
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            killed += 1
        else:
            if process.returncode == 0:  # it finished before its kill: nothing left to kill
                outputs += [out, err]
                break
        outputs += [out, err]
    return killed


def _chaos_overrides(config: Path) -> dict[str, Any]:
    """A day's interval for every dataset (each is collected once while the clock stands
    still), the export files (so that export faults have files to strike), and timeouts
    below the emulator's slow answers."""
    text = config.read_text()
    day: dict[str, Any] = {"tenants.0.export_mode": "files", "tenants.0.timeout_seconds": 2.0}
    from endpoint_forensics.tables.datasets import dataset_names

    day["tenants.0.interval_hours"] = {d: 24.0 for d in dataset_names("tenant")}
    for index in range(text.count("[[sensors]]")):
        day[f"sensors.{index}.interval_hours"] = {d: 24.0 for d in dataset_names("sensor")}
        day[f"sensors.{index}.timeout_seconds"] = 2.0
    for index in range(text.count("[[consoles]]")):
        day[f"consoles.{index}.interval_hours"] = {d: 24.0 for d in dataset_names("console")}
        day[f"consoles.{index}.timeout_seconds"] = 2.0
    day["sentinel.timeout_seconds"] = 2.0
    return day


def _read_secret_from_vault(emu: Any, config: Path) -> None:
    """The tenant's client secret as a Key Vault reference (the emulated vault holds it)."""
    text = config.read_text().replace(
        f'"{emu.client_secret}"', f'"keyvault:{emu.keyvault_url}/epf-client-secret"'
    )
    text += (
        "[keyvault]\n"
        f'tenant_id = "{emu.tenant_id}"\n'
        f'client_id = "{emu.client_id}"\n'
        'client_secret = "env:VAULT_APP_SECRET"\n'
        f'authority_host = "{emu.base_url}"\n'
        f'ca_bundle = "{emu.ca_path}"\n'
    )
    config.write_text(text)


def _compare(result: FaultResult, emu: Any, settings: Any) -> None:
    import duckdb

    truth = {t: n for t, n in emu.stats()["truth"].items() if t not in _IGNORED}
    ingested = emu.ingested_counts()
    con = duckdb.connect(str(settings.store.path), read_only=True)
    try:
        for table, expected in sorted(truth.items()):
            rows, distinct = con.execute(
                f'SELECT (SELECT count(*) FROM "{table}"), (SELECT count(*) FROM'
                f' (SELECT DISTINCT * EXCLUDE ({", ".join(_STAMPS)}) FROM "{table}"))'
            ).fetchall()[0]
            sent = ingested.get(table, {"raw": 0, "distinct": 0})
            content = _distinct_content(emu.ingested_rows(table))
            counts = {
                "expected": expected,
                "stored": rows,
                "lost": max(0, expected - distinct),
                "duplicated": rows - distinct,
                "sentinel_raw": sent["raw"],
                "sentinel_dedup": sent["distinct"],
                "sentinel_lost": max(0, distinct - content),
                "sentinel_duplicated": sent["distinct"] - content,
            }
            result.by_table[table] = counts
            for key in counts:
                setattr(result, key, getattr(result, key) + counts[key])
    finally:
        con.close()


def _leftovers(state: Path) -> list[Path]:
    """Files a clean end leaves none of: uploads waiting or staged, downloads in the work
    folder, half-written files."""
    outbox = state / "outbox" / "sentinel"
    waiting = [f for d in ("pending", "staging") for f in (outbox / d).rglob("*") if f.is_file()]
    work = [f for f in (state / "work").rglob("*") if f.is_file()]
    partial = list(state.rglob("*.partial"))
    return [*waiting, *work, *partial]


def _distinct_content(rows: list[dict[str, Any]]) -> int:
    return len({repr(sorted((k, v) for k, v in r.items() if k not in _STAMPS)) for r in rows})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--max-runs", type=int, default=6)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--kills", type=int, default=7, help="SIGKILLs of the kill kind")
    parser.add_argument("--kill-horizon", type=float, default=10.0, help="seconds")
    parser.add_argument("--verbose", action="store_true", help="per table, and every error")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    print(
        f"chaos: {args.devices:,} devices, seed {args.seed}, {args.rate:.0%} of requests"
        f" (export faults {_EXPORT_RATE:.0%}, whole-run faults the first run), at most"
        f" {args.max_runs} runs",
        flush=True,
    )
    header = (
        f"{'fault':<17}{'auth':>7}{'runs':>5}{'expected':>10}{'stored':>9}{'lost':>6}{'dup':>6}"
        f"{'sent raw':>10}{'dedup':>9}{'s.lost':>8}{'s.dup':>7}{'struck':>8}{'secrets':>9}"
        f"{'left':>6}{'seconds':>9}"
    )
    print(header)
    started = time.perf_counter()
    failed = False
    for kind in kinds:
        work = Path(tempfile.mkdtemp(prefix=f"epf-chaos-{kind}-"))
        try:
            r = run_fault(
                kind,
                devices=args.devices,
                seed=args.seed,
                rate=args.rate,
                max_runs=args.max_runs,
                work=work,
                kills=args.kills,
                kill_horizon=args.kill_horizon,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(
            f"{r.kind:<17}{r.credential[:4]:>7}{r.runs:>5}{r.expected:>10,}{r.stored:>9,}{r.lost:>6}{r.duplicated:>6}"
            f"{r.sentinel_raw:>10,}{r.sentinel_dedup:>9,}{r.sentinel_lost:>8}"
            f"{r.sentinel_duplicated:>7}{r.struck:>8}{r.secrets_found:>9}{r.leftovers:>6}"
            f"{r.seconds:>9.1f}"
            + ("" if r.clean else "  (no clean run)")
            + (f"  ({r.read_failures} commands or pages failed after)" if r.read_failures else ""),
            flush=True,
        )
        if args.verbose:
            for table, counts in r.by_table.items():
                print(f"    {table}: {counts}")
            for line in r.errors:
                print(f"    {line[:300]}")
        failed |= (
            bool(
                r.lost
                or r.duplicated
                or r.sentinel_lost
                or r.sentinel_duplicated
                or r.secrets_found
                or r.leftovers
                or r.read_failures
            )
            or not r.clean
        )
    print(f"chaos: {time.perf_counter() - started:.0f} s in all")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
