"""The deterministic synthetic fleet: who the devices of the emulated tenant are.

Owns the fleet-level choices: platform mix, onboarding and health states, when devices were
first and last seen, and which ~2% of records are older duplicates of another device.
Everything is a pure function of ``(devices, seed)``; absolute times are offsets from
``anchor`` (the world's fixed anchor, ``common.clock.WORLD_ANCHOR``, for a running tenant).

Also the machine records as of any instant T (``Fleet.records_at``): a device reports on a
fixed grid (onboarded devices daily, the others, seen by device discovery, every 6 days), so
``lastSeen`` is the last grid point at or before T; a stale device stopped reporting at its
``lastSeen`` of the anchor and is ``Inactive`` once that is more than 7 days before T. A
device is listed from its ``firstSeen`` on, until it has not been seen for 30 days.

Onboarding and offboarding over the timeline (rates at 2,000 devices): first-seen times are
spread over 700 days, so about 0.14% of the fleet (about 3 devices) joins each day of the
120 days before the anchor, plus 4% in the last 25 days; the 8% stale devices and the 2%
duplicates stop reporting 8-28 days before the anchor (about 10 devices a day then), so
they turn ``Inactive`` during the three weeks before it.

Imports only ``world.devices`` of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from epf_emulator.world.devices import (
    DAY,
    HOUR,
    Device,
    device_kind,
    epoch_micros,
    format_time,
    from_epoch_micros,
    make_device,
)

__all__ = ["Fleet", "build_fleet", "record_at", "stable_guid", "tenant_ids"]

_DAY_US = 86_400_000_000
_INACTIVE_AFTER_US = 7 * _DAY_US  # no report for a week: Inactive (B.1)
_LISTED_FOR_US = 30 * _DAY_US  # /api/machines lists devices seen in the last 30 days

#: (osPlatform, family, is_server, cumulative weight): about 55% Windows clients, 15% servers,
#: 15% macOS and 15% Linux.
_PLATFORMS: tuple[tuple[str, str, bool, float], ...] = (
    ("Windows10", "Windows", False, 0.30),
    ("Windows11", "Windows", False, 0.55),
    ("WindowsServer2016", "Windows", True, 0.58),
    ("WindowsServer2019", "Windows", True, 0.64),
    ("WindowsServer2022", "Windows", True, 0.70),
    ("macOS", "macOS", False, 0.85),
    ("Linux", "Linux", False, 1.00),
)


_NAME_PREFIXES = {"client": "ws", "server": "srv", "macOS": "mac", "Linux": "lnx"}


@dataclass
class Fleet:
    """The emulated tenant's devices, anchored at ``anchor`` (UTC)."""

    devices_requested: int
    seed: int
    anchor: datetime
    devices: list[Device] = field(default_factory=list)

    def machine_records(self) -> list[dict[str, Any]]:
        """The records ``GET /api/machines`` serves at the anchor, in service order (by id)."""
        return [d.record for d in self.devices]

    def records_at(self, t_us: int) -> list[dict[str, Any]]:
        """The records served at ``t_us`` (fresh dicts), in service order."""
        anchor_us = epoch_micros(self.anchor)
        records = (record_at(d, anchor_us, t_us) for d in self.devices)
        return [r for r in records if r is not None]

    def drop_device_info(self) -> None:
        """Forget the ``DeviceInfo`` attributes once the database has loaded them: nothing
        reads them afterwards, and they are a third of the fleet's memory (115 MB at
        100,000 devices)."""
        for device in self.devices:
            device.info = {}

    def by_platform(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self.devices:
            counts[d.platform] = counts.get(d.platform, 0) + 1
        return dict(sorted(counts.items()))


def record_at(
    device: Device, anchor_us: int, t_us: int, *, unlisted: bool = False
) -> dict[str, Any] | None:
    """``device``'s machine record as of ``t_us``; None while it is not listed (with
    ``unlisted``, only before it was first seen)."""
    first = anchor_us - int(device.first_seen_ago * 1_000_000)
    if t_us < first:
        return None
    period = _DAY_US if device.onboarding == "Onboarded" else 6 * _DAY_US
    base = anchor_us - int(device.last_seen_ago * 1_000_000)  # a report on the grid
    seen = base + (t_us - base) // period * period
    if device.stale:
        seen = min(seen, base)  # stopped reporting there
    seen = max(seen, first)
    if t_us - seen > _LISTED_FOR_US and not unlisted:
        return None
    record = dict(device.record)
    tick = int(record["lastSeen"][-2])
    record["lastSeen"] = format_time(from_epoch_micros(seen), 0, tick)
    if t_us - seen > _INACTIVE_AFTER_US:
        record["healthStatus"] = "Inactive"
    elif device.health == "Inactive":
        record["healthStatus"] = "Active"  # still reporting: it had not stopped yet
    return record


def stable_guid(seed: int, purpose: str) -> str:
    """A GUID that depends only on ``seed`` and ``purpose`` (tenant id, client id...)."""
    digest = hashlib.sha256(f"epf-emulator:{purpose}:{seed}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def tenant_ids(seed: int) -> tuple[str, str]:
    """(tenant id, client id): deterministic GUIDs from the seed."""
    return stable_guid(seed, "tenant"), stable_guid(seed, "client")


def build_fleet(devices: int, seed: int, anchor: datetime) -> Fleet:
    """Generate exactly ``devices`` machine records, about 2% of them older duplicates."""
    rng = random.Random(f"epf-fleet:{seed}")
    fleet = Fleet(devices_requested=devices, seed=seed, anchor=anchor)
    duplicates = devices * 2 // 100
    counters: dict[str, int] = {}
    primaries: list[Device] = []
    for index in range(devices - duplicates):
        primaries.append(_primary(rng, seed, index, anchor, counters))
    onboarded = [d for d in primaries if d.has_sensor] or primaries
    copies = [
        _duplicate(rng, seed, len(primaries) + j, anchor, rng.choice(onboarded))
        for j in range(duplicates)
    ]
    # The service returns machines in its own order; sorting by id keeps it stable and mixes
    # duplicates in among the primaries.
    fleet.devices = sorted(primaries + copies, key=lambda d: d.id)
    return fleet


def _pick_platform(rng: random.Random) -> tuple[str, str, bool]:
    r = rng.random()
    for platform, family, server, cumulative in _PLATFORMS:
        if r < cumulative:
            return platform, family, server
    return _PLATFORMS[-1][:3]


def _onboarding(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.03:
        return "CanBeOnboarded"
    if r < 0.04:
        return "Unsupported"
    if r < 0.05:
        return "InsufficientInfo"
    return "Onboarded"


def _health(rng: random.Random, onboarding: str) -> str:
    if onboarding != "Onboarded":
        return "Unknown"
    r = rng.random()
    for name, cumulative in (
        ("Active", 0.895),
        ("Inactive", 0.979),
        ("ImpairedCommunication", 0.988),
        ("NoSensorData", 0.994),
        ("NoSensorDataImpairedCommunication", 0.997),
    ):
        if r < cumulative:
            return name
    return "Unknown"


def _last_seen_ago(rng: random.Random, health: str, onboarding: str) -> float:
    if health == "Inactive":
        return rng.uniform(8 * DAY, 28 * DAY)  # stale, but still inside the 30-day window
    if onboarding != "Onboarded":
        return rng.uniform(1 * HOUR, 6 * DAY)  # seen by device discovery now and then
    return rng.uniform(0.5 * HOUR, 23 * HOUR)  # full report about daily


def _primary(
    rng: random.Random, seed: int, index: int, anchor: datetime, counters: dict[str, int]
) -> Device:
    platform, family, server = _pick_platform(rng)
    prefix = _NAME_PREFIXES[device_kind(family, server)]
    counters[prefix] = counters.get(prefix, 0) + 1
    name = f"{prefix}-{counters[prefix]:04d}.contoso.com"
    onboarding = _onboarding(rng)
    health = _health(rng, onboarding)
    last_seen_ago = _last_seen_ago(rng, health, onboarding)
    # ~4% of devices joined during the window, so their history starts late.
    if rng.random() < 0.04:
        earliest = max(last_seen_ago + HOUR, 2 * DAY)  # first seen before last seen, always
        first_seen_ago = rng.uniform(earliest, max(earliest, 25 * DAY))
    else:
        first_seen_ago = rng.uniform(35 * DAY, 700 * DAY)
    return make_device(
        rng,
        seed,
        index,
        anchor,
        name=name,
        platform=platform,
        family=family,
        server=server,
        onboarding=onboarding,
        health=health,
        first_seen_ago=first_seen_ago,
        last_seen_ago=last_seen_ago,
        duplicate_of=None,
    )


def _duplicate(rng: random.Random, seed: int, index: int, anchor: datetime, of: Device) -> Device:
    """An older record of ``of``: same name, flagged, stale; some already merged into ``of``."""
    earliest = max(of.last_seen_ago + HOUR, 9 * DAY)  # strictly older than the original
    last_seen_ago = rng.uniform(earliest, max(earliest, 28 * DAY))
    first_seen_ago = max(of.first_seen_ago, last_seen_ago) + rng.uniform(30 * DAY, 200 * DAY)
    device = make_device(
        rng,
        seed,
        index,
        anchor,
        name=of.name,
        platform=of.platform,
        family=of.family,
        server=of.server,
        onboarding="Onboarded",
        health="Inactive",
        first_seen_ago=first_seen_ago,
        last_seen_ago=last_seen_ago,
        duplicate_of=of.id,
    )
    device.record["isPotentialDuplication"] = True
    if rng.random() < 0.5:
        device.record["mergedIntoMachineId"] = of.id
        device.info["MergedToDeviceId"] = of.id
    return device
