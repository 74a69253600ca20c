"""What happens on an OT sensor over time: its alerts and its event timeline (defender-apis.md C.2).

Owns two Poisson processes per sensor, generated lazily per emulated hour from an RNG seeded
with (seed, sensor, hour), so any window is reproducible and advancing the emulated clock
makes new alerts and events appear. Alerts start ``iot_alert_history_hours`` before the start
(the anchor) and are numbered in time order, so ids increase with time; events start
``iot_event_backlog_minutes`` before it. Times are distinct epoch milliseconds per sensor.

Imports only ``iot.model`` of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import bisect
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from epf_emulator.iot.model import HOUR_MS, OtDevice, OtSensor

__all__ = ["EVENT_TYPES", "AlertStream", "EventStream", "OtAlert", "OtEvent"]

# (type, share, title, severity, content with {a} and {b} standing for device addresses)
_EVENTS = (
    ("DEVICE_CONNECTION_CREATED", 30, "Device Connection Created", "INFO",
     "A new connection was detected between {a} and {b}"),
    ("REMOTE_ACCESS", 10, "Remote Access Connection Established", "NOTICE",
     "Remote access connection established from {a} to {b}"),
    ("PROGRAM_DEVICE", 10, "PLC Program Update", "NOTICE",
     "Program update detected, sent from {a} to {b}"),
    ("DEVICE_ADDED", 10, "Device Added", "INFO", "A new device {a} was added to the network"),
    ("FIRMWARE_CHANGE", 5, "Firmware Version Changed", "NOTICE",
     "Firmware version change detected on {a}"),
    ("ALERT", 15, "Alert Detected", "ALERT",
     "Illegal MODBUS operation detected, sent from {a} to {b}"),
    ("USER_LOGIN", 10, "User Login", "INFO", "User logged in to the sensor console from {a}"),
    ("NOTICE", 10, "Notice", "NOTICE", "Device {a} stopped responding to {b}"),
)  # fmt: skip
EVENT_TYPES = tuple(e[0] for e in _EVENTS)
# (kind, title, message, severity, engine, remediation); kind serves the alerts' ``type`` filter.
_ALERTS = (
    ("unexpected new devices", "Unauthorized Device Was Detected",
     "A new device {a} was detected on the network.", "Major", "Policy Violation",
     ("Verify that the device is authorized.", "Learn the device if it is legitimate.")),
    ("disconnections", "Device is Suspected to be Disconnected (Unresponsive)",
     "Device {a} is suspected to be disconnected (unresponsive).", "Minor", "Operational",
     ("Check the device's network connection.",)),
    ("", "Illegal MODBUS Operation (Exception Raised by Master)",
     "A MODBUS master {a} attempted to initiate an illegal operation.\nThe slave {b} raised an"
     " exception.", "Major", "Protocol Violation",
     ("Check the master's configuration.",)),
    ("", "Address Scan Detected", "Address scan detected.\nScanning address: {a}", "Critical",
     "Anomaly", ("Verify that the scanning device is authorized.",)),
    ("", "Unauthorized PLC Program Upload", "A program upload from {a} to {b} was detected.",
     "Major", "Policy Violation", ("Confirm the change with the control engineer.",)),
    ("", "Suspicion of Malicious Activity", "Malicious network activity detected from {a}.",
     "Critical", "Malware", ("Isolate the device.", "Run an antivirus scan.")),
    ("", "Firmware Version Changed", "The firmware of {a} was changed.", "Warning",
     "Operational", ()),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class OtEvent:
    timestamp_ms: int
    type: str
    title: str
    severity: str
    owner: str | None
    content: str


@dataclass(frozen=True, slots=True)
class OtAlert:
    id: int
    time_ms: int
    kind: str
    title: str
    message: str
    severity: str
    engine: str
    source: OtDevice | None
    destination: OtDevice | None
    information: dict[str, Any] | None
    lower_case_key: bool  # spells ``additionalinformation`` (the doc's quirk)
    handled: bool
    remediation: tuple[str, ...]


def _times(rng: random.Random, hour: int, per_hour: float) -> list[int]:
    """Distinct millisecond times of a Poisson process inside emulated hour ``hour``."""
    if per_hour <= 0:
        return []
    start, end = hour * HOUR_MS, (hour + 1) * HOUR_MS
    seen: set[int] = set()
    t = float(start)
    while True:
        t += rng.expovariate(per_hour) * HOUR_MS
        ms = int(t)
        if ms >= end:
            break
        while ms in seen and ms + 1 < end:
            ms += 1
        seen.add(ms)
    return sorted(seen)


def _address(device: OtDevice | None) -> str:
    return device.ips[0] if device is not None else "0.0.0.0"


class EventStream:
    """A sensor's events from ``start_ms`` on, made per hour on demand (thread-safe); an hour
    of ``storms`` (hour index: events per hour) runs at its own rate."""

    def __init__(
        self,
        seed: int,
        sensor: OtSensor,
        start_ms: int,
        per_hour: float,
        storms: dict[int, float] | None = None,
    ) -> None:
        self._seed, self._sensor, self.start_ms, self._per_hour = seed, sensor, start_ms, per_hour
        self._storms = storms or {}
        self._hours: dict[int, list[OtEvent]] = {}
        self._lock = threading.Lock()

    def _hour(self, hour: int) -> list[OtEvent]:
        with self._lock:
            cached = self._hours.get(hour)
            if cached is not None:
                return cached
            rng = random.Random(f"epf-iot-events:{self._seed}:{self._sensor.number}:{hour}")
            devices = self._sensor.devices
            events = []
            for t in _times(rng, hour, self._storms.get(hour, self._per_hour)):
                kind, _, title, severity, content = rng.choices(_EVENTS, [e[1] for e in _EVENTS])[0]
                a, b = (rng.choice(devices), rng.choice(devices)) if devices else (None, None)
                owner = rng.choice(("admin", "support")) if kind == "USER_LOGIN" else None
                text = content.format(a=_address(a), b=_address(b))
                if t >= self.start_ms:
                    events.append(OtEvent(t, kind, title, severity, owner, text))
            self._hours[hour] = events
            return events

    def newest_first(self, lo_ms: int, hi_ms: int) -> Iterator[OtEvent]:
        """Events with lo <= timestamp <= hi, newest first."""
        lo = max(lo_ms, self.start_ms)
        for hour in range(hi_ms // HOUR_MS, lo // HOUR_MS - 1, -1):
            for event in reversed(self._hour(hour)):
                if lo <= event.timestamp_ms <= hi_ms:
                    yield event

    def count(self, lo_ms: int, hi_ms: int) -> int:
        lo = max(lo_ms, self.start_ms)
        total = 0
        for hour in range(lo // HOUR_MS, hi_ms // HOUR_MS + 1):
            total += sum(1 for e in self._hour(hour) if lo <= e.timestamp_ms <= hi_ms)
        return total


class AlertStream:
    """A sensor's alerts from ``start_ms`` on, numbered in time order (thread-safe)."""

    def __init__(
        self, seed: int, sensor: OtSensor, start_ms: int, per_hour: float, anchor_ms: int
    ) -> None:
        self._seed, self._sensor, self.start_ms = seed, sensor, start_ms
        self._per_hour, self._anchor_ms = per_hour, anchor_ms
        self._alerts: list[OtAlert] = []
        self._times: list[int] = []
        self._next_hour = start_ms // HOUR_MS
        self._lock = threading.Lock()

    def upto(self, now_ms: int) -> list[OtAlert]:
        """Every alert with time <= ``now_ms``, in id (= time) order."""
        with self._lock:
            while self._next_hour <= now_ms // HOUR_MS:
                self._make_hour(self._next_hour)
                self._next_hour += 1
            return self._alerts[: bisect.bisect_right(self._times, now_ms)]

    def _make_hour(self, hour: int) -> None:
        rng = random.Random(f"epf-iot-alerts:{self._seed}:{self._sensor.number}:{hour}")
        for t in _times(rng, hour, self._per_hour):
            kind, title, message, severity, engine, steps = rng.choice(_ALERTS)
            alive = [d for d in self._sensor.devices if d.alive(t)]
            source = rng.choice(alive) if alive else None
            destination = rng.choice(alive) if alive and rng.random() < 0.7 else None
            information = None
            if rng.random() < 0.5:
                information = {
                    "description": "Additional details",
                    "information": [
                        f"Detected by {self._sensor.name}",
                        f"Source: {_address(source)}",
                    ],
                }
            lower = rng.random() < 0.2
            # Older alerts are more often handled.
            handled = rng.random() < (0.6 if self._anchor_ms - t > 24 * HOUR_MS else 0.25)
            if t < self.start_ms:
                continue
            self._alerts.append(
                OtAlert(
                    id=len(self._alerts) + 1,
                    time_ms=t,
                    kind=kind,
                    title=title,
                    message=message.format(a=_address(source), b=_address(destination)),
                    severity=severity,
                    engine=engine,
                    source=source,
                    destination=destination,
                    information=information,
                    lower_case_key=lower,
                    handled=handled,
                    remediation=steps,
                )
            )
            self._times.append(t)
