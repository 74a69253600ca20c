"""Routing tables to data collection rules, end to end: a DCR declares at most 10 streams
(defender-apis.md D.2, D.5), so a config that sends every table through one DCR fails here as
it fails in Azure, a table no DCR takes is named and kept, and the emulator's own config routes
every table and delivers every row."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from endpoint_forensics.config import Settings, load_settings
from endpoint_forensics.demo import run_demo
from endpoint_forensics.errors import ConfigError
from endpoint_forensics.tables import TABLES
from epf_emulator import Emulator, EmulatorSettings

from .sentinel_support import ingested_since, local_counts, sync

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tenant() -> Iterator[Emulator]:
    with Emulator(EmulatorSettings(devices=30, seed=27, iot_sensors=1)) as emu:
        yield emu


def settings_for(emu: Emulator, folder: Path, **overrides: Any) -> Settings:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "epf.toml"
    emu.write_config(config)
    values = {"store.path": str(folder / "ws.duckdb"), "state.dir": str(folder / "state")}
    return load_settings(config, environ={}, overrides={**values, **overrides})


def test_every_table_listed_for_one_dcr_is_a_config_error(tenant: Emulator, tmp_path: Path) -> None:
    every = [{"immutable_id": tenant.dcr_immutable_id, "tables": list(TABLES)}]
    with pytest.raises(ConfigError) as refused:
        settings_for(tenant, tmp_path, **{"sentinel.dcrs": every})
    message = str(refused.value)
    assert f"{len(TABLES)} tables go to the DCR {tenant.dcr_immutable_id}" in message
    assert "at most 10 streams" in message and "[[sentinel.dcrs]]" in message
    # Ten is what a DCR holds: that config loads.
    ten = [{"immutable_id": tenant.dcr_immutable_id, "tables": list(TABLES)[:10]}]
    assert settings_for(tenant, tmp_path, **{"sentinel.dcrs": ten}).sentinel is not None


def test_one_dcr_for_every_table_delivers_only_its_streams_and_loses_nothing(
    tenant: Emulator, tmp_path: Path
) -> None:
    before = dict(tenant.stats()["ingested"])
    one_dcr = {"sentinel.dcrs": [], "sentinel.dcr_immutable_id": tenant.dcr_immutable_id}
    settings = settings_for(tenant, tmp_path, **one_dcr)
    first = sync(settings)
    assert all(o.outcome == "Succeeded" for o in first.outcomes)
    assert first.exit_code == 3  # collected, not all delivered
    local = local_counts(settings)
    declared = set(dict(tenant.dcrs)[tenant.dcr_immutable_id])
    held = sorted(t for t in local if t not in declared)
    assert held and "EPF_Runs_CL" in held
    # The DCR's own streams arrived; the others were refused (404) and wait, each named.
    assert ingested_since(tenant, before) == {t: n for t, n in local.items() if t in declared}
    report = first.deliveries["sentinel"]
    assert report.waiting_rows == sum(local[t] for t in held)
    assert all(
        f"{t}: the DCR {tenant.dcr_immutable_id} has no stream" in report.error for t in held
    )
    assert "wait in the outbox" in report.error and "[[sentinel.dcrs]]" in report.error
    assert report.error in first.errors()

    # Routed as the emulator's DCRs are: what waited arrives with the next run, once.
    second = sync(settings_for(tenant, tmp_path))
    assert second.exit_code == 0, second.errors()
    assert second.deliveries["sentinel"].waiting_uploads == 0
    assert ingested_since(tenant, before) == local_counts(settings)


def test_a_table_without_a_route_is_named_and_kept(tenant: Emulator, tmp_path: Path) -> None:
    before = dict(tenant.stats()["ingested"])
    dcrs = [
        {"immutable_id": dcr, "tables": routed}
        for dcr, tables in tenant.dcrs
        if (routed := [t for t in tables if t != "EPF_Runs_CL"])
    ]
    overrides = {"sentinel.dcrs": dcrs, "tenants.0.datasets": ["machines"]}
    settings = settings_for(tenant, tmp_path, **overrides)
    summary = sync(settings)
    report = summary.deliveries["sentinel"]
    assert summary.exit_code == 3
    assert "EPF_Runs_CL: no DCR takes it" in report.error
    local = local_counts(settings)
    assert report.waiting_rows == local["EPF_Runs_CL"] > 0
    # The other tables were not held up by it.
    assert ingested_since(tenant, before) == {t: n for t, n in local.items() if t != "EPF_Runs_CL"}


def test_the_demo_config_routes_every_table_and_delivers_everything(tmp_path: Path) -> None:
    result = run_demo(devices=30, seed=28, db=tmp_path / "demo.duckdb", days=2, sentinel=True)
    # Its one failure is the sensor whose token the demo deletes before the last day.
    assert result.unexpected_errors == [] and result.staged_sources, result.summary.errors()
    assert result.summary.deliveries["sentinel"].error == ""
    assert result.sentinel_matches_store
    # Through more than one DCR: no single DCR could take these tables.
    emu = Emulator(EmulatorSettings(devices=30, seed=28))
    assert len({emu.dcr_for(t) for t in result.ingested}) >= 2
