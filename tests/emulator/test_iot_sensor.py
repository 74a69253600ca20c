"""The emulated OT sensors over real HTTPS: TLS, raw-token auth and the C.2 wire format."""

from __future__ import annotations

import hashlib
import re
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from epf_emulator import Emulator, EmulatorSettings, Fault

from .conftest import all_machines, client_for, get_token
from .test_iot_common import IOT_SETTINGS, appliance, get_json, iot_client, now_ms, trusting

DEVICE_TYPES = {
    "PLC",
    "HMI",
    "Engineering Station",
    "Historian",
    "Switch",
    "Router",
    "IED",
    "RTU",
    "DCS Controller",
    "Unknown",
}
DEVICE_KEYS = {
    "id",
    "name",
    "vendor",
    "type",
    "operatingSystem",
    "ipAddresses",
    "macAddresses",
    "protocols",
    "firmware",
    "authorized",
    "engineeringStation",
    "scanner",
    "hasDynamicAddress",
}
FIRMWARE_KEYS = {
    "slot",
    "additionalData",
    "moduleAddress",
    "rack",
    "address",
    "model",
    "serial",
    "firmwareVersion",
}
EPOCH_MS_2020 = 1_577_836_800_000  # epoch ms, not seconds or microseconds
EPOCH_MS_2100 = 4_102_444_800_000


def is_epoch_ms(value: Any) -> bool:
    return isinstance(value, int) and EPOCH_MS_2020 < value < EPOCH_MS_2100


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(IOT_SETTINGS) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def sensor(emu: Emulator) -> Iterator[httpx.Client]:
    with iot_client(appliance(emu, "sensor-1")) as client:
        yield client


@pytest.fixture(scope="module")
def devices(sensor: httpx.Client) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = get_json(sensor, "/api/v1/devices")
    return result


def test_the_appliances_and_their_facts(emu: Emulator) -> None:
    apps = emu.iot_appliances
    assert [(a.name, a.kind, a.sensor_id) for a in apps] == [
        ("sensor-1", "sensor", 1),
        ("sensor-2", "sensor", 2),
        ("console", "console", None),
    ]
    assert len({a.base_url for a in apps}) == 3 and emu.base_url not in {a.base_url for a in apps}
    for app in apps:
        assert re.fullmatch(r"https://127\.0\.0\.1:\d+", app.base_url)
        assert re.fullmatch(r"[0-9a-f]{32}", app.token)
        pem = app.certificate_path.read_text()
        assert "PRIVATE KEY" not in pem and pem.count("BEGIN CERTIFICATE") == 1
        der = ssl.PEM_cert_to_DER_cert(pem)
        assert app.fingerprint_sha256 == hashlib.sha256(der).hexdigest()
    assert len({a.token for a in apps}) == 3 and len({a.fingerprint_sha256 for a in apps}) == 3


def test_the_raw_token_is_the_only_way_in(emu: Emulator) -> None:
    one, two = appliance(emu, "sensor-1"), appliance(emu, "sensor-2")
    with httpx.Client(verify=trusting(one), trust_env=False) as client:
        url = f"{one.base_url}/api/v1/devices"
        assert client.get(url, headers={"Authorization": one.token}).status_code == 200
        for headers in (
            {},
            {"Authorization": f"Bearer {one.token}"},
            {"Authorization": "0" * 32},
            {"Authorization": two.token},  # another appliance's token
        ):
            response = client.get(url, headers=headers)
            assert response.status_code == 401
            assert response.text == "Unauthorized"
            assert response.headers["content-type"].startswith("text/plain")


def test_each_certificate_is_self_signed_and_not_from_the_test_ca(emu: Emulator) -> None:
    one, two = appliance(emu, "sensor-1"), appliance(emu, "sensor-2")
    with client_for(emu) as mde_client:  # trusts only the MDE test CA
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            mde_client.get(f"{one.base_url}/api/v1/devices", headers={"Authorization": one.token})
    with httpx.Client(verify=trusting(two), trust_env=False) as wrong:  # another sensor's cert
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            wrong.get(f"{one.base_url}/api/v1/devices", headers={"Authorization": one.token})
    with httpx.Client(verify=trusting(one), trust_env=False) as right:  # also as "localhost"
        url = one.base_url.replace("127.0.0.1", "localhost")
        assert right.get(f"{url}/api/v1/devices", headers={"Authorization": one.token}).is_success


