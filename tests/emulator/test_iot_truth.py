"""The IoT ground truth equals what the appliances list; the clock, config, settings, restarts."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from epf_emulator import Emulator, EmulatorSettings

from .conftest import UNTHROTTLED
from .test_iot_common import appliance, get_json, iot_client, now_ms, v3_all

V3 = "/external/v3/integration"
#: Few enough events that one call lists all of them (the answer is capped at 100).
TRUTH_SETTINGS = EmulatorSettings(
    devices=30, seed=8, rate_limits=UNTHROTTLED, iot_events_per_hour=10.0
)


def listed(emu: Emulator, events: bool) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """Count what the endpoints list, by the truth's definitions, through HTTPS only.

    With ``events=False`` the events count is not checked (more than one call can list).
    """
    sensors: dict[str, dict[str, int]] = {}
    for app in emu.iot_appliances:
        if app.kind != "sensor":
            continue
        with iot_client(app) as client:
            report = get_json(client, "/api/v1/reports/vulnerabilities/devices")
            exposure = 0
            for entry in report:
                v = entry["vulnerabilities"]
                exposure += 1 + sum(
                    len(v[k])
                    for k in (
                        "remoteAccess",
                        "openedPorts",
                        "plainTextPasswords",
                        "weakAuthentication",
                        "antiViruses",
                    )
                )
            for name in ("security", "operational"):
                tables = get_json(client, f"/api/v1/reports/vulnerabilities/{name}")
                exposure += sum(len(rows) for rows in tables.values())
            listed_events = get_json(client, "/api/v1/events", minutesTimeFrame=4320)
            assert len(listed_events) < 100 or not events  # otherwise the cap hides some
            sensors[app.name] = {
                "devices": len(get_json(client, "/api/v1/devices")),
                "connections": len(get_json(client, "/api/v1/devices/connections")),
                "cves": len(get_json(client, "/api/v1/devices/cves", top=100_000)),
                "alerts": len(get_json(client, "/api/v1/alerts")),
                "events": len(listed_events) if events else -1,
                "exposure": exposure,
            }
    with iot_client(appliance(emu, "console")) as client:
        changed = v3_all(client, f"{V3}/devices/0", "u_devices", size=50)
        device_cves = v3_all(client, f"{V3}/devicecves/0", "u_device_cves", size=50)
        console = {
            "devices": len(get_json(client, "/external/v1/devices")),
            "device_changes": len(changed) + len(get_json(client, f"{V3}/deleteddevices/0")),
            "connections": len(v3_all(client, f"{V3}/connections/0", "u_connections", size=50)),
            "cves": sum(len(d["u_cves"]) for d in device_cves),
            "alerts": len(get_json(client, "/external/v2/alerts")),
            "sensors": len(get_json(client, f"{V3}/sensors")),
        }
    return sensors, console


def check_truth(emu: Emulator, events: bool = True) -> dict[str, Any]:
    stats = emu.stats()
    sensors, console = listed(emu, events)
    detail = stats["truth_detail"]["iot"]
    if not events:
        for name, counts in sensors.items():
            counts["events"] = detail["sensors"][name]["events"]
    assert detail == {"sensors": sensors, "consoles": {"console": console}}
    truth = stats["truth"]
    s = list(sensors.values())
    assert truth["EPF_IotDevices_CL"] == (
        sum(x["devices"] for x in s) + console["devices"] + console["device_changes"]
    )
    assert (
        truth["EPF_IotConnections_CL"] == sum(x["connections"] for x in s) + console["connections"]
    )
    assert truth["EPF_IotCves_CL"] == sum(x["cves"] for x in s) + console["cves"]
    assert truth["EPF_IotAlerts_CL"] == sum(x["alerts"] for x in s) + console["alerts"]
    assert truth["EPF_IotEvents_CL"] == sum(x["events"] for x in s)
    assert truth["EPF_IotExposure_CL"] == sum(x["exposure"] for x in s)
    assert truth["EPF_IotSensors_CL"] == 2
    return stats


def test_truth_equals_the_endpoints_and_advancing_adds_data() -> None:
    with Emulator(TRUTH_SETTINGS) as emu:
        before = check_truth(emu)["truth_detail"]["iot"]
        start = now_ms(emu)
        with iot_client(appliance(emu, "sensor-1")) as sensor:
            last_alert = get_json(sensor, "/api/v1/alerts")[-1]
            emu.advance(6)
            new_alerts = get_json(sensor, "/api/v1/alerts", fromTime=last_alert["time"] + 1)
            assert new_alerts and min(a["id"] for a in new_alerts) > last_alert["id"]
            assert all(start < a["time"] <= now_ms(emu) for a in new_alerts)
            newest = get_json(sensor, "/api/v1/events", minutesTimeFrame=60)
            assert newest and all(e["timestamp"] > start for e in newest)
        after = check_truth(emu)["truth_detail"]["iot"]
        for name in ("sensor-1", "sensor-2"):
            assert after["sensors"][name]["alerts"] > before["sensors"][name]["alerts"]
            assert after["sensors"][name]["events"] > before["sensors"][name]["events"]
        # Some devices change every few hours: the console's delta after the start shows them.
        changes = emu.iot_changes_after(start)
        assert changes["devices"] > 0
        with iot_client(appliance(emu, "console")) as console:
            delta = v3_all(console, f"{V3}/devices/{start}", "u_devices", size=50)
            assert len(delta) == changes["devices"]
            emu.advance(72)  # past every scheduled deletion
            deleted = get_json(console, f"{V3}/deleteddevices/{start}")
            assert len(deleted) == emu.iot_changes_after(start)["deleted"] > 0
        check_truth(emu, events=False)


def test_write_config_blocks(tmp_path: Path) -> None:
    settings = EmulatorSettings(devices=5, seed=4, iot_devices_per_sensor=10)
    with Emulator(settings) as emu:
        apps = emu.iot_appliances
        pinned = tmp_path / "pin.toml"
        emu.write_config(pinned)
        config = tomllib.loads(pinned.read_text(encoding="utf-8"))
        assert len(config["tenants"]) == 1
        assert config["sensors"] == [
            {
                "name": a.name,
                "url": a.base_url,
                "token": a.token,
                "certificate_fingerprint": a.fingerprint_sha256,
            }
            for a in apps[:2]
        ]
        (console,) = config["consoles"]
        assert console["name"] == "console" and console["url"] == apps[2].base_url
        ca = tmp_path / "ca.toml"
        emu.write_config(ca, iot="ca", mde=False)
        config = tomllib.loads(ca.read_text(encoding="utf-8"))
        assert "tenants" not in config  # an IoT-only config
        for block, app in zip(config["sensors"] + config["consoles"], apps, strict=True):
            assert set(block) == {"name", "url", "token", "ca_bundle"}
            assert Path(block["ca_bundle"]) == app.certificate_path.resolve()
        none = tmp_path / "none.toml"
        emu.write_config(none, iot="none")
        assert set(tomllib.loads(none.read_text(encoding="utf-8"))) == {"tenants", "sentinel"}
        with pytest.raises(ValueError, match="iot"):
            emu.write_config(none, iot="bearer")  # type: ignore[arg-type]


def test_no_sensors_means_no_iot_and_no_console_when_disabled(tmp_path: Path) -> None:
    with Emulator(EmulatorSettings(devices=5, seed=4, iot_sensors=0)) as emu:
        assert emu.iot_appliances == [] and emu.iot_plaintext_passwords() == set()
        stats = emu.stats()
        assert not any(t.startswith("EPF_Iot") for t in stats["truth"])
        assert "iot" not in stats["truth_detail"]
        emu.write_config(tmp_path / "c.toml")
        assert set(tomllib.loads((tmp_path / "c.toml").read_text(encoding="utf-8"))) == {
            "tenants",
            "sentinel",
        }
    settings = EmulatorSettings(devices=5, seed=4, iot_sensors=1, iot_console=False)
    with Emulator(settings) as emu:
        assert [a.name for a in emu.iot_appliances] == ["sensor-1"]
        assert emu.stats()["truth"]["EPF_IotSensors_CL"] == 0  # no console: nothing lists sensors


@pytest.mark.parametrize(
    "options",
    [
        {"iot_sensors": -1},
        {"iot_sensors": 17},
        {"iot_devices_per_sensor": -5},
        {"iot_events_per_hour": float("nan")},
        {"iot_alerts_per_hour": -1.0},
        {"iot_alert_history_hours": 10_000.0},
        {"iot_event_backlog_minutes": 5000.0},
    ],
)
def test_iot_settings_are_validated(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        EmulatorSettings(**options)


def test_a_restart_with_the_same_state_dir_keeps_certificates_and_the_model(
    tmp_path: Path,
) -> None:
    settings = EmulatorSettings(
        devices=5, seed=6, iot_sensors=1, iot_devices_per_sensor=15, state_dir=tmp_path / "s"
    )
    with Emulator(settings) as emu:
        first = emu.iot_appliances[:]
        with iot_client(appliance(emu, "sensor-1")) as client:
            devices = get_json(client, "/api/v1/devices")
    with Emulator(settings) as emu:
        second = emu.iot_appliances
        assert [a.fingerprint_sha256 for a in second] == [a.fingerprint_sha256 for a in first]
        assert [a.token for a in second] != [a.token for a in first]  # new tokens each start
        with iot_client(appliance(emu, "sensor-1")) as client:  # the old pin still holds
            assert get_json(client, "/api/v1/devices") == devices
    assert (tmp_path / "s" / "iot-sensor-1.pem").is_file()
