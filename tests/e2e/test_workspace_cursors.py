"""A workspace's history has no silent holes: each sink keeps its own checkpoints (the local
workspace in itself), so a new, restored or added destination gets what it lacks, a gap that
cannot be filled is recorded, and a skip always says why."""

import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from endpoint_forensics.config import Settings, load_settings
from endpoint_forensics.config.models import DATASETS
from endpoint_forensics.contracts import SavedCheckpoint
from endpoint_forensics.pipeline.run import RunSummary, run_sync
from endpoint_forensics.sinks import close_sinks, open_sinks
from endpoint_forensics.sinks.checkpoint_file import FileCheckpointStore
from epf_emulator import Emulator, EmulatorSettings

from .sentinel_support import ingested_since

pytestmark = pytest.mark.e2e

BASELINES = ("secure_config", "vulnerabilities", "software_inventory", "cve_catalog")
CHANGE_KEY = 'SELECT RecordId, EventTimestamp, Status FROM "EPF_VulnerabilityChanges_CL"'


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(EmulatorSettings(devices=120, seed=23, iot_sensors=0)) as running:
        yield running


def settings_for(
    emu: Emulator, folder: Path, db: Path, *, sentinel: bool = False, **overrides: Any
) -> Settings:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "epf.toml"
    emu.write_config(config, iot="none", sentinel=sentinel)
    values = {"store.path": str(db), "state.dir": str(folder / "state"), **overrides}
    return load_settings(config, environ={}, overrides=values)


def sync(emu: Emulator, settings: Settings) -> RunSummary:
    """One run at the emulated now (so baselines fall due as the emulated days pass)."""
    now = datetime.fromisoformat(emu.stats()["clock"]["now"])
    sinks = open_sinks(settings)
    try:
        return run_sync(settings, sinks, now=now)
    finally:
        close_sinks(sinks)


def outcomes(summary: RunSummary) -> dict[str, str]:
    return {o.dataset: o.outcome for o in summary.outcomes}


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def latest_counts(db: Path) -> dict[str, int]:
    """Rows of each baseline table's latest snapshot."""
    tables = ["EPF_SecureConfig_CL", "EPF_Vulnerabilities_CL", "EPF_SoftwareInventory_CL"]
    return {
        t: rows(
            db,
            f'SELECT count(*) FROM "{t}" WHERE SnapshotTime = (SELECT max(SnapshotTime) FROM "{t}")',
        )[0][0]
        for t in tables
    }


def test_a_new_workspace_with_old_state_gets_the_full_baseline(emu, tmp_path):
    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    first = sync(emu, settings_for(emu, tmp_path, a))
    assert set(outcomes(first).values()) == {"Succeeded"}
    # Same config and state folder, a new workspace file.
    second = sync(emu, settings_for(emu, tmp_path, b))
    assert outcomes(second) == dict.fromkeys((*DATASETS, "triage"), "Succeeded")
    assert latest_counts(b) == latest_counts(a)
    assert all(n > 0 for n in latest_counts(b).values())
    # Back to the first: it holds this snapshot already, so nothing is taken again.
    third = sync(emu, settings_for(emu, tmp_path, a))
    assert all(outcomes(third)[d] == "Skipped" for d in BASELINES)


def test_every_skip_says_why_and_when_the_dataset_is_next_due(emu, tmp_path):
    db = tmp_path / "ws.duckdb"
    sync(emu, settings_for(emu, tmp_path, db))
    second = sync(emu, settings_for(emu, tmp_path, db))
    skipped = [o for o in second.outcomes if o.outcome == "Skipped"]
    assert {o.dataset for o in skipped} == set(BASELINES)
    assert all(o.reason.startswith("not due: next snapshot 20") for o in skipped)
    stored = rows(
        db,
        f"SELECT Dataset, Reason FROM \"EPF_Runs_CL\" WHERE RunId = '{second.run_id}' "
        "AND Outcome = 'Skipped'",
    )
    assert sorted(d for d, _ in stored) == sorted(BASELINES)
    assert all(reason.startswith("not due: next snapshot") for _, reason in stored)
    vulnerabilities = next(o for o in skipped if o.dataset == "vulnerabilities")
    assert vulnerabilities.reason.endswith(", every 168 h")


