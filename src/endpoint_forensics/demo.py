"""The demo: an emulated tenant, one full sync into a local workspace, and what it found.

Owns the glue the ``epf demo`` command runs (the CLI only renders what this returns) and the
check that the emulator's web stack, the ``demo`` extra, is installed: without it ``epf demo``
and ``epf emulator`` say in one line what to install instead of failing on an import.
The one product module besides the ``epf emulator`` command that imports ``epf_emulator``, and
only inside ``run_demo``. May import ``pipeline``, ``sinks``, ``config``, ``workspace``,
``tables`` and ``errors``.
"""

from __future__ import annotations

import importlib.util
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from endpoint_forensics.config import load_settings
from endpoint_forensics.errors import ConfigError
from endpoint_forensics.pipeline.run import Progress, RunSummary, run_sync
from endpoint_forensics.sinks import close_sinks, open_sinks
from endpoint_forensics.tables import AGENT_HEALTH_TESTS
from endpoint_forensics.workspace import store

__all__ = [
    "DEMO_EXTRA_INSTALL",
    "DEMO_EXTRA_MODULES",
    "DemoResult",
    "require_demo_extra",
    "run_demo",
]

#: The ``demo`` extra by import name: Starlette, uvicorn, python-multipart and trustme.
DEMO_EXTRA_MODULES = ("starlette", "uvicorn", "python_multipart", "trustme")
DEMO_EXTRA_INSTALL = "pip install 'endpoint-forensics[demo]'"


def require_demo_extra(command: str) -> None:
    """Check that the emulator's web stack can be imported, before an emulator starts.

    Args:
        command: what needs it, for the message (``epf demo``).

    Raises:
        ConfigError: a module of the ``demo`` extra is missing; the message says what to install.
    """
    missing = [name for name in DEMO_EXTRA_MODULES if not _importable(name)]
    if missing:
        raise ConfigError(
            f"{command} needs the demo extra ({', '.join(missing)} not installed): "
            f"{DEMO_EXTRA_INSTALL}"
        )


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a finder refused it; a module left without a spec
        return False


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
    """Start the emulator, sync it into ``db``, and summarise the latest snapshot.

    Raises:
        ConfigError: the ``demo`` extra is not installed (see ``require_demo_extra``).
    """
    require_demo_extra("epf demo")
    from epf_emulator import Emulator, EmulatorSettings

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