def test_devices_follow_c2(
    emu: Emulator, sensor: httpx.Client, devices: list[dict[str, Any]]
) -> None:
    assert len(devices) >= 50  # 60 per sensor, a few deleted or not discovered yet
    assert len({d["id"] for d in devices}) == len(devices)
    assert all(isinstance(d["id"], int) and 1 <= d["id"] <= 60 for d in devices)
    for d in devices:
        assert set(d) == DEVICE_KEYS
        assert d["type"] in DEVICE_TYPES
        assert 1 <= len(d["ipAddresses"]) <= 2
        assert d["macAddresses"] is None or isinstance(d["macAddresses"], list)
        assert all(set(p) == {"addresses", "id", "name"} for p in d["protocols"])
        assert all(set(f) == FIRMWARE_KEYS for f in d["firmware"])
    assert any(d["vendor"] is None for d in devices) and any(d["firmware"] == [] for d in devices)
    assert any(f["serial"] == "N/A" for d in devices for f in d["firmware"])
    assert any(d["operatingSystem"] is None for d in devices)
    authorized = get_json(sensor, "/api/v1/devices", authorized="true")
    unauthorized = get_json(sensor, "/api/v1/devices", authorized="false")
    assert all(d["authorized"] for d in authorized) and not any(
        d["authorized"] for d in unauthorized
    )
    assert len(authorized) + len(unauthorized) == len(devices) and unauthorized


def test_ot_addresses_share_the_mde_ranges_and_some_devices_are_mde_machines(
    emu: Emulator, devices: list[dict[str, Any]]
) -> None:
    with client_for(emu) as client:
        machines, _ = all_machines(client, emu, get_token(client, emu))
    mde = {m["lastIpAddress"]: m for m in machines}
    octets = {ip.split(".")[1] for ip in mde}
    joined = [d for d in devices if d["ipAddresses"][0] in mde]
    assert 2 <= len(joined) <= 3
    for d in joined:
        machine = mde[d["ipAddresses"][0]]
        assert d["name"] == machine["computerDnsName"] and machine["osPlatform"].startswith("Win")
        assert d["type"] in ("Engineering Station", "HMI")
    for d in devices:
        if d not in joined:
            for ip in d["ipAddresses"]:
                first, second, third, _ = ip.split(".")
                assert first == "10" and 64 <= int(third) <= 127
                assert second in octets or second in {"10", "20", "21", "115", "150", "151"}


