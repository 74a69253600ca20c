"""Triage of OT devices end to end: a sync of the emulated tenant with two Defender for IoT
sensors and the feed mirrors (which list some of the sensors' CVEs in KEV), then the OT rows of
EPF_Triage_CL checked against what the emulator's sensors list, the vendored decision tables,
the sensors' internet connections and the configured rules."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from endpoint_forensics.config import load_settings
from endpoint_forensics.pipeline.run import run_sync
from endpoint_forensics.sinks.duckdb import DuckDBSink
from endpoint_forensics.workspace import store
from epf_emulator import Emulator, EmulatorSettings

from ..triage_check import check_inputs_agree, check_triage_rows

pytestmark = pytest.mark.e2e

_RULES = {
    "triage.mission": [{"tag": "PLC", "value": "high"}, {"tag": "ot", "value": "low"}],
    "triage.exposed": [{"group": "sensor-2"}],
}


@pytest.fixture(scope="module")
def triaged(tmp_path_factory) -> tuple[Path, list[dict], set[tuple[str, str, str]]]:
    tmp = tmp_path_factory.mktemp("triage-ot")
    settings = EmulatorSettings(
        devices=60, seed=33, iot_sensors=2, iot_devices_per_sensor=40, iot_console=False
    )
    with Emulator(settings) as emu:
        emu.write_config(tmp / "epf.toml", iot="pin", sentinel=False, feeds=True)
        overrides = {
            "store.path": str(tmp / "ws.duckdb"),
            "state.dir": str(tmp / "state"),
            "tenants.0.export_mode": "files",
            **_RULES,
        }
        config = load_settings(tmp / "epf.toml", environ={}, overrides=overrides)
        sink = DuckDBSink(config.store.path)
        try:
            summary = run_sync(config, [sink], now=emu.now)
        finally:
            sink.close()
        listed = emu.iot_open_cves()
    assert summary.exit_code == 0, summary.errors()
    rows = store.run_query(config.store.path, "EPF_Triage_CL").records()
    return config.store.path, rows, listed


def _ot(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["DeviceKind"] == "OT"]


def _reasons(row: dict) -> dict:
    value = row["Reasons"]
    return json.loads(value) if isinstance(value, str) else value


def test_every_cve_a_sensor_lists_is_triaged_once_for_its_device(triaged):
    _, rows, listed = triaged
    ot = _ot(rows)
    assert {(r["DeviceId"], r["CveId"]) for r in ot} == {
        (f"ot:{sensor}/{address}", cve) for sensor, address, cve in listed
    }
    assert len(ot) == len(listed) > 500
    assert {r["DeviceKind"] for r in rows} == {"IT", "OT"}


def test_ot_decisions_are_the_vendored_tables_and_kev_prevails(triaged):
    _, rows, _ = triaged
    ot = _ot(rows)
    check_triage_rows(ot)
    kev = [r for r in ot if r["InKev"]]
    assert kev, "the KEV mirror lists some of the sensors' CVEs"
    assert all(r["Exploitation"] == "active" for r in kev)
    assert {r["Decision"] for r in ot} >= {"Act", "Track"}
    assert any(r["ForensicInvestigation"] for r in ot)


def test_the_local_parts_give_it_and_ot_rows_the_shipped_functions_inputs(triaged):
    db, rows, _ = triaged
    check_inputs_agree(db, rows)


def test_ot_exposure_is_the_sensors_internet_connections_or_a_rule(triaged):
    db, rows, _ = triaged
    con = duckdb.connect(str(db), read_only=True)
    try:
        facing = {
            f"ot:{appliance}/{address}"
            for appliance, address in con.execute(
                "SELECT Appliance, IpAddress FROM EPF_IotExposure_CL"
                " WHERE Section = 'internetConnections'"
            ).fetchall()
        }
    finally:
        con.close()
    ot = _ot(rows)
    assert facing & {r["DeviceId"] for r in ot}, "no OT device with CVEs is internet-facing"
    for row in ot:
        reason = _reasons(row)["PubliclyExposed"]
        on_sensor_2 = row["DeviceId"].startswith("ot:sensor-2/")
        assert row["PubliclyExposed"] == (row["DeviceId"] in facing or on_sensor_2), row
        if row["DeviceId"] in facing:
            assert reason["source"] == "Defender for IoT", reason
            assert reason["why"].startswith("internet connections in sensor-"), reason
        elif on_sensor_2:
            assert (reason["source"], reason["why"]) == (
                "config",
                'triage.exposed group "sensor-2"',
            )
        else:
            assert reason["why"].startswith("no internet connections in sensor-1"), reason


def test_ot_mission_rules_match_device_type_tags_and_it_keeps_the_default(triaged):
    _, rows, _ = triaged
    for row in rows:
        why = _reasons(row)["MissionWellbeing"]["why"]
        if row["DeviceKind"] == "IT":
            assert (row["MissionWellbeing"], why) == ("medium", "triage.mission_default")
        elif row["DeviceName"].startswith("PLC"):
            assert (row["MissionWellbeing"], why) == ("high", 'triage.mission tag "PLC"')
    plc = [r for r in _ot(rows) if r["MissionWellbeing"] == "high"]
    others = [r for r in _ot(rows) if r["MissionWellbeing"] == "low"]
    assert plc and others
    assert all(_reasons(r)["MissionWellbeing"]["why"] == 'triage.mission tag "ot"' for r in others)
    assert all(r["RbacGroupName"] in ("sensor-1", "sensor-2") for r in _ot(rows))


def test_the_sensors_attack_vector_decides_automatable_when_nothing_else_does(triaged):
    _, rows, _ = triaged
    sources: dict[str, set[str]] = {}
    for row in _ot(rows):
        reason = _reasons(row)["Automatable"]
        sources.setdefault(reason["source"], set()).add(row["Automatable"])
        if reason["source"] == "Defender for IoT attack vector (derived)":
            assert reason["why"].split(":")[0] in ("ADJACENT_NETWORK", "LOCAL", "PHYSICAL")
    # A vector not over the network is never automatable; one over it, without the rest of
    # the CVSS vector, is assumed the more urgent value, and says so.
    assert sources["Defender for IoT attack vector (derived)"] == {"no"}
    assert sources["assumed"] == {"yes"}
    assert "CISA Vulnrichment" in sources


def test_epf_triage_counts_ot_and_points_an_ot_item_at_its_sensors_findings(triaged):
    db, rows, _ = triaged
    result = _epf("triage", "--db", str(db), "--group", "sensor-*", "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["kinds"] == {"OT": len(_ot(rows))}
    items = [i for i in report["forensic"] if i["DeviceKind"] == "OT"]
    assert items
    shown_any = False
    for item in items:
        command = shlex.split(item["posture"])
        assert command[:2] == ["epf", "query"]
        shown = _epf(*command[1:], "--format", "json")
        assert shown.returncode == 0, shown.stderr
        findings = json.loads(shown.stdout)
        address = item["DeviceId"].rpartition("/")[2]
        assert all(f["IpAddress"] == address for f in findings)
        assert all(f["SnapshotTime"] <= item["Flagged"] for f in findings)
        shown_any = bool(findings)
        if shown_any:
            break
    assert shown_any, "no OT item to investigate has a finding in its sensor's reports"


def _epf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "endpoint_forensics", *args], capture_output=True, text=True
    )
