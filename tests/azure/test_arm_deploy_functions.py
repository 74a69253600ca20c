"""A full generated template, tables then saved functions, deployed into the emulated workspace
as ARM deploys it, and the functions read back; a template with Basic and Auxiliary tables too.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator

import httpx
import pytest

from endpoint_forensics.analytics.functions import functions
from endpoint_forensics.analytics.hunting import hunting_queries
from endpoint_forensics.azure import build_arm_template
from epf_emulator import Emulator, EmulatorSettings
from epf_emulator.azure.workspace import workspace_resource_id

from .deploying import arm_token, deploy_saved_searches, deploy_tables

pytestmark = pytest.mark.e2e

SEED = 43
WORKSPACE = workspace_resource_id(SEED)


@pytest.fixture()
def workspace() -> Iterator[tuple[Emulator, httpx.Client, str]]:
    with Emulator(EmulatorSettings(devices=5, seed=SEED, iot_sensors=0)) as emu:
        verify = ssl.create_default_context(cafile=str(emu.ca_path))
        with httpx.Client(verify=verify, trust_env=False, timeout=30.0) as client:
            yield emu, client, arm_token(emu)


def _statuses(answers: dict[str, httpx.Response]) -> dict[str, str]:
    return {n: r.text for n, r in answers.items() if r.status_code != 200}


def test_the_full_template_deploys_and_every_function_reads_back(workspace) -> None:
    emu, client, token = workspace
    template = build_arm_template(plans={"EPF_IotEvents_CL": "Auxiliary", "EPF_Runs_CL": "Basic"})
    tables = deploy_tables(client, emu, WORKSPACE, template, token)
    assert not _statuses(tables)
    events = tables["EPF_IotEvents_CL"].json()["properties"]
    assert (events["plan"], events["retentionInDays"]) == ("Auxiliary", 30)
    assert tables["EPF_Devices_CL"].json()["properties"]["retentionInDays"] == 90
    saved = deploy_saved_searches(client, emu, WORKSPACE, template, token)
    assert not _statuses(saved)
    listed = client.get(
        f"{emu.base_url}{WORKSPACE}/savedSearches",
        params={"api-version": "2020-08-01"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert listed.status_code == 200, listed.text
    read_back = {s["properties"]["functionAlias"]: s["properties"] for s in listed.json()["value"]}
    shipped = functions()
    assert set(read_back) == set(shipped)
    for name, props in read_back.items():
        assert props["query"] == shipped[name].body
        assert props["functionParameters"] == shipped[name].signature
    # Redeploying the same template changes nothing and is accepted again.
    assert not _statuses(deploy_saved_searches(client, emu, WORKSPACE, template, token))


def test_functions_before_their_tables_and_auxiliary_under_an_old_version_are_refused(
    workspace,
) -> None:
    emu, client, token = workspace
    template = build_arm_template(plans={"EPF_IotEvents_CL": "Auxiliary"})
    early = deploy_saved_searches(client, emu, WORKSPACE, template, token)
    assert {r.status_code for r in early.values()} == {400}  # dependsOn is why
    for resource in template["resources"]:
        if resource["type"].endswith("/workspaces/tables"):
            resource["apiVersion"] = "2022-10-01"
    old = deploy_tables(client, emu, WORKSPACE, template, token)
    assert old["EPF_IotEvents_CL"].status_code == 400
    assert "Auxiliary" in old["EPF_IotEvents_CL"].json()["error"]["message"]


def test_the_content_template_deploys_every_hunting_query_to_the_hunting_blade(workspace) -> None:
    emu, client, token = workspace
    template = build_arm_template(hunting=True)
    assert not _statuses(deploy_tables(client, emu, WORKSPACE, template, token))
    assert not _statuses(deploy_saved_searches(client, emu, WORKSPACE, template, token))
    listed = client.get(
        f"{emu.base_url}{WORKSPACE}/savedSearches",
        params={"api-version": "2020-08-01"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert listed.status_code == 200, listed.text
    hunting = {
        s["properties"]["displayName"]: s["properties"]
        for s in listed.json()["value"]
        if s["properties"]["category"] == "Hunting Queries"
    }
    shipped = {q.name: q for q in hunting_queries().values()}
    assert set(hunting) == set(shipped)
    for name, props in hunting.items():
        assert props["query"] == shipped[name].query
        tags = {t["name"]: t["value"] for t in props["tags"]}
        assert tags["tactics"] == ",".join(shipped[name].tactics)
        assert tags["techniques"] == ",".join(shipped[name].techniques)
        assert "functionAlias" not in props


def test_a_hunting_query_over_a_basic_table_is_refused() -> None:
    with pytest.raises(ValueError, match="EPF_Runs_CL: plan Basic cannot serve the hunting query"):
        build_arm_template(hunting=True, plans={"EPF_Runs_CL": "Basic"})


def test_the_content_template_carries_the_workbook_after_the_functions() -> None:
    from endpoint_forensics.analytics.workbook import workbook_document

    template = build_arm_template(hunting=True)
    (workbook,) = [r for r in template["resources"] if r["type"] == "Microsoft.Insights/workbooks"]
    assert (workbook["kind"], workbook["properties"]["category"]) == ("shared", "sentinel")
    assert json.loads(workbook["properties"]["serializedData"]) == workbook_document()
    assert workbook["name"].startswith("[guid(") and workbook["properties"]["sourceId"].startswith(
        "[variables('workspaceResourceId')"
    )
    called = {f for f in functions() if f"'{f}')]" in " ".join(workbook["dependsOn"])}
    assert called == set(functions())
