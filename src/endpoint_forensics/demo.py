"""The demo: an emulated tenant, one full sync into a local workspace, and what it found.

Owns the glue the ``epf demo`` command runs; the CLI only renders what this returns.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from endpoint_forensics import store
from endpoint_forensics.config import load_settings
from endpoint_forensics.pipeline import Progress, RunSummary, run_sync
from endpoint_forensics.sinks import close_sinks, open_sinks
from endpoint_forensics.tables import AGENT_HEALTH_TESTS

__all__ = ["DemoResult", "run_demo"]


@dataclass
class DemoResult:
    db: Path
    summary: RunSummary
    truth: dict[str, int]
    synced: dict[str, int]  # rows this run wrote, per table
    ingested: dict[str, int] = field(default_factory=dict)  # rows the emulated Sentinel took
    by_platform: list[dict[str, Any]] = field(default_factory=list)
    failing_tests: list[dict[str, Any]] = field(default_factory=list)
    ot_sensors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def matches_truth(self) -> bool:
        return all(self.synced.get(t, -1) == n for t, n in self.truth.items())

    @property
    def sentinel_matches_store(self) -> bool:
        """Whether the emulated Sentinel received exactly the rows the local store has."""
        return {t: n for t, n in self.synced.items() if n} == self.ingested


def run_demo(
    *,
    devices: int,
    seed: int,
    db: Path,
    progress: Progress | None = None,
    emulator_options: dict[str, Any] | None = None,
) -> DemoResult:
    """Start the emulator, sync it into ``db``, and summarise the latest snapshot."""
    from endpoint_forensics.emulator import Emulator, EmulatorSettings

    settings_kw: dict[str, Any] = {"devices": devices, "seed": seed, **(emulator_options or {})}
    with tempfile.TemporaryDirectory(prefix="epf-demo-") as tmp:
        with Emulator(EmulatorSettings(**settings_kw)) as emu:
            config_path = Path(tmp) / "emulated.toml"
            emu.write_config(config_path)
            settings = load_settings(
                config_path,
                overrides={"store.path": str(db.resolve()), "state.dir": str(Path(tmp) / "state")},
            )
            sinks = open_sinks(settings)  # the local store and the emulated Sentinel
            try:
                summary = run_sync(settings, sinks, progress=progress)
            finally:
                close_sinks(sinks)
            stats = emu.stats()
            truth = dict(stats["truth"])
            ingested = dict(stats.get("ingested", {}))
    synced: dict[str, int] = {}
    for o in summary.outcomes:
        if o.outcome == "Succeeded":
            synced[o.table] = synced.get(o.table, 0) + o.rows
    synced["EPF_Runs_CL"] = len(summary.outcomes)
    result = DemoResult(db=db, summary=summary, truth=truth, synced=synced, ingested=ingested)
    latest = f'| where RunId == "{summary.run_id}"'
    result.by_platform = store.run_query(
        db,
        f"EPF_Devices_CL {latest} | summarize Devices = count() by OSPlatform | order by Devices desc",
    ).records()
    failing = " , ".join(f'{t} = countif({t} == "Fail")' for t in AGENT_HEALTH_TESTS)
    counts = store.run_query(db, f"EPF_AgentHealth_CL {latest} | summarize {failing}").records()
    if counts:
        result.failing_tests = [
            {"Test": t, "FailingDevices": counts[0][t] or 0} for t in AGENT_HEALTH_TESTS
        ]
    result.ot_sensors = store.run_query(
        db, _OT_SENSORS.format(run=summary.run_id), sql=True
    ).records()
    return result


# Per sensor: its OT devices, how many are Defender for Endpoint devices too (the same
# address), critical CVEs, and the console's view of the sensor's connection.
_OT_SENSORS = """
SELECT d.Appliance AS Sensor,
       count(DISTINCT d.DeviceId) AS OtDevices,
       count(DISTINCT d.DeviceId) FILTER (WHERE m.DeviceId IS NOT NULL) AS AlsoInMde,
       (SELECT count(*) FROM EPF_IotCves_CL c
         WHERE c.RunId = d.RunId AND c.Appliance = d.Appliance AND c.Score >= 9) AS CriticalCves,
       (SELECT any_value(s.ConnectionState) FROM EPF_IotSensors_CL s
         WHERE s.RunId = d.RunId AND s.SensorName = d.Appliance) AS ConsoleState
FROM EPF_IotDevices_CL d
LEFT JOIN EPF_Devices_CL m
  ON m.RunId = d.RunId AND list_contains(from_json(d.IpAddresses, '["VARCHAR"]'), m.LastIpAddress)
WHERE d.RunId = '{run}' AND d.Source = 'sensor/v1/devices'
GROUP BY d.Appliance, d.RunId
ORDER BY 1
"""
