"""Who the emulated Defender for IoT sensors' OT devices are: generating the OT model.

Owns who each sensor's OT devices are (defender-apis.md C.2: type, vendor, OS, addresses,
protocols, firmware, flags), when each was first discovered, updated and (about 2%) deleted,
their connections and per-address CVEs, and which devices are in the vulnerability report
(``iot.reports.make_exposure``). Everything is a pure function of the settings and the seed;
times are epoch milliseconds relative to the start (the anchor). OT addresses share the MDE
fleet's second octets (``world.devices``: 10.{g%200+10}.{0-63}.x) in the third octets
64-127, and a few engineering stations and HMIs per sensor are MDE Windows machines (same
name and address), so IT/OT joins work. The types are ``iot.model``'s.

Imports only ``iot.catalog``, ``iot.model``, ``iot.reports`` and ``world.devices`` of the
emulator: it shares no code with the collector.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from epf_emulator.iot.catalog import (
    CVE_TEMPLATES,
    FIRMWARE_TYPES,
    MDE_OS,
    PROTOCOLS,
    PROTOCOLS_BY_TYPE,
    TYPES,
)
from epf_emulator.iot.model import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    IotModel,
    OtConnection,
    OtCve,
    OtDevice,
    OtSensor,
    PasswordBook,
)
from epf_emulator.iot.reports import make_exposure
from epf_emulator.world.devices import RBAC_GROUPS

__all__ = ["build_iot_model"]

#: The second octets of the MDE fleet's addresses, one per device group.
_OCTETS = sorted({group % 200 + 10 for group in RBAC_GROUPS})
_HOSTS_PER_SUBNET = 253  # .2-.254


def build_iot_model(
    *,
    seed: int,
    anchor_ms: int,
    sensors: int,
    devices_per_sensor: int,
    mde_records: Sequence[Mapping[str, Any]],
) -> IotModel:
    """The OT devices of ``sensors`` sensors; ``mde_records`` are the MDE machine records."""
    rng = random.Random(f"epf-iot-mde:{seed}")
    windows = [
        r
        for r in mde_records
        if str(r.get("osPlatform") or "").startswith("Windows")
        and not r.get("isPotentialDuplication")
        and isinstance(r.get("lastIpAddress"), str)
        and isinstance(r.get("computerDnsName"), str)
    ]
    rng.shuffle(windows)
    passwords = PasswordBook()
    built: list[OtSensor] = []
    per_sensor_subnets = max(1, math.ceil(2 * devices_per_sensor / _HOSTS_PER_SUBNET))
    uid = 0
    for number in range(1, sensors + 1):
        joins = [] if devices_per_sensor < 10 else windows[: rng.choice((2, 3))]
        del windows[: len(joins)]
        first_subnet = (number - 1) * per_sensor_subnets
        subnets = [_subnet(s) for s in range(first_subnet, first_subnet + per_sensor_subnets)]
        sensor = _build_sensor(
            seed, number, anchor_ms, devices_per_sensor, uid, subnets, joins, passwords
        )
        uid += len(sensor.devices)
        built.append(sensor)
    return IotModel(seed=seed, anchor_ms=anchor_ms, sensors=built, passwords=passwords)


def _subnet(index: int) -> str:
    return f"10.{_OCTETS[index % len(_OCTETS)]}.{64 + index // len(_OCTETS)}.0"


def _build_sensor(
    seed: int,
    number: int,
    anchor_ms: int,
    n: int,
    uid_offset: int,
    subnets: list[str],
    joins: list[Mapping[str, Any]],
    passwords: PasswordBook,
) -> OtSensor:
    rng = random.Random(f"epf-iot:{seed}:{number}")
    hosts = [f"{s.rsplit('.', 1)[0]}.{h}" for s in subnets for h in range(2, 255)]
    rng.shuffle(hosts)
    heavy = set(rng.sample(range(1, n + 1), k=min(2, n)))  # > 100 CVEs: top=100 loses some
    ordinary = [i for i in range(len(joins) + 1, n + 1) if i not in heavy]
    deletions = 0 if n < 20 else max(2, round(0.02 * n))
    deleted = rng.sample(ordinary, k=min(deletions, len(ordinary)))
    devices: list[OtDevice] = []
    for device_id in range(1, n + 1):
        join = joins[device_id - 1] if device_id <= len(joins) else None
        device = _device(rng, number, device_id, uid_offset + device_id, anchor_ms, hosts, join)
        if device_id in heavy:
            device.cves = _cves(rng, device, rng.randint(120, 250))
        if device_id in deleted:
            # Alternately in the past and in the next three days (an advance deletes them).
            if deleted.index(device_id) % 2 == 0:
                earliest = device.first_ms + HOUR_MS
                device.deleted_ms = max(earliest, anchor_ms - rng.randint(HOUR_MS, 10 * DAY_MS))
            else:
                device.deleted_ms = anchor_ms + rng.randint(HOUR_MS, 72 * HOUR_MS)
        device.exposure = make_exposure(rng, device.record, device.cves, passwords)
        devices.append(device)
    connections = _connections(rng, devices, anchor_ms)
    name = f"sensor-{number}"
    return OtSensor(number, name, devices, connections, subnets)


def _device(
    rng: random.Random,
    sensor: int,
    device_id: int,
    uid: int,
    anchor_ms: int,
    hosts: list[str],
    join: Mapping[str, Any] | None,
) -> OtDevice:
    if join is not None:
        kind = rng.choice(("Engineering Station", "HMI"))
    else:
        kind = rng.choices(list(TYPES), weights=[t[0] for t in TYPES.values()])[0]
    _, category, purdue, vendors, systems = TYPES[kind]
    vendor = rng.choice(vendors)
    ips = [hosts.pop()] + ([hosts.pop()] if rng.random() < 0.12 else [])
    name = ips[0] if rng.random() < 0.4 else f"{kind} #{device_id}"
    os_name = rng.choice(systems)
    if join is not None:
        ips = [str(join["lastIpAddress"])]
        name = str(join["computerDnsName"])
        os_name = MDE_OS.get(str(join.get("osPlatform")), "Windows 10 64")
        vendor = rng.choice(("Dell Inc.", "Hewlett Packard"))
    protocols = _protocols(rng, kind)
    macs = [_mac(rng)] if rng.random() < 0.65 else None
    record: dict[str, Any] = {
        "vendor": vendor,
        "name": name,
        "firmware": _firmware(rng, ips[0]) if kind in FIRMWARE_TYPES else [],
        "id": device_id,
        "macAddresses": macs,
        "authorized": join is not None or rng.random() < 0.9,
        "ipAddresses": ips,
        "engineeringStation": kind == "Engineering Station",
        "type": kind,
        "operatingSystem": os_name,
        "protocols": protocols,
        "scanner": kind == "Unknown" and rng.random() < 0.15,
        "hasDynamicAddress": rng.random() < 0.08,
    }
    first_ms, updates, period = _changes(rng, anchor_ms, joined=join is not None)
    device = OtDevice(
        sensor=sensor,
        id=device_id,
        uid=uid,
        record=record,
        category=category,
        purdue_layer=purdue,
        first_ms=first_ms,
        deleted_ms=None,
        updates_ms=updates,
        period_ms=period,
        cves=(),
        exposure=None,
        mde_machine=join is not None,
    )
    count = 0 if rng.random() < 0.5 else rng.randint(1, 20)
    device.cves = _cves(rng, device, count)
    return device


def _protocols(rng: random.Random, kind: str) -> list[dict[str, Any]]:
    """The device object's ``protocols``: one to three of its type's, Modbus with unit ids."""
    choices = PROTOCOLS_BY_TYPE[kind]
    protocol_names = rng.sample(choices, k=rng.randint(1, min(3, len(choices))))
    return [
        {
            "addresses": [str(rng.randint(1, 8))]
            if name_ == "Modbus" and rng.random() < 0.3
            else [],
            "id": PROTOCOLS[name_][0],
            "name": name_,
        }
        for name_ in protocol_names
    ]


def _changes(
    rng: random.Random, anchor_ms: int, *, joined: bool
) -> tuple[int, tuple[int, ...], int | None]:
    """(first discovered, one-off updates ascending, period of recurring updates or None)."""
    if rng.random() < 0.03 and not joined:
        first_ms = anchor_ms + rng.randint(HOUR_MS, 72 * HOUR_MS)  # discovered after the start
    else:
        first_ms = anchor_ms - rng.randint(2 * HOUR_MS, 400 * DAY_MS)
    until = max(first_ms, anchor_ms)
    updates = sorted(rng.randint(first_ms, until) for _ in range(rng.choice((0, 1, 1, 2, 3))))
    period = rng.randint(2, 8) * HOUR_MS if rng.random() < 0.3 else None
    return first_ms, tuple(updates), period


def _mac(rng: random.Random) -> str:
    octets = [rng.choice((0x00, 0x08, 0x28, 0x70)), *(rng.randrange(256) for _ in range(5))]
    return ":".join(f"{o:02x}" for o in octets)


def _firmware(rng: random.Random, address: str) -> list[dict[str, Any]]:
    entries = []
    for slot in range(rng.choice((1, 1, 2))):
        known = rng.random() < 0.6
        entries.append(
            {
                "slot": str(slot) if known else "N/A",
                "additionalData": "N/A",
                "moduleAddress": f"Network: Local network (0), Node: 0, Unit: CPU (0x{slot:x})",
                "rack": "0" if known else "N/A",
                "address": address,
                "model": rng.choice(("6ES7 315-2EH14-0AB0", "1756-L73", "CJ2M-CPU31", "N/A")),
                "serial": f"S C-{rng.randrange(10**7, 10**8)}" if known else "N/A",
                "firmwareVersion": f"{rng.randint(1, 30)}.{rng.randint(0, 99)}" if known else "N/A",
            }
        )
    return entries


def _cves(rng: random.Random, device: OtDevice, count: int) -> tuple[OtCve, ...]:
    what = f"{device.record['vendor'] or 'device'} {device.record['type']} firmware"
    ids: set[str] = set()
    while len(ids) < count:
        ids.add(f"CVE-{rng.randint(2005, 2024)}-{rng.randint(1000, 49999)}")
    cves = []
    for cve_id in sorted(ids):
        vector = rng.choices(("NETWORK", "ADJACENT_NETWORK", "LOCAL"), weights=(75, 15, 10))[0]
        description = rng.choice(CVE_TEMPLATES).format(what=what)
        cves.append(OtCve(cve_id, rng.randint(10, 100), vector, description))
    return tuple(sorted(cves, key=lambda c: (-c.tenths, c.cve_id)))


def _connections(rng: random.Random, devices: list[OtDevice], anchor_ms: int) -> list[OtConnection]:
    if len(devices) < 2:
        return []
    wanted = round(1.5 * len(devices))
    pairs: set[tuple[int, int]] = set()
    connections: list[OtConnection] = []
    for _ in range(wanted * 3):  # duplicates skipped; enough attempts to reach ``wanted``
        if len(connections) >= wanted:
            break
        a, b = rng.sample(devices, 2)
        key = (min(a.id, b.id), max(a.id, b.id))
        if key in pairs:
            continue
        pairs.add(key)
        discovered = max(a.first_ms, b.first_ms) + rng.randint(0, 5 * DAY_MS)
        names = rng.sample(sorted(set(_protocol_names(a)) | set(_protocol_names(b))), k=1)
        if rng.random() < 0.3:
            names.append("HTTP" if "HTTP" not in names else "SNMP")
        protocols = tuple((n, PROTOCOLS[n][2][: rng.randint(0, 3)]) for n in names)
        ports = tuple(sorted({PROTOCOLS[n][1] for n in names}))
        if rng.random() < 0.7:  # active: seen every period, for ever
            period: int | None = rng.randint(1, 60) * MINUTE_MS
            seen = discovered
        else:
            period = None
            seen = discovered + rng.randint(0, max(0, anchor_ms - discovered))
        kind = rng.choices(("Two Way", "One Way", "Multicast"), weights=(70, 25, 5))[0]
        connections.append(OtConnection(a, b, discovered, seen, period, ports, protocols, kind))
    return connections


def _protocol_names(device: OtDevice) -> list[str]:
    return [str(p["name"]) for p in device.record["protocols"]]
