"""The tenant scores dataset end to end: both scores stored each run, with Defender's time; an
answer of the wrong shape is quarantined with its reason while the other score is kept."""

from datetime import datetime

import duckdb
import orjson
import pytest

from endpoint_forensics.workspace import store
from epf_emulator import Emulator, EmulatorSettings, Fault

from .conftest import settings_for, sync

pytestmark = pytest.mark.e2e


def test_both_scores_are_kept_with_the_time_defender_computed_them(small_tenant, tmp_path):
    summary = sync(settings_for(small_tenant, tmp_path, datasets=["scores"]))
    assert summary.exit_code == 0, summary.errors()
    con = duckdb.connect(str(tmp_path / "ws.duckdb"), read_only=True)
    try:
        rows = con.execute(
            'SELECT ScoreName, Score, ScoreTime, SnapshotTime FROM "EPF_TenantScores_CL" '
            "ORDER BY ScoreName"
        ).fetchall()
    finally:
        con.close()
    assert [r[0] for r in rows] == ["Configuration", "Exposure"]
    assert all(isinstance(r[1], float) for r in rows)
    assert 0.0 <= rows[1][1] <= 100.0
    # The time Defender computed the score: the emulated now (other tests move its clock).
    emulated_now = datetime.fromisoformat(small_tenant.stats()["clock"]["now"])
    assert all(abs((r[2] - emulated_now).total_seconds()) < 60 for r in rows)


def test_an_answer_of_the_wrong_shape_is_quarantined_and_the_other_score_kept(tmp_path):
    faults = (Fault("/api/exposureScore", 200, times=1, body='["not", "an", "object"]'),)
    with Emulator(EmulatorSettings(iot_sensors=0, devices=50, seed=3, faults=faults)) as emu:
        settings = settings_for(emu, tmp_path, datasets=["scores"])
        summary = sync(settings)
    assert summary.exit_code == 0, summary.errors()
    [outcome] = summary.outcomes
    assert (outcome.rows, outcome.quarantined) == (1, 1)
    [kept] = store.run_query(settings.store.path, "EPF_TenantScores_CL").records()
    assert kept["ScoreName"] == "Configuration"
    [quarantined] = list((settings.state.dir / "quarantine").rglob("*.scores.jsonl"))
    line = orjson.loads(quarantined.read_text().splitlines()[0])
    assert "exposureScore: expected an object" in line["reason"]
