"""The emulated Resource Manager API of the workspace's tables: classic tables, migration,
column types that never change, retention limits, plans per api-version, and ARM's tokens and
role scope.

Expectations come from the docs and the original connector's reference, not from the
emulator's code: the classic columns and their suffix types are written out here.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from epf_emulator import Emulator, EmulatorSettings
from epf_emulator.azure.workspace import workspace_resource_id

from .conftest import MDE, bearer, client_for, get_token

SEED = 31
API = {"api-version": "2022-10-01"}
# original-connector.md: the AD4IOT_Devices_CL fields, typed by their Data Collector suffix.
IOT_DEVICE_TYPES = {
    "id_d": "real",
    "name_s": "string",
    "vendor_s": "string",
    "type_s": "string",
    "operatingSystem_s": "string",
    "ipAddresses_s": "string",
    "macAddresses_s": "string",
    "protocols_s": "string",
    "firmware_s": "string",
    "authorized_b": "boolean",
    "engineeringStation_b": "boolean",
    "scanner_b": "boolean",
    "hasDynamicAddress_b": "boolean",
}
LEGACY = (
    "AgentHealthStatusWindows_CL",
    "MDE_MAC_devicehealth_CL",
    "AD4IOT_Devices_CL",
    "AD4IOT_CVE_CL",
    "AD4IOT_Events_CL",
)


def _started() -> Iterator[tuple[Emulator, httpx.Client, str]]:
    with Emulator(EmulatorSettings(devices=5, seed=SEED, iot_sensors=0)) as emu:
        with client_for(emu) as client:
            yield emu, client, get_token(client, emu, "https://management.azure.com")


@pytest.fixture()
def arm() -> Iterator[tuple[Emulator, httpx.Client, str]]:
    """A fresh emulator (tests that migrate the legacy tables), a client and an ARM token."""
    yield from _started()


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[Emulator, httpx.Client, str]]:
    """One emulator for the tests that leave the legacy tables as they are."""
    yield from _started()


def _url(emu: Emulator, table: str = "", *, workspace: str | None = None) -> str:
    base = f"{emu.base_url}{workspace or workspace_resource_id(SEED)}"
    return f"{base}/tables/{table}" if table else base


def _table(columns: list[dict[str, str]], **props: Any) -> dict[str, Any]:
    return {"properties": {"schema": {"columns": columns}, **props}}


TIME = {"name": "TimeGenerated", "type": "dateTime"}


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert response.headers["x-ms-request-id"]
    message: str = error["message"]
    return message


def test_the_original_connectors_tables_are_classic_typed_by_their_suffix(arm) -> None:
    emu, client, token = arm
    for name in LEGACY:
        response = client.get(_url(emu, name), params=API, headers=bearer(token))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["name"] == name
        assert body["id"] == f"{workspace_resource_id(SEED)}/tables/{name}"
        schema = body["properties"]["schema"]
        assert (schema["tableType"], schema["tableSubType"]) == ("CustomLog", "Classic")
        standard = {c["name"]: c["type"] for c in schema["standardColumns"]}
        assert standard["TimeGenerated"] == "dateTime"
        assert {"TenantId", "SourceSystem", "Computer", "RawData"} <= set(standard)
    devices = client.get(_url(emu, "AD4IOT_Devices_CL"), params=API, headers=bearer(token))
    columns = {c["name"]: c["type"] for c in devices.json()["properties"]["schema"]["columns"]}
    assert columns == IOT_DEVICE_TYPES
    events = client.get(_url(emu, "AD4IOT_Events_CL"), params=API, headers=bearer(token))
    columns = {c["name"]: c["type"] for c in events.json()["properties"]["schema"]["columns"]}
    assert columns["timestamp_d"] == "real"  # epoch ms, a number


def test_a_classic_table_refuses_columns_until_migrated_and_migrating_is_idempotent(arm) -> None:
    emu, client, token = arm
    name = "AD4IOT_Events_CL"
    body = _table(
        [TIME, {"name": "timestamp_d", "type": "real"}, {"name": "RunId", "type": "string"}]
    )
    refused = client.put(_url(emu, name), params=API, json=body, headers=bearer(token))
    message = _error(refused, 400, "InvalidParameter")
    assert message.startswith(
        f"Changing Classic table {name} schema by using DataCollectionRuleBased tables api is "
        "forbidden, please migrate the table first"
    )
    # Retention alone is no schema change: a classic table takes it.
    kept = client.put(
        _url(emu, name),
        params=API,
        json={"properties": {"retentionInDays": 60}},
        headers=bearer(token),
    )
    assert kept.status_code == 200, kept.text
    assert kept.json()["properties"]["schema"]["tableSubType"] == "Classic"
    for _ in range(2):  # idempotent
        migrated = client.post(f"{_url(emu, name)}/migrate", params=API, headers=bearer(token))
        assert migrated.status_code == 200, migrated.text
    after = client.get(_url(emu, name), params=API, headers=bearer(token)).json()
    assert after["properties"]["schema"]["tableSubType"] == "DataCollectionRuleBased"
    accepted = client.put(_url(emu, name), params=API, json=body, headers=bearer(token))
    assert accepted.status_code == 200, accepted.text
    names = [c["name"] for c in accepted.json()["properties"]["schema"]["columns"]]
    assert names == ["TimeGenerated", "timestamp_d", "RunId"]


def test_a_columns_type_never_changes_not_even_after_it_was_dropped(arm) -> None:
    emu, client, token = arm
    name = "AD4IOT_Devices_CL"
    client.post(f"{_url(emu, name)}/migrate", params=API, headers=bearer(token))
    retyped = _table([TIME, {"name": "id_d", "type": "string"}])
    message = _error(
        client.put(_url(emu, name), params=API, json=retyped, headers=bearer(token)),
        400,
        "InvalidParameter",
    )
    assert "id_d" in message and "real" in message
    new = "EPF_Retype_CL"
    first = _table([TIME, {"name": "Score", "type": "real"}])
    assert (
        client.put(_url(emu, new), params=API, json=first, headers=bearer(token)).status_code == 200
    )
    dropped = _table([TIME])
    assert (
        client.put(_url(emu, new), params=API, json=dropped, headers=bearer(token)).status_code
        == 200
    )
    back = _table([TIME, {"name": "Score", "type": "string"}])
    _error(
        client.put(_url(emu, new), params=API, json=back, headers=bearer(token)),
        400,
        "InvalidParameter",
    )
    # The same type again is fine, in any spelling the API takes.
    same = _table(
        [{"name": "TimeGenerated", "type": "DateTime"}, {"name": "Score", "type": "Real"}]
    )
    assert (
        client.put(_url(emu, new), params=API, json=same, headers=bearer(token)).status_code == 200
    )


@pytest.mark.parametrize(
    "name, columns, problem",
    [
        ("EPF_NoSuffix", [TIME], "_CL"),
        ("EPF_NoTime_CL", [{"name": "RunId", "type": "string"}], "TimeGenerated"),
        ("EPF_Reserved_CL", [TIME, {"name": "TenantId", "type": "string"}], "reserved"),
        (
            "EPF_Twice_CL",
            [TIME, {"name": "A1", "type": "string"}, {"name": "a1", "type": "int"}],
            "twice",
        ),
        ("EPF_Type_CL", [TIME, {"name": "A1", "type": "text"}], "type"),
    ],
)
def test_a_new_table_is_refused_as_azure_refuses_it(shared, name, columns, problem) -> None:
    emu, client, token = shared
    response = client.put(_url(emu, name), params=API, json=_table(columns), headers=bearer(token))
    assert problem in _error(response, 400, "InvalidParameter")
    assert client.get(_url(emu, name), params=API, headers=bearer(token)).status_code == 404


@pytest.mark.parametrize(
    "retention, total, ok",
    [
        (4, 4, True),
        (730, 4383, True),
        (-1, -1, True),
        (90, -1, True),
        (3, 365, False),
        (0, 365, False),
        (731, 800, False),
        (90, 4384, False),
        (90, 3, False),
        (90, 60, False),  # total below the interactive retention
        (-2, 365, False),
    ],
)
def test_retention_is_minus_one_or_within_the_documented_limits(
    shared, retention, total, ok
) -> None:
    emu, client, token = shared
    body = _table([TIME], retentionInDays=retention, totalRetentionInDays=total)
    response = client.put(_url(emu, "EPF_Keep_CL"), params=API, json=body, headers=bearer(token))
    if not ok:
        _error(response, 400, "InvalidParameter")
        return
    assert response.status_code == 200, response.text
    props = response.json()["properties"]
    assert props["retentionInDaysAsDefault"] is (retention == -1)
    assert props["retentionInDays"] == (30 if retention == -1 else retention)  # workspace: 30
    assert props["totalRetentionInDays"] == (props["retentionInDays"] if total == -1 else total)


def test_missing_tables_and_workspaces_are_arms_404_and_the_workspace_has_a_region(shared) -> None:
    emu, client, token = shared
    message = _error(
        client.get(_url(emu, "Nothing_CL"), params=API, headers=bearer(token)),
        404,
        "ResourceNotFound",
    )
    assert message.startswith("The specified table: 'Nothing_CL' was not found.")
    _error(
        client.post(f"{_url(emu, 'Nothing_CL')}/migrate", params=API, headers=bearer(token)),
        404,
        "ResourceNotFound",
    )
    other = workspace_resource_id(SEED).replace("epf-workspace", "other-workspace")
    _error(
        client.get(_url(emu, workspace=other), params=API, headers=bearer(token)),
        404,
        "ResourceNotFound",
    )
    workspace = client.get(_url(emu), params=API, headers=bearer(token))
    assert workspace.status_code == 200
    assert workspace.json()["location"] == "westeurope"
    # ARM paths are case-insensitive.
    lower = _url(emu, "AD4IOT_CVE_CL").replace("resourceGroups", "resourcegroups")
    assert client.get(lower, params=API, headers=bearer(token)).status_code == 200


def test_only_resource_manager_tokens_in_the_granted_scope_and_an_api_version(shared) -> None:
    emu, client, token = shared
    url = _url(emu, "AD4IOT_CVE_CL")
    _error(client.get(url, params=API), 401, "AuthenticationFailed")
    mde = get_token(client, emu, MDE)
    wrong = client.get(url, params=API, headers=bearer(mde))
    _error(wrong, 401, "InvalidAuthenticationTokenAudience")
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer ")
    classic = get_token(client, emu, "https://management.core.windows.net")
    assert client.get(url, params=API, headers=bearer(classic)).status_code == 200
    elsewhere = workspace_resource_id(SEED).replace("epf-sentinel", "someone-elses-rg")
    denied = client.get(
        _url(emu, "AD4IOT_CVE_CL", workspace=elsewhere), params=API, headers=bearer(token)
    )
    message = _error(denied, 403, "AuthorizationFailed")
    assert "Microsoft.OperationalInsights/workspaces/tables/read" in message
    _error(client.get(url, headers=bearer(token)), 400, "MissingApiVersionParameter")
    _error(
        client.get(url, params={"api-version": "2020-08-01"}, headers=bearer(token)),
        400,
        "NoRegisteredProviderFound",
    )


_PLAN_TABLES = itertools.count()


@pytest.mark.parametrize(
    "version, plan, retention, ok",
    [
        ("2022-10-01", "Basic", None, True),
        ("2022-10-01", "Analytics", 90, True),
        ("2022-10-01", "Auxiliary", None, False),  # 2022-10-01: TablePlanEnum is Basic | Analytics
        ("2025-02-01", "Auxiliary", None, False),  # not shown to know it: the stricter reading
        ("2025-07-01", "Auxiliary", None, True),
        ("2025-07-01", "Basic", 90, False),  # retentionInDays is read-only on Basic
        ("2025-07-01", "Auxiliary", -1, False),  # ... and on Auxiliary, even -1
        ("2025-07-01", "Cold", None, False),
        ("2025-07-01", "basic", None, False),
    ],
)
def test_a_plan_is_one_the_api_version_knows_and_basic_or_auxiliary_take_no_retention(
    shared, version, plan, retention, ok
) -> None:
    emu, client, token = shared
    name = f"EPF_Plan{next(_PLAN_TABLES)}_CL"
    props: dict[str, Any] = {"plan": plan, "totalRetentionInDays": 365}
    if retention is not None:
        props["retentionInDays"] = retention
    response = client.put(
        _url(emu, name),
        params={"api-version": version},
        json=_table([TIME], **props),
        headers=bearer(token),
    )
    if not ok:
        _error(response, 400, "InvalidParameter")
        assert client.get(_url(emu, name), params=API, headers=bearer(token)).status_code == 404
        return
    assert response.status_code == 200, response.text
    body = response.json()["properties"]
    assert body["plan"] == plan
    # Basic and Auxiliary keep 30 interactive days; an Analytics table its own retention.
    assert body["retentionInDays"] == (retention if plan == "Analytics" else 30)
    assert body["totalRetentionInDays"] == 365


def test_a_basic_table_keeps_30_interactive_days_and_switches_plan_once_a_week(shared) -> None:
    emu, client, token = shared
    name = "EPF_Switch_CL"
    created = client.put(
        _url(emu, name),
        params=API,
        json=_table([TIME], retentionInDays=4, totalRetentionInDays=20),
        headers=bearer(token),
    )
    assert created.status_code == 200, created.text
    # As Basic its interactive retention would be 30 days: a total of 20 is refused.
    short = {"properties": {"plan": "Basic", "totalRetentionInDays": 20}}
    _error(
        client.put(_url(emu, name), params=API, json=short, headers=bearer(token)),
        400,
        "InvalidParameter",
    )
    basic = {"properties": {"plan": "Basic", "totalRetentionInDays": 180}}
    switched = client.put(_url(emu, name), params=API, json=basic, headers=bearer(token))
    assert switched.status_code == 200, switched.text
    assert switched.json()["properties"]["retentionInDays"] == 30
    # The same plan again is no switch; another plan within the week is refused.
    again = client.put(_url(emu, name), params=API, json=basic, headers=bearer(token))
    assert again.status_code == 200, again.text
    back = {"properties": {"plan": "Analytics", "retentionInDays": 4}}
    message = _error(
        client.put(_url(emu, name), params=API, json=back, headers=bearer(token)),
        400,
        "InvalidParameter",
    )
    assert "once a week" in message
    assert (
        client.get(_url(emu, name), params=API, headers=bearer(token)).json()["properties"]["plan"]
        == "Basic"
    )