def test_a_restored_workspace_is_filled_from_its_own_cursors(emu, tmp_path):
    kept, restored = tmp_path / "kept.duckdb", tmp_path / "restored.duckdb"
    sync(emu, settings_for(emu, tmp_path / "k", kept))
    sync(emu, settings_for(emu, tmp_path / "r", restored))
    backup = tmp_path / "backup.duckdb"
    shutil.copy(restored, backup)
    for _ in range(3):  # three days of runs; then the restored one goes back to its backup
        emu.advance(24)
        sync(emu, settings_for(emu, tmp_path / "k", kept))
        sync(emu, settings_for(emu, tmp_path / "r", restored))
    shutil.copy(backup, restored)
    emu.advance(24)
    sync(emu, settings_for(emu, tmp_path / "k", kept))
    summary = sync(emu, settings_for(emu, tmp_path / "r", restored))
    # Within the 14 days of the changes API: the restored copy gets every change it lacked,
    # once, and the daily baselines; nothing is missing, nothing recorded as a gap.
    assert outcomes(summary)["secure_config"] == "Succeeded"
    assert sorted(rows(restored, CHANGE_KEY)) == sorted(rows(kept, CHANGE_KEY))
    assert len(set(rows(restored, CHANGE_KEY))) == len(rows(restored, CHANGE_KEY))
    assert all(not o.gaps for o in summary.outcomes)


def test_a_copy_older_than_the_change_window_gets_a_recorded_gap(emu, tmp_path):
    db = tmp_path / "ws.duckdb"
    sync(emu, settings_for(emu, tmp_path, db))
    backup = tmp_path / "backup.duckdb"
    shutil.copy(db, backup)
    emu.advance(24 * 20)  # three weeks later the backup is restored
    sync(emu, settings_for(emu, tmp_path, db))
    shutil.copy(backup, db)
    summary = sync(emu, settings_for(emu, tmp_path, db))
    assert outcomes(summary)["vulnerability_changes"] == "Succeeded"
    [changes] = [o for o in summary.outcomes if o.dataset == "vulnerability_changes"]
    [gap] = changes.gaps
    assert gap["sinks"] == ["duckdb"] and "14 days" in gap["reason"]
    assert datetime.fromisoformat(gap["end"]) > datetime.fromisoformat(gap["start"])
    [(stored,)] = rows(
        db,
        f"SELECT Gaps FROM \"EPF_Runs_CL\" WHERE RunId = '{summary.run_id}' "
        "AND Dataset = 'vulnerability_changes'",
    )
    assert orjson.loads(stored)[0]["sinks"] == ["duckdb"]


def test_a_deleted_state_folder_duplicates_no_change_event(emu, tmp_path):
    db = tmp_path / "ws.duckdb"
    settings = settings_for(emu, tmp_path, db)
    sync(emu, settings)
    emu.advance(30)
    sync(emu, settings)
    before = rows(db, CHANGE_KEY)
    assert before
    shutil.rmtree(settings.state.dir)
    emu.advance(6)
    summary = sync(emu, settings)
    assert all(outcomes(summary)[d] == "Skipped" for d in BASELINES)
    after = rows(db, CHANGE_KEY)
    assert len(set(after)) == len(after)  # no change event twice
    assert set(before) <= set(after)


def test_sentinel_added_after_the_local_store_gets_its_baseline(emu, tmp_path):
    db = tmp_path / "ws.duckdb"
    sync(emu, settings_for(emu, tmp_path, db))
    before = dict(emu.stats()["ingested"])
    summary = sync(emu, settings_for(emu, tmp_path, db, sentinel=True))
    assert summary.exit_code == 0, summary.errors()
    ingested = ingested_since(emu, before)
    # The local store had this snapshot: collected once, given to Sentinel alone.
    assert ingested["EPF_Vulnerabilities_CL"] == latest_counts(db)["EPF_Vulnerabilities_CL"]
    assert ingested["EPF_SecureConfig_CL"] == latest_counts(db)["EPF_SecureConfig_CL"]
    local = rows(db, 'SELECT count(DISTINCT RunId) FROM "EPF_Vulnerabilities_CL"')[0][0]
    assert local == 1


def test_a_workspace_written_before_checkpoints_moved_into_it_keeps_its_place(emu, tmp_path):
    db = tmp_path / "ws.duckdb"
    settings = settings_for(emu, tmp_path, db)
    sync(emu, settings)
    # As the previous version left it: checkpoints in the state folder, none in the workspace.
    legacy = FileCheckpointStore(settings.state.dir)
    con = duckdb.connect(str(db))
    for scope, dataset, state in con.execute(
        "SELECT scope, dataset, state FROM _epf_checkpoints"
    ).fetchall():
        legacy.save(SavedCheckpoint(scope, dataset, orjson.loads(state)))
    con.execute("DELETE FROM _epf_checkpoints")
    con.close()
    emu.advance(6)
    before = rows(db, CHANGE_KEY)
    summary = sync(emu, settings)
    assert all(outcomes(summary)[d] == "Skipped" for d in BASELINES)
    after = rows(db, CHANGE_KEY)
    assert len(set(after)) == len(after) and set(before) <= set(after)
