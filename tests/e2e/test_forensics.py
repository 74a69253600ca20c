"""Posture at time T: `epf forensics` against the emulator's own history, in both history modes.

A tenant is synced once a day for a week into two workspaces, one keeping every row and one
keeping only changes. For 50 sampled (device, sync time) pairs the answer of `epf forensics
--format json` equals `GET /_emulator/posture` (which the emulator computes from its own
world, sharing no code with the collector), in both workspaces, apart from the two keys only
the collector can know: which snapshot each answer came from, and the changes between
snapshots (checked against the emulator's own list instead).
"""

from __future__ import annotations

import random
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from endpoint_forensics.analytics.forensics import DATASETS, device_posture, fleet_posture
from endpoint_forensics.analytics.functions import registry
from endpoint_forensics.analytics.report import as_html
from endpoint_forensics.analytics.triage_inputs import (
    open_device_cves_sql,
    open_vulnerabilities_sql,
)
from endpoint_forensics.config import Settings, load_settings
from endpoint_forensics.pipeline.run import run_sync
from endpoint_forensics.sinks.duckdb import DuckDBSink
from endpoint_forensics.workspace import store
from epf_emulator import Emulator, EmulatorSettings
from epf_emulator.common.clock import INCIDENT_AT, WORLD_ANCHOR

from ..history_modes import EVERY_ROW

DAYS = 7
COMPARED = (
    "device",
    "at",
    "agent_health",
    "antivirus",
    "secure_config_failing",
    "vulnerabilities_open",
    "missing",
)


@dataclass
class History:
    emu: Emulator
    workspaces: dict[str, Path]  # history mode -> workspace file
    sync_times: list[datetime]
    devices: dict[datetime, list[str]]  # sync time -> the devices with a sensor listed then

    def truth(self, device: str, at: datetime) -> dict[str, Any]:
        response = httpx.get(
            f"{self.emu.base_url}/_emulator/posture",
            params={"device": device, "at": at.strftime("%Y-%m-%dT%H:%M:%SZ")},
            verify=ssl.create_default_context(cafile=str(self.emu.ca_path)),
            timeout=60,
        )
        assert response.status_code == 200, response.text
        return dict(response.json())


def _settings(emu: Emulator, folder: Path, mode: str) -> Settings:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "epf.toml"
    emu.write_config(config, iot="none", sentinel=False)
    overrides: dict[str, Any] = {
        "store.path": str(folder / "ws.duckdb"),
        "state.dir": str(folder / "state"),
    }
    if mode == "snapshot":
        overrides["history.mode"] = EVERY_ROW
    return load_settings(config, environ={}, overrides=overrides)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    tmp = tmp_path_factory.mktemp("forensics")
    start = WORLD_ANCHOR - timedelta(days=DAYS - 1)
    with Emulator(EmulatorSettings(devices=300, seed=7, iot_sensors=0, start=start)) as emu:
        settings = {mode: _settings(emu, tmp / mode, mode) for mode in ("snapshot", "changes")}
        times: list[datetime] = []
        for day in range(DAYS):
            if day:
                emu.advance(24)
            times.append(emu.now)
            for mode, config in settings.items():
                sink = DuckDBSink(config.store.path)
                try:
                    summary = run_sync(config, [sink], now=emu.now)
                finally:
                    sink.close()
                assert summary.exit_code == 0, (mode, summary.errors())
        devices = {at: _listed(settings["snapshot"].store.path, at) for at in times}
        workspaces = {mode: Path(s.store.path) for mode, s in settings.items()}
        yield History(emu, workspaces, times, devices)


def _listed(db: Path, at: datetime) -> list[str]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT DISTINCT DeviceId FROM EPF_AgentHealth_CL WHERE SnapshotTime = ? ORDER BY 1",
            [at],
        ).fetchall()
    finally:
        con.close()
    return [str(r[0]) for r in rows]


