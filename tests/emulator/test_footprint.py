"""The emulator's own footprint: its start time and peak memory in the stats, DuckDB held to a
memory limit that spills to the state directory, export parts written in bounded slices."""

from __future__ import annotations

import gzip
import logging
import resource
import time
from pathlib import Path

import httpx
import pytest

from epf_emulator import Emulator, EmulatorSettings
from epf_emulator.core.startup import Startup, peak_rss_mb, process_age_seconds
from epf_emulator.world import snapshots as snapshots_module

from .conftest import client_for


def test_stats_report_the_start_time_and_the_peak_memory(
    emu: Emulator, client: httpx.Client
) -> None:
    stats = client.get(f"{emu.base_url}/_emulator/stats").json()
    process = stats["process"]
    assert set(process) == {
        "start_seconds",
        "emulator_start_seconds",
        "ready_seconds",
        "peak_rss_mb",
    }
    # From the (test) process's start, so at least the emulator's own start.
    assert 0 < process["emulator_start_seconds"] <= process["start_seconds"]
    assert process["emulator_start_seconds"] < 60  # 150 devices
    assert 0 < process["ready_seconds"] < 60  # the stats wait for the posture timeline
    # This process's peak: what getrusage says after the answer, give or take rounding.
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert 50 < process["peak_rss_mb"] <= after + 0.1
    # The keys the tests and tools rely on are still there.
    for key in ("truth", "requests", "clock", "fleet", "faults", "chaos", "ingested"):
        assert key in stats


def test_the_startup_log_line_says_how_long_the_start_took(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="epf_emulator.core.server")
    with Emulator(EmulatorSettings(iot_sensors=0, devices=3, seed=1)):
        pass
    lines = [r.getMessage() for r in caplog.records if "serving at" in r.getMessage()]
    assert len(lines) == 1 and "started in" in lines[0] and "after its process started" in lines[0]


def test_the_process_age_grows_and_a_start_counts_from_it() -> None:
    first = process_age_seconds()
    assert first is not None and first > 0  # Linux: read from /proc
    time.sleep(0.05)
    second = process_age_seconds()
    assert second is not None and second >= first
    startup = Startup()
    assert startup.start_seconds is None and startup.document()["start_seconds"] is None
    startup.serving()
    assert startup.serving_seconds is not None and startup.start_seconds is not None
    assert startup.start_seconds >= startup.serving_seconds + first - 0.02  # 10 ms ticks
    assert peak_rss_mb() > 0


def test_duckdb_is_held_to_a_memory_limit_spilling_into_the_state_dir(tmp_path: Path) -> None:
    settings = EmulatorSettings(iot_sensors=0, devices=20, seed=3, state_dir=tmp_path / "state")
    with Emulator(settings) as emu:
        tenant = emu._tenant
        assert tenant is not None
        cursor = tenant.store.cursor()
        try:
            limit, folder = cursor.execute(
                "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
            ).fetchone() or (None, None)
        finally:
            cursor.close()
        assert limit is not None and limit.endswith("MiB") and float(limit.split()[0]) <= 512
        spill = (tmp_path / "state").resolve() / "duckdb-spill"
        assert Path(str(folder)).resolve() == spill and spill.is_dir()
        # The DeviceInfo attributes are in the database, no longer in the fleet.
        assert all(device.info == {} for device in tenant.fleet.devices)
    assert not spill.exists()  # removed on stop; the state dir itself is the caller's


def test_a_part_written_in_slices_is_the_part_written_at_once(
    posture_emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = posture_emu._tenant
    assert tenant is not None
    tenant.wait_ready()
    snapshots = tenant.snapshots
    # Written in the export folder: the only one the emulator's DuckDB may write to.
    folder = tenant.exports._root
    at = tenant.clock.now_us()
    with snapshots.pinned("vulnerabilities", at) as snapshot:
        assert snapshot.rows > 300
        start, count = 5, snapshot.rows - 10
        whole, sliced = folder / "whole.json.gz", folder / "sliced.json.gz"
        snapshots.write_part(snapshot, start, count, whole)
        monkeypatch.setattr(snapshots_module, "_COPY_ROWS", 97)  # slices end mid-device
        snapshots.write_part(snapshot, start, count, sliced)
        pages = [line for batch in snapshots.lines(snapshot, start, count) for line in batch]
    try:
        lines = gzip.decompress(sliced.read_bytes()).splitlines()
        assert gzip.decompress(whole.read_bytes()).splitlines() == lines
        assert len(lines) == count == len(pages)
        # In the snapshot's order: the same rows as the JSON pages.
        assert [line.lower() for line in lines] == [p.lower().encode() for p in pages]
    finally:
        whole.unlink(missing_ok=True)
        sliced.unlink(missing_ok=True)
    assert not list(folder.glob("*.jsonl")) and not list(folder.glob("*.partial"))


def test_a_restarted_emulator_with_a_state_dir_leaves_no_spill_behind(tmp_path: Path) -> None:
    settings = EmulatorSettings(iot_sensors=0, devices=5, seed=2, state_dir=tmp_path / "s")
    spill = tmp_path / "s" / "duckdb-spill"
    spill.mkdir(parents=True)
    (spill / "left-by-a-killed-run.tmp").write_bytes(b"x")
    with Emulator(settings) as emu, client_for(emu) as client:
        assert client.get(f"{emu.base_url}/_emulator/stats").status_code == 200
        assert not (spill / "left-by-a-killed-run.tmp").exists()
