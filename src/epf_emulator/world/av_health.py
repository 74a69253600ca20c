"""Antivirus health of the emulated fleet as of an instant: the DeviceAvInfo records.

Owns one AV record per device with a sensor (Windows, macOS and Linux; defender-apis.md B.2): AV
mode (a string-typed int: mostly ``0`` Active, some ``1`` Passive, ``4`` EDRBlocked, ``5``
PassiveAudit, a few ``2`` Disabled or ``''``), signature, engine and platform versions and their
update times (most devices update several times a day; 9% stopped at some point before the
anchor and never resume, 2% stop in the week after it; and every device's updates stall now and
then: in each 14-day cycle of the timeline 8% of the devices stall once, for 1-14 days, then
resume, so at 2,000 devices, in the two weeks before the anchor, about 110 devices' signatures
pass 7 days old and about 60 update again after that; the incident device's stall is fixed,
``world.incident``), ``True|False|Unknown``
up-to-date strings,
scan results and error codes. The JSON record is camelCase with ISO ``Z`` times; the
``InfoGatheringExport`` line is PascalCase with ``DeviceGatheredInfo`` holding the AV facts and a
nested ``AvScanResults``, each as an object or a JSON-encoded string, and the up-to-date flags as
strings or booleans (both forms of each, mixed across devices). Signature versions follow the same
four-builds-a-day numbering as the secure-configuration ``Context``.

A device has an AV record from its first sighting on.

Imports only ``world.incident``, ``world.posture`` and ``world.secure_config_history`` of the
emulator: it shares no code with the collector.
"""

from __future__ import annotations

from epf_emulator.world.incident import AV_FROZEN_FROM_US, HOLD_UNTIL_US, INCIDENT_TABLE
from epf_emulator.world.posture import HISTORY_US, HOUR_US, u
from epf_emulator.world.secure_config_history import signature_build_sql

__all__ = ["av_columns", "av_snapshot_sql", "info_gathering_columns", "signature_update_sql"]

_DAY_US = 24 * HOUR_US
_STALL_CYCLE_US = 14 * _DAY_US
_STALL_SHARE = 0.08  # devices whose updates stall once in a cycle
_ERRORS = "['0x80508023', '0x80508026', '0x8050800c', '0x80501001']"


def av_snapshot_sql(seed: int, group_sql: str, at: int, seen_sql: str, anchor_us: int) -> str:
    """The AV snapshot: each device's group, when it last reported (``seen``) and when its
    signatures were last updated (``sig``); the columns read them as ``s.seen`` and
    ``s.sig``, computed once rather than in each column."""
    return f"""
        SELECT dv.idx AS d, grp, seen, {_signature_update(seed, "seen", anchor_us)} AS sig
        FROM (
            SELECT dv.idx, dv.last_us, {group_sql} AS grp, {seen_sql} AS seen
            FROM tvm.dev dv LEFT JOIN tvm.rbac_move m ON m.d = dv.idx
            WHERE dv.sensor AND dv.first_us <= {at}
        ) dv
    """


def av_columns(seed: int, at: int, anchor_us: int) -> list[tuple[str, str, str]]:
    """(camelCase, PascalCase, SQL) of a ``/api/deviceavinfo`` record, in the doc's order."""
    f = _facts(seed, at, anchor_us)
    columns = [
        ("id", "dv.id"),
        ("machineId", "dv.id"),
        ("computerDnsName", "dv.name"),
        ("osKind", "dv.os_kind"),
        ("osPlatform", "dv.platform"),
        ("osVersion", "dv.os_version"),
        ("avMode", "dv.av_mode"),
        ("avSignatureVersion", f["signatureVersion"]),
        ("avEngineVersion", f["engineVersion"]),
        ("avPlatformVersion", f["platformVersion"]),
        ("lastSeenTime", _iso(f["lastSeen"])),
        ("quickScanResult", f["quickResult"]),
        ("quickScanError", f["quickError"]),
        ("quickScanTime", _iso(f["quickTime"], millis=True)),
        ("fullScanResult", f["fullResult"]),
        ("fullScanError", f["fullError"]),
        ("fullScanTime", _iso(f["fullTime"], millis=True)),
        ("dataRefreshTimestamp", _iso(f["refresh"])),
        ("avEngineUpdateTime", _iso(f["engineUpdate"])),
        ("avSignatureUpdateTime", _iso(f["signatureUpdate"])),
        ("avPlatformUpdateTime", _iso(f["platformUpdate"])),
        ("avIsSignatureUpToDate", f["signatureUpToDate"]),
        ("avIsEngineUpToDate", f["engineUpToDate"]),
        ("avIsPlatformUpToDate", f["platformUpToDate"]),
        ("avSignaturePublishTime", _iso(f["publish"])),
        ("rbacGroupName", "g.name"),
        ("rbacGroupId", "s.grp"),
    ]
    return [(name, name[0].upper() + name[1:], sql) for name, sql in columns]