def _pairs(history: History, n: int = 50) -> list[tuple[str, datetime]]:
    rng = random.Random(2026)
    pairs = []
    for _ in range(n):
        at = rng.choice(history.sync_times)
        pairs.append((rng.choice(history.devices[at]), at))
    return pairs


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["snapshot", "changes"])
def test_the_answer_equals_the_emulators_truth_for_50_sampled_pairs(
    history: History, mode: str
) -> None:
    differences = {}
    for device, at in _pairs(history):
        answer = _untriaged(
            device_posture(history.workspaces[mode], device, at, window=timedelta(days=7))
        )
        truth = history.truth(device, at)
        mismatched = [k for k in COMPARED if answer[k] != truth[k]]
        if mismatched:
            differences[(device, at.isoformat())] = {
                k: {"epf": answer[k], "emulator": truth[k]} for k in mismatched
            }
    assert not differences, orjson.dumps(
        dict(list(differences.items())[:2]), option=orjson.OPT_INDENT_2, default=str
    ).decode()


def _untriaged(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer without what triage adds: the emulator leaves KEV, EPSS and the decision null
    (triage is the product's; test_what_triage_knew_is_in_the_answer checks them)."""
    open_ = [
        {**v, "InKev": None, "EpssScore": None, "Decision": None}
        for v in answer["vulnerabilities_open"]
    ]
    return {**answer, "vulnerabilities_open": open_}


@pytest.mark.e2e
def test_what_triage_knew_is_in_the_answer(history: History) -> None:
    db = history.workspaces["changes"]
    decided = 0
    for device, at in _pairs(history, 10):
        answer = device_posture(db, device, at, window=timedelta(days=7))
        newest = _newest_triage(db, device, at)
        for item in answer["vulnerabilities_open"]:
            expected = newest.get(item["CveId"], (None, None, None))
            assert (item["InKev"], item["EpssScore"], item["Decision"]) == expected, item
            decided += item["Decision"] is not None
    assert decided, "no sampled vulnerability had a triage decision"


def _newest_triage(db: Path, device: str, at: datetime) -> dict[str, tuple[Any, ...]]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT CveId, arg_max(InKev, SnapshotTime), arg_max(Epss, SnapshotTime),"
            " arg_max(Decision, SnapshotTime) FROM EPF_Triage_CL"
            " WHERE DeviceId = ? AND SnapshotTime <= ? GROUP BY CveId",
            [device, at],
        ).fetchall()
    finally:
        con.close()
    return {str(r[0]): tuple(r[1:]) for r in rows}


@pytest.mark.e2e
def test_each_change_reported_happened_in_the_emulators_history(history: History) -> None:
    """A change the workspace shows between two snapshots is one the emulator made then."""
    device, at = next((d, t) for d, t in _pairs(history) if t == history.sync_times[-1])
    truth = history.truth(device, at)
    happened = {(c["dataset"], c["item"], str(c["to"])) for c in truth["changes"]}
    for mode, db in history.workspaces.items():
        answer = device_posture(db, device, at, window=timedelta(days=7))
        assert answer["changes"] is not None
        for change in answer["changes"]:
            key = (change["dataset"], change["item"], str(change["to"]))
            assert key in happened or change["dataset"] == "devices", (mode, change)


@pytest.mark.e2e
def test_the_incident_device_was_unprotected_when_it_was_hit(history: History) -> None:
    incident = history.emu.stats()["incident"]
    at = INCIDENT_AT
    for db in history.workspaces.values():
        answer = device_posture(db, incident["DeviceName"], at, window=timedelta(days=7))
        assert answer["device"]["DeviceId"] == incident["DeviceId"]
        assert answer["agent_health"]["TamperProtection"] == "Fail"
        assert answer["agent_health"]["AntivirusSignatureVersion"] == "Fail"
        assert answer["antivirus"]["SignatureAgeHours"] > 7 * 24
        assert any(m.startswith("Antivirus signatures were") for m in answer["missing"])
        cves = {v["CveId"]: v for v in answer["vulnerabilities_open"]}
        assert cves[incident["CveId"]]["ExploitabilityLevel"] == "ExploitIsVerified"
        assert "Tamper protection was off." in answer["missing"]
        assert any(incident["CveId"] in m and "verified exploit" in m for m in answer["missing"])


@pytest.mark.e2e
def test_the_fleet_form_finds_the_devices_whose_tamper_protection_was_off(
    history: History,
) -> None:
    at = history.sync_times[3]
    sample = history.devices[at][:40]
    off = {d for d in sample if history.truth(d, at)["agent_health"]["TamperProtection"] == "Fail"}
    for db in history.workspaces.values():
        found = {r["DeviceId"] for r in fleet_posture(db, at, 'TamperProtection == "Fail"')}
        assert found & set(sample) == off


@pytest.mark.e2e
def test_the_html_report_is_one_self_contained_file(history: History) -> None:
    device, at = _pairs(history)[0]
    page = as_html(
        device_posture(history.workspaces["changes"], device, at, window=timedelta(days=7))
    )
    assert page.startswith("<!doctype html>") and "</html>" in page
    assert "<script" not in page and "src=" not in page and "<link" not in page
    assert "http://" not in page and "https://" not in page


def epf(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "endpoint_forensics", *args], capture_output=True, text=True
    )


