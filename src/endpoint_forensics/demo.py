"""The demo: an emulated tenant, two weeks of daily syncs into a local workspace (and, on
request, the emulated Sentinel), what it found, and the forensic answer for the tenant's
incident.

Owns the glue the ``epf demo`` command runs (the CLI only renders what this returns) and the
check that the emulator's web stack, the ``demo`` extra, is installed: without it ``epf demo``
and ``epf emulator`` say in one line what to install instead of failing on an import.
The one product module besides the ``epf emulator`` command that imports ``epf_emulator``, and
only inside ``run_demo``. May import ``analytics``, ``pipeline``, ``sinks``, ``config``, ``contracts``,
``workspace``, ``tables`` and ``errors``.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from endpoint_forensics.analytics.forensics import device_posture
from endpoint_forensics.analytics.functions import STATE_FUNCTIONS, kql_datetime, registry_for
from endpoint_forensics.analytics.triage_report import triage_report
from endpoint_forensics.config import Settings, load_settings
from endpoint_forensics.config.models import FEED_DATASETS
from endpoint_forensics.contracts import Sink
from endpoint_forensics.errors import ConfigError
from endpoint_forensics.pipeline.run import Progress, RunSummary, run_sync
from endpoint_forensics.sinks import close_sinks, open_sinks
from endpoint_forensics.tables import AGENT_HEALTH_TESTS, TABLES
from endpoint_forensics.workspace import store

__all__ = [
    "DEMO_DAYS",
    "DEMO_EXTRA_INSTALL",
    "DEMO_EXTRA_MODULES",
    "DemoResult",
    "report_queries",
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


#: Simulated days the demo syncs, one snapshot a day, so that a newcomer sees history at once.
DEMO_DAYS = 14
#: Told each day: (day number from 0, the run's summary).
DayReport = Callable[[int, RunSummary], None]


#: The demo's collection, beside what the emulator writes in its config: the export files
#: (faster than JSON pages on one machine), the CVE catalogue weekly rather than daily, EPSS,
#: Vulnrichment and triage on the first and the last day of a fortnight (each costs the
#: emulated Sentinel tens of thousands of rows; two copies still show their history).
_DEMO_OVERRIDES = {
    "tenants.0.export_mode": "files",
    "tenants.0.interval_hours": {"cve_catalog": 168.0},
    "feeds.interval_hours": {"epss": 336.0, "vulnrichment": 336.0},
    "triage.interval_hours": 336.0,
    # The fortnight is one baseline interval: at the default (14 days) the last day would be a
    # second full baseline, every row sent again, for a history the first one already anchors.
    "history.baseline_days": 30.0,
    # OT controllers keep a process running: their loss is a high mission impact.
    "triage.mission": [
        {"tag": "PLC", "value": "high"},
        {"tag": "DCS Controller", "value": "high"},
    ],
}
#: Quieter OT sensors than the emulator's default: a daily poll then loses no event to the
#: sensors' latest-100 cap (a real deployment polls events more often, `epf run`).
_DEMO_EMULATOR = {"iot_events_per_hour": 8.0}
# The tenant's name in the emulator's config: what tells a demo's workspace from another.
_DEMO_TENANT = "emulated"
#: What goes wrong in the demo's fortnight, so that the views of failures show one (each is
#: told in ``DemoResult.incidents``): an address scan floods the first OT sensor with events
#: two days before the end (more than it keeps between daily polls: a gap), and the last
#: sensor's API token is deleted on its console before the last day's sync (its datasets fail).
_STORM_BEFORE_END = timedelta(days=2) - timedelta(hours=10)
_STORM_EVENTS_PER_HOUR = 1500.0


@dataclass
class DemoResult:
    db: Path
    summary: RunSummary  # the last day's run
    truth: dict[str, int]  # the emulator's rows per table: the first day's, then the state's
    synced: dict[str, int]  # the first day's rows per table; the state at the end for the others
    days: list[RunSummary] = field(default_factory=list)
    sentinel: bool = False  # whether every day was also delivered to the emulated Sentinel
    ingested: dict[str, int] = field(default_factory=dict)  # rows the emulated Sentinel took
    stored: dict[str, int] = field(default_factory=dict)  # rows the workspace holds, per table
    by_platform: list[dict[str, Any]] = field(default_factory=list)
    failing_tests: list[dict[str, Any]] = field(default_factory=list)
    ot_sensors: list[dict[str, Any]] = field(default_factory=list)
    incident: dict[str, Any] | None = None  # the emulator's incident: DeviceId, DeviceName, at
    incident_answer: dict[str, Any] | None = None  # epf forensics' answer for it
    triage: dict[str, Any] | None = None  # epf triage's report of the newest triage run
    # What the demo made go wrong (``_STORM_BEFORE_END``), and the sources that fail by it.
    incidents: list[str] = field(default_factory=list)
    staged_sources: set[str] = field(default_factory=set)

    @property
    def unexpected_errors(self) -> list[str]:
        """The last run's errors but those of the sources the demo made fail."""
        return list(
            dict.fromkeys(
                o.error
                for o in self.summary.outcomes
                if o.error and o.tenant not in self.staged_sources
            )
        ) + [d.error for d in self.summary.deliveries.values() if d.error]

    @property
    def matches_truth(self) -> bool:
        return all(self.synced.get(t, -1) == n for t, n in self.truth.items())

    @property
    def sentinel_matches_store(self) -> bool:
        """Whether the emulated Sentinel received exactly the rows the local store holds
        (true when the demo delivered to the local store only)."""
        if not self.sentinel:
            return True
        return {t: n for t, n in self.stored.items() if n} == self.ingested


