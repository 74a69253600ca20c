"""The Sentinel sink retries under the one policy (``http.retry``) alone: the SDK's retries are
off, so each 429 is one wait, 5xx and 502 alike are retried, and an upload whose retries are
spent waits in the outbox and is delivered by the next run. Against the emulator's Logs
Ingestion endpoint, through the real Azure SDK client."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from endpoint_forensics.config import SentinelConfig, load_settings
from endpoint_forensics.contracts import Batch, DeliveryReport
from endpoint_forensics.sinks.sentinel import SentinelSink
from endpoint_forensics.tables import DEVICES
from epf_emulator import Emulator, EmulatorSettings, Fault

pytestmark = pytest.mark.e2e

INGESTION = "/dataCollectionRules"


def emulator(*faults: Fault) -> Emulator:
    return Emulator(EmulatorSettings(devices=1, seed=3, iot_sensors=0, faults=faults))


def sentinel_config(emu: Emulator, tmp_path: Path) -> SentinelConfig:
    config = tmp_path / "epf.toml"
    emu.write_config(config, iot="none")
    overrides = {"store.path": str(tmp_path / "ws.duckdb"), "state.dir": str(tmp_path / "state")}
    settings = load_settings(config, environ={}, overrides=overrides)
    assert settings.sentinel is not None
    return settings.sentinel


def run(config: SentinelConfig, outbox: Path, *, rows: int = 0) -> DeliveryReport:
    """One run of the sink: ``rows`` devices in one upload (none: only what waits), flushed."""
    sink = SentinelSink(config, outbox, outbox.parent / "checkpoints")
    try:
        if rows:
            stamp = {"RunId": "run-1", "TimeGenerated": datetime(2026, 1, 2, tzinfo=UTC)}
            devices = [{"DeviceId": f"d{i}"} for i in range(rows)]
            with sink.open(DEVICES, unit="t/run-1/machines/page-0") as writer:
                writer.write(Batch(DEVICES, rows=devices), stamp)
        return sink.flush()
    finally:
        sink.close()


def ingestion_answers(emu: Emulator) -> dict[int, int]:
    answers: dict[int, int] = {}
    for path, counts in emu.stats()["requests"].items():
        if path.startswith(INGESTION):
            for status, n in counts.items():
                answers[int(status)] = answers.get(int(status), 0) + n
    return answers


def test_each_429_is_one_wait_and_the_upload_arrives(tmp_path: Path) -> None:
    with emulator(Fault(INGESTION, 429, times=4, retry_after=0)) as emu:
        report = run(sentinel_config(emu, tmp_path), tmp_path / "outbox", rows=3)
        assert ingestion_answers(emu) == {429: 4, 204: 1}
        assert emu.stats()["ingested"] == {DEVICES.name: 3}
    assert report.error == "" and report.sent_uploads == 1
    assert report.throttled == 4  # every 429 waited out by the sink, none by the SDK


def test_a_502_is_retried_like_any_server_error(tmp_path: Path) -> None:
    with emulator(Fault(INGESTION, 502, times=2)) as emu:
        report = run(sentinel_config(emu, tmp_path), tmp_path / "outbox", rows=2)
        assert ingestion_answers(emu) == {502: 2, 204: 1}
    assert report.error == "" and report.sent_rows == 2 and report.waiting_uploads == 0


def test_an_upload_whose_retries_are_spent_is_delivered_by_the_next_run(tmp_path: Path) -> None:
    with emulator(Fault(INGESTION, 503, times=4)) as emu:
        config = sentinel_config(emu, tmp_path)
        first = run(config, tmp_path / "outbox", rows=5)
        assert ingestion_answers(emu) == {503: 4}  # the first try and three retries
        assert "Sentinel answered HTTP 503 after retries" in first.error
        assert (first.waiting_uploads, first.waiting_rows) == (1, 5)

        second = run(config, tmp_path / "outbox")
        assert second.error == "" and second.sent_rows == 5 and second.waiting_uploads == 0
        assert emu.stats()["ingested"] == {DEVICES.name: 5}
