"""A full disk and a read-only state folder, on a real size-limited filesystem (tmpfs): a clear
error, no traceback, no half-written file, nothing lost, and the next run recovers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from endpoint_forensics.config import load_settings
from epf_emulator import Emulator, EmulatorSettings

from .sentinel_support import ingested_since, local_counts

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tenant() -> Iterator[Emulator]:
    with Emulator(EmulatorSettings(devices=300, seed=5)) as emu:
        yield emu


def _mount(*options: str, target: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["mount", *options, target.as_posix()], capture_output=True, text=True, check=False
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 600 KB filesystem: the state folder and the workspace fill it within the first
    datasets. Mounting needs root (CAP_SYS_ADMIN), as in CI's container."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = _mount("-t", "tmpfs", "-o", "size=600k", "tmpfs", target=disk)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", disk.as_posix()], check=False)


def _sync(config: Path, db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "endpoint_forensics", "sync", "--config", str(config),
         "--db", str(db)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def test_a_full_disk_fails_clearly_and_the_next_run_recovers_everything(
    tenant: Emulator, tmp_path: Path, small_disk: Path
) -> None:
    config = tmp_path / "epf.toml"
    tenant.write_config(config)  # the workspace and the emulated Sentinel both
    state, db = small_disk / "state", small_disk / "ws.duckdb"
    config.write_text(config.read_text() + f'\n[state]\ndir = "{state.as_posix()}"\n')
    before = dict(tenant.stats()["ingested"])

    full = _sync(config, db)
    assert full.returncode == 3, full.stderr
    assert "Traceback" not in full.stderr
    errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert any("No space left on device" in l and "make room" in l for l in errors), errors
    # One line for the first dataset that failed, one for those not collected after it and
    # one for triage: not one line per dataset.
    assert sum("not collected: " in line for line in errors) == 1
    assert len(errors) <= 4, errors
    assert "Failed" in full.stdout
    assert not list(small_disk.rglob("*.partial"))  # no half-written file left behind
    assert not list((state / "outbox" / "sentinel" / "staging").iterdir())

    assert _mount("-o", "remount,size=64m", target=small_disk).returncode == 0
    recovered = _sync(config, db)
    assert recovered.returncode == 0, recovered.stderr
    # Nothing lost: the workspace holds the emulator's whole fleet, and Sentinel every row the
    # workspace holds. Sentinel also holds what reached it from a dataset that then failed on
    # the full disk (it cannot be recalled): only rows of runs that EPF_Runs_CL marks Failed
    # for that table, so leaving those out gives exactly the workspace's rows.
    settings = load_settings(config, environ={}, overrides={"store.path": str(db)})
    con = duckdb.connect(str(db), read_only=True)
    try:
        devices = con.execute('SELECT count(DISTINCT DeviceId) FROM "EPF_Devices_CL"').fetchall()
        # Per source: the sources are collected at once, so one sensor's devices may fail on
        # the full disk in the run where the other's were delivered.
        failed = set(
            con.execute(
                'SELECT RunId, TableName, SourceName, Dataset FROM "EPF_Runs_CL"'
                " WHERE Outcome = 'Failed'"
            ).fetchall()
        )
        # A management console writes EPF_IotDevices_CL from two datasets (v1 devices, v3
        # changes), one of which may fail in a run where the other was delivered: a row's
        # Source (the API it came from) names its dataset, as the workspace's BatchId shows.
        datasets = _datasets_by_api(con)
    finally:
        con.close()
    assert devices[0][0] == tenant.stats()["truth"]["EPF_Devices_CL"] == 300
    ingested = ingested_since(tenant, before)
    of_failed_runs = {
        table: sum(1 for r in tenant.ingested_rows(table) if _of_failed(r, table, failed, datasets))
        for table in ingested
    }
    kept = {t: n - of_failed_runs[t] for t, n in ingested.items() if n - of_failed_runs[t]}
    assert kept == local_counts(settings)

    # A read-only state folder: one clear line, and nothing is read or written.
    assert _mount("-o", "remount,ro", target=small_disk).returncode == 0
    requests = tenant.stats()["requests"]
    read_only = _sync(config, db)
    assert read_only.returncode == 2 and "Traceback" not in read_only.stderr
    (error,) = [line for line in read_only.stderr.splitlines() if line.startswith("error:")]
    assert f"the state folder {state} cannot be written (Read-only file system)" in error
    assert tenant.stats()["requests"] == requests
    assert _mount("-o", "remount,rw", target=small_disk).returncode == 0
    assert _sync(config, db).returncode == 0


def _datasets_by_api(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str, str], str]:
    """(table, appliance, API) -> the dataset that writes such rows, from the workspace's
    BatchIds (``<scope>/<run>/<dataset>/<unit>``)."""
    tables = con.execute(
        "SELECT table_name FROM information_schema.columns"
        " WHERE column_name = 'Source' AND table_name LIKE 'EPF_Iot%'"
    ).fetchall()
    found: dict[tuple[str, str, str], str] = {}
    for (table,) in tables:
        rows = con.execute(
            f"SELECT DISTINCT Appliance, Source, split_part(BatchId, '/', 3) FROM \"{table}\""
        ).fetchall()
        found.update({(table, appliance, api): dataset for appliance, api, dataset in rows})
    return found


def _of_failed(
    row: dict[str, Any],
    table: str,
    failed: set[tuple[str, str, str, str]],
    datasets: dict[tuple[str, str, str], str],
) -> bool:
    """Whether ``row`` came from a run in which its source's dataset of ``table`` failed (an
    IoT row names its sensor and its API; the others' source is the one tenant, with one
    dataset a table)."""
    appliance = row.get("Appliance")
    dataset = datasets.get((table, appliance, row.get("Source")))  # type: ignore[arg-type]
    return any(
        (run, name) == (row["RunId"], table)
        and (not appliance or appliance == source)
        and (dataset is None or dataset == of)
        for run, name, source, of in failed
    )
