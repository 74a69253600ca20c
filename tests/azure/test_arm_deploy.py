"""The generated template's tables against the emulated Resource Manager, as ARM deploys them:
the compat tables into a workspace that still has the original connector's classic tables,
the migration script that `epf deploy arm --compat` writes, and retention Azure refuses.

The script runs under a real ``sh``; ``az`` is a stand-in that sends each ``az rest`` call to
the emulator over HTTPS (the Azure CLI is not installed here), failing as ``az rest`` does:
the error body on stderr and exit status 1.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from endpoint_forensics.azure import build_arm_template, migration_script
from endpoint_forensics.tables import TABLES, Column, KqlType, Table
from epf_emulator import Emulator, EmulatorSettings
from epf_emulator.azure.workspace import (
    RESOURCE_GROUP,
    WORKSPACE_NAME,
    subscription_id,
    workspace_resource_id,
)

from .deploying import arm_token, deploy_tables

pytestmark = pytest.mark.e2e

SEED = 41
WORKSPACE = workspace_resource_id(SEED)
LEGACY = [t for t in TABLES.values() if t.profile == "compat"]
AZ_STAND_IN = """#!{python}
import json, os, ssl, sys
import httpx

args = sys.argv[1:]
assert args[0] == "rest", args
opts = dict(zip(args[1::2], args[2::2]))
url = opts["--url"].replace("https://management.azure.com", os.environ["ARM_BASE"])
response = httpx.request(
    opts["--method"].upper(),
    url,
    headers={{"Authorization": "Bearer " + os.environ["ARM_TOKEN"]}},
    verify=ssl.create_default_context(cafile=os.environ["ARM_CA"]),
)
if response.status_code >= 400:
    print(f"ERROR: {{response.reason_phrase}}({{response.text}})", file=sys.stderr)
    sys.exit(1)
if opts.get("--output") == "none":
    sys.exit(0)
value = response.json() if response.content else None
for part in (opts.get("--query") or "").split(".") if opts.get("--query") else ():
    value = value[part]
print(value if opts.get("--output") == "tsv" else json.dumps(value))
"""


@pytest.fixture()
def workspace() -> Iterator[tuple[Emulator, httpx.Client, str]]:
    with Emulator(EmulatorSettings(devices=5, seed=SEED, iot_sensors=0)) as emu:
        verify = ssl.create_default_context(cafile=str(emu.ca_path))
        with httpx.Client(verify=verify, trust_env=False, timeout=30.0) as client:
            yield emu, client, arm_token(emu)


def _run_script(
    emu: Emulator, token: str, tmp_path: Path, script: str
) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    az = bin_dir / "az"
    az.write_text(AZ_STAND_IN.format(python=sys.executable))
    az.chmod(0o755)
    path = tmp_path / "migrate.sh"
    path.write_text(script)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "ARM_BASE": emu.base_url,
        "ARM_TOKEN": token,
        "ARM_CA": str(emu.ca_path),
    }
    return subprocess.run(
        ["sh", str(path), subscription_id(SEED), RESOURCE_GROUP, WORKSPACE_NAME],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _subtype(client: httpx.Client, emu: Emulator, token: str, table: str) -> str:
    response = client.get(
        f"{emu.base_url}{WORKSPACE}/tables/{table}",
        params={"api-version": "2022-10-01"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    subtype: str = response.json()["properties"]["schema"]["tableSubType"]
    return subtype


def test_classic_tables_refuse_the_compat_template_until_the_script_migrates_them(
    workspace, tmp_path
) -> None:
    emu, client, token = workspace
    template = build_arm_template(compat=True)
    first = deploy_tables(client, emu, WORKSPACE, template, token)
    assert set(first) == set(TABLES)
    for table in LEGACY:
        answer = first[table.name]
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["message"].startswith(
            f"Changing Classic table {table.name} schema by using DataCollectionRuleBased"
        )
    core = [name for name, t in TABLES.items() if t.profile == "core"]
    assert all(first[name].status_code == 200 for name in core), {
        n: first[n].text for n in core if first[n].status_code != 200
    }

    ran = _run_script(emu, token, tmp_path, migration_script(LEGACY))
    assert ran.returncode == 0, ran.stderr
    assert [line.split(":")[0] for line in ran.stdout.splitlines()] == [t.name for t in LEGACY]
    assert all(line.endswith("migrated to a DCR-based table") for line in ran.stdout.splitlines())
    assert {_subtype(client, emu, token, t.name) for t in LEGACY} == {"DataCollectionRuleBased"}

    second = deploy_tables(client, emu, WORKSPACE, template, token)
    assert {name: r.status_code for name, r in second.items()} == dict.fromkeys(TABLES, 200)
    devices = second["AD4IOT_Devices_CL"].json()["properties"]["schema"]["columns"]
    types = {c["name"]: c["type"] for c in devices}
    # The legacy columns kept their classic types; ours were added beside them.
    assert (types["id_d"], types["authorized_b"], types["vendor_s"]) == (
        "real",
        "boolean",
        "string",
    )
    assert types["RunId"] == "string" and types["SnapshotTime"] == "dateTime"

    again = _run_script(emu, token, tmp_path, migration_script(LEGACY))
    assert again.returncode == 0, again.stderr
    assert all(
        line.endswith("DataCollectionRuleBased, nothing to migrate")
        for line in again.stdout.splitlines()
    )


def test_the_script_leaves_absent_tables_to_the_template_and_stops_on_other_errors(
    workspace, tmp_path
) -> None:
    emu, _, token = workspace
    absent = Table(
        "EPF_Absent_CL", "d", "test", (), (Column("TimeGenerated", KqlType.DATETIME, "t"),)
    )
    ran = _run_script(emu, token, tmp_path, migration_script([absent, LEGACY[0]]))
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == [
        "EPF_Absent_CL: not in the workspace; the template creates it",
        f"{LEGACY[0].name}: migrated to a DCR-based table",
    ]
    # A token ARM refuses: the script stops at the workspace, saying why.
    refused = _run_script(emu, "not-a-token", tmp_path, migration_script(LEGACY))
    assert refused.returncode == 1
    assert "InvalidAuthenticationToken" in refused.stderr
    assert refused.stdout == ""


def test_a_retention_the_template_lets_through_is_refused_by_the_tables_api(workspace) -> None:
    # minValue -1 lets 0-3 pass ARM's parameter check; the Tables API refuses them itself.
    emu, client, token = workspace
    template = build_arm_template()
    too_short = deploy_tables(client, emu, WORKSPACE, template, token, retentionInDays=2)
    assert {r.status_code for r in too_short.values()} == {400}
    assert "retentionInDays" in next(iter(too_short.values())).json()["error"]["message"]
    fine = deploy_tables(client, emu, WORKSPACE, template, token, retentionInDays=-1)
    assert {r.status_code for r in fine.values()} == {200}
    props = next(iter(fine.values())).json()["properties"]
    assert props["retentionInDaysAsDefault"] is True
    assert props["totalRetentionInDays"] == 365
