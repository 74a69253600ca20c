"""Secure configuration assessment history: ``DeviceTvmSecureConfigurationAssessment`` rows.

Owns which SCIDs each onboarded device reports (the agent-health SCIDs of its platform, from
shared/reference/original-connector.md, plus a few others a collector must ignore), whether
each is compliant or applicable, when the posture changed during the last 30 days, and the
``Context`` payloads (AV mode for scid-2010, signature versions for scid-2011/5095/6095).
Also the small ``...AssessmentKB`` catalogue. Rows are produced column-wise (plain lists) so
the store can bulk-load them through pyarrow.

Imports only ``devices`` of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from .devices import DAY, HOUR, Device, epoch_micros

__all__ = [
    "ASSESSMENT_COLUMNS",
    "HEALTH_SCIDS",
    "SCID_CATALOG",
    "AssessmentColumns",
    "build_assessments",
]

#: Agent-health SCIDs per platform family, in the original workbook's test order.
HEALTH_SCIDS: dict[str, tuple[str, ...]] = {
    "Windows": (
        "scid-2000",
        "scid-2001",
        "scid-2002",
        "scid-2003",
        "scid-2010",
        "scid-2011",
        "scid-2012",
        "scid-91",
        "scid-2013",
        "scid-2014",
        "scid-2016",
    ),
    "macOS": (
        "scid-5001",
        "scid-5002",
        "scid-5092",
        "scid-5095",
        "scid-5090",
        "scid-5093",
        "scid-5091",
        "scid-5094",
    ),
    "Linux": ("scid-6001", "scid-6002", "scid-6095", "scid-6090", "scid-6091", "scid-6094"),
}
# Other configurations each device reports; a collector of agent health must ignore them.
_OTHER_SCIDS: dict[str, tuple[str, ...]] = {
    "Windows": (
        "scid-10",
        "scid-39",
        "scid-44",
        "scid-74",
        "scid-89",
        "scid-96",
        "scid-20000",
        "scid-2021",
    ),
    "macOS": ("scid-5003", "scid-5010", "scid-5026", "scid-5089", "scid-5099", "scid-20000"),
    "Linux": ("scid-6003", "scid-6010", "scid-6030", "scid-6088", "scid-6099", "scid-20000"),
}

_SC = "Security controls"  # the category of every health test
#: ConfigurationId -> (name, category, subcategory, impact).
SCID_CATALOG: dict[str, tuple[str, str, str, float]] = {
    "scid-2000": ("Turn on Microsoft Defender for Endpoint sensor", _SC, "EDR", 9.0),
    "scid-2001": ("Fix Microsoft Defender for Endpoint sensor data collection", _SC, "EDR", 9.0),
    "scid-2002": ("Fix Microsoft Defender for Endpoint impaired communications", _SC, "EDR", 8.0),
    "scid-2003": ("Turn on Tamper Protection", _SC, "EDR", 8.0),
    "scid-2010": ("Turn on Microsoft Defender Antivirus", _SC, "Antivirus", 9.0),
    "scid-2011": ("Update Microsoft Defender Antivirus definitions", _SC, "Antivirus", 8.0),
    "scid-2012": ("Turn on real-time protection", _SC, "Antivirus", 9.0),
    "scid-91": ("Turn on behavior monitoring", _SC, "Antivirus", 7.0),
    "scid-2013": ("Turn on PUA protection in block mode", _SC, "Antivirus", 5.0),
    "scid-2014": ("Fix Microsoft Defender Antivirus reporting", _SC, "Antivirus", 6.0),
    "scid-2016": ("Turn on cloud-delivered protection", _SC, "Antivirus", 7.0),
    "scid-5001": (
        "Fix Microsoft Defender for Endpoint sensor data collection (macOS)",
        _SC,
        "EDR",
        9.0,
    ),
    "scid-5002": (
        "Fix Microsoft Defender for Endpoint impaired communications (macOS)",
        _SC,
        "EDR",
        8.0,
    ),
    "scid-5092": ("Turn on Tamper Protection (macOS)", _SC, "EDR", 8.0),
    "scid-5095": ("Update Microsoft Defender Antivirus definitions (macOS)", _SC, "Antivirus", 8.0),
    "scid-5090": ("Turn on real-time protection (macOS)", _SC, "Antivirus", 9.0),
    "scid-5093": ("Turn on behavior monitoring (macOS)", _SC, "Antivirus", 7.0),
    "scid-5091": ("Turn on PUA protection in block mode (macOS)", _SC, "Antivirus", 5.0),
    "scid-5094": ("Turn on cloud-delivered protection (macOS)", _SC, "Antivirus", 7.0),
    "scid-6001": (
        "Fix Microsoft Defender for Endpoint sensor data collection (Linux)",
        _SC,
        "EDR",
        9.0,
    ),
    "scid-6002": (
        "Fix Microsoft Defender for Endpoint impaired communications (Linux)",
        _SC,
        "EDR",
        8.0,
    ),
    "scid-6095": ("Update Microsoft Defender Antivirus definitions (Linux)", _SC, "Antivirus", 8.0),
    "scid-6090": ("Turn on real-time protection (Linux)", _SC, "Antivirus", 9.0),
    "scid-6091": ("Turn on PUA protection in block mode (Linux)", _SC, "Antivirus", 5.0),
    "scid-6094": ("Turn on cloud-delivered protection (Linux)", _SC, "Antivirus", 7.0),
    "scid-10": ("Disable 'Autoplay' for all drives", "OS", "Autoplay", 6.0),
    "scid-39": (
        "Set 'Minimum password length' to '14 or more characters'",
        "Accounts",
        "Password Policy",
        4.0,
    ),
    "scid-44": ("Disable SMBv1 client driver", "Network", "SMB", 7.0),
    "scid-74": ("Disable 'Allow Basic authentication' for WinRM Client", "Network", "WinRM", 5.0),
    "scid-89": (
        "Enable 'Microsoft network client: Digitally sign communications (always)'",
        "Network",
        "SMB",
        5.0,
    ),
    "scid-96": ("Disable Solicited Remote Assistance", "OS", "Remote Assistance", 3.0),
    "scid-2021": ("Turn on Microsoft Defender Firewall", _SC, "Firewall", 7.0),
    "scid-20000": (
        "Onboard devices to Microsoft Defender for Endpoint",
        _SC,
        "Onboard Devices",
        9.0,
    ),
    "scid-5003": ("Turn on network protection (macOS)", _SC, "Network", 6.0),
    "scid-5010": ("Turn on FileVault disk encryption", "OS", "Encryption", 7.0),
    "scid-5026": ("Turn on the macOS firewall", "Network", "Firewall", 6.0),
    "scid-5089": ("Turn on automatic macOS updates", "OS", "Updates", 5.0),
    "scid-5099": ("Disable Bluetooth sharing", "OS", "Sharing", 3.0),
    "scid-6003": ("Turn on network protection (Linux)", _SC, "Network", 6.0),
    "scid-6010": ("Disable SSH root login", "Accounts", "SSH", 7.0),
    "scid-6030": ("Ensure auditd service is enabled", "OS", "Auditing", 5.0),
    "scid-6088": (
        "Ensure permissions on /etc/shadow are configured",
        "OS",
        "File Permissions",
        6.0,
    ),
    "scid-6099": ("Disable USB storage", "OS", "Devices", 4.0),
}

#: Column name -> DuckDB type, in the documented order (defender-apis.md B.4).
ASSESSMENT_COLUMNS: dict[str, str] = {
    "DeviceId": "VARCHAR",
    "DeviceName": "VARCHAR",
    "OSPlatform": "VARCHAR",
    "Timestamp": "TIMESTAMPTZ",
    "ConfigurationId": "VARCHAR",
    "ConfigurationCategory": "VARCHAR",
    "ConfigurationSubcategory": "VARCHAR",
    "ConfigurationImpact": "DOUBLE",
    "IsCompliant": "BOOLEAN",
    "IsApplicable": "BOOLEAN",
    "Context": "JSON",
    "IsExpectedUserImpact": "BOOLEAN",
}
_SIGNATURE_SCIDS = frozenset({"scid-2011", "scid-5095", "scid-6095"})
_SENSOR_DATA_SCIDS = frozenset({"scid-2001", "scid-5001", "scid-6001"})
_IMPAIRED_SCIDS = frozenset({"scid-2002", "scid-5002", "scid-6002"})
# Not applicable when Defender Antivirus is not the active AV (passive or EDR in block mode).
_NEEDS_ACTIVE_AV = frozenset({"scid-2010", "scid-2012", "scid-91", "scid-2013"})
_PUA_SCIDS = frozenset({"scid-2013", "scid-6091"})
_CHANGES = ((0, 0.72), (1, 0.89), (2, 0.96), (3, 1.0))


@dataclass
class AssessmentColumns:
    """Column-wise rows of ``DeviceTvmSecureConfigurationAssessment`` (``Timestamp`` in epoch µs)."""

    columns: dict[str, list[Any]] = field(
        default_factory=lambda: {name: [] for name in ASSESSMENT_COLUMNS}
    )

    def __len__(self) -> int:
        return len(self.columns["DeviceId"])


def build_assessments(
    devices: list[Device], seed: int, anchor: datetime, *, chunk_devices: int = 5000
) -> Iterator[AssessmentColumns]:
    """Generate the assessment history of every device that has a sensor, in chunks.

    Chunking bounds memory: the store loads and compresses one chunk before the next is
    generated. The rows do not depend on the chunk size.
    """
    rng = random.Random(f"epf-tvm:{seed}")
    anchor_us = epoch_micros(anchor)
    for first in range(0, len(devices), chunk_devices):
        out = AssessmentColumns()
        for device in devices[first : first + chunk_devices]:
            if device.has_sensor:
                _device_rows(rng, device, anchor, anchor_us, out)
        yield out


def _device_rows(
    rng: random.Random, device: Device, anchor: datetime, anchor_us: int, out: AssessmentColumns
) -> None:
    scids = list(HEALTH_SCIDS[device.family])
    if rng.random() < 0.03:  # a few devices do not report one or two of their health SCIDs
        for scid in rng.sample(scids, k=rng.choice((1, 2))):
            scids.remove(scid)
    scids += rng.sample(_OTHER_SCIDS[device.family], k=5)
    end = device.last_seen_ago  # the rows of a stale device stop at its lastSeen
    # The first assessment is about 29 days old (half a day of margin inside the 30-day
    # window), or shortly after the device joined.
    start = 29 * DAY + rng.uniform(0, 12 * HOUR)
    start = max(min(start, device.first_seen_ago - rng.uniform(HOUR, 6 * HOUR)), end)
    fail_rate = 0.2 if device.stale else 0.06
    c = out.columns
    for scid in scids:
        applicable = _applicable(rng, device, scid)
        compliant = applicable and rng.random() >= fail_rate
        if scid in _SENSOR_DATA_SCIDS and "NoSensorData" in device.health:
            compliant = False
        if scid in _IMPAIRED_SCIDS and "ImpairedCommunication" in device.health:
            compliant = False
        changes = _pick_changes(rng) if applicable else 0
        times = [start] + sorted((rng.uniform(end, start) for _ in range(changes)), reverse=True)
        # The latest row carries ``compliant``; each change row flips the posture, so the
        # first row starts from the state an even or odd number of flips before it.
        state = compliant if changes % 2 == 0 else not compliant
        _, category, subcategory, impact = SCID_CATALOG[scid]
        for ago in times:
            c["DeviceId"].append(device.id)
            c["DeviceName"].append(device.name)
            c["OSPlatform"].append(device.platform)
            c["Timestamp"].append(anchor_us - int(ago * 1_000_000))  # epoch microseconds
            c["ConfigurationId"].append(scid)
            c["ConfigurationCategory"].append(category)
            c["ConfigurationSubcategory"].append(subcategory)
            c["ConfigurationImpact"].append(impact)
            c["IsCompliant"].append(state)
            c["IsApplicable"].append(applicable)
            c["Context"].append(_context(rng, device, scid, state, ago, anchor))
            c["IsExpectedUserImpact"].append(scid in _PUA_SCIDS)
            state = not state if applicable else state


def _applicable(rng: random.Random, device: Device, scid: str) -> bool:
    if device.av_mode != 0 and scid in _NEEDS_ACTIVE_AV:
        return False
    if scid == "scid-2013" and device.server:
        return rng.random() < 0.5  # PUA blocking is often not applicable on servers
    if scid == "scid-6091":
        return rng.random() < 0.8
    return True


def _pick_changes(rng: random.Random) -> int:
    r = rng.random()
    for count, cumulative in _CHANGES:
        if r < cumulative:
            return count
    return 0


def _context(
    rng: random.Random, device: Device, scid: str, compliant: bool, ago: float, anchor: datetime
) -> str | None:
    """The JSON ``Context`` of a row (original-connector.md: AV mode, signature versions)."""
    if scid == "scid-2010":
        return orjson.dumps([[str(device.av_mode)]]).decode()
    if scid in _SIGNATURE_SCIDS:
        # Out-of-date definitions are what makes the test fail: older than a week.
        age_days = ago / DAY + (rng.uniform(8, 40) if not compliant else rng.uniform(0, 1.5))
        build = 3000 - int(age_days * 4)
        updated = anchor - timedelta(days=age_days)
        product = "4.18.24090.11" if device.family == "Windows" else "101.24092.0012"
        # [signature version, engine version, signature update time, product version]
        versions = [f"1.421.{build}.0", "1.1.24090.11", f"{updated:%Y-%m-%dT%H:%M:%SZ}", product]
        return orjson.dumps([versions]).decode()
    if scid == "scid-20000":
        return None  # some configurations carry no context at all
    return "[]"