@pytest.mark.e2e
def test_the_cli_answers_in_each_form_and_says_what_is_wrong(history: History) -> None:
    db = str(history.workspaces["changes"])
    device, at = _pairs(history)[1]
    when = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    ask = ["forensics", "--db", db, "--device", device, "--at", when]
    for form in ("text", "markdown", "html"):
        result = epf(*ask, "--format", form)
        assert result.returncode == 0 and result.stdout, (form, result.stderr)
    answer = orjson.loads(epf(*ask, "--format", "json").stdout)
    assert set(answer) == {*COMPARED, "snapshots", "changes"}
    unknown = epf("forensics", "--db", db, "--device", "no-such-host", "--at", when)
    assert unknown.returncode == 2 and "no device 'no-such-host'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    bad_time = epf(*ask[:-2], "--at", "yesterday")
    assert bad_time.returncode == 2 and "--at" in bad_time.stderr
    query = epf("query", "--db", db, "--format", "json", f"EPF_DevicesAt(datetime({when})) | count")
    assert query.returncode == 0, query.stderr
    assert orjson.loads(query.stdout)[0]["Count"] > 0


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["snapshot", "changes"])
def test_the_narrow_open_vulnerabilities_are_the_state_functions_rows(
    history: History, mode: str
) -> None:
    columns = (
        "DefenderTenantId, DeviceId, DeviceName, RecordId, CveId, SoftwareName, SoftwareVersion,"
        " VulnerabilitySeverityLevel, CvssScore, ExploitabilityLevel, FirstSeenTimestamp"
    )
    db = history.workspaces[mode]
    # At each sync, and half a day after (vulnerability events land between snapshots).
    times = [*history.sync_times[::3], *(t + timedelta(hours=12) for t in history.sync_times[1::4])]
    for at in times:
        when = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        narrow, wide = (
            sorted(
                store.run_query(
                    db, f"{f}(datetime({when})) | project {columns}", functions=registry()
                ).rows,
                key=repr,
            )
            for f in ("EPF_OpenVulnerabilitiesAt", "EPF_VulnerabilitiesAt")
        )
        assert narrow == wide and wide, (mode, when)
        # Triage's own SQL for the same state (not duckdb-kql's arg_max) agrees too, and so do
        # the (device, CVE) pairs triage starts from.
        fast = sorted(
            store.run_query(
                db, f"SELECT {columns} FROM ({open_vulnerabilities_sql(at)})", sql=True
            ).rows,
            key=repr,
        )
        assert fast == narrow, (mode, when)
        assert _device_cves(db, open_device_cves_sql(at), sql=True) == _device_cves(
            db, f"EPF_OpenDeviceCvesAt(datetime({when}))"
        ), (mode, when)


