"""``GET /api/machines``: record shape, paging, ``$filter``, errors (defender-apis.md B.0, B.1)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from endpoint_forensics.tables.datasets import dataset_names
from epf_emulator import Emulator, EmulatorSettings

from .conftest import UNTHROTTLED, all_machines, bearer, client_for, get_token

ISO7 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z$")
HEALTH = {
    "Active",
    "Inactive",
    "ImpairedCommunication",
    "NoSensorData",
    "NoSensorDataImpairedCommunication",
    "Unknown",
}
ONBOARDING = {"Onboarded", "onboarded", "CanBeOnboarded", "Unsupported", "InsufficientInfo"}


def _instant(text: str) -> datetime:
    return datetime.strptime(text[:26] + "Z", "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def test_headers_and_envelope(emu: Emulator, client: httpx.Client, mde_token: str) -> None:
    response = client.get(
        f"{emu.base_url}/api/machines", params={"$top": 2}, headers=bearer(mde_token)
    )
    assert response.status_code == 200
    assert (
        response.headers["content-type"]
        == "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8"
    )
    assert response.headers["odata-version"] == "4.0"
    body = response.json()
    assert body["@odata.context"] == f"{emu.base_url}/api/$metadata#Machines"
    assert len(body["value"]) == 2
    assert "@odata.nextLink" not in body  # with $top, never (defender-apis.md F)


def test_every_record_has_the_documented_shape(
    emu: Emulator, machines: list[dict[str, Any]]
) -> None:
    assert len(machines) == 150
    now = emu.now  # the emulated clock
    for m in machines:
        assert re.fullmatch(r"[0-9a-f]{40}", m["id"])
        assert re.fullmatch(r"(ws|srv|mac|lnx)-\d{4}\.contoso\.com", m["computerDnsName"])
        assert ISO7.match(m["firstSeen"]) and ISO7.match(m["lastSeen"])
        assert _instant(m["firstSeen"]) <= _instant(m["lastSeen"]) <= now
        assert (now - _instant(m["lastSeen"])).days < 30
        assert m["healthStatus"] in HEALTH
        assert m["onboardingStatus"] in ONBOARDING
        assert m["osBuild"] is None or isinstance(m["osBuild"], int)
        assert isinstance(m["rbacGroupId"], int) and isinstance(m["rbacGroupName"], str)
        assert (m["rbacGroupId"] == 0) == (m["rbacGroupName"] == "Unassigned")
        assert m["riskScore"] in {"None", "Informational", "Low", "Medium", "High"}
        assert m["exposureLevel"] in {"None", "Low", "Medium", "High"}
        assert m["deviceValue"] in {"Normal", "Low", "High"}
        assert isinstance(m["isAadJoined"], bool)
        assert (m["aadDeviceId"] is not None) == m["isAadJoined"]
        assert isinstance(m["machineTags"], list) and all(
            isinstance(t, str) for t in m["machineTags"]
        )
        assert m["osArchitecture"] in {"32-bit", "64-bit"}
        assert m["lastIpAddress"].startswith("10.")
        assert isinstance(m["isPotentialDuplication"], bool) and isinstance(m["isExcluded"], bool)
        assert m["ipAddresses"]
        for nic in m["ipAddresses"]:
            assert set(nic) == {"ipAddress", "macAddress", "type", "operationalStatus"}
            assert nic["macAddress"] is None or re.fullmatch(r"[0-9A-F]{12}", nic["macAddress"])
            assert nic["operationalStatus"] in {"Up", "Down"}
        if m.get("vmMetadata") is not None:
            assert set(m["vmMetadata"]) == {"vmId", "cloudProvider", "resourceId", "subscriptionId"}
    platforms = {m["osPlatform"] for m in machines}
    assert {"Windows10", "Windows11", "macOS", "Linux"} <= platforms
    assert any(p.startswith("WindowsServer") for p in platforms)


def test_paging_with_top_returns_every_id_exactly_once(
    emu: Emulator, client: httpx.Client, mde_token: str, machines: list[dict[str, Any]]
) -> None:
    records, pages = all_machines(client, emu, mde_token, **{"$top": 7})
    assert pages == math.ceil(150 / 7)
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == 150
    assert ids == [m["id"] for m in machines]  # a stable order


def test_with_top_and_a_filter_there_is_no_next_link_and_skip_pages(
    emu: Emulator, client: httpx.Client, mde_token: str, machines: list[dict[str, Any]]
) -> None:
    expected = [m["id"] for m in machines if m["healthStatus"] == "Active"]
    params = {"$filter": "healthStatus eq 'Active'", "$top": "10"}
    first = client.get(
        f"{emu.base_url}/api/machines", params=params, headers=bearer(mde_token)
    ).json()
    assert len(first["value"]) == 10 and "@odata.nextLink" not in first
    records, pages = all_machines(client, emu, mde_token, **params)
    assert [r["id"] for r in records] == expected
    assert pages == math.ceil(len(expected) / 10) + (len(expected) % 10 == 0)


def test_the_last_page_has_no_next_link(
    emu: Emulator, client: httpx.Client, mde_token: str
) -> None:
    body = client.get(
        f"{emu.base_url}/api/machines", params={"$skip": 140, "$top": 10}, headers=bearer(mde_token)
    ).json()
    assert len(body["value"]) == 10 and "@odata.nextLink" not in body
    body = client.get(f"{emu.base_url}/api/machines", headers=bearer(mde_token)).json()
    assert len(body["value"]) == 150 and "@odata.nextLink" not in body  # default page is 10,000


FILTERS = [
    ("healthStatus ne 'Active'", lambda m: m["healthStatus"] != "Active"),
    (
        "riskScore eq 'High' or exposureLevel eq 'High'",
        lambda m: m["riskScore"] == "High" or m["exposureLevel"] == "High",
    ),
    ("startswith(computerDnsName,'mac-')", lambda m: m["computerDnsName"].startswith("mac-")),
    (
        "osPlatform eq 'Linux' and not (rbacGroupId eq 0)",
        lambda m: m["osPlatform"] == "Linux" and m["rbacGroupId"] != 0,
    ),
    ("rbacGroupId ge 200", lambda m: m["rbacGroupId"] >= 200),
    ("machineTags/any(t: t eq 'VIP')", lambda m: "VIP" in m["machineTags"]),
    ("onboardingStatus eq 'CanBeOnboarded'", lambda m: m["onboardingStatus"] == "CanBeOnboarded"),
    (
        "(healthStatus eq 'Inactive') and (osPlatform eq 'Windows10' or osPlatform eq 'Windows11')",
        lambda m: m["healthStatus"] == "Inactive" and m["osPlatform"] in ("Windows10", "Windows11"),
    ),
    ("aadDeviceId eq null", lambda m: m["aadDeviceId"] is None),
]


@pytest.mark.parametrize(("expression", "expected"), FILTERS, ids=[f for f, _ in FILTERS])
def test_filters_match_a_local_evaluation(
    emu: Emulator,
    client: httpx.Client,
    mde_token: str,
    machines: list[dict[str, Any]],
    expression: str,
    expected: Any,
) -> None:
    records, _ = all_machines(client, emu, mde_token, **{"$filter": expression})
    want = [m["id"] for m in machines if expected(m)]
    assert want, f"the fleet should contain matches for {expression}"
    assert [r["id"] for r in records] == want


def test_datetime_filters_compare_instants(
    emu: Emulator, client: httpx.Client, mde_token: str, machines: list[dict[str, Any]]
) -> None:
    cut = sorted(_instant(m["lastSeen"]) for m in machines)[len(machines) // 2]
    literal = cut.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
    records, _ = all_machines(client, emu, mde_token, **{"$filter": f"lastSeen gt {literal}"})
    assert {r["id"] for r in records} == {
        m["id"] for m in machines if _instant(m["lastSeen"]) > cut
    }
    day = (cut.date()).isoformat()
    records, _ = all_machines(client, emu, mde_token, **{"$filter": f"lastSeen lt {day}Z"})
    assert {r["id"] for r in records} == {m["id"] for m in machines if m["lastSeen"][:10] < day}


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("healthStatus eq", "expected a value"),
        ("healthStatus eq 'Active' and", "expected a value"),
        ("nosuchfield eq 1", "Could not find a property named 'nosuchfield'"),
        ("firstSeen gt 2024-01-01Z", "cannot be used in the $filter"),
        ("healthStatus eq 5", "incompatible types"),
        ("(healthStatus eq 'Active'", "expected ')'"),
        ("healthStatus eq 'Active", "not valid"),
    ],
)
def test_a_bad_filter_is_400_saying_why(
    emu: Emulator, client: httpx.Client, mde_token: str, expression: str, fragment: str
) -> None:
    response = client.get(
        f"{emu.base_url}/api/machines", params={"$filter": expression}, headers=bearer(mde_token)
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "ODataError"
    assert fragment in error["message"]


@pytest.mark.parametrize(
    "params", [{"$top": "10001"}, {"$top": "ten"}, {"$skip": "-1"}, {"$orderby": "id"}]
)
def test_bad_query_options_are_400(
    emu: Emulator, client: httpx.Client, mde_token: str, params: dict[str, str]
) -> None:
    response = client.get(f"{emu.base_url}/api/machines", params=params, headers=bearer(mde_token))
    assert response.status_code == 400
    assert response.json()["error"]["code"] in {"BadRequest", "ODataError"}


def test_get_one_machine_and_404(
    emu: Emulator, client: httpx.Client, mde_token: str, machines: list[dict[str, Any]]
) -> None:
    wanted = machines[17]
    response = client.get(f"{emu.base_url}/api/machines/{wanted['id']}", headers=bearer(mde_token))
    assert response.status_code == 200
    body = response.json()
    assert body.pop("@odata.context") == f"{emu.base_url}/api/$metadata#Machines/$entity"
    assert body == wanted
    response = client.get(f"{emu.base_url}/api/machines/{'0' * 40}", headers=bearer(mde_token))
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "ResourceNotFound" and "0" * 40 in error["message"]


def test_an_empty_tenant_answers_404_no_recent_machines() -> None:
    settings = EmulatorSettings(devices=0, seed=2, iot_sensors=0)
    with Emulator(settings) as emu, client_for(emu) as client:
        response = client.get(
            f"{emu.base_url}/api/machines", headers=bearer(get_token(client, emu))
        )
        assert response.status_code == 404
        error = response.json()["error"]
        assert error == {
            "code": "ResourceNotFound",
            "message": "No recent machines",
            "target": error["target"],
        }
        truth = emu.stats()["truth"]
        assert truth["EPF_Runs_CL"] == len(dataset_names("tenant"))
        assert truth["EPF_CveCatalog_CL"] > 0  # CVEs of products nobody runs
        assert {
            k: v for k, v in truth.items() if k not in ("EPF_Runs_CL", "EPF_CveCatalog_CL")
        } == {
            "EPF_TenantScores_CL": 2,  # an empty tenant still has its scores
            "EPF_Devices_CL": 0,
            "EPF_AgentHealth_CL": 0,
            "EPF_AvHealth_CL": 0,
            "EPF_SecureConfig_CL": 0,
            "EPF_Vulnerabilities_CL": 0,
            "EPF_SoftwareInventory_CL": 0,
            "EPF_Recommendations_CL": 0,
            "EPF_VulnerabilityChanges_CL": 0,
        }


def test_extra_records_are_appended_verbatim() -> None:
    extras = (
        {
            "id": "f" * 40,
            "computerDnsName": "odd.contoso.com",
            "healthStatus": 5,
            "newField": {"x": [1, 2]},
        },
        {"computerDnsName": "no-id.contoso.com"},
    )
    with (
        Emulator(
            EmulatorSettings(
                iot_sensors=0,
                devices=12,
                seed=4,
                extra_machine_records=extras,
                rate_limits=UNTHROTTLED,
            )
        ) as emu,
        client_for(emu) as client,
    ):
        token = get_token(client, emu)
        records, _ = all_machines(client, emu, token)
        assert len(records) == 14
        assert records[-2:] == [dict(e) for e in extras]
        # A filter must not trip over malformed records.
        filtered, _ = all_machines(client, emu, token, **{"$filter": "healthStatus eq 'Active'"})
        assert all(r.get("healthStatus") == "Active" for r in filtered)
        assert (
            emu.stats()["truth"]["EPF_Devices_CL"] == 13
        )  # the record without an id is not a device


def test_versioned_path_serves_the_same(
    emu: Emulator, client: httpx.Client, mde_token: str, machines: list[dict[str, Any]]
) -> None:
    body = client.get(
        f"{emu.base_url}/api/v1.0/machines",
        params={"$top": 3, "$skip": 3},
        headers=bearer(mde_token),
    ).json()
    assert [r["id"] for r in body["value"]] == [m["id"] for m in machines[3:6]]
    assert "@odata.nextLink" not in body
