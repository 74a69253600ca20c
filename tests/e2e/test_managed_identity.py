"""A Defender tenant read with the host's managed identity (Azure Functions, a VM): the
collector's own code path, against the emulator's managed identity endpoint."""

from pathlib import Path

import pytest

from endpoint_forensics.config import load_settings
from endpoint_forensics.errors import ConfigError
from epf_emulator import Emulator, EmulatorSettings

from .conftest import sync

pytestmark = pytest.mark.e2e


def test_a_tenant_read_with_a_managed_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Emulator(EmulatorSettings(devices=30, seed=31, iot_sensors=0)) as emu:
        monkeypatch.setenv("IDENTITY_ENDPOINT", emu.managed_identity_endpoint)
        monkeypatch.setenv("IDENTITY_HEADER", emu.managed_identity_header)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emu.ca_path))  # the endpoint's test CA
        config = tmp_path / "epf.toml"
        emu.write_config(config, iot="none", sentinel=False)
        text = config.read_text().replace(
            f'client_secret = "{emu.client_secret}"', "managed_identity = true"
        )
        config.write_text(text)
        settings = load_settings(
            config,
            environ={},
            overrides={
                "store.path": str(tmp_path / "ws.duckdb"),
                "state.dir": str(tmp_path / "state"),
                "tenants.0.datasets": ["machines", "agent_health"],
            },
        )
        before = emu.stats()["requests"]
        summary = sync(settings)
        assert summary.exit_code == 0, summary.errors()
        assert {o.dataset: o.rows for o in summary.outcomes}["machines"] == 30
        msi = [k for k in emu.stats()["requests"] if "/msi/token" in k]
        assert msi and not any("/msi/token" in k for k in before)


def test_a_tenant_takes_one_credential_only(tmp_path: Path) -> None:
    config = tmp_path / "epf.toml"
    config.write_text(
        '[[tenants]]\nname = "t"\ntenant_id = "x"\nclient_id = "y"\n'
        'client_secret = "s"\nmanaged_identity = true\n'
    )
    with pytest.raises(ConfigError, match="exactly one of client_secret, certificate_path"):
        load_settings(config, environ={})