def _device_cves(db: Path, query: str, *, sql: bool = False) -> list[tuple[Any, ...]]:
    """The pairs, the software as a sorted list (a set has no order)."""
    result = store.run_query(db, query, sql=sql, functions=None if sql else registry())
    rows = []
    for record in result.records():
        software = record.pop("Software")
        software = orjson.loads(software) if isinstance(software, str) else software
        rows.append((*sorted(record.items()), sorted(software or [])))
    assert rows
    return sorted(rows, key=repr)


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["snapshot", "changes"])
def test_the_device_state_sql_is_the_state_functions_rows(history: History, mode: str) -> None:
    """The SQL `epf forensics` reads a device's state with locally gives the shipped
    function's rows for that device, in every dataset, at syncs and between them."""
    rng = random.Random(11)
    pairs = [(d, at + timedelta(hours=rng.choice([0, 0, 9]))) for d, at in _pairs(history, 25)]
    compared = _compare_device_states(history.workspaces[mode], pairs)
    assert all(compared.values()), compared  # every dataset compared some rows


@pytest.mark.e2e
def test_the_device_state_sql_leaves_out_what_was_removed(history: History, tmp_path: Path) -> None:
    """An item removed after the newest full snapshot (a tombstone in change-only history)
    is out of the state at T in the SQL as in the shipped functions: the workspace gets one
    tombstone per dataset, an hour after the last sync."""
    import shutil

    import duckdb

    db = tmp_path / "tombstones.duckdb"
    shutil.copy(history.workspaces["changes"], db)
    last = history.sync_times[-1]
    at = last + timedelta(hours=1)
    device = history.devices[last][0]
    con = duckdb.connect(str(db))
    try:
        for dataset in DATASETS:
            inserted = con.execute(
                f"INSERT INTO \"{dataset.table}\" SELECT * REPLACE ('Removed' AS HistoryKind,"
                f' $at AS SnapshotTime) FROM (SELECT * FROM "{dataset.table}"'
                " WHERE DeviceId = $device AND SnapshotTime <= $last"
                " ORDER BY SnapshotTime DESC LIMIT 1)",
                {"at": at, "device": device, "last": last},
            ).fetchall()
            assert inserted == [(1,)], dataset.table
    finally:
        con.close()
    compared = _compare_device_states(db, [(device, at)])
    before = _compare_device_states(db, [(device, last)])
    assert compared["devices"] == 0 and before["devices"] == 1  # the device itself is gone
    assert compared["secure_config"] == before["secure_config"] - 1
    assert compared["vulnerabilities"] == before["vulnerabilities"] - 1


def _compare_device_states(db: Path, pairs: list[tuple[str, datetime]]) -> dict[str, int]:
    """Rows compared per dataset, after asserting both reads agree for every pair."""
    import duckdb

    compared = {d.key: 0 for d in DATASETS}
    con = duckdb.connect(str(db), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    schema = store.table_columns(con)
    try:
        for device, at in pairs:
            when = at.strftime("%Y-%m-%dT%H:%M:%SZ")
            for dataset in DATASETS:
                # As the answer reads it: with the device's rows in a week's window, where
                # the dataset's changes are shown, from the same scan.
                local = dataset.query(device, at, schema, at - timedelta(days=7))
                cursor = con.execute(local.text, local.values)
                columns = [str(d[0]) for d in cursor.description]
                found = [dict(zip(columns, r, strict=True)) for r in cursor.fetchall()]
                if "Part" in columns:
                    found = dataset.split(found)[0]
                sql_rows = [tuple(r[f] for f in dataset.fields) for r in found]
                kql_rows = store.run_query(
                    db,
                    f"{dataset.function}(datetime({when})) | where DeviceId == '{device}'"
                    f" | project {', '.join(dataset.fields)}",
                    functions=registry(),
                ).rows
                assert sorted(map(repr, sql_rows)) == sorted(map(repr, kql_rows)), (
                    dataset.key, device, when,
                )  # fmt: skip
                compared[dataset.key] += len(kql_rows)
    finally:
        con.close()
    return compared