def info_gathering_columns(seed: int, at: int, anchor_us: int) -> list[tuple[str, str, str]]:
    """The ``InfoGatheringExport`` line: PascalCase, AV facts in ``DeviceGatheredInfo``.

    [community, unverified] shape (defender-apis.md B.2, F): ``DeviceGatheredInfo`` holds
    ``AvMode``, ``AvIsSignatureUptoDate``... and ``AvScanResults``; clients meet it as a JSON
    string or an object, ``AvScanResults`` likewise, and the up-to-date flags as
    ``"True"|"False"|"Unknown"`` strings or real booleans (null for Unknown). Each of the three
    forms is chosen per device from the seed, about half and half, so every export mixes them.
    """
    f = _facts(seed, at, anchor_us)
    gathered = _gathered_info(seed, f)
    return [
        ("deviceId", "DeviceId", "dv.id"),
        ("deviceName", "DeviceName", "dv.name"),
        ("osPlatform", "OsPlatform", "dv.platform"),
        ("osVersion", "OsVersion", "dv.os_version"),
        ("osKind", "OsKind", "dv.os_kind"),
        ("rbacGroupId", "RbacGroupId", "s.grp"),
        ("rbacGroupName", "RbacGroupName", "g.name"),
        ("lastSeenTime", "LastSeenTime", _iso(f["lastSeen"])),
        (
            "deviceGatheredInfo",
            "DeviceGatheredInfo",
            _maybe_string(seed, gathered, "gathered-string"),
        ),
    ]


def _facts(seed: int, at: int, anchor_us: int) -> dict[str, str]:
    """SQL for every AV fact of device ``dv`` as of ``at`` (snapshot row ``s``)."""
    return {
        "lastSeen": "s.seen",
        **_update_facts(seed, at, anchor_us, "s.sig"),
        **_scan_facts(seed, "s.seen"),
        "refresh": f"{at} - CAST({_random(seed, 'refresh')} * {2 * HOUR_US} AS BIGINT)",
    }


def _random(seed: int, tag: str) -> str:
    """SQL: a number in [0, 1) fixed per device ``dv`` and ``tag``."""
    return u(seed, "dv.idx", f"'{tag}'")


def _signature_update(seed: int, seen: str, anchor_us: int) -> str:
    """SQL: when the signatures were last updated. Most devices update several times a day;
    some stopped days or weeks ago, a few stop during the coming week, and any may stall for
    a while and resume (see the module docstring)."""
    stuck, stuck_age = _random(seed, "stuck"), _random(seed, "stuck-age")
    lag = f"CAST({_random(seed, 'sig')} * {6 * HOUR_US} AS BIGINT)"
    frozen = (
        f"(CASE WHEN {stuck} < 0.09"
        f" THEN dv.last_us - CAST((0.5 + 40 * {stuck_age}) * {_DAY_US} AS BIGINT)"
        f" WHEN {stuck} < 0.11 THEN dv.last_us + CAST(7 * {stuck_age} * {_DAY_US} AS BIGINT) END)"
    )
    cases = [
        f"WHEN dv.idx IN (SELECT d FROM {INCIDENT_TABLE})"
        f" AND {seen} >= {anchor_us + AV_FROZEN_FROM_US} AND {seen} < {anchor_us + HOLD_UNTIL_US}"
        f" THEN {anchor_us + AV_FROZEN_FROM_US} - {lag}",
        f"WHEN {frozen} IS NOT NULL AND {frozen} < {seen} THEN {frozen}",
    ]
    origin = anchor_us - HISTORY_US
    cycle = f"CAST(floor(({seen} - {origin}) / {_STALL_CYCLE_US}) AS BIGINT)"
    for back in (0, 1):  # a stall lasts at most a cycle: this one's or the one before's
        c = f"({cycle} - {back})"
        begins = (
            f"({origin} + {c} * {_STALL_CYCLE_US}"
            f" + CAST({u(seed, 'dv.idx', c, repr('stall-at'))} * {_STALL_CYCLE_US} AS BIGINT))"
        )
        length = (
            f"CAST((1 + 13 * {u(seed, 'dv.idx', c, repr('stall-days'))}) * {_DAY_US} AS BIGINT)"
        )
        cases.append(
            f"WHEN {u(seed, 'dv.idx', c, repr('stall'))} < {_STALL_SHARE}"
            f" AND {seen} >= {begins} AND {seen} < {begins} + {length} THEN {begins} - {lag}"
        )
    return f"(CASE {' '.join(cases)} ELSE {seen} - {lag} END)"


