"""Triage is computed again when what it reads changed, or a day on: a quiet hour's run leaves
the last triage standing and says so, rather than writing the same decisions again."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from endpoint_forensics.config import Settings, load_settings
from endpoint_forensics.pipeline.run import run_sync
from endpoint_forensics.pipeline.runlog import RunSummary
from endpoint_forensics.pipeline.triage import TRIAGE_READS
from endpoint_forensics.sinks.duckdb import DuckDBSink
from epf_emulator import Emulator, EmulatorSettings

pytestmark = pytest.mark.e2e


def _sync(settings: Settings, now: datetime) -> RunSummary:
    sink = DuckDBSink(settings.store.path)
    try:
        summary = run_sync(settings, [sink], now=now)
    finally:
        sink.close()
    assert summary.exit_code == 0, summary.errors()
    return summary


def _triage(summary: RunSummary) -> tuple[str, str]:
    [outcome] = [o for o in summary.outcomes if o.dataset == "triage"]
    return outcome.outcome, outcome.reason


def _triage_runs(db: Path) -> int:
    with duckdb.connect(str(db), read_only=True) as con:
        return int(con.sql('SELECT count(DISTINCT RunId) FROM "EPF_Triage_CL"').fetchall()[0][0])


def test_the_tables_triage_reads_include_the_ot_sensors_lists():
    # Read from the parts' texts: the OT pairs come from the sensors' CVE, device and
    # exposure lists, so a run that changed only those must triage again.
    assert {"EPF_IotCves_CL", "EPF_IotDevices_CL", "EPF_IotExposure_CL"} <= TRIAGE_READS
    assert {"EPF_Vulnerabilities_CL", "EPF_Devices_CL", "EPF_Kev_CL"} <= TRIAGE_READS
    assert "EPF_Triage_CL" not in TRIAGE_READS


def test_a_quiet_run_leaves_the_last_triage_standing_until_a_change_or_a_day(tmp_path):
    with Emulator(EmulatorSettings(iot_sensors=0, devices=300, seed=5)) as emu:
        emu.write_config(tmp_path / "epf.toml", iot="none", sentinel=False, feeds=False)
        settings = load_settings(
            tmp_path / "epf.toml",
            environ={},
            overrides={"store.path": str(tmp_path / "ws.duckdb"), "state.dir": str(tmp_path)},
        )
        db = settings.store.path
        first = emu.now
        assert _triage(_sync(settings, first))[0] == "Succeeded"

        # An hour on, the world unchanged: posture is collected again and changes nothing.
        quiet = _sync(settings, first + timedelta(hours=1))
        outcome, reason = _triage(quiet)
        assert outcome == "Skipped"
        assert "nothing it reads changed" in reason
        collected = [o for o in quiet.outcomes if o.table in TRIAGE_READS]
        assert any(o.outcome == "Succeeded" and o.rows for o in collected)
        assert _triage_runs(db) == 1

        # Twelve hours of the tenant's life: vulnerabilities change, triage follows.
        emu.advance(12)
        assert _triage(_sync(settings, emu.now))[0] == "Succeeded"
        assert _triage_runs(db) == 2
        assert _triage(_sync(settings, emu.now + timedelta(hours=1)))[0] == "Skipped"

        # A day after the last triage, unchanged or not: its time windows have moved on.
        assert _triage(_sync(settings, emu.now + timedelta(hours=25)))[0] == "Succeeded"
        assert _triage_runs(db) == 3
