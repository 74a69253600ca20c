"""The OT sensors' risk-assessment data: what the vulnerability reports say (defender-apis.md C.2).

Owns drawing each vulnerable device's exposure (``make_exposure``: security score, plain-text
passwords from the ``PasswordBook``, remote access, open ports, antivirus, weak
authentication...), the rows of the ``security`` and ``operational`` report tables as of a
given time (derived from the live devices and connections, so addresses are real ones), and
the static ``mitigation`` report. Rows are plain data here; ``iot.sensor_api`` renders them
and ``iot.truth`` counts them.

Imports only ``iot.model`` of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from epf_emulator.iot.model import Exposure, OtConnection, OtCve, OtDevice, OtSensor, PasswordBook

__all__ = [
    "OPERATIONAL_TABLES",
    "SECURITY_TABLES",
    "make_exposure",
    "mitigation_report",
    "operational_rows",
    "security_rows",
]

SECURITY_TABLES = (
    "unauthorizedDevices",
    "illegalTrafficByFirewallRules",
    "weakFirewallRules",
    "accessPoints",
    "connectionsBetweenSubnets",
    "industrialMalwareIndicators",
    "internetConnections",
)
OPERATIONAL_TABLES = (
    "backupServer",
    "ipNetworks",
    "protocolProblems",
    "protocolDataVolumes",
    "disconnections",
)
_STRENGTHS = ("Very Weak", "Weak", "Medium", "Strong")
_REMOTE = ((5900, "VNC"), (3389, "RDP"), (5938, "TeamViewer"), (22, "SSH"))
_OPEN_PORTS = (
    (445, "TCP", "SMB Over IP"),
    (502, "TCP", "MODBUS"),
    (102, "TCP", "S7"),
    (80, "TCP", "HTTP"),
    (161, "UDP", "SNMP"),
    (23, "TCP", "Telnet"),
    (44818, "TCP", "EtherNet/IP"),
)


def make_exposure(
    rng: random.Random, record: Mapping[str, Any], cves: Sequence[OtCve], book: PasswordBook
) -> Exposure | None:
    """About 40% of devices are vulnerable (all the heavily affected ones)."""
    if rng.random() >= 0.4 and len(cves) <= 100:
        return None
    firmware = next((f for f in record["firmware"] if f["firmwareVersion"] != "N/A"), None)
    os_name = record["operatingSystem"]
    windows = isinstance(os_name, str) and os_name.startswith("Windows")
    vendor = record["vendor"]
    subnet = str(record["ipAddresses"][0]).rsplit(".", 1)[0]
    passwords = tuple(
        (book.take(rng), rng.choice(("HTTP", "FTP", "Telnet")), rng.choice(_STRENGTHS))
        for _ in range(rng.choice((0, 0, 0, 1, 1, 2)))
    )
    remote = tuple(
        (port, "TCP", software, f"{subnet}.{rng.randint(2, 254)}")
        for port, software in rng.sample(_REMOTE, k=rng.choice((0, 0, 1, 2)))
    )
    ports = tuple(
        (port, transport, protocol, rng.random() < 0.2)
        for port, transport, protocol in rng.sample(_OPEN_PORTS, k=rng.randint(0, 3))
    )
    return Exposure(
        security_score=rng.randint(5, 100),
        firmware_version=None if firmware is None else str(firmware["firmwareVersion"]),
        model=None if firmware is None else str(firmware["model"]),
        operating_system={
            "name": os_name or vendor,
            "type": "windows" if windows else (str(vendor or "unknown").split()[0].lower()),
            "version": os_name.removeprefix("Windows ") if windows else None,
            "latestVersion": None,
        },
        anti_viruses=(rng.choice(("Windows Defender", "McAfee", "Symantec")),) if windows else (),
        passwords=passwords,
        remote_access=remote,
        backup_server=rng.random() < 0.1,
        opened_ports=ports,
        engineering_station=bool(record["engineeringStation"]),
        scanner=bool(record["scanner"]),
        cves=tuple(cves),
        unauthorized=not record["authorized"],
        malware=rng.random() < 0.08,
        wireless=rng.random() < 0.06,
        weak_authentication=tuple(
            rng.sample(("Telnet", "HTTP Basic", "SNMP v1"), k=rng.choice((0, 0, 1, 2)))
        ),
    )


def security_rows(sensor: OtSensor, now_ms: int) -> dict[str, list[dict[str, Any]]]:
    """The ``security`` report's tables as of ``now_ms`` (a few rows each)."""
    devices = sensor.alive_devices(now_ms)
    connections = sensor.alive_connections(now_ms)
    exposed = [d for d in devices if d.exposure is not None]
    return {  # in SECURITY_TABLES order
        "unauthorizedDevices": _unauthorized_devices(devices, now_ms),
        "illegalTrafficByFirewallRules": _illegal_traffic(connections),
        "weakFirewallRules": _weak_firewall_rules(connections),
        "accessPoints": _access_points(exposed),
        "connectionsBetweenSubnets": _connections_between_subnets(connections),
        "industrialMalwareIndicators": _malware_indicators(exposed, now_ms),
        "internetConnections": _internet_connections(devices),
    }