def signature_update_sql(seed: int, seen: str, anchor_us: int) -> str:
    """SQL: the signature update time of device ``dv`` last seen at ``seen`` (as served)."""
    return _signature_update(seed, seen, anchor_us)


def _update_facts(seed: int, at: int, anchor_us: int, sig: str) -> dict[str, str]:
    """SQL: signature, engine and platform versions, their update times, up-to-date strings."""

    def r(tag: str) -> str:
        return _random(seed, tag)

    unknown = f"(dv.av_mode IN ('', '2') OR {r('unknown')} < 0.02)"
    old_engine = f"({at} - {sig} > {30 * _DAY_US})"
    old_platform = f"({r('platform')} < 0.15)"
    windows = "dv.family = 'Windows'"
    return {
        "signatureVersion": signature_build_sql(sig, anchor_us),
        "engineVersion": f"CASE WHEN {old_engine} THEN '1.1.24060.5' ELSE '1.1.24090.11' END",
        "engineUpdate": (
            f"{sig} - CAST(({r('engine')} * 20 + CASE WHEN {old_engine} THEN 30 ELSE 0 END)"
            f" * {_DAY_US} AS BIGINT)"
        ),
        "platformVersion": (
            f"CASE WHEN {windows} THEN (CASE WHEN {old_platform} THEN '4.18.24070.5'"
            " ELSE '4.18.24090.11' END)"
            f" ELSE (CASE WHEN {old_platform} THEN '101.24072.0001' ELSE '101.24092.0012' END) END"
        ),
        "platformUpdate": (
            f"{sig} - CAST(({r('platform-at')} * 25 + CASE WHEN {old_platform} THEN 40 ELSE 0 END)"
            f" * {_DAY_US} AS BIGINT)"
        ),
        "signatureUpdate": sig,
        "publish": f"{sig} - CAST({r('publish')} * {3 * HOUR_US} AS BIGINT)",
        "signatureUpToDate": (
            f"CASE WHEN {unknown} THEN 'Unknown' WHEN {at} - {sig} <= {7 * _DAY_US} THEN 'True'"
            " ELSE 'False' END"
        ),
        "engineUpToDate": (
            f"CASE WHEN {unknown} THEN 'Unknown' WHEN {old_engine} THEN 'False' ELSE 'True' END"
        ),
        "platformUpToDate": (
            f"CASE WHEN {unknown} THEN 'Unknown' WHEN {old_platform} THEN 'False' ELSE 'True' END"
        ),
    }


