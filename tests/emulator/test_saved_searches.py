"""The emulated workspace's saved searches and functions: what a PUT must hold, as the ARM
template reference (workspaces/savedSearches 2020-08-01) and "Functions in Azure Monitor log
queries" say, and the tables a function may read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from epf_emulator import Emulator, EmulatorSettings
from epf_emulator.azure.workspace import workspace_resource_id

from .conftest import bearer, client_for, get_token

SEED = 33
API = {"api-version": "2020-08-01"}
TABLES_API = {"api-version": "2022-10-01"}
TIME = {"name": "TimeGenerated", "type": "dateTime"}


@pytest.fixture(scope="module")
def arm() -> Iterator[tuple[Emulator, httpx.Client, str]]:
    with Emulator(EmulatorSettings(devices=5, seed=SEED, iot_sensors=0)) as emu:
        with client_for(emu) as client:
            token = get_token(client, emu, "https://management.azure.com")
            base = f"{emu.base_url}{workspace_resource_id(SEED)}"
            for name, plan in (("EPF_Hot_CL", "Analytics"), ("EPF_Cheap_CL", "Basic")):
                body = {"properties": {"plan": plan, "schema": {"columns": [TIME]}}}
                put = client.put(
                    f"{base}/tables/{name}", params=TABLES_API, json=body, headers=bearer(token)
                )
                assert put.status_code == 200, put.text
            yield emu, client, token


def _url(emu: Emulator, search: str = "") -> str:
    base = f"{emu.base_url}{workspace_resource_id(SEED)}/savedSearches"
    return f"{base}/{search}" if search else base


def _function(**props: Any) -> dict[str, Any]:
    base = {
        "category": "Endpoint Forensics",
        "displayName": "Hot rows",
        "query": "EPF_Hot_CL | where TimeGenerated <= at",
        "functionAlias": "EPF_HotAt",
        "functionParameters": "at:datetime",
        "version": 2,
    }
    base.update(props)
    return {"properties": {k: v for k, v in base.items() if v is not None}}


def test_a_function_is_stored_and_read_back(arm) -> None:
    emu, client, token = arm
    put = client.put(_url(emu, "hot-at"), params=API, json=_function(), headers=bearer(token))
    assert put.status_code == 200, put.text
    got = client.get(_url(emu, "hot-at"), params=API, headers=bearer(token))
    assert got.status_code == 200
    body = got.json()
    assert body["id"] == f"{workspace_resource_id(SEED)}/savedSearches/hot-at"
    assert body["properties"]["functionAlias"] == "EPF_HotAt"
    assert body["properties"]["functionParameters"] == "at:datetime"
    listed = client.get(_url(emu), params=API, headers=bearer(token)).json()["value"]
    assert "hot-at" in [s["name"] for s in listed]
    # Redeploying the same id replaces it; another id may not take the same alias.
    assert (
        client.put(
            _url(emu, "hot-at"), params=API, json=_function(), headers=bearer(token)
        ).status_code
        == 200
    )
    twin = client.put(_url(emu, "hot-twin"), params=API, json=_function(), headers=bearer(token))
    assert twin.status_code == 409, twin.text


@pytest.mark.parametrize(
    "props, problem",
    [
        ({"category": None}, "category is required"),
        ({"displayName": ""}, "displayName is required"),
        ({"query": None}, "query is required"),
        ({"version": 3}, "version must be 1 or 2"),
        ({"functionAlias": "_EPF_Private"}, "not valid"),  # underscore: solution functions
        ({"functionAlias": "EPF Hot"}, "not valid"),
        ({"functionAlias": "EPF-Hot"}, "not valid"),
        ({"functionParameters": "at"}, "is not 'name:type'"),
        ({"functionParameters": "at:instant"}, "not a KQL scalar type"),
        ({"functionParameters": "at:datetime, at:datetime"}, "declared twice"),
        ({"functionAlias": None}, "needs a functionAlias"),
        ({"query": "EPF_Missing_CL | take 1"}, "EPF_Missing_CL"),
        ({"query": "EPF_Cheap_CL | take 1"}, "Basic table 'EPF_Cheap_CL'"),
        ({"tags": [{"name": "description"}]}, "tags"),
        ({"query": "EPF_NotSavedYet(now()) | take 1"}, "calls 'EPF_NotSavedYet'"),
    ],
)
def test_a_saved_search_is_refused_as_azure_refuses_it(arm, props, problem) -> None:
    emu, client, token = arm
    response = client.put(
        _url(emu, "refused"), params=API, json=_function(**props), headers=bearer(token)
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "BadRequest"
    assert problem in response.json()["error"]["message"]
    assert client.get(_url(emu, "refused"), params=API, headers=bearer(token)).status_code == 404


def test_parameters_defaults_and_plain_saved_searches_are_taken(arm) -> None:
    emu, client, token = arm
    with_default = _function(
        functionAlias="EPF_Recent", functionParameters="since:timespan = 1d, n:int"
    )
    assert (
        client.put(
            _url(emu, "recent"), params=API, json=with_default, headers=bearer(token)
        ).status_code
        == 200
    )
    # Not a function: a plain saved search over a Basic table is a query, not a UDF.
    plain = _function(functionAlias=None, functionParameters=None, query="EPF_Cheap_CL | take 5")
    assert (
        client.put(_url(emu, "cheap"), params=API, json=plain, headers=bearer(token)).status_code
        == 200
    )


def test_a_function_may_call_one_already_saved(arm) -> None:
    emu, client, token = arm
    base = _function(functionAlias="EPF_Base", functionParameters=None)
    caller = _function(functionAlias="EPF_Caller", query="EPF_Base() | where TimeGenerated <= at")
    first = client.put(_url(emu, "caller"), params=API, json=caller, headers=bearer(token))
    assert first.status_code == 400 and "calls 'EPF_Base'" in first.text
    for name, body in (("base", base), ("caller", caller)):
        put = client.put(_url(emu, name), params=API, json=body, headers=bearer(token))
        assert put.status_code == 200, put.text


def test_only_versions_with_function_aliases_and_the_write_role(arm) -> None:
    emu, client, token = arm
    old = client.put(
        _url(emu, "old"),
        params={"api-version": "2015-03-20"},
        json=_function(),
        headers=bearer(token),
    )
    assert old.status_code == 400 and old.json()["error"]["code"] == "NoRegisteredProviderFound"
    assert client.put(_url(emu, "anon"), params=API, json=_function()).status_code == 401
    other = _url(emu, "x").replace("epf-sentinel", "another-rg")
    denied = client.put(other, params=API, json=_function(), headers=bearer(token))
    assert denied.status_code == 403
    assert "workspaces/savedSearches/write" in denied.json()["error"]["message"]
