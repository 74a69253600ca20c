"""The incident story: one device that, at ``INCIDENT_AT``, is visibly unprotected.

Owns choosing the incident device, deterministically per seed: an active Windows client with a
sensor, AV in active mode, first seen well before the incident, that reports the tamper
protection SCID (scid-2003); the first of them in a seeded hash order. Around
``common.clock.INCIDENT_AT`` (2026-11-03T14:00:00Z) it has:

- tamper protection off: scid-2003 non-compliant from 3 days before to 2 days after
  (``world.secure_config_history`` writes the episode);
- antivirus signatures frozen at their update of 9 days before, until 2 days after
  (``world.av_health``): older than 7 days (the age the forensic answer calls stale) from 2
  days before on, and about 9 days old when it is hit; Defender reports them outdated
  (scid-2011 non-compliant, agent health ``AntivirusSignatureVersion`` failing) from then on;
- an open Critical vulnerability with a verified exploit: the catalogue adds one CVE for the
  device's OS version (``world.cve_catalog``), published 40 days before, and the device
  installs no OS update until 2 days after (``world.posture``).

None of these changes within 36 hours either side of the incident, so a daily snapshot
answers it. The choice lands in ``tvm.incident`` (one row, or none for a fleet without such a
device), which the other modules read in SQL.

The times are offsets from the anchor a world is built at, so a world built at another anchor
(the tests' fleets) has its incident as far before it.

Imports only ``common.clock`` of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from epf_emulator.common.clock import INCIDENT_AT, WORLD_ANCHOR, epoch_us

if TYPE_CHECKING:
    import duckdb

_DAY_US = 86_400_000_000

__all__ = [
    "AV_FROZEN_FROM_US",
    "HOLD_UNTIL_US",
    "INCIDENT_CVE_PUBLISHED_US",
    "INCIDENT_TABLE",
    "INCIDENT_US",
    "SIGNATURES_OUTDATED_FROM_US",
    "TAMPER_OFF_FROM_US",
    "choose_incident",
    "incident_hold_sql",
]

INCIDENT_TABLE = "tvm.incident"
# Offsets from the anchor a world is built at (``WORLD_ANCHOR`` for a running tenant).
INCIDENT_US = epoch_us(INCIDENT_AT) - epoch_us(WORLD_ANCHOR)
TAMPER_OFF_FROM_US = INCIDENT_US - 3 * _DAY_US
AV_FROZEN_FROM_US = INCIDENT_US - 9 * _DAY_US
#: Defender reports the signatures outdated (scid-2011, agent health AntivirusSignatureVersion)
#: once they are 7 days old.
SIGNATURES_OUTDATED_FROM_US = AV_FROZEN_FROM_US + 7 * _DAY_US
#: Tamper protection comes back, signatures update and the OS update installs then.
HOLD_UNTIL_US = INCIDENT_US + 2 * _DAY_US
INCIDENT_CVE_PUBLISHED_US = INCIDENT_US - 40 * _DAY_US
_FIRST_SEEN_BEFORE_US = INCIDENT_US - 60 * _DAY_US


def choose_incident(con: duckdb.DuckDBPyConnection, *, seed: int, anchor_us: int) -> None:
    """Create ``tvm.incident`` (column ``d``) from ``tvm.dev`` and ``tvm.sca_pairs``."""
    con.execute(
        f"""
        CREATE TABLE {INCIDENT_TABLE} AS
        SELECT dv.idx AS d FROM tvm.dev dv
        JOIN tvm.sca_pairs p ON p.d = dv.idx AND p.scid = 'scid-2003' AND p.applicable
        WHERE dv.kind = 'client' AND dv.sensor AND NOT dv.stale AND dv.onboarded
          AND dv.health = 'Active' AND dv.av_mode = '0'
          AND dv.first_us < {anchor_us + _FIRST_SEEN_BEFORE_US}
        ORDER BY hash({seed}, dv.idx, 'incident'), dv.idx
        LIMIT 1
        """
    )


def incident_hold_sql(device: str, time_sql: str, anchor_us: int) -> str:
    """SQL: ``time_sql``, but not before the hold ends (``HOLD_UNTIL_US``) for the incident
    device."""
    return (
        f"(CASE WHEN {device} IN (SELECT d FROM {INCIDENT_TABLE})"
        f" THEN greatest({time_sql}, {anchor_us + HOLD_UNTIL_US}) ELSE {time_sql} END)"
    )
