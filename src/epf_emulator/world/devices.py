"""One emulated device: its ``GET /api/machines`` record and its ``DeviceInfo`` attributes.

Owns ``Device`` and how a device's fields look on the wire (defender-apis.md B.1, B.4), quirks
included: ``onboardingStatus`` casing drift, keys omitted entirely, an unknown extra field,
nulls where the service sends them; the device groups (``RBAC_GROUPS``), machine ids and the
service's time format. The traits both forms share are drawn first (``world.device_traits``);
randomness comes from the caller's seeded ``random.Random``, consumed in a fixed order.

Imports only ``world.device_traits`` of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from epf_emulator.world.device_traits import DeviceTraits, draw_traits

__all__ = [
    "DAY",
    "HOUR",
    "RBAC_GROUPS",
    "Device",
    "device_kind",
    "epoch_micros",
    "format_time",
    "from_epoch_micros",
    "machine_id",
    "make_device",
]

HOUR = 3600.0
DAY = 86400.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: rbacGroupId -> rbacGroupName (defender-apis.md B.1: a number, 0 when ungrouped).
RBAC_GROUPS: dict[int, str] = {
    0: "Unassigned",
    140: "Workstations-EU",
    141: "Workstations-US",
    210: "Servers-Tier0",
    211: "Servers-Tier1",
    305: "Mac-Fleet",
    410: "Linux-Prod",
}
_MODELS = {
    "client": (
        ("Microsoft Corporation", "Surface Laptop 5"),
        ("Dell Inc.", "Latitude 7440"),
        ("LENOVO", "ThinkPad T14 Gen 4"),
    ),
    "server": (("Microsoft Corporation", "Virtual Machine"), ("HPE", "ProLiant DL380 Gen10")),
    "macOS": (("Apple Inc.", "MacBookPro18,3"), ("Apple Inc.", "Mac14,2")),
    "Linux": (("Microsoft Corporation", "Virtual Machine"), ("Dell Inc.", "PowerEdge R650")),
}
_RISK_SCORE = (("None", 0.3), ("Informational", 0.4), ("Low", 0.65), ("Medium", 0.9), ("High", 1.0))
_EXPOSURE_LEVEL = (("None", 0.05), ("Low", 0.35), ("Medium", 0.85), ("High", 1.0))
_EXCLUSION_REASONS = ("InactiveDevice", "NotRelevant", "DuplicateDevice")
_MANAGED_STATUS = (("Success", 0.92), ("Failure", 0.97), ("PendingPolicy", 1.0))
# Servers are more often high-value assets.
_DEVICE_VALUE = {
    False: (("Normal", 0.85), ("High", 0.95), ("Low", 1.0)),
    True: (("Normal", 0.5), ("High", 0.95), ("Low", 1.0)),
}
_SENSOR_HEALTH_STATE = {
    "Active": "Active",
    "Inactive": "Inactive",
    "ImpairedCommunication": "Impaired communications",
    "NoSensorData": "No sensor data",
    "NoSensorDataImpairedCommunication": "No sensor data - impaired communications",
    "Unknown": None,
}
_ONBOARDING_IN_HUNTING = {
    "Onboarded": "Onboarded",
    "CanBeOnboarded": "Can be onboarded",
    "Unsupported": "Unsupported",
    "InsufficientInfo": "Insufficient info",
}


@dataclass(slots=True)
class Device:
    """One machine record and the facts the hunting tables are generated from."""

    index: int
    id: str
    name: str
    platform: str
    family: str  # Windows | macOS | Linux: which health SCID set applies
    server: bool
    health: str
    onboarding: str  # canonical spelling; the record may carry the lower-case drift
    first_seen_ago: float  # seconds before the anchor
    last_seen_ago: float
    av_mode: int  # 0 Active, 1 Passive, 2 Disabled, 4 EDR blocked, 5 audit, -1 '' (B.2)
    duplicate_of: str | None
    record: dict[str, Any]
    info: dict[str, Any]  # DeviceInfo columns that do not change between snapshots

    @property
    def has_sensor(self) -> bool:
        """Onboarded devices report secure-configuration assessments; the others have no sensor."""
        return self.onboarding == "Onboarded"

    @property
    def stale(self) -> bool:
        return self.health == "Inactive"


def format_time(anchor: datetime, seconds_ago: float, tick: int = 0) -> str:
    """ISO 8601 UTC with 7 fractional digits and ``Z`` (defender-apis.md B.1).

    Python has microseconds; ``tick`` (0-9) is the seventh digit, so values look like the
    service's 100 ns ticks.
    """
    t = anchor - timedelta(seconds=seconds_ago)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond:06d}{tick}Z"


def epoch_micros(t: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime, exactly (for bulk loading)."""
    delta = t - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_epoch_micros(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def machine_id(seed: int, index: int) -> str:
    return hashlib.sha1(f"epf-machine:{seed}:{index}".encode()).hexdigest()


def device_kind(family: str, server: bool) -> str:
    if family == "Windows":
        return "server" if server else "client"
    return family


def make_device(
    rng: random.Random,
    seed: int,
    index: int,
    anchor: datetime,
    *,
    name: str,
    platform: str,
    family: str,
    server: bool,
    onboarding: str,
    health: str,
    first_seen_ago: float,
    last_seen_ago: float,
    duplicate_of: str | None,
) -> Device:
    """One device: its machine record (wire quirks applied) and its ``DeviceInfo`` attributes,
    drawn from ``rng`` in a fixed order (the fleet is reproducible only while it stays so)."""
    traits = draw_traits(
        rng,
        name=name,
        platform=platform,
        family=family,
        kind=device_kind(family, server),
        server=server,
        onboarding=onboarding,
        health=health,
    )
    record = _machine_record(
        rng, traits, machine_id(seed, index), anchor, first_seen_ago, last_seen_ago
    )
    _apply_quirks(rng, record)
    return Device(
        index=index,
        id=record["id"],
        name=name,
        platform=platform,
        family=family,
        server=server,
        health=health,
        onboarding=onboarding,
        first_seen_ago=first_seen_ago,
        last_seen_ago=last_seen_ago,
        av_mode=traits.av_mode,
        duplicate_of=duplicate_of,
        record=record,
        info=_device_info(rng, traits, record),
    )


def _machine_record(
    rng: random.Random,
    t: DeviceTraits,
    device_id: str,
    anchor: datetime,
    first_seen_ago: float,
    last_seen_ago: float,
) -> dict[str, Any]:
    """The ``GET /api/machines`` record, keys in the documented order (B.1)."""
    managed_by, managed_status = _management(rng, t.kind, t.sensor)
    excluded = rng.random() < 0.01
    return {
        "id": device_id,
        "computerDnsName": t.name,
        "firstSeen": format_time(anchor, first_seen_ago, rng.randrange(10)),
        "lastSeen": format_time(anchor, last_seen_ago, rng.randrange(10)),
        "osPlatform": t.platform,
        "osVersion": t.os.os_version,
        "osProcessor": "x64" if t.kind != "macOS" or rng.random() < 0.3 else "arm64",
        "version": t.os.version,
        "lastIpAddress": t.ip,
        "lastExternalIpAddress": t.public_ip,
        "agentVersion": t.os.agent_version if t.sensor else None,
        "osBuild": t.os.build,
        "healthStatus": t.health,
        "deviceValue": _weighted(rng, _DEVICE_VALUE[t.server]),
        "rbacGroupId": t.group_id,
        "rbacGroupName": RBAC_GROUPS[t.group_id],
        "riskScore": _weighted(rng, _RISK_SCORE),
        "exposureLevel": _weighted(rng, _EXPOSURE_LEVEL),
        "isAadJoined": t.aad_joined,
        "aadDeviceId": (
            str(uuid.UUID(int=rng.getrandbits(128), version=4)) if t.aad_joined else None
        ),
        "machineTags": t.tags,
        "defenderAvStatus": _av_status(rng, t.sensor, t.av_mode),
        "onboardingStatus": t.onboarding,
        "osArchitecture": "64-bit",
        "managedBy": managed_by,
        "managedByStatus": managed_status,
        "ipAddresses": t.interfaces,
        "vmMetadata": t.vm,
        "isPotentialDuplication": False,
        "mergedIntoMachineId": None,
        "isExcluded": excluded,
        "exclusionReason": rng.choice(_EXCLUSION_REASONS) if excluded else None,
    }


def _device_info(rng: random.Random, t: DeviceTraits, record: dict[str, Any]) -> dict[str, Any]:
    """The ``DeviceInfo`` columns that do not change between snapshots (B.4)."""
    windows = t.family == "Windows"
    vendor, model = rng.choice(_MODELS[t.kind])
    return {
        "DeviceId": record["id"],
        "DeviceName": t.name,
        "ClientVersion": t.os.agent_version if t.sensor else None,
        "PublicIP": t.public_ip,
        "OSArchitecture": "64-bit",
        "OSPlatform": t.platform,
        "OSBuild": t.os.build,
        "IsAzureADJoined": t.aad_joined,
        "JoinType": "AAD Joined" if t.aad_joined else "Domain Joined" if windows else None,
        "AadDeviceId": record["aadDeviceId"],
        "LoggedOnUsers": _logged_on(rng, t.kind),
        "OSVersion": t.os.os_version or ("10.0" if windows else t.os.version),
        "MachineGroup": RBAC_GROUPS[t.group_id],
        "OnboardingStatus": _ONBOARDING_IN_HUNTING[t.onboarding],
        "DeviceCategory": "Endpoint",
        "DeviceType": (
            "Server" if t.server or (t.kind == "Linux" and t.vm is not None) else "Workstation"
        ),
        "DeviceSubtype": None,
        "Model": model,
        "Vendor": vendor,
        "OSDistribution": t.os.distribution,
        "OSVersionInfo": t.os.version,
        "MergedToDeviceId": None,
        "IsInternetFacing": t.server and rng.random() < 0.1,
        "SensorHealthState": _SENSOR_HEALTH_STATE[t.health] if t.sensor else None,
        "IsExcluded": record["isExcluded"],
        "ExclusionReason": record["exclusionReason"],
        "ExposureLevel": record["exposureLevel"],
        "AssetValue": record["deviceValue"],
        "DeviceManualTags": t.tags,
        "DeviceDynamicTags": ["Azure VM"] if t.vm else [],
    }


def _weighted(rng: random.Random, options: tuple[tuple[str, float], ...]) -> str:
    r = rng.random()
    for value, cumulative in options:
        if r < cumulative:
            return value
    return options[-1][0]


def _av_status(rng: random.Random, sensor: bool, av_mode: int) -> str:
    if not sensor:
        return "Unknown"
    if av_mode != 0:
        return "Disabled" if rng.random() < 0.5 else "Updated"
    return _weighted(rng, (("Updated", 0.9), ("NotUpdated", 0.98), ("Unknown", 1.0)))


def _management(rng: random.Random, kind: str, sensor: bool) -> tuple[str, str]:
    if not sensor:
        return "Unknown", "Unknown"
    options = {
        "client": (("Intune", 0.7), ("ConfigMgr", 0.9), ("Unknown", 1.0)),
        "server": (("MDE", 0.5), ("ConfigMgr", 0.9), ("Unknown", 1.0)),
        "macOS": (("Intune", 0.6), ("Unknown", 1.0)),
        "Linux": (("MDE", 0.4), ("Unknown", 1.0)),
    }[kind]
    managed_by = _weighted(rng, options)
    if managed_by == "Unknown":
        return managed_by, "Unknown"
    return managed_by, _weighted(rng, _MANAGED_STATUS)


def _logged_on(rng: random.Random, kind: str) -> list[dict[str, str]]:
    if kind == "server" or rng.random() < 0.1:
        return []
    user = f"user{rng.randrange(1, 5000):04d}"
    sid = f"S-1-5-21-1004336348-1177238915-682003330-{rng.randrange(1000, 99999)}"
    return [{"UserName": user, "DomainName": "CONTOSO", "Sid": sid}]


def _apply_quirks(rng: random.Random, record: dict[str, Any]) -> None:
    """Wire drift seen in captures (defender-apis.md B.1, F): casing, missing keys, extra fields."""
    if record["onboardingStatus"] == "Onboarded" and rng.random() < 0.02:
        record["onboardingStatus"] = "onboarded"
    if rng.random() < 0.03:
        for key in rng.sample(("vmMetadata", "agentVersion", "osVersion"), k=rng.randint(1, 3)):
            del record[key]
    if rng.random() < 0.01:
        record["deviceCategory"] = "Endpoint"