def run_demo(
    *,
    devices: int,
    seed: int,
    db: Path,
    days: int = DEMO_DAYS,
    progress: Progress | None = None,
    on_day: DayReport | None = None,
    emulator_options: dict[str, Any] | None = None,
    sentinel: bool = False,
) -> DemoResult:
    """Start the emulator ``days`` simulated days before its world's anchor, sync once a day
    up to the anchor into ``db`` (with ``sentinel``, into the emulated Sentinel too), and
    summarise the state at the end and the incident.

    The truth check: the first day's sync (every dataset from scratch) equals the emulator's
    truth then, table by table, and the state of every change-tracked table at the end equals
    the emulator's truth at the end.

    Raises:
        ConfigError: the ``demo`` extra is not installed (see ``require_demo_extra``).
    """
    require_demo_extra("epf demo")
    from epf_emulator import EmulatorProcess, EmulatorSettings
    from epf_emulator.common.clock import WORLD_ANCHOR

    _replace_earlier_demo(db)

    settings_kw: dict[str, Any] = {
        "devices": devices,
        "seed": seed,
        "start": WORLD_ANCHOR - timedelta(days=days),
        **_DEMO_EMULATOR,
        **(emulator_options or {}),
    }
    storm_at = WORLD_ANCHOR - _STORM_BEFORE_END
    if days >= 2 and settings_kw.get("iot_sensors", 2):
        settings_kw.setdefault("iot_event_storms", ((1, storm_at, _STORM_EVENTS_PER_HOUR),))
    runs: list[RunSummary] = []
    first_truth: dict[str, int] = {}
    incidents: list[str] = []
    staged: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="epf-demo-") as tmp:
        # In its own process, so that the emulator and the collector each have a core.
        with EmulatorProcess(EmulatorSettings(**settings_kw)) as emu:
            sensors = [a.name for a in emu.get("iot_appliances") if a.kind == "sensor"]
            if settings_kw.get("iot_event_storms"):
                incidents.append(
                    f"{storm_at:%Y-%m-%d %H:%M}Z: an address scan floods sensor {sensors[0]}"
                    f" with {_STORM_EVENTS_PER_HOUR:,.0f} events in an hour, more than it keeps"
                    " between daily polls: the run records the gap (EPF_Runs_CL, Gaps)"
                )
            config_path = Path(tmp) / "emulated.toml"
            # The threat feeds from its mirrors; the emulated Sentinel only when asked for: it
            # costs about as much again as the local store (each row encoded, sent, checked).
            emu.call("write_config", config_path, feeds=True, sentinel=sentinel)
            overrides = {"store.path": str(db.resolve()), "state.dir": str(Path(tmp) / "state")}
            settings = load_settings(config_path, overrides={**_DEMO_OVERRIDES, **overrides})
            assert [t.name for t in settings.tenants] == [_DEMO_TENANT], settings.tenants
            # The workspace stays open from one day to the next: closing it checkpoints it,
            # a tenth of a quiet day's sync, and one process syncs every day here.
            local = open_sinks(settings.model_copy(update={"sentinel": None}))
            try:
                for day in range(days + 1):
                    if day:
                        emu.call("advance", 24)
                    if day == days and days >= 1 and len(sensors) > 1:
                        emu.call("revoke_iot_token", sensors[-1])
                        staged.add(sensors[-1])
                        incidents.append(
                            f"{emu.get('now'):%Y-%m-%d %H:%M}Z: the API token of sensor"
                            f" {sensors[-1]} is deleted on its console: the last sync cannot"
                            " read it, and says so"
                        )
                    # As of the emulated clock (a fixed calendar, not the wall clock).
                    runs.append(_sync_day(settings, local, emu.get("now"), progress))
                    if day == 0:  # the truth the first day's sync is checked against
                        first_truth = dict(emu.call("stats")["truth"])
                    if on_day:
                        on_day(day, runs[-1])
            finally:
                close_sinks(local)
            stats = emu.call("stats")
    # As of the last sync: the state every change-tracked table is checked against.
    result = _result(db, runs, (first_truth, dict(stats["truth"])), stats)
    result.incidents, result.staged_sources = incidents, staged
    result.sentinel = sentinel
    return result


