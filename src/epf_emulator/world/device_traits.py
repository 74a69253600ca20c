"""What one emulated device is drawn as: the traits its machine record and ``DeviceInfo`` share.

Owns the draws that come first for every device (defender-apis.md B.1, B.2): its OS release
(version, build, ``osVersion``, agent version, distribution), its Defender AV mode, its device
group (by device kind: Windows client or server, macOS, Linux), Azure AD join, addresses and
network interfaces, machine tags and, for some servers and Linux devices, Azure VM metadata.
Randomness comes from the caller's seeded ``random.Random``, consumed in a fixed order, so the
fleet stays reproducible; ``world.devices`` draws the rest of the record after these.

Imports nothing of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["DeviceTraits", "OsFacts", "draw_traits"]

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

# The device groups of each device kind: rbacGroupIds of ``world.devices.RBAC_GROUPS``.
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


class OsFacts(NamedTuple):
    version: str
    build: int | None
    os_version: str | None  # the record's osVersion: often null
    agent_version: str
    distribution: str  # DeviceInfo's OSDistribution


@dataclass(frozen=True, slots=True)
class DeviceTraits:
    """What a device's machine record and its ``DeviceInfo`` attributes are both drawn from."""

    name: str
    platform: str
    family: str
    kind: str  # device_kind: client | server | macOS | Linux
    server: bool
    onboarding: str
    health: str
    os: OsFacts
    av_mode: int
    group_id: int
    aad_joined: bool
    ip: str
    public_ip: str
    interfaces: list[dict[str, Any]]
    tags: list[str]
    vm: dict[str, Any] | None

    @property
    def sensor(self) -> bool:
        return self.onboarding == "Onboarded"


def draw_traits(
    rng: random.Random,
    *,
    name: str,
    platform: str,
    family: str,
    kind: str,
    server: bool,
    onboarding: str,
    health: str,
) -> DeviceTraits:
    """A device's traits; ``kind`` is ``world.devices.device_kind(family, server)``."""
    os_facts = _os_facts(rng, platform, family)
    av_mode = _av_mode(rng.random(), family, server)
    group_id = rng.choice(_GROUPS_BY_KIND[kind])
    aad_joined = family == "Windows" and rng.random() < (0.1 if server else 0.8)
    ip = f"10.{group_id % 200 + 10}.{rng.randrange(0, 64)}.{rng.randrange(2, 255)}"
    mac = f"{rng.choice(('00155D', 'F8B156', '3C22FB', '0050F2'))}{rng.getrandbits(24):06X}"
    public_ip = f"{rng.choice(('203.0.113', '198.51.100'))}.{rng.randrange(1, 255)}"
    interfaces = _interfaces(rng, kind, ip, mac)
    tags = sorted(rng.sample(_TAGS, k=rng.choice((0, 0, 0, 1, 1, 2, 3))))
    return DeviceTraits(
        name=name,
        platform=platform,
        family=family,
        kind=kind,
        server=server,
        onboarding=onboarding,
        health=health,
        os=os_facts,
        av_mode=av_mode,
        group_id=group_id,
        aad_joined=aad_joined,
        ip=ip,
        public_ip=public_ip,
        interfaces=interfaces,
        tags=tags,
        vm=_vm_metadata(rng, kind, name),
    )


def _interfaces(rng: random.Random, kind: str, ip: str, mac: str) -> list[dict[str, Any]]:
    """``ipAddresses``: Ethernet, sometimes Wi-Fi (clients and Macs), then loopback."""
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
    return interfaces


def _vm_metadata(rng: random.Random, kind: str, name: str) -> dict[str, Any] | None:
    """``vmMetadata`` of about a third of servers and Linux devices: Azure VMs."""
    if kind not in ("server", "Linux") or rng.random() >= 0.35:
        return None
    sub = rng.choice(_SUBSCRIPTIONS)
    short = name.split(".")[0]
    return {
        "vmId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "cloudProvider": "Azure",
        "resourceId": (
            f"/subscriptions/{sub}/resourceGroups/rg-{kind.lower()}"
            f"/providers/Microsoft.Compute/virtualMachines/{short}"
        ),
        "subscriptionId": sub,
    }


def _os_facts(rng: random.Random, platform: str, family: str) -> OsFacts:
    """(version, osBuild, osVersion, agentVersion, OSDistribution) for a platform."""
    if family == "Windows":
        version, build = rng.choice(_WINDOWS_RELEASES[platform])
        revision = rng.choice((4529, 4894, 5011, 5131, 5247))
        os_version = f"10.0.{build}.{revision}" if rng.random() < 0.4 else None  # "often null"
        return OsFacts(version, build, os_version, f"10.8760.{build}.{revision}", platform)
    if family == "macOS":
        agent = rng.choice(("101.24082.0004", "101.24092.0012"))
        return OsFacts(rng.choice(_MAC_RELEASES), None, None, agent, "macOS")
    version, distribution = rng.choice(_LINUX_RELEASES)
    agent = rng.choice(("101.24072.0001", "101.24082.0004"))
    return OsFacts(version, None, None, agent, distribution)


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
