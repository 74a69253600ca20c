"""Triage end to end: a sync of the emulated tenant and its feed mirrors, then every
EPF_Triage_CL row checked against the vendored decision tables applied to its own inputs
(read with nothing but the csv module), its reasons, and the configured rules."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from endpoint_forensics.config import load_settings
from endpoint_forensics.pipeline.run import run_sync
from endpoint_forensics.sinks.duckdb import DuckDBSink
from endpoint_forensics.triage import ssvc
from endpoint_forensics.workspace import store
from epf_emulator import Emulator, EmulatorSettings

from ..triage_check import check_inputs_agree, check_triage_rows

pytestmark = pytest.mark.e2e

_TABLES = Path(ssvc.__file__).with_name("decision_tables")
_INPUTS = ("Exploitation", "Automatable", "TechnicalImpact", "MissionWellbeing", "PubliclyExposed")
_RULES = {
    "triage.mission": [{"group": "servers*", "value": "high"}, {"name": "ws-00*", "value": "low"}],
    "triage.exposed": [{"name": "ws-001*"}],
}


@pytest.fixture(scope="module")
def triaged(tmp_path_factory) -> tuple[Path, list[dict]]:
    tmp = tmp_path_factory.mktemp("triage")
    with Emulator(EmulatorSettings(iot_sensors=0, devices=400, seed=21)) as emu:
        emu.write_config(tmp / "epf.toml", iot="none", sentinel=False, feeds=True)
        overrides = {
            "store.path": str(tmp / "ws.duckdb"),
            "state.dir": str(tmp / "state"),
            "tenants.0.export_mode": "files",
            **_RULES,
        }
        settings = load_settings(tmp / "epf.toml", environ={}, overrides=overrides)
        sink = DuckDBSink(settings.store.path)
        try:
            summary = run_sync(settings, [sink], now=emu.now)
        finally:
            sink.close()
    assert summary.exit_code == 0, summary.errors()
    [outcome] = [o for o in summary.outcomes if o.dataset == "triage"]
    assert outcome.outcome == "Succeeded" and outcome.rows > 1_000
    rows = store.run_query(settings.store.path, "EPF_Triage_CL").records()
    assert len(rows) == outcome.rows
    return settings.store.path, rows


def _json(value: object) -> dict:
    return json.loads(value) if isinstance(value, str) else value  # type: ignore[return-value]


def _reasons(row: dict) -> dict:
    return _json(row["Reasons"])


def test_every_decision_is_the_vendored_tables_applied_to_the_rows_own_inputs(triaged):
    _, rows = triaged
    check_triage_rows(rows)
    # Every outcome of both tables is reached by this fleet, not one corner of them.
    assert {r["Decision"] for r in rows} == {"Track", "Track*", "Attend", "Act"}
    assert len({r["Bod2604Outcome"] for r in rows}) >= 4


def test_the_local_parts_give_each_row_the_shipped_functions_inputs(triaged):
    db, rows = triaged
    check_inputs_agree(db, rows)


def test_no_kev_cve_is_left_unexploited_whatever_vulnrichment_says(triaged):
    _, rows = triaged
    kev = [r for r in rows if r["InKev"]]
    assert kev and all(r["Exploitation"] == "active" for r in kev)
    overruled = [r for r in kev if "Vulnrichment says none" in _reasons(r)["Exploitation"]["why"]]
    assert overruled, "the mirror marks some KEV CVEs none in Vulnrichment: KEV must prevail"
    assert all(_reasons(r)["Exploitation"]["source"] == "CISA KEV" for r in overruled)


def test_every_input_has_its_value_source_and_reason(triaged):
    _, rows = triaged
    sources: dict[str, set[str]] = {name: set() for name in _INPUTS}
    for row in rows:
        reasons = _reasons(row)
        for name in _INPUTS:
            reason = reasons[name]
            assert reason["value"] == row[name], (name, row)
            assert reason["source"] and reason["why"], (name, row)
            sources[name].add(reason["source"])
        assert _json(row["ModelVersions"]) == ssvc.model_versions(short=True)
    # Each input is drawn from more than one place across the fleet, as the rules say.
    assert {"CISA KEV", "Defender", "CISA Vulnrichment"} <= sources["Exploitation"]
    assert {"CISA Vulnrichment", "CVSS vector (derived)"} <= sources["Automatable"]
    assert {"CISA Vulnrichment", "CVSS vector (derived)"} <= sources["TechnicalImpact"]
    assert sources["MissionWellbeing"] == {"config"}
    # Feed versions travel with the values they gave.
    kev_reason = next(_reasons(r)["InKev"] for r in rows if r["InKev"])
    assert kev_reason["version"] and kev_reason["why"].startswith("listed ")


def test_reasons_hold_nothing_unique_to_a_cve_or_a_device(triaged):
    # The EPSS entry gives the source and copy of the row's Epss columns, not the score: then
    # a fleet's rows share a few distinct Reasons texts, each built and stored once per run.
    _, rows = triaged
    for row in rows:
        epss = _reasons(row)["Epss"]
        assert set(epss) <= {"source", "why", "version"}, row
        assert epss["source"] == "FIRST EPSS"
        assert epss["why"].startswith("scored") is (row["Epss"] is not None), row
        text = json.dumps(_reasons(row))
        unique = [row["CveId"], row["DeviceId"], row["DeviceName"]]
        assert not [u for u in unique if u and u in text], (unique, text)


def test_the_configured_rules_give_mission_and_exposure_and_say_so(triaged):
    _, rows = triaged
    by_rule = {(r["MissionWellbeing"], _reasons(r)["MissionWellbeing"]["why"]) for r in rows}
    assert by_rule == {
        ("high", 'triage.mission group "servers*"'),
        ("low", 'triage.mission name "ws-00*"'),
        ("medium", "triage.mission_default"),
    }
    for row in rows:
        name, group = (row["DeviceName"] or "").lower(), (row["RbacGroupName"] or "").lower()
        expected = (
            "high"
            if group.startswith("servers")
            else "low"
            if name.startswith("ws-00")
            else "medium"
        )
        assert row["MissionWellbeing"] == expected, row
        exposed = _reasons(row)["PubliclyExposed"]
        if name.startswith("ws-001") and exposed["source"] == "config":
            assert row["PubliclyExposed"] is True
            assert exposed["why"] == 'triage.exposed name "ws-001*"'
    assert any(_reasons(r)["PubliclyExposed"]["source"] == "config" for r in rows), (
        "the exposed rule picked no device"
    )
    assert any(_reasons(r)["PubliclyExposed"]["why"] == "internet-facing" for r in rows), (
        "no device is internet-facing in Defender's signal"
    )


def test_one_row_per_open_device_and_cve(triaged):
    db, rows = triaged
    keys = {(r["DeviceId"], r["CveId"]) for r in rows}
    assert len(keys) == len(rows)
    at = rows[0]["SnapshotTime"]
    expected = store.run_query(
        db,
        f"EPF_TriageInputs(datetime({at})) | summarize by DeviceId, CveId",
        functions=_registry(),
    ).rows
    assert keys == {tuple(r) for r in expected}


def test_a_runs_rows_are_stored_by_device_for_one_devices_reads(triaged):
    # Sorted, each row group holds a narrow range of devices: epf forensics reads one
    # device's triage by skipping the others instead of scanning every row of the run.
    db, rows = triaged
    con = duckdb.connect(str(db), read_only=True)
    try:
        found = con.execute('SELECT DeviceId FROM "EPF_Triage_CL" ORDER BY rowid').fetchall()
        stored = [r[0] for r in found]
    finally:
        con.close()
    assert len(stored) == len(rows)
    assert stored == sorted(stored)


def _registry():
    from endpoint_forensics.analytics.functions import registry

    return registry()


def _epf(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "endpoint_forensics", *args], capture_output=True, text=True
    )


def test_epf_triage_puts_the_forensic_investigations_first_with_their_clock(triaged):
    db, rows = triaged
    result = _epf("triage", "--db", str(db), "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["open"] == len(rows)
    assert sum(report["decisions"].values()) == len(rows)
    assert report["decisions"]["Act"] == sum(r["Decision"] == "Act" for r in rows)
    outcomes = [r["outcome"] for r in report["bod2604"]]
    expected = ["3 days & forensic investigation", "3 days", "14 days", "60 days"]
    assert [o for o in expected if o in outcomes] == outcomes[
        : len([o for o in expected if o in outcomes])
    ]
    assert sum(r["items"] for r in report["bod2604"]) == len(rows)
    forensic = [r for r in rows if r["ForensicInvestigation"]]
    assert len(report["forensic"]) == min(len(forensic), 50) > 0
    item = report["forensic"][0]
    flagged = item["Flagged"]
    assert item["clock"] == {
        "scope_by": _plus_hours(flagged, 2),
        "evidence_by": _plus_hours(flagged, 24),
        "decision_by": _plus_hours(flagged, 72),
    }
    assert item["posture"] == (
        f"epf forensics --db {db} --device {item['DeviceId']} --at {flagged}"
    )
    assert report["feeds"]["kev"] and report["feeds"]["epss"] and report["feeds"]["vulnrichment"]
    # The text form says the same, the investigations first.
    text = _epf("triage", "--db", str(db)).stdout
    assert text.index("Forensic investigation") < text.index("BOD 26-04 outcomes")
    assert item["CveId"] in text


def test_epf_triage_narrows_to_a_device_group(triaged):
    db, rows = triaged
    report = json.loads(
        _epf("triage", "--db", str(db), "--group", "SERVERS*", "--format", "json").stdout
    )
    servers = [r for r in rows if (r["RbacGroupName"] or "").lower().startswith("servers")]
    assert report["open"] == len(servers) > 0
    assert report["decisions"]["Act"] == sum(r["Decision"] == "Act" for r in servers)


def test_epf_triage_says_what_is_missing(tmp_path):
    result = _epf("triage", "--db", str(tmp_path / "none.duckdb"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def _plus_hours(iso: str, hours: int) -> str:
    from datetime import datetime

    moment = datetime.fromisoformat(iso.replace("Z", "+00:00")) + timedelta(hours=hours)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