def _sync_day(
    settings: Settings, local: list[Sink], now: datetime, progress: Progress | None
) -> RunSummary:
    """One day's sync into the open workspace and, when configured, the emulated Sentinel,
    whose sink is opened and flushed for the run as ``epf sync`` does."""
    remote: list[Sink] = []
    if settings.sentinel is not None:
        no_store = settings.store.model_copy(update={"enabled": False})
        remote = open_sinks(settings.model_copy(update={"store": no_store}))
    try:
        return run_sync(settings, [*local, *remote], progress=progress, now=now)
    finally:
        close_sinks(remote)


def _result(
    db: Path,
    runs: list[RunSummary],
    truths: tuple[dict[str, int], dict[str, int]],
    stats: dict[str, Any],
) -> DemoResult:
    summary = runs[-1]
    at = summary.time_generated
    synced: dict[str, int] = {}
    for o in runs[0].outcomes:
        if o.outcome == "Succeeded":
            synced[o.table] = synced.get(o.table, 0) + o.rows
    synced["EPF_Runs_CL"] = len(runs[0].outcomes)
    truth = dict(truths[0])
    # The emulator counts the runs of its own datasets; the demo also reads every threat feed
    # from its mirrors and ends each run with triage.
    truth["EPF_Runs_CL"] += len(FEED_DATASETS) + 1
    queries = report_queries(at)
    # A change-tracked table's truth at the end is its state, whatever each run wrote.
    for table, query in queries["state_counts"].items():
        synced[table] = int(_run_kql(db, query).rows[0][0])
        truth[table] = truths[1][table]
    result = DemoResult(
        db=db,
        summary=summary,
        truth=truth,
        synced=synced,
        days=runs,
        ingested=dict(stats.get("ingested", {})),
        stored=_stored(db),
        incident=stats.get("incident"),
    )
    result.by_platform = _run_kql(db, queries["by_platform"]).records()
    counts = _run_kql(db, queries["failing_tests"]).records()
    if counts:
        result.failing_tests = [
            {"Test": t, "FailingDevices": counts[0][t] or 0} for t in AGENT_HEALTH_TESTS
        ]
    result.ot_sensors = store.run_query(
        db, _OT_SENSORS.format(run=summary.run_id, at=at.isoformat()), sql=True
    ).records()
    result.triage = triage_report(db, limit=5)
    if result.incident:
        when = datetime.fromisoformat(str(result.incident["at"]).replace("Z", "+00:00"))
        result.incident_answer = device_posture(
            db, str(result.incident["DeviceId"]), when, window=timedelta(days=7)
        )
    return result


