"""Ground truth, determinism, and the running emulator's lifecycle and config file."""

from __future__ import annotations

import threading
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest

from endpoint_forensics.tables.datasets import dataset_names
from epf_emulator import Emulator, EmulatorSettings

from .conftest import ALL_HEALTH_SCIDS, UNTHROTTLED, all_machines, client_for, get_token, hunt

AGENT_HEALTH_RECOUNT = (
    "DeviceTvmSecureConfigurationAssessment"
    " | where Timestamp > ago(30d)"
    f" | where ConfigurationId in ({', '.join(repr(s) for s in sorted(ALL_HEALTH_SCIDS))})"
    ' | where OSPlatform startswith "Windows" or OSPlatform in ("macOS", "Linux")'
    " | distinct DeviceId | count"
)


def _recount(emu: Emulator, client: httpx.Client) -> dict[str, int]:
    """Count what a collector would collect, from the served data only."""
    token = get_token(client, emu)
    records, _ = all_machines(client, emu, token, **{"$top": 40})
    response = hunt(client, emu, token, AGENT_HEALTH_RECOUNT)
    assert response.status_code == 200, response.text
    return {
        "EPF_Devices_CL": len({r["id"] for r in records if r.get("id")}),
        "EPF_AgentHealth_CL": response.json()["Results"][0]["Count"],
    }


def test_stats_truth_equals_a_recount_from_the_served_data(
    emu: Emulator, client: httpx.Client
) -> None:
    stats = client.get(f"{emu.base_url}/_emulator/stats").json()  # no auth needed
    recount = _recount(emu, client)
    assert stats["truth"]["EPF_Devices_CL"] == recount["EPF_Devices_CL"] == 150
    assert stats["truth"]["EPF_AgentHealth_CL"] == recount["EPF_AgentHealth_CL"]
    assert stats["truth"]["EPF_Runs_CL"] == len(
        dataset_names("tenant")
    )  # one per dataset of a complete sync
    # Devices without a sensor (about 5%) have no assessments.
    assert 120 <= stats["truth"]["EPF_AgentHealth_CL"] < 150
    assert stats["fleet"]["devices"] == 150
    assert sum(stats["fleet"]["by_platform"].values()) == 150
    assert emu.stats()["truth"] == stats["truth"]
    assert (
        stats["truth_detail"]["EPF_VulnerabilityChanges_CL"]["real_changes"]
        == (stats["truth"]["EPF_VulnerabilityChanges_CL"])
    )


def test_stats_count_requests_by_path_and_status(
    emu: Emulator, client: httpx.Client, mde_token: str
) -> None:
    before = emu.stats()["requests"].get("/api/machines/" + "0" * 40, {})
    client.get(
        f"{emu.base_url}/api/machines/{'0' * 40}", headers={"Authorization": f"Bearer {mde_token}"}
    )
    after = emu.stats()["requests"]["/api/machines/" + "0" * 40]
    assert after["404"] == before.get("404", 0) + 1


def _identity(emu: Emulator) -> dict[str, Any]:
    with client_for(emu) as client:
        records, _ = all_machines(client, emu, get_token(client, emu))
        return {
            "tenant": emu.tenant_id,
            "client": emu.client_id,
            "ids": [r["id"] for r in records],
            "names": [r["computerDnsName"] for r in records],
            "health": [r["healthStatus"] for r in records],
            "truth": emu.stats()["truth"],
        }


def test_same_seed_same_tenant_different_seed_different() -> None:
    settings = EmulatorSettings(iot_sensors=0, devices=60, seed=42, rate_limits=UNTHROTTLED)
    with Emulator(settings) as first:
        a = _identity(first)
        secret_a = first.client_secret
    with Emulator(settings) as second:
        b = _identity(second)
        secret_b = second.client_secret
    assert a == b
    assert secret_a != secret_b  # the secret is random per start
    with Emulator(
        EmulatorSettings(iot_sensors=0, devices=60, seed=43, rate_limits=UNTHROTTLED)
    ) as other:
        c = _identity(other)
    assert c["tenant"] != a["tenant"] and c["client"] != a["client"]
    assert not set(c["ids"]) & set(a["ids"])


def test_write_config(emu: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "epf.toml"
    emu.write_config(path, iot="none", sentinel=False)
    base = emu.base_url
    assert path.read_text(encoding="utf-8") == (
        f"# Written by `epf emulator`: syncs from the emulated tenant at {base}\n"
        "[[tenants]]\n"
        'name = "emulated"\n'
        f'tenant_id = "{emu.tenant_id}"\n'
        f'client_id = "{emu.client_id}"\n'
        f'client_secret = "{emu.client_secret}"\n'
        f'authority_host = "{base}"\n'
        f'mde_base_url = "{base}"\n'
        f'graph_base_url = "{base}/v1.0"\n'
        f'ca_bundle = "{emu.ca_path.resolve()}"\n'
    )
    config = tomllib.loads(path.read_text(encoding="utf-8"))
    (tenant,) = config["tenants"]
    assert tenant["graph_base_url"] == f"{base}/v1.0"
    assert Path(tenant["ca_bundle"]).is_absolute() and Path(tenant["ca_bundle"]).is_file()


def test_lifecycle_state_dir_and_stop(tmp_path: Path) -> None:
    settings = EmulatorSettings(iot_sensors=0, devices=4, seed=1, state_dir=tmp_path / "state")
    emu = Emulator(settings)
    with pytest.raises(RuntimeError, match="not running"):
        _ = emu.base_url
    with emu:
        first_ca = emu.ca_path.read_bytes()
        first_client_cert = emu.client_certificate_path.read_bytes()
        assert emu.ca_path.parent == (tmp_path / "state").resolve()
        with pytest.raises(RuntimeError, match="already running"):
            emu.start()
    emu.stop()  # twice is fine
    assert (tmp_path / "state" / "ca.pem").read_bytes() == first_ca  # kept: the caller owns it
    with Emulator(settings) as again, client_for(again) as client:
        assert again.ca_path.read_bytes() == first_ca  # same CA across restarts
        assert again.client_certificate_path.read_bytes() == first_client_cert  # same app cert
        assert client.get(f"{again.base_url}/_emulator/stats").status_code == 200


def test_a_temporary_state_dir_is_removed_on_stop() -> None:
    with Emulator(EmulatorSettings(iot_sensors=0, devices=2, seed=1)) as emu:
        state = emu.ca_path.parent
        assert state.is_dir()
    assert not state.exists()


def test_serve_forever_stops_cleanly_when_stopped_elsewhere() -> None:
    emu = Emulator(EmulatorSettings(iot_sensors=0, devices=3, seed=1)).start()
    serving = threading.Thread(target=emu.serve_forever)
    serving.start()
    try:
        with client_for(emu) as client:
            assert client.get(f"{emu.base_url}/_emulator/stats").status_code == 200
    finally:
        emu.stop()
        serving.join(10)
    assert not serving.is_alive()