def operational_rows(sensor: OtSensor, now_ms: int) -> dict[str, list[dict[str, Any]]]:
    """The ``operational`` report's tables as of ``now_ms``."""
    devices = sensor.alive_devices(now_ms)
    tables: dict[str, list[dict[str, Any]]] = {name: [] for name in OPERATIONAL_TABLES}
    backups = [d for d in devices if d.exposure is not None and d.exposure.backup_server]
    for d in backups:
        tables["backupServer"].append(
            {
                "source": d.ips[0],
                "destination": devices[0].ips[0],
                "port": 445,
                "transport": "TCP",
                "backupMaximalInterval": "1 Day",
                "lastSeenBackup": d.last_update(now_ms),
            }
        )
    networks: dict[str, int] = {}
    for d in devices:
        for ip in d.ips:
            networks[_net(ip)] = networks.get(_net(ip), 0) + 1
    for network, addresses in sorted(networks.items()):
        tables["ipNetworks"].append(
            {"addresses": addresses, "network": f"{network}.0", "mask": "255.255.255.0"}
        )
    volumes: dict[str, int] = {}
    for d in devices:
        for p in d.record["protocols"]:
            volumes[str(p["name"])] = volumes.get(str(p["name"]), 0) + d.uid * 37 % 900 + 50
    for protocol, kb in sorted(volumes.items()):
        tables["protocolDataVolumes"].append(
            {"protocol": protocol.upper(), "volume": f"{kb / 100:.2f} MB"}
        )
        if _picked(len(protocol), kb, 25):
            tables["protocolProblems"].append(
                {
                    "protocol": protocol.upper(),
                    "addresses": [d.ips[0] for d in devices if _picked(d.uid, 3, 5)][:3],
                    "alert": f"{protocol} Exception",
                    "reportTime": now_ms - now_ms % 3_600_000,
                }
            )
    for d in devices:
        if _picked(d.uid, 4, 4):
            tables["disconnections"].append(
                {
                    "assetAddress": d.ips[0],
                    "assetName": d.name,
                    "lastDetectionTime": d.last_update(now_ms),
                    "backToNormalTime": None,
                }
            )
    return tables


def mitigation_report() -> dict[str, Any]:
    """The ``mitigation`` report: notifications and steps (not rich: nothing counts them)."""
    return {
        "notifications": ["Devices with plain-text passwords were found."],
        "mitigation": [
            {
                "content": "Replace plain-text authentication with encrypted protocols.",
                "scoreImprovement": 12,
                "details": {
                    "name": "Plain-text passwords",
                    "description": {
                        "name": "Plain-text passwords",
                        "important": "Passwords are sent unencrypted.",
                        "warning": "Anyone on the network can read them.",
                    },
                    "headers": ["Address", "Protocol"],
                    "rows": [],
                },
            },
            {"content": "Review unauthorized devices.", "scoreImprovement": None, "details": None},
        ],
    }


def _unauthorized_devices(devices: list[OtDevice], now_ms: int) -> list[dict[str, Any]]:
    return [
        {
            "address": d.ips[0],
            "name": d.name,
            "firstDetectionTime": d.first_ms,
            "lastSeen": d.last_update(now_ms),
        }
        for d in devices
        if not d.record["authorized"]
    ]


def _illegal_traffic(connections: list[OtConnection]) -> list[dict[str, Any]]:
    return [
        {
            "server": c.second.ips[0],
            "client": c.first.ips[0],
            "port": c.ports[0],
            "transport": "TCP",
        }
        for c in connections[::9][:5]
    ]


def _weak_firewall_rules(connections: list[OtConnection]) -> list[dict[str, Any]]:
    return [
        {"sources": [c.first.ips[0]], "destinations": [c.second.ips[0]], "ports": list(c.ports)}
        for c in connections[1::15][:3]
    ]


def _access_points(exposed: list[OtDevice]) -> list[dict[str, Any]]:
    return [
        {
            "macAddress": (d.record["macAddresses"] or ["N/A"])[0],
            "vendor": d.record["vendor"],
            "ipAddress": d.ips[0],
            "name": d.name,
            "wireless": "Yes",
        }
        for d in exposed
        if d.exposure is not None and d.exposure.wireless
    ]


def _connections_between_subnets(connections: list[OtConnection]) -> list[dict[str, Any]]:
    crossing = [c for c in connections if _net(c.first.ips[0]) != _net(c.second.ips[0])]
    return [{"server": c.second.ips[0], "client": c.first.ips[0]} for c in crossing[:5]]


def _malware_indicators(exposed: list[OtDevice], now_ms: int) -> list[dict[str, Any]]:
    infected = [d for d in exposed if d.exposure is not None and d.exposure.malware]
    return [
        {
            "detectionTime": d.last_update(now_ms),
            "alertMessage": f"Suspicion of malicious activity on {d.ips[0]}",
            "description": "Known industrial malware indicators were detected.",
            "devices": [d.ips[0]],
        }
        for d in infected[:3]
    ]


def _internet_connections(devices: list[OtDevice]) -> list[dict[str, Any]]:
    return [
        {
            "internalAddress": d.ips[0],
            "authorized": _picked(d.uid, 2, 50),
            "externalAddresses": [f"198.51.100.{d.uid % 250 + 2}"],
        }
        for d in devices
        if d.record["type"] in ("Engineering Station", "Historian") and _picked(d.uid, 1, 50)
    ]


def _picked(uid: int, salt: int, percent: int) -> bool:
    """A stable pseudo-random choice of about ``percent``% of devices."""
    return (uid * 2654435761 + salt * 40503) % 100 < percent


def _net(ip: str) -> str:
    return ip.rsplit(".", 1)[0]
