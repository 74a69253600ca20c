"""The emulated on-premises management console (C.3): v1/v2 devices and alerts, v3 integration."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from epf_emulator import Emulator

from .test_iot_common import IOT_SETTINGS, appliance, get_json, iot_client, now_ms, v3_all

V3 = "/external/v3/integration"


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(IOT_SETTINGS) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def console(emu: Emulator) -> Iterator[httpx.Client]:
    with iot_client(appliance(emu, "console")) as client:
        yield client


def sensor_devices(emu: Emulator, name: str) -> list[dict[str, Any]]:
    with iot_client(appliance(emu, name)) as client:
        result: list[dict[str, Any]] = get_json(client, "/api/v1/devices")
        return result


def test_devices_aggregate_every_sensor(emu: Emulator, console: httpx.Client) -> None:
    devices = get_json(console, "/external/v1/devices")
    one, two = sensor_devices(emu, "sensor-1"), sensor_devices(emu, "sensor-2")
    assert len(devices) == len(one) + len(two)
    assert len({d["id"] for d in devices}) == len(devices)  # one id space across sensors
    assert list(devices[0])[:3] == ["sensorId", "zoneId", "siteId"]
    for sensor_id, listed in ((1, one), (2, two)):
        mine = [d for d in devices if d["sensorId"] == sensor_id]
        assert {d["name"] for d in mine} == {d["name"] for d in listed}
        assert {d["zoneId"] for d in mine} == {sensor_id} and {d["siteId"] for d in mine} == {1}
    assert get_json(console, "/api/v1/devices") == devices
    assert get_json(console, "/external/v1/devices", sensorId="2") == [
        d for d in devices if d["sensorId"] == 2
    ]
    assert len(get_json(console, "/external/v1/devices", sensorId="1,2")) == len(devices)
    assert get_json(console, "/external/v1/devices", siteId="7") == []
    unauthorized = get_json(console, "/external/v1/devices", authorized="false")
    assert unauthorized and not any(d["authorized"] for d in unauthorized)
    bad = console.get("/external/v1/devices", params={"zoneId": "one"})
    assert (bad.status_code, bad.text) == (500, "Failure - error")


def test_alerts_v1_and_v2(emu: Emulator, console: httpx.Client) -> None:
    alerts = get_json(console, "/external/v1/alerts")
    v2 = get_json(console, "/external/v2/alerts")
    with iot_client(appliance(emu, "sensor-1")) as sensor:
        sensor_alerts = get_json(sensor, "/api/v1/alerts")
    assert (
        len(alerts)
        == len(v2)
        == emu.stats()["truth_detail"]["iot"]["consoles"]["console"]["alerts"]
    )
    mine = [a for a in alerts if a["sensorId"] == 1]
    assert [(a["id"], a["time"], a["title"]) for a in mine] == [
        (a["id"], a["time"], a["title"]) for a in sensor_alerts
    ]
    for a in alerts:
        assert {"sensorId", "zoneId", "siteId", "handled", "remediationSteps"} <= set(a)
        assert isinstance(a["handled"], bool) and isinstance(a["time"], int)
        assert "sensorName" not in a
    assert {a["sensorName"] for a in v2} == {"sensor-1", "sensor-2"}
    assert all({"zoneName", "siteName"} <= set(a) for a in v2)
    assert any("additionalinformation" in a for a in alerts)
    pick = alerts[len(alerts) // 3]
    window = get_json(console, "/external/v1/alerts", fromTime=pick["time"], toTime=pick["time"])
    assert pick in window
    handled = get_json(console, "/external/v1/alerts", state="handled", sensorId="2")
    assert handled and all(a["handled"] and a["sensorId"] == 2 for a in handled)


def test_v3_devices_page_through_every_device_exactly_once(
    emu: Emulator, console: httpx.Client
) -> None:
    devices = v3_all(console, f"{V3}/devices/0", "u_devices", size=7)
    listed = get_json(console, "/external/v1/devices")
    assert sorted(d["u_id"] for d in devices) == sorted(d["id"] for d in listed)
    assert len({d["u_id"] for d in devices}) == len(devices)
    order = [(d["u_last_update"], d["u_id"]) for d in devices]
    assert order == sorted(order)
    default = get_json(console, f"{V3}/devices/0")
    assert default["u_count"] == len(devices) and len(default["u_devices"]) == 50
    d = devices[0]
    for key in (
        "u_id",
        "u_name",
        "u_vendor",
        "u_appliance",
        "u_site",
        "u_zone",
        "u_purdue_layer",
        "u_first_discovered",
        "u_last_activity",
        "u_last_update",
        "u_protocol_objects",
        "u_vlans",
        "u_sensor_ids",
        "u_groups",
        "u_firmwares",
        "u_operating_system",
        "u_ip_address_objects",
        "u_mac_address_objects",
        "u_cm_device_url",
        "u_device_urls",
    ):
        assert key in d, key
    assert set(d["u_device_type"]) == {"u_category", "u_purdue_layer", "u_name"}
    assert all(
        set(o) == {"u_ip_address", "u_guessed_mac_addresses"} for o in d["u_ip_address_objects"]
    )
    assert d["u_first_discovered"] <= d["u_last_update"] <= now_ms(emu)
    # Strictly after the timestamp; new (1) and updated (2) split the whole (0).
    middle = order[len(order) // 2][0]
    after = v3_all(console, f"{V3}/devices/{middle}", "u_devices", size=50)
    assert after and all(x["u_last_update"] > middle for x in after)
    new = v3_all(console, f"{V3}/devices/{middle}", "u_devices", 50, notificationType=1)
    updated = v3_all(console, f"{V3}/devices/{middle}", "u_devices", 50, notificationType=2)
    assert all(x["u_first_discovered"] > middle for x in new)
    assert all(x["u_first_discovered"] <= middle for x in updated)
    assert sorted(x["u_id"] for x in new + updated) == sorted(x["u_id"] for x in after)
    assert emu.iot_changes_after(middle)["devices"] == len(after)
    only_two = v3_all(console, f"{V3}/devices/0", "u_devices", 50, sensorId=2)
    assert {x["u_sensor_ids"][0]["u_sensor_id"] for x in only_two} == {2}
    one = get_json(console, f"{V3}/device/{d['u_id']}")
    assert one == [d]
    bad = console.get(f"{V3}/devices/0", params={"notificationType": "5"})
    assert (bad.status_code, bad.text) == (500, "Failure - error")


def test_v3_connections_cves_sensors_and_deleted(emu: Emulator, console: httpx.Client) -> None:
    connections = v3_all(console, f"{V3}/connections/0", "u_connections", size=40)
    ids = {d["id"] for d in get_json(console, "/external/v1/devices")}
    assert connections and all(
        {c["u_src_device_id"], c["u_dest_device_id"]} <= ids for c in connections
    )
    assert {c["u_connection_type"] for c in connections} <= {"One Way", "Two Way", "Multicast"}
    cves = v3_all(console, f"{V3}/devicecves/0", "u_device_cves", size=9)
    assert len({c["u_id"] for c in cves}) == len(cves)
    scores = [x["u_score"] for c in cves for x in c["u_cves"]]
    assert scores and all(isinstance(s, str) for s in scores)  # "10.0": a string
    assert any(len(c["u_cves"]) > 100 for c in cves)  # no top cap on the console
    high = v3_all(console, f"{V3}/devicecves/0", "u_device_cves", size=50, score=9)
    assert all(float(x["u_score"]) >= 9 for c in high for x in c["u_cves"])
    pick = [c["u_id"] for c in cves[:2]]
    some = get_json(console, f"{V3}/devicecves/0", deviceIds=",".join(map(str, pick)))
    assert sorted(c["u_id"] for c in some["u_device_cves"]) == sorted(pick)
    sensors = get_json(console, f"{V3}/sensors")
    assert [s["u_name"] for s in sensors] == ["sensor-1", "sensor-2"]
    assert [s["u_connection_state"] for s in sensors] == ["SYNCED", "OUT_OF_SYNC"]
    for s in sensors:
        assert s["u_unhandled_alert_count"] <= s["u_alert_count"] and s["u_is_activated"] is True
    deleted = get_json(console, f"{V3}/deleteddevices/0")
    assert deleted and all(set(d) == {"u_id"} for d in deleted)
    gone = {d["u_id"] for d in deleted}
    assert not gone & ids  # deleted devices vanish from every other list
    assert get_json(console, f"{V3}/device/{next(iter(gone))}") == []
    changes = emu.iot_changes_after(0)
    assert changes == {
        "devices": len(ids),
        "deleted": len(deleted),
        "connections": len(connections),
        "cves": len(scores),
    }


def test_v3_take_one_sensor_id_and_only_documented_parameters(
    emu: Emulator, console: httpx.Client
) -> None:
    def refused(path: str, query: str) -> None:
        response = console.get(f"{path}?{query}")
        assert (response.status_code, response.text) == (500, "Failure - error"), (path, query)

    # One sensorId on v3 devices and device CVEs: a comma list is documented for v1 only.
    for path in (f"{V3}/devices/0", f"{V3}/devicecves/0"):
        refused(path, "sensorId=1,2")
        refused(path, "sensorId=1&sensorId=2")
        refused(path, "siteId=1")
    # No sensorId (nor any filter) on v3 connections, no parameters on the others.
    refused(f"{V3}/connections/0", "sensorId=1")
    refused(f"{V3}/connections/0", "notificationType=0")
    for path in (f"{V3}/deleteddevices/0", f"{V3}/sensors", f"{V3}/device/1"):
        refused(path, "page=0")
    refused("/external/v1/devices", "sensor=1")
    # One id is served and filters; the sensors split the whole.
    ids = {
        n: {d["id"] for d in get_json(console, "/external/v1/devices", sensorId=str(n))}
        for n in (1, 2)
    }
    assert ids[1] and ids[2] and not ids[1] & ids[2]
    every = {d["u_id"] for d in v3_all(console, f"{V3}/devices/0", "u_devices", 50)}
    for n in (1, 2):
        mine = v3_all(console, f"{V3}/devices/0", "u_devices", 50, sensorId=n)
        assert {d["u_id"] for d in mine} == ids[n]
        cves = v3_all(console, f"{V3}/devicecves/0", "u_device_cves", 50, sensorId=n)
        assert cves and {c["u_id"] for c in cves} <= ids[n]
    assert every == ids[1] | ids[2]
    # v1 devices still take comma lists, as documented.
    both = get_json(console, "/external/v1/devices", sensorId="1,2", zoneId="1,2", siteId="1")
    assert {d["id"] for d in both} == every
