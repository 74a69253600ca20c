"""A full disk and a read-only state folder, on a real size-limited filesystem (tmpfs): a clear
error, no traceback, no half-written file, nothing lost, and the next run recovers."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from endpoint_forensics.config import load_settings
from endpoint_forensics.tables import TABLES
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
    # one for triage: not one line per dataset. Besides, at most one per destination (the
    # workspace, Sentinel) for the run's own EPF_Runs_CL rows, which each may refuse.
    assert sum("not collected: " in line for line in errors) == 1
    own = [line for line in errors if "the run's EPF_Runs_CL rows" in line]
    assert len(own) <= 2 and len(errors) - len(own) <= 3, errors
    assert "Failed" in full.stdout
    assert not list(small_disk.rglob("*.partial"))  # no half-written file left behind
    assert not list((state / "outbox" / "sentinel" / "staging").iterdir())

    assert _mount("-o", "remount,size=64m", target=small_disk).returncode == 0
    recovered = _sync(config, db)
    assert recovered.returncode == 0, recovered.stderr
    # Nothing lost: the workspace holds the emulator's whole fleet, and Sentinel every row the
    # workspace holds, by key. Sentinel may hold more only from runs that EPF_Runs_CL
    # marks Failed for that table: what reached it from a dataset that then failed on the full
    # disk cannot be recalled (the next run sends that snapshot again, or resumes it).
    settings = load_settings(config, environ={}, overrides={"store.path": str(db)})
    con = duckdb.connect(str(db), read_only=True)
    try:
        devices = con.execute('SELECT count(DISTINCT DeviceId) FROM "EPF_Devices_CL"').fetchall()
        failed = set(
            con.execute(
                "SELECT RunId, TableName FROM \"EPF_Runs_CL\" WHERE Outcome = 'Failed'"
            ).fetchall()
        )
        local = {table: _identities(con, table) for table in local_counts(settings)}
    finally:
        con.close()
    assert devices[0][0] == tenant.stats()["truth"]["EPF_Devices_CL"] == 300
    sent = {table: _sent_identities(tenant, table) for table in ingested_since(tenant, before)}
    assert sorted(sent) == sorted(local)
    # A run's own EPF_Runs_CL rows that a sink could not take wait in the state folder for the
    # next run; the one loss a full disk may still cause is when even that small file finds no
    # room, and the run says so for that sink.
    runs_lost = {
        sink
        for sink in ("duckdb", "sentinel")
        if f"{sink}: the run's EPF_Runs_CL rows" in full.stderr
        and "could not be kept for the next run either" in full.stderr
    }
    said = (full.stderr, recovered.stderr)  # what each run said, when not
    for table, rows in local.items():
        missing, extra = rows - sent[table], sent[table] - rows
        if table == "EPF_Runs_CL":
            assert not missing or "sentinel" in runs_lost, (missing, said)
            assert not extra or "duckdb" in runs_lost, (extra, said)
            continue
        # A snapshot that a failed run began in Sentinel and the next run resumed keeps the
        # failed run's RunId there, while the workspace may have begun that snapshot anew: the
        # rows are there all the same, by key.
        sent_keys = {row[1:] for row in sent[table]}
        lost = [row for row in missing if row[1:] not in sent_keys]
        assert not lost, (table, lost, said)
        unexplained = [row for row in extra if (row[0], table) not in failed]
        assert not unexplained, (table, unexplained, said)

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


def _identity(table: str, row: dict[str, Any]) -> tuple[str, ...]:
    """A row as both destinations show it: its run and its key, as text."""
    key = TABLES[table].key
    return (str(row["RunId"]), *(_text(row.get(column)) for column in key))


def _text(value: Any) -> str:
    if isinstance(value, str) and len(value) >= 19 and value[10:11] == "T":
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value)


def _identities(con: duckdb.DuckDBPyConnection, table: str) -> Counter[tuple[str, ...]]:
    cursor = con.execute(f'SELECT * FROM "{table}"')
    names = [d[0] for d in cursor.description]
    return Counter(
        _identity(table, dict(zip(names, row, strict=True))) for row in cursor.fetchall()
    )


def _sent_identities(tenant: Emulator, table: str) -> Counter[tuple[str, ...]]:
    return Counter(_identity(table, row) for row in tenant.ingested_rows(table))
