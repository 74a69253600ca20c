"""`epf sync --workers N`: the fan-out's units in worker processes on one machine, the state
folder as the store: the rows equal the truth, a second run collects only what is due, and a
workspace as destination is refused with the key."""

import subprocess
import sys
from pathlib import Path

import pytest

from endpoint_forensics.config import load_settings
from endpoint_forensics.pipeline.work import work_items
from epf_emulator import Emulator, EmulatorSettings

pytestmark = pytest.mark.e2e


def _epf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "endpoint_forensics", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_units_in_two_worker_processes_deliver_the_truth(tmp_path: Path) -> None:
    with Emulator(EmulatorSettings(devices=50, seed=31, iot_sensors=0)) as emu:
        config = tmp_path / "epf.toml"
        emu.write_config(config, iot="none")
        state = tmp_path / "state"
        head = f'[store]\nenabled = false\n\n[state]\ndir = "{state}"\n\n'
        config.write_text(head + config.read_text())
        args = ["sync", "--config", str(config), "--now", emu.now.isoformat(), "--workers", "2"]
        done = _epf(*args)
        assert done.returncode == 0, done.stdout + done.stderr
        truth = emu.stats()["truth"]
        ingested = emu.stats()["ingested"]
        for table, rows in truth.items():
            if table != "EPF_Runs_CL":
                assert ingested.get(table, 0) == rows, table
        items = work_items(load_settings(config, environ={}))
        assert ingested["EPF_Runs_CL"] == len(items)
        # Each unit's state in the state folder, under its own name.
        for item in items:
            assert (state / "units" / item.key / "checkpoints").is_dir(), item.key
        # An hour later, only what is collected at every run is due.
        again = _epf(*args)
        assert again.returncode == 0, again.stdout + again.stderr
        tenant = load_settings(config, environ={}).tenants[0]
        every_run = [i for i in items if not tenant.interval_hours_for(i.dataset)]
        assert emu.stats()["ingested"]["EPF_Runs_CL"] == len(items) + len(every_run)


def test_workers_into_a_workspace_are_refused_with_the_key(tmp_path: Path) -> None:
    with Emulator(EmulatorSettings(devices=5, seed=3, iot_sensors=0)) as emu:
        config = tmp_path / "epf.toml"
        emu.write_config(config, iot="none")
        db = str(tmp_path / "w.duckdb")
        done = _epf("sync", "--config", str(config), "--workers", "2", "--db", db)
    assert done.returncode == 2
    assert "store.enabled" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
