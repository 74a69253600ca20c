"""The Defender for IoT side of one emulator start: the OT model and what happens over time.

Owns ``IotAppliance`` (the public facts of one running appliance) and building, from the
settings, the start time and the MDE machine records, the OT model (``iot.fleet``), each
sensor's alert and event streams (``iot.timeline``) and the per-appliance request counters,
and which appliances exist (``sensor-1``..``sensor-n`` and, if enabled, ``console``). The
listeners that serve it live in ``iot.server``; the truth in ``iot.truth``; the appliances'
config blocks in ``core.config_text``.

Imports only ``common.limits``, ``common.settings``, ``iot.fleet``, ``iot.model`` and
``iot.timeline`` of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from epf_emulator.common.limits import RequestStats
from epf_emulator.common.settings import EmulatorSettings
from epf_emulator.iot.fleet import build_iot_model
from epf_emulator.iot.model import HOUR_MS, MINUTE_MS, IotModel, OtSensor
from epf_emulator.iot.timeline import AlertStream, EventStream

__all__ = ["CONSOLE_NAME", "IotAppliance", "IotState", "build_iot_state"]

CONSOLE_NAME = "console"


@dataclass(frozen=True)
class IotAppliance:
    """One running Defender for IoT appliance (a sensor or the management console).

    ``token`` goes as is in the ``Authorization`` header (no ``Bearer``, defender-apis.md
    C.1); ``certificate_path`` is the PEM of its self-signed certificate (no key), and
    ``fingerprint_sha256`` the lower-case hex SHA-256 of that certificate's DER, no colons.
    """

    name: str
    kind: Literal["sensor", "console"]
    base_url: str
    token: str
    certificate_path: Path
    fingerprint_sha256: str
    sensor_id: int | None


@dataclass
class IotState:
    model: IotModel
    alerts: dict[int, AlertStream]  # by sensor number
    events: dict[int, EventStream]
    console: bool
    requests: dict[str, RequestStats] = field(default_factory=dict)  # by appliance name

    @property
    def sensors(self) -> list[OtSensor]:
        return self.model.sensors

    def appliance_names(self) -> list[str]:
        return [s.name for s in self.sensors] + ([CONSOLE_NAME] if self.console else [])

    def request_counts(self) -> dict[str, dict[str, dict[str, int]]]:
        return {name: stats.requests() for name, stats in self.requests.items()}


def build_iot_state(
    settings: EmulatorSettings, anchor_ms: int, mde_records: Sequence[Mapping[str, Any]]
) -> IotState | None:
    """None when the settings ask for no sensors (then there is no IoT at all)."""
    if settings.iot_sensors == 0:
        return None
    model = build_iot_model(
        seed=settings.seed,
        anchor_ms=anchor_ms,
        sensors=settings.iot_sensors,
        devices_per_sensor=settings.iot_devices_per_sensor,
        mde_records=mde_records,
    )
    alert_start = anchor_ms - round(settings.iot_alert_history_hours * HOUR_MS)
    event_start = anchor_ms - round(settings.iot_event_backlog_minutes * MINUTE_MS)
    state = IotState(
        model=model,
        alerts={
            s.number: AlertStream(
                settings.seed, s, alert_start, settings.iot_alerts_per_hour, anchor_ms
            )
            for s in model.sensors
        },
        events={
            s.number: EventStream(
                settings.seed,
                s,
                event_start,
                settings.iot_events_per_hour,
                storms={
                    int(start.timestamp() * 1000) // HOUR_MS: rate
                    for number, start, rate in settings.iot_event_storms
                    if number == s.number
                },
            )
            for s in model.sensors
        },
        console=settings.iot_console,
    )
    state.requests = {name: RequestStats() for name in state.appliance_names()}
    return state
