"""`epf doctor` reads the Sentinel workspace's tables through the emulated Resource Manager:
classic tables (the original connector's) fail with the migrate command, as do missing tables,
missing columns and type clashes; an identity that may not read the workspace is a warning."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from endpoint_forensics.azure import build_arm_template
from endpoint_forensics.config import Settings, load_settings
from endpoint_forensics.doctor.run import Check, exit_code, render, run_doctor
from endpoint_forensics.tables import TABLES
from epf_emulator import Emulator, EmulatorSettings
from epf_emulator.azure.workspace import workspace_resource_id

from ..azure.deploying import arm_token, deploy_tables

pytestmark = pytest.mark.e2e

SEED = 43
WORKSPACE = workspace_resource_id(SEED)
CLASSIC = ("AgentHealthStatusWindows_CL", "MDE_MAC_devicehealth_CL")  # from agent health


@pytest.fixture()
def emu() -> Iterator[Emulator]:
    with Emulator(EmulatorSettings(devices=10, seed=SEED, iot_sensors=0)) as emulator:
        yield emulator


@pytest.fixture()
def client(emu: Emulator) -> Iterator[httpx.Client]:
    verify = ssl.create_default_context(cafile=str(emu.ca_path))
    with httpx.Client(verify=verify, trust_env=False, timeout=30.0) as c:
        yield c


def settings_for(
    emu: Emulator,
    tmp_path: Path,
    *,
    workspace: str | None = WORKSPACE,
    compat: bool = True,
    scope: str = "https://management.azure.com/.default",
) -> Settings:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "epf.toml"
    emu.write_config(config, iot="none", sentinel=True)
    extra = "\n[output]\ncompat = true\n" if compat else ""
    if workspace is not None:
        extra += (
            f'\n[sentinel.workspace]\nresource_id = "{workspace}"\n'
            f'endpoint = "{emu.base_url}"\nscope = "{scope}"\n'
        )
    config.write_text(config.read_text() + extra)
    values = {"store.path": str(tmp_path / "ws.duckdb"), "state.dir": str(tmp_path / "state")}
    return load_settings(config, environ={}, overrides=values)


def table_checks(checks: list[Check]) -> dict[str, Check]:
    return {c.name.removeprefix("table "): c for c in checks if c.name.startswith("table ")}


def test_classic_tables_fail_with_the_migrate_command_until_migrated(
    emu: Emulator, client: httpx.Client, tmp_path: Path
) -> None:
    token = arm_token(emu)
    # The core template deployed, the original connector's tables still classic.
    deployed = deploy_tables(client, emu, WORKSPACE, build_arm_template(), token)
    assert {r.status_code for r in deployed.values()} == {200}
    settings = settings_for(emu, tmp_path)
    checks = run_doctor(settings)
    text = render(checks)
    assert exit_code(checks) == 1
    failing = {name: c for name, c in table_checks(checks).items() if c.ok is False}
    assert set(failing) == set(CLASSIC), text
    for name, check in failing.items():
        assert "classic table" in check.detail and "migrated" in check.detail
        assert (
            f"{emu.base_url}{WORKSPACE}/tables/{name}/migrate?api-version=2022-10-01" in check.fix
        )
        assert "migrate-classic.sh" in check.fix
    workspace = [c for c in checks if c.name == "workspace"]
    assert [(c.ok, c.detail) for c in workspace] == [(True, f"{WORKSPACE} in westeurope")]
    assert emu.client_secret not in text

    for name in (n for n, t in TABLES.items() if t.profile == "compat"):
        migrated = client.post(
            f"{emu.base_url}{WORKSPACE}/tables/{name}/migrate",
            params={"api-version": "2022-10-01"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert migrated.status_code == 200
    # Migrated but not yet deployed: the template's columns are still missing.
    missing = table_checks(run_doctor(settings))
    assert missing["AgentHealthStatusWindows_CL"].ok is False
    assert "lacks column(s) TimeGenerated" not in missing["AgentHealthStatusWindows_CL"].detail
    assert "RunId" in missing["AgentHealthStatusWindows_CL"].detail

    deployed = deploy_tables(client, emu, WORKSPACE, build_arm_template(compat=True), token)
    assert {r.status_code for r in deployed.values()} == {200}
    checks = run_doctor(settings)
    assert [c for c in checks if c.area == "sentinel" and c.ok is False] == [], render(checks)
    [summary] = [c for c in checks if c.name == "tables"]
    assert summary.ok is True
    assert summary.detail.startswith(f"{len(_written(settings))} table(s) as the registry")


def _written(settings: Settings) -> list[str]:
    from endpoint_forensics.doctor.sentinel import tables_written

    return tables_written(settings)


def test_missing_tables_and_a_column_of_another_type_fail_with_their_fix(
    emu: Emulator, client: httpx.Client, tmp_path: Path
) -> None:
    token = arm_token(emu)
    runs = TABLES["EPF_Runs_CL"]
    retyped = next(c for c in runs.columns if c.type.value == "string" and c.name != "RunId")
    columns = [
        {"name": c.name, "type": "int" if c is retyped else _arm_type(c.type.value)}
        for c in runs.columns
    ]
    created = client.put(
        f"{emu.base_url}{WORKSPACE}/tables/EPF_Runs_CL",
        params={"api-version": "2022-10-01"},
        json={"properties": {"schema": {"columns": columns}}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert created.status_code == 200, created.text
    settings = settings_for(emu, tmp_path, compat=False)
    all_checks = run_doctor(settings)
    checks = table_checks(all_checks)
    clash = checks["EPF_Runs_CL"]
    assert clash.ok is False
    assert f"{retyped.name} is int in the workspace, string in epf's registry" in clash.detail
    assert "never changes a column's type" in clash.fix
    # The other tables are missing: one check names them all.
    [missing] = [c for c in all_checks if c.name == "missing tables"]
    others = [n for n in _written(settings) if n != "EPF_Runs_CL"]
    assert missing.ok is False
    assert missing.detail == f"{len(others)} table(s) not in the workspace: {', '.join(others)}"
    assert "EPF_Devices_CL" in others and "EPF_Runs_CL" not in missing.detail
    assert missing.fix.startswith("Deploy the template of `epf deploy arm`:")
    assert not any(name in checks for name in CLASSIC)  # compat off: not written


def _arm_type(kql: str) -> str:
    return {"bool": "boolean", "datetime": "dateTime"}.get(kql, kql)


def test_an_identity_that_may_not_read_the_workspace_is_a_warning_not_a_failure(
    emu: Emulator, tmp_path: Path
) -> None:
    elsewhere = WORKSPACE.replace("epf-sentinel", "security-rg")
    checks = run_doctor(settings_for(emu, tmp_path, workspace=elsewhere))
    [workspace] = [c for c in checks if c.name == "workspace"]
    assert workspace.ok is None
    assert "may not read" in workspace.detail and "AuthorizationFailed" in workspace.detail
    assert "Log Analytics Reader" in workspace.detail
    assert not table_checks(checks)
    assert exit_code(checks) == 0, render(checks)
    # A token for another API: Resource Manager refuses it, and the warning says where to look.
    monitor = "https://monitor.azure.com/.default"
    checks = run_doctor(settings_for(emu, tmp_path / "scope", scope=monitor))
    [workspace] = [c for c in checks if c.name == "workspace"]
    assert workspace.ok is None
    assert "Resource Manager refused the token" in workspace.detail
    assert "InvalidAuthenticationTokenAudience" in workspace.detail
    assert f"scope of [sentinel.workspace] ({emu.base_url}, {monitor})" in workspace.detail


def test_a_workspace_that_is_not_there_fails_and_compat_without_one_warns(
    emu: Emulator, tmp_path: Path
) -> None:
    nowhere = WORKSPACE.replace("epf-workspace", "no-such-workspace")
    checks = run_doctor(settings_for(emu, tmp_path, workspace=nowhere))
    [workspace] = [c for c in checks if c.name == "workspace"]
    assert workspace.ok is False and "no workspace" in workspace.detail
    assert "Resource ID" in workspace.fix
    unset = run_doctor(settings_for(emu, tmp_path / "unset", workspace=None))
    [warning] = [c for c in unset if c.name == "workspace"]
    assert warning.ok is None and "[sentinel.workspace]" in warning.detail
    assert exit_code(unset) == 0, render(unset)
