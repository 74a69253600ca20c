"""The Sentinel sink's change history remembers a unit's rows only once its checkpoint is saved:
a checkpoint the disk refused fails the unit, and the next run sends those rows again (a
repeat under a run marked Failed) instead of never sending them under a run that succeeded.
Against the emulator's Logs Ingestion endpoint, through the real Azure SDK client."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from endpoint_forensics.config import load_settings
from endpoint_forensics.contracts import Batch, HistoryPlan, SavedCheckpoint
from endpoint_forensics.errors import SinkError
from endpoint_forensics.sinks.sentinel import SentinelSink
from endpoint_forensics.tables import DEVICES
from epf_emulator import Emulator, EmulatorSettings

pytestmark = pytest.mark.e2e

T0 = datetime(2026, 12, 1, 6, tzinfo=UTC)
DEVICE_ROWS = [{"DeviceId": f"d{i}", "DeviceName": f"pc-{i}"} for i in range(4)]


def _unit(sink: SentinelSink, run: str, at: datetime) -> None:
    stamp = {"RunId": run, "TimeGenerated": at, "SnapshotTime": at}
    checkpoint = SavedCheckpoint("tenants/contoso", "machines", {"run_id": run})
    with sink.open(
        DEVICES,
        unit=f"tid/{run}/machines/page-0",
        checkpoint=checkpoint,
        history=HistoryPlan("changes", at, baseline_days=14),
    ) as writer:
        writer.write(Batch(DEVICES, rows=DEVICE_ROWS), stamp)


def test_rows_of_a_unit_whose_checkpoint_was_refused_are_sent_again(tmp_path: Path) -> None:
    with Emulator(EmulatorSettings(devices=1, seed=3, iot_sensors=0)) as emu:
        config = tmp_path / "epf.toml"
        emu.write_config(config, iot="none")
        overrides = {"store.path": str(tmp_path / "ws.duckdb"), "state.dir": str(tmp_path)}
        sentinel = load_settings(config, environ={}, overrides=overrides).sentinel
        assert sentinel is not None
        checkpoints = tmp_path / "checkpoints"
        # What a refusing disk does to the checkpoint's write: a directory where its temporary
        # file goes.
        blocked = checkpoints / "tenants" / "contoso.json.partial"
        blocked.mkdir(parents=True)

        sink = SentinelSink(sentinel, tmp_path / "outbox", checkpoints)
        try:
            with pytest.raises(SinkError, match="saving the checkpoint"):
                _unit(sink, "run-1", T0)
            blocked.rmdir()
            _unit(sink, "run-2", T0 + timedelta(hours=1))
            report = sink.flush()
        finally:
            sink.close()
        assert report.error == ""
        sent = emu.ingested_rows(DEVICES.name)
        # The first unit was in the outbox before its checkpoint failed, so it is delivered
        # too; the second run's snapshot is whole on its own.
        by_run = {run: sum(1 for r in sent if r["RunId"] == run) for run in ("run-1", "run-2")}
        assert by_run == {"run-1": 4, "run-2": 4}
