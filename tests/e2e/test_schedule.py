"""`epf run`: the collection on a schedule, polling IoT events sooner while the API caps them."""

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from endpoint_forensics.pipeline.scheduler import run_on_schedule
from epf_emulator import Emulator, EmulatorSettings

from .test_iot import iot_settings

pytestmark = pytest.mark.e2e


def test_ticks_come_sooner_while_events_are_capped(tmp_path: Path) -> None:
    settings_kw = {"devices": 0, "seed": 9, "iot_sensors": 1, "iot_console": False,
                   "iot_events_per_hour": 1000.0, "iot_event_backlog_minutes": 4.0}  # fmt: skip
    with Emulator(EmulatorSettings(**settings_kw)) as emu:
        settings = iot_settings(emu, tmp_path, overrides={"sensors.0.datasets": ["events"]})
        elapsed = [0.0]
        sleeps: list[float] = []

        def sleep(seconds: float) -> None:  # the emulated clock moves instead
            sleeps.append(seconds)
            elapsed[0] += seconds
            emu.advance(seconds / 3600)

        summaries = run_on_schedule(
            settings,
            every_seconds=3600,
            runs=6,
            min_every_seconds=600,
            sleep=sleep,
            clock=lambda: elapsed[0],
            now=lambda: emu.now,
        )
    assert len(summaries) == 6
    gapped = [bool(s.outcomes[0].gaps) for s in summaries]
    # An hour of 1,000 events overflows even type by type: the next tick comes sooner, and a
    # quarter of an hour does not.
    assert gapped[1] and not gapped[-1]
    assert sleeps[0] == 3600 and min(sleeps) < 3600 and sleeps[1] < sleeps[0]


def test_epf_run_repeats_the_sync(tmp_path: Path) -> None:
    with Emulator(EmulatorSettings(devices=20, seed=4, iot_sensors=0)) as emu:
        config = tmp_path / "epf.toml"
        emu.write_config(config, iot="none", sentinel=False)
        db = tmp_path / "ws.duckdb"
        result = subprocess.run(
            [sys.executable, "-m", "endpoint_forensics", "run", "--config", str(config),
             "--db", str(db), "--every", "0", "--runs", "2"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    con = duckdb.connect(str(db), read_only=True)
    runs = con.execute("SELECT count(DISTINCT RunId) FROM EPF_Runs_CL").fetchall()[0][0]
    skipped = con.execute("SELECT count(*) FROM EPF_Runs_CL WHERE Outcome = 'Skipped'").fetchall()[
        0
    ][0]
    con.close()
    assert runs == 2
    assert skipped >= 3  # the second run skips the baselines that are not due yet
