"""The OT model's types: sensors, devices, connections, CVEs, exposures and the password book.

Owns the records the Defender for IoT side is made of (defender-apis.md C.2) and what each
answers as of an instant (``alive``, ``last_update``, ``last_seen``): ``OtSensor`` with its
``OtDevice`` and ``OtConnection`` lists, each device's ``OtCve`` tuple and ``Exposure`` (its
entry of the devices vulnerability report), the ``IotModel`` of every sensor, and the
``PasswordBook`` that hands out distinct, recognisable plain-text passwords (so tests can check
that none reaches the collector's store). Times are epoch milliseconds (``MINUTE_MS``,
``HOUR_MS``, ``DAY_MS``). ``iot.fleet`` generates the model; ``iot.reports`` derives the
report rows from it.

Imports nothing of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DAY_MS",
    "HOUR_MS",
    "MINUTE_MS",
    "Exposure",
    "IotModel",
    "OtConnection",
    "OtCve",
    "OtDevice",
    "OtSensor",
    "PasswordBook",
]

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

# Weak-looking but distinctive (letters and symbols, at least 8 characters), so a search of
# the collector's store for any of them cannot match an unrelated value by accident.
_PASSWORD_BASES = (
    "Siemens1!",
    "Passw0rd!",
    "Admin@123",
    "Welcome1!",
    "Scada2020!",
    "Operator#1",
    "ChangeMe!",
    "Rockwell99!",
    "Hmi@dm1n",
    "Plc_s7_300",
    "Qwerty!23",
    "Engineer1!",
)


@dataclass(frozen=True, slots=True)
class OtCve:
    cve_id: str
    tenths: int  # the CVSS score times ten ("9.3" -> 93), so sorting and formatting are exact
    attack_vector: str
    description: str

    @property
    def score(self) -> str:
        return f"{self.tenths // 10}.{self.tenths % 10}"


class PasswordBook:
    """Hands out distinct plain-text passwords: a base, then the base with a counter."""

    def __init__(self) -> None:
        self.issued: list[str] = []
        self._uses: dict[str, int] = {}

    def take(self, rng: random.Random) -> str:
        base = rng.choice(_PASSWORD_BASES)
        uses = self._uses.get(base, 0) + 1
        self._uses[base] = uses
        password = base if uses == 1 else f"{base}{uses}"
        self.issued.append(password)
        return password


@dataclass(frozen=True, slots=True)
class Exposure:
    """One device's entry of the devices vulnerability report (without name and addresses)."""

    security_score: int
    firmware_version: str | None
    model: str | None
    operating_system: Mapping[str, Any]
    anti_viruses: tuple[str, ...]
    passwords: tuple[tuple[str, str, str], ...]  # (password, protocol, strength)
    remote_access: tuple[tuple[int, str, str, str], ...]  # (port, transport, software, client)
    backup_server: bool
    opened_ports: tuple[tuple[int, str, str, bool], ...]
    engineering_station: bool
    scanner: bool
    cves: tuple[OtCve, ...]
    unauthorized: bool
    malware: bool
    wireless: bool
    weak_authentication: tuple[str, ...]

    def rows(self) -> int:
        """Rows this entry makes in the exposure table: the device itself, then each finding."""
        return (
            1
            + len(self.remote_access)
            + len(self.opened_ports)
            + len(self.passwords)
            + len(self.weak_authentication)
            + len(self.anti_viruses)
        )


@dataclass(slots=True)
class OtDevice:
    """One OT device as its sensor knows it; ``record`` is the C.2 device object."""

    sensor: int
    id: int
    uid: int  # the console's id, unique across sensors
    record: dict[str, Any]
    category: str
    purdue_layer: str
    first_ms: int
    deleted_ms: int | None
    updates_ms: tuple[int, ...]  # one-off updates, ascending
    period_ms: int | None  # some devices also change every period_ms, for ever
    cves: tuple[OtCve, ...]  # on the first address, highest score first
    exposure: Exposure | None  # None: not in the vulnerability report
    mde_machine: bool = False

    @property
    def name(self) -> str:
        return str(self.record["name"])

    @property
    def ips(self) -> list[str]:
        return list(self.record["ipAddresses"])

    def alive(self, now_ms: int) -> bool:
        """Discovered by now and not deleted yet."""
        return self.first_ms <= now_ms and (self.deleted_ms is None or now_ms < self.deleted_ms)

    def last_update(self, now_ms: int) -> int:
        """The latest change at or before ``now_ms`` (first discovery counts)."""
        latest = self.first_ms
        for t in self.updates_ms:
            if t <= now_ms:
                latest = max(latest, t)
        if self.period_ms is not None and now_ms >= self.first_ms:
            latest = max(latest, now_ms - (now_ms - self.first_ms) % self.period_ms)
        return latest


@dataclass(frozen=True, slots=True)
class OtConnection:
    first: OtDevice
    second: OtDevice
    discovered_ms: int
    seen_ms: int  # last seen, or for active connections the first tick of their period
    period_ms: int | None
    ports: tuple[int, ...]
    protocols: tuple[tuple[str, tuple[str, ...]], ...]
    kind: str  # One Way | Two Way | Multicast

    def alive(self, now_ms: int) -> bool:
        return (
            self.discovered_ms <= now_ms and self.first.alive(now_ms) and self.second.alive(now_ms)
        )

    def last_seen(self, now_ms: int) -> int:
        if self.period_ms is None:
            return self.seen_ms
        return now_ms - (now_ms - self.seen_ms) % self.period_ms


@dataclass
class OtSensor:
    number: int
    name: str
    devices: list[OtDevice]
    connections: list[OtConnection]
    subnets: list[str]  # "10.x.y.0"
    by_id: dict[int, OtDevice] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_id = {d.id: d for d in self.devices}

    @property
    def zone_name(self) -> str:
        return f"Zone {self.number}"

    def alive_devices(self, now_ms: int) -> list[OtDevice]:
        return [d for d in self.devices if d.alive(now_ms)]

    def alive_connections(self, now_ms: int) -> list[OtConnection]:
        return [c for c in self.connections if c.alive(now_ms)]


@dataclass
class IotModel:
    seed: int
    anchor_ms: int
    sensors: list[OtSensor]
    passwords: PasswordBook
    site_name: str = "Plant 1"

    def all_devices(self) -> list[OtDevice]:
        return [d for s in self.sensors for d in s.devices]