def _run_kql(db: Path, query: str) -> Any:
    # Only the functions the query calls are parsed: the whole registry costs about a second.
    return store.run_query(db, query, functions=registry_for(query))


def _stored(db: Path) -> dict[str, int]:
    """Rows per table in the workspace (every day's)."""
    rows = store.run_query(
        db,
        " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM \"{t}\"" for t in TABLES),
        sql=True,
    ).rows
    return {str(t): int(n) for t, n in rows}


def report_queries(at: datetime) -> dict[str, Any]:
    """The KQL the demo's report runs over the workspace, as of ``at``: devices per platform
    (``by_platform``), failing devices per agent health test (``failing_tests``), and the
    rows of each change-tracked table's state (``state_counts``, by table)."""
    when = kql_datetime(at)
    failing = " , ".join(f'{t} = countif({t} == "Fail")' for t in AGENT_HEALTH_TESTS)
    return {
        "by_platform": (
            f"EPF_DevicesAt({when}) | summarize Devices = count() by OSPlatform"
            " | order by Devices desc"
        ),
        "failing_tests": f"EPF_AgentHealthAt({when}) | summarize {failing}",
        "state_counts": {f.table: f"{f.function}({when}) | count" for f in STATE_FUNCTIONS},
    }


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
LEFT JOIN (
    -- each device's newest row: its address at the end (change-only history writes few rows)
    SELECT DeviceId, LastIpAddress FROM EPF_Devices_CL
    WHERE SnapshotTime <= TIMESTAMPTZ '{at}'
    QUALIFY row_number() OVER (PARTITION BY DeviceId ORDER BY SnapshotTime DESC) = 1
) m ON list_contains(from_json(d.IpAddresses, '["VARCHAR"]'), m.LastIpAddress)
WHERE d.RunId = '{run}' AND d.Source = 'sensor/v1/devices'
GROUP BY d.Appliance, d.RunId
ORDER BY 1
"""


def _replace_earlier_demo(db: Path) -> None:
    """Remove an earlier demo's workspace at ``db``: the demo tells a fortnight from its first
    day, and a workspace that already holds it would find every dataset synced, so nothing
    would be compared with the truth. A file that is not a demo's is left alone.

    Raises:
        ConfigError: ``db`` holds something other than a demo's workspace.
        WorkspaceBusy: another process has it open.
    """
    import duckdb

    if not db.exists():
        return
    con = store.connect(db, read_only=True)
    try:
        tenants = con.execute(
            "SELECT DISTINCT SourceName FROM EPF_Runs_CL WHERE SourceKind = 'tenant'"
        ).fetchall()
    except duckdb.Error:  # no runs table (not a workspace of ours): not the demo's
        tenants = []
    finally:
        con.close()
    if [name for (name,) in tenants] != [_DEMO_TENANT]:
        raise ConfigError(
            f"--db {str(db)!r} exists and is not a workspace `epf demo` wrote (its runs are"
            f" not all of the {_DEMO_TENANT!r} tenant); give another --db, or remove the file"
        )
    for path in (db, db.with_name(db.name + ".wal")):
        path.unlink(missing_ok=True)