def test_connections(sensor: httpx.Client, devices: list[dict[str, Any]], emu: Emulator) -> None:
    connections = get_json(sensor, "/api/v1/devices/connections")
    ids = {d["id"] for d in devices}
    assert 1.2 * len(devices) <= len(connections) <= 1.6 * len(devices)
    for c in connections:
        assert set(c) == {
            "firstDeviceId",
            "secondDeviceId",
            "lastSeen",
            "discovered",
            "ports",
            "protocols",
        }
        assert {c["firstDeviceId"], c["secondDeviceId"]} <= ids  # deleted devices vanish
        assert is_epoch_ms(c["lastSeen"]) and is_epoch_ms(c["discovered"])
        assert c["discovered"] <= c["lastSeen"] <= now_ms(emu)
        assert all(set(p) == {"name", "commands"} for p in c["protocols"])
    one = connections[0]["firstDeviceId"]
    mine = get_json(sensor, f"/api/v1/devices/{one}/connections")
    assert mine == [c for c in connections if one in (c["firstDeviceId"], c["secondDeviceId"])]
    middle = sorted(c["discovered"] for c in connections)[len(connections) // 2]
    after = get_json(sensor, "/api/v1/devices/connections", discoveredAfter=middle)
    before = get_json(sensor, "/api/v1/devices/connections", discoveredBefore=middle)
    assert all(c["discovered"] > middle for c in after)
    assert all(c["discovered"] < middle for c in before)
    recent = get_json(sensor, "/api/v1/devices/connections", lastActiveInMinutes=30)
    assert 0 < len(recent) < len(connections)
    assert all(c["lastSeen"] >= now_ms(emu) - 30 * 60_000 for c in recent)
    bad = sensor.get("/api/v1/devices/connections", params={"discoveredAfter": "yesterday"})
    assert (bad.status_code, bad.text) == (500, "Failure - error")


def test_cves_scores_are_strings_sorted_and_capped_per_address(
    emu: Emulator, sensor: httpx.Client
) -> None:
    capped = get_json(sensor, "/api/v1/devices/cves")
    every = get_json(sensor, "/api/v1/devices/cves", top=1000)
    truth = emu.stats()["truth_detail"]["iot"]["sensors"]["sensor-1"]["cves"]
    assert len(every) == truth > len(capped)  # the default top=100 loses some
    by_ip: dict[str, list[dict[str, Any]]] = {}
    for cve in capped:
        assert set(cve) == {"cveId", "score", "ipAddress", "attackVector", "description"}
        assert isinstance(cve["score"], str) and re.fullmatch(r"\d{1,2}\.\d", cve["score"])
        by_ip.setdefault(cve["ipAddress"], []).append(cve)
    assert max(len(v) for v in by_ip.values()) == 100
    for rows in by_ip.values():
        scores = [float(r["score"]) for r in rows]
        assert scores == sorted(scores, reverse=True)
    assert {c["attackVector"] for c in every} == {"NETWORK", "ADJACENT_NETWORK", "LOCAL"}
    three = get_json(sensor, "/api/v1/devices/cves", top=3)
    assert len(three) == sum(min(3, len(v)) for v in by_ip.values())
    ip = next(iter(by_ip))
    assert get_json(sensor, f"/api/v1/devices/{ip}/cves") == by_ip[ip]
    assert get_json(sensor, "/api/v1/devices/10.255.255.255/cves") == []


def test_alerts_v1_and_v2(emu: Emulator, sensor: httpx.Client) -> None:
    alerts = get_json(sensor, "/api/v1/alerts")
    v2 = get_json(sensor, "/api/v2/alerts")
    assert 50 < len(alerts) == len(v2)  # about 3/h over 48 h
    assert [a["id"] for a in alerts] == sorted(a["id"] for a in alerts)
    times = [a["time"] for a in alerts]
    assert times == sorted(times) and all(is_epoch_ms(t) for t in times)
    assert max(times) <= now_ms(emu) and min(times) >= now_ms(emu) - 48 * 3_600_000
    lower = [a for a in alerts if "additionalinformation" in a]
    assert 0.05 < len(lower) / len(alerts) < 0.4  # about 1 in 5: the lower-case quirk
    assert all("additionalInformation" in a for a in alerts if a not in lower)
    info = [a.get("additionalInformation", a.get("additionalinformation")) for a in alerts]
    assert None in info and any(
        isinstance(i, dict) and set(i) == {"description", "information"} for i in info
    )
    assert {a["severity"] for a in alerts} <= {"Warning", "Minor", "Major", "Critical"}
    for a in v2:
        assert {"sourceDeviceAddress", "destinationDeviceAddress", "remediationSteps"} <= set(a)
    assert not any("remediationSteps" in a for a in alerts)
    # fromTime and toTime are inclusive.
    pick = alerts[len(alerts) // 2]
    exact = get_json(sensor, "/api/v1/alerts", fromTime=pick["time"], toTime=pick["time"])
    assert [a["id"] for a in exact] == [pick["id"]]
    later = get_json(sensor, "/api/v1/alerts", fromTime=pick["time"])
    assert later == [a for a in alerts if a["time"] >= pick["time"]]
    handled = get_json(sensor, "/api/v1/alerts", state="handled")
    unhandled = get_json(sensor, "/api/v1/alerts", state="unhandled")
    assert handled and unhandled and len(handled) + len(unhandled) == len(alerts)
    assert get_json(sensor, "/api/v1/alerts", type="something else") == alerts  # ignored
    bad = sensor.get("/api/v1/alerts", params={"fromTime": "now"})
    assert (bad.status_code, bad.text) == (500, "Failure - error")


def test_vulnerability_reports(
    emu: Emulator, sensor: httpx.Client, devices: list[dict[str, Any]]
) -> None:
    report = get_json(sensor, "/api/v1/reports/vulnerabilities/devices")
    assert 0.25 * len(devices) < len(report) < 0.6 * len(devices)
    addresses = {ip for d in devices for ip in d["ipAddresses"]}
    passwords = emu.iot_plaintext_passwords()
    seen = []
    for entry in report:
        assert set(entry["ipAddresses"]) <= addresses
        assert isinstance(entry["securityScore"], int) and 0 <= entry["securityScore"] <= 100
        assert set(entry["operatingSystem"]) == {"name", "type", "version", "latestVersion"}
        v = entry["vulnerabilities"]
        assert {"isWirelessAccessPoint", "weakAuthentication", "malwareIndicationsDetected"} <= set(
            v
        )
        for cve in v["cves"]:
            assert isinstance(cve["score"], float)  # a number here, a string on /cves
        for p in v["plainTextPasswords"]:
            assert p["strength"] in ("Very Weak", "Weak", "Medium", "Strong")
            seen.append(p["password"])
    assert seen and set(seen) <= passwords and len(seen) == len(set(seen))
    assert all(len(p) >= 6 for p in passwords)
    security = get_json(sensor, "/api/v1/reports/vulnerabilities/security")
    assert set(security) == {
        "unauthorizedDevices",
        "illegalTrafficByFirewallRules",
        "weakFirewallRules",
        "accessPoints",
        "connectionsBetweenSubnets",
        "industrialMalwareIndicators",
        "internetConnections",
    }
    assert security["unauthorizedDevices"]
    for row in security["unauthorizedDevices"]:
        assert row["address"] in addresses and is_epoch_ms(row["firstDetectionTime"])
    for row in security["illegalTrafficByFirewallRules"]:
        assert {row["server"], row["client"]} <= addresses
    operational = get_json(sensor, "/api/v1/reports/vulnerabilities/operational")
    assert set(operational) == {
        "backupServer",
        "ipNetworks",
        "protocolProblems",
        "protocolDataVolumes",
        "disconnections",
    }
    assert all(
        re.fullmatch(r"\d+\.\d\d MB", r["volume"]) for r in operational["protocolDataVolumes"]
    )
    mitigation = get_json(sensor, "/api/v1/reports/vulnerabilities/mitigation")
    assert set(mitigation) == {"notifications", "mitigation"}


def test_faults_apply_to_the_appliances_by_path_prefix() -> None:
    faults = (
        Fault("/api/v1/devices", 500, body="Failure - error"),
        Fault("/api/v1/alerts", 429, times=1, after=1),
    )
    settings = EmulatorSettings(devices=5, seed=3, faults=faults, iot_devices_per_sensor=12)
    with Emulator(settings) as emu, iot_client(appliance(emu, "sensor-2")) as client:
        failed = client.get("/api/v1/devices")
        assert (failed.status_code, failed.text) == (500, "Failure - error")
        assert client.get("/api/v1/devices").status_code == 200  # times=1
        assert client.get("/api/v1/alerts").status_code == 200  # after=1
        throttled = client.get("/api/v1/alerts")
        assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "1"
        assert throttled.text == "Failure - error"
        stats = emu.stats()
        assert stats["iot_requests"]["sensor-2"]["/api/v1/devices"] == {"200": 1, "500": 1}
        assert [f["injected"] for f in stats["faults"]] == [1, 1]


def test_a_revoked_token_is_refused_from_then_on() -> None:
    settings = EmulatorSettings(devices=5, seed=3, iot_devices_per_sensor=12)
    with Emulator(settings) as emu, iot_client(appliance(emu, "sensor-2")) as client:
        assert client.get("/api/v1/devices").status_code == 200
        emu.revoke_iot_token("sensor-2")
        refused = client.get("/api/v1/devices")
        assert (refused.status_code, refused.text) == (401, "Unauthorized")
        with iot_client(appliance(emu, "sensor-1")) as other:
            assert other.get("/api/v1/devices").status_code == 200  # only that appliance
        with pytest.raises(KeyError):
            emu.revoke_iot_token("sensor-9")
