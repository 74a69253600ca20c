"""Defender for IoT end to end: sensors and a console over HTTPS with self-signed certificates,
raw access tokens, every IoT table against the emulator's truth, and polls that lose nothing."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from endpoint_forensics.config import Settings, load_settings
from endpoint_forensics.http.retry import RetryPolicy
from endpoint_forensics.pipeline.run import RunSummary, run_sync
from endpoint_forensics.sinks.duckdb import DuckDBSink
from endpoint_forensics.workspace.store import run_query
from epf_emulator import Emulator, EmulatorSettings
from epf_emulator.common.settings import Fault

IOT_TABLES = (
    "EPF_IotDevices_CL",
    "EPF_IotConnections_CL",
    "EPF_IotCves_CL",
    "EPF_IotAlerts_CL",
    "EPF_IotEvents_CL",
    "EPF_IotExposure_CL",
    "EPF_IotSensors_CL",
)


@pytest.fixture(scope="module")
def plant() -> Iterator[Emulator]:
    """Two sensors and a console beside a small MDE fleet; tests that advance the clock make
    their own."""
    with Emulator(EmulatorSettings(devices=40, seed=5, iot_sensors=2)) as emu:
        yield emu


def iot_settings(
    emu: Emulator,
    tmp_path: Path,
    *,
    iot: str = "pin",
    mde: bool = False,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "epf.toml"
    emu.write_config(config, iot=iot, mde=mde)  # type: ignore[arg-type]
    values: dict[str, Any] = {
        "store.path": str(tmp_path / "ws.duckdb"),
        "state.dir": str(tmp_path / "state"),
    }
    values.update(overrides or {})
    return load_settings(config, environ={}, overrides=values)


def sync(settings: Settings, now: Any = None) -> RunSummary:
    sink = DuckDBSink(settings.store.path)
    try:
        return run_sync(settings, [sink], now=now)
    finally:
        sink.close()


def count(settings: Settings, sql: str) -> int:
    con = duckdb.connect(str(settings.store.path), read_only=True)
    try:
        return int(con.execute(sql).fetchall()[0][0])
    finally:
        con.close()


def test_every_iot_table_equals_the_truth(plant: Emulator, tmp_path: Path) -> None:
    settings = iot_settings(plant, tmp_path)
    summary = sync(settings)
    assert summary.exit_code == 0, summary.errors()
    truth = plant.stats()["truth"]
    for table in IOT_TABLES:
        assert count(settings, f'SELECT count(*) FROM "{table}"') == truth[table], table
    # Epoch milliseconds became datetimes; string scores became numbers.
    assert count(settings, "SELECT count(*) FROM EPF_IotEvents_CL WHERE EventTime IS NULL") == 0
    assert count(settings, "SELECT count(*) FROM EPF_IotCves_CL WHERE Score IS NULL") == 0
    assert (
        count(settings, "SELECT count(*) FROM EPF_IotAlerts_CL WHERE AlertTime < '2001-01-01'") == 0
    )
    # The lower-case `additionalinformation` variant is read too.
    with_info = count(
        settings, "SELECT count(*) FROM EPF_IotAlerts_CL WHERE AdditionalInformation IS NOT NULL"
    )
    assert with_info > 0
    # Stable keys: nothing twice.
    for table, key in (
        ("EPF_IotEvents_CL", "Appliance, EventKey"),
        ("EPF_IotAlerts_CL", "Appliance, AlertId"),
        ("EPF_IotCves_CL", "Appliance, Source, IpAddress, CveId"),
    ):
        dupes = count(
            settings,
            f'SELECT count(*) FROM (SELECT {key} FROM "{table}" GROUP BY ALL HAVING count(*) > 1)',
        )
        assert dupes == 0, table
    # The security score comes from the devices vulnerability report.
    scored = count(
        settings,
        "SELECT count(*) FROM EPF_IotDevices_CL WHERE Source = 'sensor/v1/devices' "
        "AND SecurityScore IS NOT NULL",
    )
    assert scored > 0
    # A sensor seen through the console that is not SYNCED shows as unhealthy.
    rows = run_query(
        settings.store.path, "EPF_IotSensors_CL | where Healthy == false | count"
    ).records()
    assert rows[0]["Count"] >= 1


def test_every_cve_of_an_address_not_only_the_top_100(plant: Emulator, tmp_path: Path) -> None:
    # Ask for the API's default top: the collector must notice the full lists and ask again.
    settings = iot_settings(
        plant,
        tmp_path,
        overrides={
            "sensors.0.datasets": ["cves"],
            "sensors.1.datasets": ["cves"],
            "sensors.0.cve_top": 100,
            "sensors.1.cve_top": 100,
        },
    )
    sync(settings)
    busiest = count(
        settings,
        "SELECT max(n) FROM (SELECT count(*) AS n FROM EPF_IotCves_CL "
        "WHERE Source = 'sensor/v1/cves' GROUP BY Appliance, IpAddress)",
    )
    assert busiest > 100
    per_sensor = plant.stats()["truth_detail"]["iot"]["sensors"]
    assert count(
        settings, "SELECT count(*) FROM EPF_IotCves_CL WHERE Source = 'sensor/v1/cves'"
    ) == sum(s["cves"] for s in per_sensor.values())


def test_passwords_never_reach_the_store_or_the_state(plant: Emulator, tmp_path: Path) -> None:
    settings = iot_settings(plant, tmp_path)
    sync(settings)
    passwords = plant.iot_plaintext_passwords()
    assert passwords
    con = duckdb.connect(str(settings.store.path), read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        text = "\n".join(
            str(row) for t in tables for row in con.execute(f'SELECT * FROM "{t}"').fetchall()
        )
    finally:
        con.close()
    findings = count(
        settings,
        "SELECT count(*) FROM EPF_IotExposure_CL WHERE Section = 'PlainTextPassword' "
        "AND Protocol IS NOT NULL AND Strength IS NOT NULL",
    )
    assert findings > 0
    state_text = "\n".join(
        p.read_text(errors="replace") for p in Path(settings.state.dir).rglob("*") if p.is_file()
    )
    for password in passwords:
        assert password not in text
        assert password not in state_text


def test_later_polls_add_only_what_is_new(tmp_path: Path) -> None:
    with Emulator(EmulatorSettings(devices=0, seed=8, iot_sensors=1)) as emu:
        settings = iot_settings(emu, tmp_path)
        first = sync(settings, now=emu.now)
        assert first.exit_code == 0
        before_ms = int(emu.now.timestamp() * 1000)
        # Three hours in two polls: long enough for console devices to change, short enough
        # that 120 events an hour stay within the events API's cap once asked type by type
        # (one poll after three hours may not, and then records a gap).
        for _ in range(2):
            emu.advance(1.5)
            summary = sync(settings, now=emu.now)
            assert summary.exit_code == 0
            assert not any(o.gaps for o in summary.outcomes)
        truth = emu.stats()["truth_detail"]["iot"]
        sensor = truth["sensors"]["sensor-1"]
        assert count(settings, "SELECT count(*) FROM EPF_IotEvents_CL") == sensor["events"]
        assert (
            count(settings, "SELECT count(*) FROM EPF_IotAlerts_CL WHERE Source LIKE 'sensor/%'")
            == sensor["alerts"]
        )
        console = truth["consoles"]["console"]
        assert (
            count(settings, "SELECT count(*) FROM EPF_IotAlerts_CL WHERE Source LIKE 'console/%'")
            == console["alerts"]
        )
        changes = emu.iot_changes_after(before_ms)
        # Devices changed (or deleted) since the first poll, each once however often it changed.
        later_changes = count(
            settings,
            "SELECT count(*) FROM (SELECT DISTINCT Source, DeviceId FROM EPF_IotDevices_CL"
            f" WHERE Source LIKE 'console/v3/%' AND RunId != '{first.run_id}')",
        )
        assert later_changes == changes["devices"] + changes["deleted"]
        repeated = count(
            settings,
            "SELECT count(*) FROM (SELECT DeviceId, LastUpdate FROM EPF_IotDevices_CL"
            " WHERE Source = 'console/v3/devices' GROUP BY ALL HAVING count(*) > 1)",
        )
        assert repeated == 0  # no change delivered twice


@pytest.mark.parametrize(
    ("minutes_between_polls", "gaps_expected"),
    [(5, False), (12, False), (240, True)],
    ids=["every-5-min", "every-12-min-split-by-type", "every-4-h-too-rare"],
)
def test_a_day_of_events_at_1000_an_hour(
    tmp_path: Path, minutes_between_polls: int, gaps_expected: bool
) -> None:
    """On a compressed clock: a day of polling at 1,000 events an hour loses no event when the
    polls come often enough (type-by-type asks close a full window), and says so when not."""
    hours = 24 if minutes_between_polls < 240 else 8
    settings_kw = {
        "devices": 0,
        "seed": 3,
        "iot_sensors": 1,
        "iot_console": False,
        "iot_events_per_hour": 1000.0,
        "iot_event_backlog_minutes": 4.0,
    }
    with Emulator(EmulatorSettings(**settings_kw)) as emu:
        settings = iot_settings(emu, tmp_path, overrides={"sensors.0.datasets": ["events"]})
        polls = hours * 60 // minutes_between_polls
        for poll in range(polls + 1):
            if poll:
                emu.advance(minutes_between_polls / 60)
            summary = sync(settings, now=emu.now)
            assert summary.exit_code == 0, summary.errors()
        # Every event from the backlog's start to the last poll.
        truth = emu.stats()["truth_detail"]["iot"]["sensors"]["sensor-1"]["events"]
        stored = count(settings, "SELECT count(*) FROM EPF_IotEvents_CL")
        distinct = count(settings, "SELECT count(DISTINCT EventKey) FROM EPF_IotEvents_CL")
        gaps = count(settings, "SELECT count(*) FROM EPF_Runs_CL WHERE Gaps IS NOT NULL")
        split = count(
            settings,
            "SELECT count(*) FROM EPF_Runs_CL WHERE Dataset = 'events' AND Requests > 1",
        )
    assert stored == distinct  # no event twice
    assert truth >= 1000 * hours * 0.9
    if gaps_expected:
        assert gaps > 0
        assert stored < truth
    else:
        assert gaps == 0
        assert stored == truth
        assert split > 0  # full windows happened, and asking type by type closed them


def test_mde_only_and_iot_only_configs(plant: Emulator, tmp_path: Path) -> None:
    iot_only = iot_settings(plant, tmp_path / "iot", mde=False)
    assert not iot_only.tenants and iot_only.sensors
    summary = sync(iot_only)
    assert summary.exit_code == 0, summary.errors()
    # The sensors' CVE lists are what OT triage reads: an IoT-only run triages its OT devices.
    assert {o.kind for o in summary.outcomes} == {"sensor", "console", "triage"}
    [triage] = [o for o in summary.outcomes if o.kind == "triage"]
    assert triage.outcome == "Succeeded" and triage.rows > 0
    assert count(iot_only, "SELECT count(*) FROM EPF_Devices_CL") == 0
    mde_only = iot_settings(
        plant,
        tmp_path / "mde",
        iot="none",
        mde=True,
        overrides={"tenants.0.datasets": ["machines"]},
    )
    assert mde_only.tenants and not mde_only.sensors and not mde_only.consoles
    summary = sync(mde_only)
    assert summary.exit_code == 0, summary.errors()
    assert count(mde_only, "SELECT count(*) FROM EPF_IotDevices_CL") == 0
    assert count(mde_only, "SELECT count(*) FROM EPF_Devices_CL") == plant.settings.devices


def test_a_ca_bundle_with_the_appliance_certificate_is_trusted(
    plant: Emulator, tmp_path: Path
) -> None:
    settings = iot_settings(
        plant, tmp_path, iot="ca", overrides={"sensors.0.datasets": ["devices"]}
    )
    summary = sync(settings)
    assert summary.exit_code == 0, summary.errors()


def test_a_wrong_pinned_certificate_is_refused_before_the_token_is_sent(
    plant: Emulator, tmp_path: Path
) -> None:
    settings = iot_settings(
        plant,
        tmp_path,
        overrides={
            "sensors.0.certificate_fingerprint": "ab" * 32,
            "sensors.0.datasets": ["devices"],
        },
    )
    before = plant.stats()["iot_requests"].get("sensor-1", {})
    summary = sync(settings)
    assert plant.stats()["iot_requests"].get("sensor-1", {}) == before  # not one request
    failed = [o for o in summary.outcomes if o.outcome == "Failed"]
    assert [(o.tenant, o.dataset) for o in failed] == [("sensor-1", "devices")]
    message = failed[0].error
    assert "not the pinned one" in message and "Nothing was sent" in message
    token = next(a.token for a in plant.iot_appliances if a.name == "sensor-1")
    assert token not in message


def test_a_self_signed_certificate_without_trust_is_refused(
    plant: Emulator, tmp_path: Path
) -> None:
    settings = iot_settings(
        plant,
        tmp_path,
        overrides={"sensors.0.certificate_fingerprint": None, "sensors.0.datasets": ["devices"]},
    )
    summary = sync(settings)
    failed = [o for o in summary.outcomes if o.outcome == "Failed"]
    assert failed and failed[0].tenant == "sensor-1"
    assert "not trusted" in failed[0].error and "certificate_fingerprint" in failed[0].error


def test_a_bad_token_is_refused_with_a_clear_error(plant: Emulator, tmp_path: Path) -> None:
    bad = "0123456789abcdef0123456789abcdef"
    settings = iot_settings(
        plant,
        tmp_path,
        overrides={"sensors.0.token": bad, "sensors.0.datasets": ["devices", "cves"]},
    )
    summary = sync(settings)
    failed = [o for o in summary.outcomes if o.outcome == "Failed"]
    assert {(o.tenant, o.dataset) for o in failed} == {
        ("sensor-1", "devices"),
        ("sensor-1", "cves"),
    }
    assert all("refused the access token" in o.error for o in failed)
    assert all(bad not in o.error for o in failed)
    assert summary.exit_code == 3  # the other appliances still delivered


def test_the_failure_text_answer_is_retried_then_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faults = (
        Fault("/api/v1/devices/connections", 500, times=1, body="Failure - error"),
        Fault("/api/v1/reports/vulnerabilities/security", 500, times=50, body="Failure - error"),
    )
    with Emulator(
        EmulatorSettings(devices=0, seed=2, iot_sensors=1, iot_console=False, faults=faults)
    ) as emu:
        settings = iot_settings(
            emu,
            tmp_path,
            overrides={
                "sensors.0.datasets": ["connections", "exposure"],
                "sensors.0.max_retries": 1,
            },
        )
        # Backoffs of 10 ms: the retries are what is tested, not their waits.
        monkeypatch.setattr(RetryPolicy, "backoff_seconds", lambda self, attempt: 0.01)
        summary = sync(settings)
    outcomes = {o.dataset: o for o in summary.outcomes}
    assert outcomes["connections"].outcome == "Succeeded"
    assert outcomes["exposure"].outcome == "Failed"
    assert "Failure - error" in outcomes["exposure"].error


def test_a_malformed_record_is_quarantined_and_the_rest_delivered(tmp_path: Path) -> None:
    body = (
        '[{"id": 1, "time": 1505651605000, "title": "ok", "severity": "Major"},'
        ' {"id": 2, "time": "yesterday", "title": "bad time"},'
        ' {"time": 1505651605000, "title": "no id"}]'
    )
    faults = (Fault("/api/v2/alerts", 200, times=1, body=body),)
    settings_kw = {"devices": 0, "seed": 2, "iot_sensors": 1, "iot_console": False}
    with Emulator(EmulatorSettings(faults=faults, **settings_kw)) as emu:
        settings = iot_settings(emu, tmp_path, overrides={"sensors.0.datasets": ["alerts"]})
        summary = sync(settings)
    (outcome,) = summary.outcomes
    assert (outcome.outcome, outcome.rows, outcome.quarantined) == ("Succeeded", 1, 2)
    assert summary.quarantine_folder is not None
    lines = (Path(summary.quarantine_folder) / "sensor-1.alerts.jsonl").read_text().splitlines()
    reasons = sorted(line.split('"reason":')[1].split(",")[0] for line in lines)
    assert any("time: expected epoch milliseconds" in r for r in reasons)
    assert any("id: missing" in r for r in reasons)


def test_console_v3_pages_to_the_end(plant: Emulator, tmp_path: Path) -> None:
    settings = iot_settings(
        plant,
        tmp_path,
        overrides={
            "sensors.0.datasets": [],
            "sensors.1.datasets": [],
            "consoles.0.datasets": ["device_changes", "cves", "connections"],
            "consoles.0.page_size": 7,
        },
    )
    before = plant.stats()["iot_requests"]["console"].get("/external/v3/integration/devices/0", {})
    summary = sync(settings)
    assert summary.exit_code == 0, summary.errors()
    console = plant.stats()["truth_detail"]["iot"]["consoles"]["console"]
    for table, source, expected in (
        ("EPF_IotDevices_CL", "console/v3/%devices", console["device_changes"]),
        ("EPF_IotCves_CL", "console/v3/devicecves", console["cves"]),
        ("EPF_IotConnections_CL", "console/v3/connections", console["connections"]),
    ):
        stored = count(settings, f"SELECT count(*) FROM {table} WHERE Source LIKE '{source}'")
        assert stored == expected, source
    after = plant.stats()["iot_requests"]["console"]["/external/v3/integration/devices/0"]
    pages = after.get("200", 0) - before.get("200", 0)
    deleted = count(
        settings, "SELECT count(*) FROM EPF_IotDevices_CL WHERE DeviceStatus = 'Deleted'"
    )
    assert pages == -(-(console["device_changes"] - deleted) // 7)  # every page, once


def test_the_authorized_filter(plant: Emulator, tmp_path: Path) -> None:
    settings = iot_settings(
        plant,
        tmp_path,
        overrides={
            "sensors.0.datasets": ["devices"],
            "sensors.0.authorized": False,
            "sensors.1.datasets": ["devices"],
            "consoles.0.datasets": [],
        },
    )
    assert sync(settings).exit_code == 0
    by_sensor = dict(
        duckdb.connect(str(settings.store.path), read_only=True)
        .execute(
            "SELECT Appliance, count(*) FILTER (WHERE Authorized) FROM EPF_IotDevices_CL "
            "GROUP BY Appliance"
        )
        .fetchall()
    )
    assert by_sensor["sensor-1"] == 0 and by_sensor["sensor-2"] > 0
    unauthorized = count(
        settings, "SELECT count(*) FROM EPF_IotDevices_CL WHERE Appliance = 'sensor-1'"
    )
    assert 0 < unauthorized < plant.stats()["truth_detail"]["iot"]["sensors"]["sensor-1"]["devices"]
