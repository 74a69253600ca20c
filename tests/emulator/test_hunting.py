"""Advanced hunting on both endpoints: shapes, types, time windows, limits and errors (B.3, B.4)."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from epf_emulator import Emulator, EmulatorSettings

from .conftest import ALL_HEALTH_SCIDS, GRAPH, HEALTH_SCIDS, client_for, get_token, hunt

ISO7 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z$")
GRAPH_CONTEXT = (
    "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.security.huntingQueryResults"
)
TYPES_QUERY = 'print i=toint(1), l=tolong(2), d=1.5, s="x", b=true, dt=datetime(2024-01-01), o=dynamic({"a":1}), arr=dynamic([1,2])'
TYPES = {
    "i": "Int32",
    "l": "Int64",
    "d": "Double",
    "s": "String",
    "b": "Boolean",
    "dt": "DateTime",
    "o": "Object",
    "arr": "Object",
}
VALUES = {
    "i": 1,
    "l": 2,
    "d": 1.5,
    "s": "x",
    "b": True,
    "dt": "2024-01-01T00:00:00.0000000Z",
    "o": {"a": 1},
    "arr": [1, 2],
}


def _mde(response: httpx.Response) -> tuple[dict[str, str], list[dict[str, Any]]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"Schema", "Results"}
    return {c["Name"]: c["Type"] for c in body["Schema"]}, body["Results"]


def _graph(response: httpx.Response) -> tuple[dict[str, str], list[dict[str, Any]]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["@odata.context"] == GRAPH_CONTEXT
    assert set(body) == {"@odata.context", "schema", "results"}
    return {c["name"]: c["type"] for c in body["schema"]}, body["results"]


def test_types_and_values_on_both_endpoints(
    emu: Emulator, client: httpx.Client, mde_token: str, graph_token: str
) -> None:
    schema, rows = _mde(hunt(client, emu, mde_token, TYPES_QUERY))
    assert schema == TYPES and rows == [VALUES]
    schema, rows = _graph(hunt(client, emu, graph_token, TYPES_QUERY, graph=True))
    assert schema == TYPES and rows == [VALUES]


def test_device_info_latest_snapshot_matches_the_machines(
    emu: Emulator, client: httpx.Client, graph_token: str, machines: list[dict[str, Any]]
) -> None:
    query = "DeviceInfo | summarize arg_max(Timestamp, *) by DeviceId | project DeviceId, DeviceName, OSPlatform, OSBuild, Timestamp, IsAzureADJoined, DeviceManualTags, MachineGroup"
    schema, rows = _graph(hunt(client, emu, graph_token, query, graph=True))
    assert schema == {
        "DeviceId": "String",
        "DeviceName": "String",
        "OSPlatform": "String",
        "OSBuild": "Int64",
        "Timestamp": "DateTime",
        "IsAzureADJoined": "Boolean",
        "DeviceManualTags": "String",  # JSON text, as the documented schema says
        "MachineGroup": "String",
    }
    by_id = {m["id"]: m for m in machines}
    assert {r["DeviceId"] for r in rows} == set(by_id)  # every device has recent snapshots
    for row in rows:
        machine = by_id[row["DeviceId"]]
        assert ISO7.match(row["Timestamp"])
        assert row["DeviceName"] == machine["computerDnsName"]
        assert row["OSPlatform"] == machine["osPlatform"]
        assert row["OSBuild"] == machine["osBuild"]
        assert row["IsAzureADJoined"] == machine["isAadJoined"]
        assert isinstance(row["DeviceManualTags"], str)
        assert orjson.loads(row["DeviceManualTags"]) == machine["machineTags"]
        assert row["MachineGroup"] == machine["rbacGroupName"]
        # The newest snapshot is the device's last full report.
        assert row["Timestamp"][:19] == machine["lastSeen"][:19]


def test_device_info_has_daily_history_within_30_days(
    emu: Emulator, client: httpx.Client, mde_token: str
) -> None:
    query = "DeviceInfo | summarize n = count(), oldest = min(Timestamp), newest = max(Timestamp) by DeviceId"
    _, rows = _mde(hunt(client, emu, mde_token, query))
    now = emu.now  # the emulated clock
    assert max(r["n"] for r in rows) >= 29
    for row in rows:
        first = datetime.fromisoformat(row["oldest"][:26] + "+00:00")
        assert now - first <= timedelta(days=30)


def test_assessments_carry_the_health_scids_and_others(
    emu: Emulator, client: httpx.Client, graph_token: str, machines: list[dict[str, Any]]
) -> None:
    query = (
        "DeviceTvmSecureConfigurationAssessment | summarize arg_max(Timestamp, *) by DeviceId, ConfigurationId"
        " | project DeviceId, OSPlatform, ConfigurationId, IsCompliant, IsApplicable, Context, ConfigurationImpact"
    )
    schema, rows = _graph(hunt(client, emu, graph_token, query, graph=True))
    assert (
        schema["IsCompliant"] == "Boolean"
        and schema["Context"] == "Object"
        and schema["ConfigurationImpact"] == "Double"
    )
    onboarded = {m["id"] for m in machines if m["onboardingStatus"].lower() == "onboarded"}
    assert {r["DeviceId"] for r in rows} == onboarded  # no sensor, no assessments
    health = [r for r in rows if r["ConfigurationId"] in ALL_HEALTH_SCIDS]
    others = [r for r in rows if r["ConfigurationId"] not in ALL_HEALTH_SCIDS]
    per_device: dict[str, int] = {}
    for row in rows:
        per_device[row["DeviceId"]] = per_device.get(row["DeviceId"], 0) + 1
    assert all(20 <= count <= 30 for count in per_device.values())  # 20-30 per device
    assert len(others) > len(health)
    for row in health:
        family = "Windows" if row["OSPlatform"].startswith("Windows") else row["OSPlatform"]
        assert row["ConfigurationId"] in HEALTH_SCIDS[family]
    failing = sum(1 for r in health if r["IsApplicable"] and not r["IsCompliant"])
    assert 0.02 < failing / len(health) < 0.2
    assert any(not r["IsApplicable"] for r in health)
    signatures = [
        r for r in health if r["ConfigurationId"] in ("scid-2011", "scid-5095", "scid-6095")
    ]
    assert signatures and all(len(r["Context"][0]) == 4 for r in signatures)
    modes = {r["Context"][0][0] for r in health if r["ConfigurationId"] == "scid-2010"}
    assert modes <= {"0", "1", "2", "4", "5", ""} and "0" in modes


def test_older_rows_sometimes_disagree_with_the_latest(
    emu: Emulator, client: httpx.Client, mde_token: str
) -> None:
    query = (
        "DeviceTvmSecureConfigurationAssessment | summarize states = dcount(tostring(IsCompliant)), rows = count()"
        " by DeviceId, ConfigurationId | summarize flipped = countif(states > 1), multi = countif(rows > 1), total = count()"
    )
    _, rows = _mde(hunt(client, emu, mde_token, query))
    assert rows[0]["flipped"] > 0 and rows[0]["multi"] >= rows[0]["flipped"]
    assert rows[0]["multi"] < rows[0]["total"] / 2


def test_results_are_truncated_silently_at_the_row_limit() -> None:
    # Each API has its own cap: Graph's may differ from the MDE API's.
    settings = EmulatorSettings(
        iot_sensors=0, devices=20, seed=5, hunting_row_limit=7, graph_hunting_row_limit=5
    )
    with Emulator(settings) as emu, client_for(emu) as client:
        token = get_token(client, emu)
        _, rows = _mde(hunt(client, emu, token, "DeviceInfo | order by Timestamp desc"))
        assert len(rows) == 7
        stamps = [r["Timestamp"] for r in rows]
        assert stamps == sorted(stamps, reverse=True)  # ordering survives the truncation
        _, rows = _graph(hunt(client, emu, get_token(client, emu, GRAPH), "DeviceInfo", graph=True))
        assert len(rows) == 5
        _, rows = _mde(hunt(client, emu, token, "DeviceInfo | count"))
        assert rows[0]["Count"] > 7


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("DeviceInfo | where", "parse"),
        ("DeviceInfo | make-series count() on Timestamp step 1d", "MakeSeries"),
        ("NoSuchTable | take 1", "NoSuchTable"),
        ("DeviceInfo | project NoSuchColumn", "NoSuchColumn"),
        (".set-or-replace DeviceInfo <| datatable(a:int)[1]", "set-or-replace"),
        ("", "empty"),
    ],
)
def test_bad_kql_is_400_on_both_endpoints(
    emu: Emulator, client: httpx.Client, mde_token: str, graph_token: str, query: str, fragment: str
) -> None:
    for token, graph in ((mde_token, False), (graph_token, True)):
        response = hunt(client, emu, token, query, graph=graph)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "BadRequest"
        assert fragment in error["message"]


def test_the_tables_cannot_be_changed_by_a_query(
    emu: Emulator, client: httpx.Client, mde_token: str
) -> None:
    before = _mde(hunt(client, emu, mde_token, "DeviceInfo | count"))[1]
    hunt(client, emu, mde_token, ".set-or-replace DeviceInfo <| datatable(a:int)[1]")
    hunt(client, emu, mde_token, ".drop table DeviceInfo")
    assert _mde(hunt(client, emu, mde_token, "DeviceInfo | count"))[1] == before


def test_body_errors(emu: Emulator, client: httpx.Client, mde_token: str, graph_token: str) -> None:
    headers = {"Authorization": f"Bearer {mde_token}"}
    response = client.post(
        f"{emu.base_url}/api/advancedqueries/run", json={"query": "DeviceInfo"}, headers=headers
    )
    assert response.status_code == 400  # MDE body parameter names are case-sensitive
    assert response.json()["error"]["code"] == "MissingRequiredParameter"
    response = client.post(
        f"{emu.base_url}/api/advancedqueries/run", content=b"not json", headers=headers
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "InvalidRequestBody"
    # Graph reads property names case-insensitively.
    response = client.post(
        f"{emu.base_url}/v1.0/security/runHuntingQuery",
        json={"query": "print x=1"},
        headers={"Authorization": f"Bearer {graph_token}"},
    )
    assert response.status_code == 200


def test_graph_timespan_narrows_the_window(
    emu: Emulator, client: httpx.Client, graph_token: str
) -> None:
    query = "DeviceTvmSecureConfigurationAssessment | summarize n = count(), oldest = min(Timestamp), newest = max(Timestamp)"
    _, (everything,) = _graph(hunt(client, emu, graph_token, query, graph=True))
    _, (same,) = _graph(hunt(client, emu, graph_token, query, graph=True, Timespan="P30D"))
    assert same == everything
    _, (last_week,) = _graph(hunt(client, emu, graph_token, query, graph=True, Timespan="P7D"))
    now = emu.now  # the emulated clock
    assert 0 < last_week["n"] < everything["n"]
    assert datetime.fromisoformat(last_week["oldest"][:26] + "+00:00") >= now - timedelta(
        days=7, seconds=5
    )
    end = (now - timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    start = (now - timedelta(days=25)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for timespan in (f"{start}/{end}", f"P5D/{end}", f"{start}/P5D"):
        _, (window,) = _graph(hunt(client, emu, graph_token, query, graph=True, Timespan=timespan))
        assert window["oldest"] >= start[:19] and window["newest"] <= end[:19] + "Z", timespan
    _, (since,) = _graph(hunt(client, emu, graph_token, query, graph=True, Timespan=start))
    assert since["oldest"] >= start[:19] and since["newest"] == everything["newest"]
    # Never more than the 30 days the service keeps.
    _, (wide,) = _graph(hunt(client, emu, graph_token, query, graph=True, Timespan="P90D"))
    assert wide == everything


@pytest.mark.parametrize(
    "timespan",
    [
        "30 days",
        "P",
        "P1Y",
        "2024-13-01T00:00:00Z",
        "2024-02-15T00:00:00Z/2024-02-01T00:00:00Z",
        30,
    ],
)
def test_graph_rejects_bad_timespans(
    emu: Emulator, client: httpx.Client, graph_token: str, timespan: Any
) -> None:
    response = hunt(client, emu, graph_token, "print x=1", graph=True, Timespan=timespan)
    assert response.status_code == 400
    assert "Timespan" in response.json()["error"]["message"]


def test_concurrent_queries_each_see_their_own_window(emu: Emulator, graph_token: str) -> None:
    query = "DeviceTvmSecureConfigurationAssessment | count"

    def count(days: int) -> int:
        with client_for(emu) as client:
            _, rows = _graph(
                hunt(client, emu, graph_token, query, graph=True, Timespan=f"P{days}D")
            )
            return int(rows[0]["Count"])

    expected = {days: count(days) for days in (2, 10, 30)}
    assert expected[2] < expected[10] < expected[30]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(count, [2, 10, 30] * 6))
    assert results == [expected[d] for d in [2, 10, 30] * 6]