def _scan_facts(seed: int, seen: str) -> dict[str, str]:
    """SQL: the last quick and full scans' results, error codes and times."""
    quick, full = _random(seed, "quick"), _random(seed, "full")
    quick_result = (
        f"(CASE WHEN {quick} < 0.85 THEN 'Completed' WHEN {quick} < 0.90 THEN 'Failed'"
        f" WHEN {quick} < 0.93 THEN 'Canceled' ELSE '' END)"
    )
    full_result = (
        f"(CASE WHEN {full} < 0.25 THEN 'Completed' WHEN {full} < 0.28 THEN 'Failed'"
        f" WHEN {full} < 0.30 THEN 'Canceled' ELSE '' END)"
    )
    return {
        "quickResult": quick_result,
        "quickError": (
            f"CASE WHEN {quick_result} = 'Failed'"
            f" THEN {_ERRORS}[1 + CAST(floor({_random(seed, 'qe')} * 4) AS INTEGER)] ELSE '' END"
        ),
        "quickTime": (
            f"CASE WHEN {quick_result} = '' THEN NULL"
            f" ELSE {seen} - CAST({_random(seed, 'qt')} * {_DAY_US} AS BIGINT) END"
        ),
        "fullResult": full_result,
        "fullError": (
            f"CASE WHEN {full_result} = 'Failed'"
            f" THEN {_ERRORS}[1 + CAST(floor({_random(seed, 'fe')} * 4) AS INTEGER)] ELSE '' END"
        ),
        "fullTime": (
            f"CASE WHEN {full_result} = '' THEN NULL"
            f" ELSE {seen} - CAST({_random(seed, 'ft')} * 20 * {_DAY_US} AS BIGINT) END"
        ),
    }


def _gathered_info(seed: int, f: dict[str, str]) -> str:
    """SQL: the ``DeviceGatheredInfo`` struct, its flags and ``AvScanResults`` in either form."""
    scan = "{{'ScanStatus': {result}, 'ErrorCode': {error}, 'Timestamp': {time}}}"
    scans = (
        "{'Quick': "
        + scan.format(
            result=f["quickResult"], error=f["quickError"], time=_iso(f["quickTime"], millis=True)
        )
        + ", 'Full': "
        + scan.format(
            result=f["fullResult"], error=f["fullError"], time=_iso(f["fullTime"], millis=True)
        )
        + "}"
    )
    return (
        "{"
        f"'AvMode': dv.av_mode, 'AvSignatureVersion': {f['signatureVersion']},"
        f" 'AvEngineVersion': {f['engineVersion']}, 'AvPlatformVersion': {f['platformVersion']},"
        f" 'AvSignatureUpdateTime': {_iso(f['signatureUpdate'])},"
        f" 'AvEngineUpdateTime': {_iso(f['engineUpdate'])},"
        f" 'AvPlatformUpdateTime': {_iso(f['platformUpdate'])},"
        f" 'AvSignaturePublishTime': {_iso(f['publish'])},"
        f" 'AvIsSignatureUptoDate': {_flag(seed, f['signatureUpToDate'])},"
        f" 'AvIsEngineUptodate': {_flag(seed, f['engineUpToDate'])},"
        f" 'AvIsPlatformUptodate': {_flag(seed, f['platformUpToDate'])},"
        f" 'AvSignatureDataRefreshTime': {_iso(f['refresh'])},"
        f" 'AvModeDataRefreshTime': {_iso(f['refresh'])},"
        f" 'AvScanResults': {_maybe_string(seed, scans, 'scans-string')}"
        "}"
    )


def _half(seed: int, tag: str) -> str:
    """SQL: true for about half of the devices, fixed per device and ``tag``."""
    return f"({_random(seed, tag)} < 0.5)"


def _flag(seed: int, text: str) -> str:
    """JSON: the ``True|False|Unknown`` string, or for half the devices a boolean (or null)."""
    boolean = f"CASE {text} WHEN 'True' THEN true WHEN 'False' THEN false END"
    half = _half(seed, "flags-boolean")
    return f"(CASE WHEN {half} THEN to_json({boolean}) ELSE to_json({text}) END)"


def _maybe_string(seed: int, struct: str, tag: str) -> str:
    """JSON: the object, or the same object encoded as a JSON string."""
    return (
        f"(CASE WHEN {_half(seed, tag)} THEN to_json(CAST(to_json({struct}) AS VARCHAR))"
        f" ELSE to_json({struct}) END)"
    )


def _iso(us: str, millis: bool = False) -> str:
    pattern = "%Y-%m-%dT%H:%M:%S.%gZ" if millis else "%Y-%m-%dT%H:%M:%SZ"
    return f"strftime(make_timestamp({us}), '{pattern}')"
