"""End-to-end: the collector against the emulator over a loopback HTTPS socket."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from endpoint_forensics.config import Settings, load_settings
from endpoint_forensics.pipeline.run import RunSummary, run_sync
from endpoint_forensics.sinks.duckdb import DuckDBSink
from epf_emulator import Emulator, EmulatorSettings


@pytest.fixture(scope="session")
def small_tenant() -> Iterator[Emulator]:
    """A 250-device tenant shared by read-only tests."""
    with Emulator(EmulatorSettings(iot_sensors=0, devices=250, seed=11)) as emu:
        yield emu


# The emulator each workspace syncs from: a sync runs as of its emulated clock (the emulated
# world keeps a fixed calendar, not the wall clock's).
_EMULATOR_OF: dict[Path, Emulator] = {}


def settings_for(emu: Emulator, tmp_path: Path, **overrides: object) -> Settings:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "epf.toml"
    emu.write_config(config, iot="none")  # the IoT tests are in test_iot.py
    values = {"store.path": str(tmp_path / "ws.duckdb"), "state.dir": str(tmp_path / "state")}
    values.update({f"tenants.0.{k}": v for k, v in overrides.items()})
    settings = load_settings(config, environ={}, overrides=values)
    _EMULATOR_OF[Path(settings.store.path)] = emu
    return settings


def sync(settings: Settings) -> RunSummary:
    emu = _EMULATOR_OF.get(Path(settings.store.path))
    sink = DuckDBSink(settings.store.path)
    try:
        return run_sync(settings, [sink], now=emu.now if emu is not None else None)
    finally:
        sink.close()
