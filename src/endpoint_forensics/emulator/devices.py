"""One emulated device: its ``GET /api/machines`` record and its ``DeviceInfo`` attributes.

Owns how a device's fields look on the wire (defender-apis.md B.1, B.4), quirks included:
``onboardingStatus`` casing drift, keys omitted entirely, an unknown extra field, nulls
where the service sends them. Randomness comes from the caller's seeded ``random.Random``.

Imports nothing of ours: the emulator shares no code with the collector.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "DAY",
    "HOUR",
    "RBAC_GROUPS",
    "Device",
    "device_kind",
    "epoch_micros",
    "format_time",
    "machine_id",
    "make_device",
]

HOUR = 3600.0
DAY = 86400.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# (version, build) per Windows platform; the build also drives osVersion and agentVersion.
_WINDOWS_RELEASES: dict[str, tuple[tuple[str, int], ...]] = {
    "Windows10": (("22H2", 19045), ("21H2", 19044)),
    "Windows11": (("23H2", 22631), ("22H2", 22621), ("24H2", 26100)),
    "WindowsServer2016": (("1607", 14393),),
    "WindowsServer2019": (("1809", 17763),),
    "WindowsServer2022": (("21H2", 20348),),
}
_MAC_RELEASES = ("13.7", "14.6", "14.7", "15.1")
# (version, DeviceInfo OSDistribution)
_LINUX_RELEASES = (
    ("22.04", "Ubuntu"),
    ("24.04", "Ubuntu"),
    ("9.4", "RedHatEnterpriseLinux"),
    ("12", "Debian"),
)

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
_GROUPS_BY_KIND = {
    "client": (140, 141, 0),
    "server": (210, 211, 0),
    "macOS": (305, 0),
    "Linux": (410, 0),
}
_TAGS = ("VIP", "Finance", "PCI", "Kiosk", "Lab", "DMZ", "Tier0", "Developer")
_SUBSCRIPTIONS = tuple(
    str(uuid.UUID(hashlib.md5(f"epf-sub-{i}".encode()).hexdigest())) for i in range(3)
)
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
    kind = device_kind(family, server)
    sensor = onboarding == "Onboarded"
    version, os_build, os_version, agent_version, distribution = _os_facts(rng, platform, family)
    av_mode = _av_mode(rng.random(), family, server)
    group_id = rng.choice(_GROUPS_BY_KIND[kind])
    aad_joined = family == "Windows" and rng.random() < (0.1 if server else 0.8)
    ip = f"10.{group_id % 200 + 10}.{rng.randrange(0, 64)}.{rng.randrange(2, 255)}"
    mac = f"{rng.choice(('00155D', 'F8B156', '3C22FB', '0050F2'))}{rng.getrandbits(24):06X}"
    public_ip = f"{rng.choice(('203.0.113', '198.51.100'))}.{rng.randrange(1, 255)}"
    interfaces: list[dict[str, Any]] = [
        {"ipAddress": ip, "macAddress": mac, "type": "Ethernet", "operationalStatus": "Up"}
    ]
    if kind in ("client", "macOS") and rng.random() < 0.5:
        interfaces.append(
            {
                "ipAddress": f"fe80::{rng.getrandbits(16):x}:{rng.getrandbits(16):x}",
                "macAddress": f"{rng.getrandbits(48):012X}",
                "type": "Wireless80211",
                "operationalStatus": rng.choice(("Up", "Down")),
            }
        )
    interfaces.append(
        {
            "ipAddress": "127.0.0.1",
            "macAddress": None,
            "type": "SoftwareLoopback",
            "operationalStatus": "Up",
        }
    )
    tags = sorted(rng.sample(_TAGS, k=rng.choice((0, 0, 0, 1, 1, 2, 3))))
    vm = None
    if kind in ("server", "Linux") and rng.random() < 0.35:
        sub = rng.choice(_SUBSCRIPTIONS)
        short = name.split(".")[0]
        vm = {
            "vmId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "cloudProvider": "Azure",
            "resourceId": (
                f"/subscriptions/{sub}/resourceGroups/rg-{kind.lower()}"
                f"/providers/Microsoft.Compute/virtualMachines/{short}"
            ),
            "subscriptionId": sub,
        }
    managed_by, managed_status = _management(rng, kind, sensor)
    excluded = rng.random() < 0.01
    record: dict[str, Any] = {
        "id": machine_id(seed, index),
        "computerDnsName": name,
        "firstSeen": format_time(anchor, first_seen_ago, rng.randrange(10)),
        "lastSeen": format_time(anchor, last_seen_ago, rng.randrange(10)),
        "osPlatform": platform,
        "osVersion": os_version,
        "osProcessor": "x64" if kind != "macOS" or rng.random() < 0.3 else "arm64",
        "version": version,
        "lastIpAddress": ip,
        "lastExternalIpAddress": public_ip,
        "agentVersion": agent_version if sensor else None,
        "osBuild": os_build,
        "healthStatus": health,
        "deviceValue": _weighted(rng, _DEVICE_VALUE[server]),
        "rbacGroupId": group_id,
        "rbacGroupName": RBAC_GROUPS[group_id],
        "riskScore": _weighted(rng, _RISK_SCORE),
        "exposureLevel": _weighted(rng, _EXPOSURE_LEVEL),
        "isAadJoined": aad_joined,
        "aadDeviceId": str(uuid.UUID(int=rng.getrandbits(128), version=4)) if aad_joined else None,
        "machineTags": tags,
        "defenderAvStatus": _av_status(rng, sensor, av_mode),
        "onboardingStatus": onboarding,
        "osArchitecture": "64-bit",
        "managedBy": managed_by,
        "managedByStatus": managed_status,
        "ipAddresses": interfaces,
        "vmMetadata": vm,
        "isPotentialDuplication": False,
        "mergedIntoMachineId": None,
        "isExcluded": excluded,
        "exclusionReason": rng.choice(_EXCLUSION_REASONS) if excluded else None,
    }
    _apply_quirks(rng, record)
    vendor, model = rng.choice(_MODELS[kind])
    info: dict[str, Any] = {
        "DeviceId": record["id"],
        "DeviceName": name,
        "ClientVersion": agent_version if sensor else None,
        "PublicIP": public_ip,
        "OSArchitecture": "64-bit",
        "OSPlatform": platform,
        "OSBuild": os_build,
        "IsAzureADJoined": aad_joined,
        "JoinType": "AAD Joined"
        if aad_joined
        else "Domain Joined"
        if family == "Windows"
        else None,
        "AadDeviceId": record["aadDeviceId"],
        "LoggedOnUsers": _logged_on(rng, kind),
        "OSVersion": os_version or ("10.0" if family == "Windows" else version),
        "MachineGroup": RBAC_GROUPS[group_id],
        "OnboardingStatus": _ONBOARDING_IN_HUNTING[onboarding],
        "DeviceCategory": "Endpoint",
        "DeviceType": "Server" if server or (kind == "Linux" and vm is not None) else "Workstation",
        "DeviceSubtype": None,
        "Model": model,
        "Vendor": vendor,
        "OSDistribution": distribution,
        "OSVersionInfo": version,
        "MergedToDeviceId": None,
        "IsInternetFacing": server and rng.random() < 0.1,
        "SensorHealthState": _SENSOR_HEALTH_STATE[health] if sensor else None,
        "IsExcluded": excluded,
        "ExclusionReason": record["exclusionReason"],
        "ExposureLevel": record["exposureLevel"],
        "AssetValue": record["deviceValue"],
        "DeviceManualTags": tags,
        "DeviceDynamicTags": ["Azure VM"] if vm else [],
    }
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
        av_mode=av_mode,
        duplicate_of=duplicate_of,
        record=record,
        info=info,
    )


def _os_facts(
    rng: random.Random, platform: str, family: str
) -> tuple[str, int | None, str | None, str, str]:
    """(version, osBuild, osVersion, agentVersion, OSDistribution) for a platform."""
    if family == "Windows":
        version, build = rng.choice(_WINDOWS_RELEASES[platform])
        revision = rng.choice((4529, 4894, 5011, 5131, 5247))
        os_version = f"10.0.{build}.{revision}" if rng.random() < 0.4 else None  # "often null"
        return version, build, os_version, f"10.8760.{build}.{revision}", platform
    if family == "macOS":
        agent = rng.choice(("101.24082.0004", "101.24092.0012"))
        return rng.choice(_MAC_RELEASES), None, None, agent, "macOS"
    version, distribution = rng.choice(_LINUX_RELEASES)
    return version, None, None, rng.choice(("101.24072.0001", "101.24082.0004")), distribution


def _av_mode(r: float, family: str, server: bool) -> int:
    """Defender AV mode (B.2): 0 Active, 1 Passive, 2 Disabled, 4 EDR blocked, 5 passive
    audit, -1 for the service's ``''`` (Other). Servers often run another AV (passive)."""
    passive = (0.25 if server else 0.05) if family == "Windows" else 0.05
    if r < passive:
        return 1
    if family == "Windows" and r > 0.98:
        return 4
    if family == "Windows" and r > 0.965:
        return 5
    if 0.955 < r <= 0.965:
        return 2
    if 0.95 < r <= 0.955:
        return -1
    return 0


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
