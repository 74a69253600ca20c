"""Advanced hunting datasets: Defender agent health from the secure configuration assessment.

Runs KQL through Microsoft Graph ``POST /security/runHuntingQuery`` (or the retiring MDE
``POST /api/advancedqueries/run``; B.3) over ``DeviceTvmSecureConfigurationAssessment``, takes
the latest row per (device, SCID) and turns each device's health SCIDs into the 11 test columns
of ``EPF_AgentHealth_CL`` (SCIDs: original-connector.md).

A query is never sent twice as it was. Each answer carries its own row count, so a result the
service cut short (the APIs truncate silently at their row limit) is seen whatever the limit
is; a query that timed out (the client's wait, above the service's 200 s, ran out; a 504; or
the service's "timed out"/"preempted" 400) would time out again. Either way the query is split
into narrower device-id prefixes; one that times out even at the narrowest prefix stops the
dataset with ``HuntingQueryTimeout``.
May import ``http``, ``config``, ``contracts``, ``errors``, ``tables`` and the other ``sources``
modules.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

from endpoint_forensics.contracts import Unit, batches_of
from endpoint_forensics.errors import (
    EpfError,
    HttpStatusError,
    PermanentError,
    RequestTimedOut,
)
from endpoint_forensics.sources import FetchContext
from endpoint_forensics.sources.wire import Fields, Invalid, as_bool, as_datetime
from endpoint_forensics.tables import AGENT_HEALTH, AGENT_HEALTH_TESTS, HealthResult

__all__ = [
    "HEALTH_SCIDS",
    "HuntingQueryTimeout",
    "agent_health_query",
    "device_health_row",
    "fetch_agent_health",
    "os_family",
]

log = logging.getLogger(__name__)

_HEX = "0123456789abcdef"
# Large fleets start split only so that no single answer is huge (one 100,000-row answer is
# ~40 MB of JSON); completeness never depends on it.
_DEVICES_PER_QUERY = 25_000
# A prefix of this many hex digits that still times out is not split further: 1/4096 of
# the fleet is not what makes the query slow, and each timeout costs minutes of CPU quota.
_NARROWEST_ON_TIMEOUT = 3
_NARROWEST_ON_TRUNCATION = 8
_SPLIT_MARGIN = 1.5  # device ids are uniform hex, but parts are never exactly equal
# What the services say when a query ran past their limits (advanced-hunting-errors.md;
# Graph: "Query execution has exceeded the allowed limits. The query execution was preempted").
_TOO_HEAVY = ("timeout", "timed out", "preempted", "exceeded the allowed")
_TOTAL = "TotalRows"


class HuntingQueryTimeout(PermanentError):
    """A hunting query timed out (or ran past the service's limits) over the narrowest device
    range; it was not sent again."""


# test -> SCID per OS family; a test without a SCID on a family is NotApplicable there.
HEALTH_SCIDS: dict[str, dict[str, str]] = {
    "Windows": {
        "SensorEnabled": "scid-2000",
        "SensorDataCollection": "scid-2001",
        "ImpairedCommunications": "scid-2002",
        "TamperProtection": "scid-2003",
        "AntivirusEnabled": "scid-2010",
        "AntivirusSignatureVersion": "scid-2011",
        "RealtimeProtection": "scid-2012",
        "BehaviorMonitoring": "scid-91",
        "PUAProtection": "scid-2013",
        "AntivirusReporting": "scid-2014",
        "CloudProtection": "scid-2016",
    },
    "macOS": {
        "SensorDataCollection": "scid-5001",
        "ImpairedCommunications": "scid-5002",
        "TamperProtection": "scid-5092",
        "AntivirusSignatureVersion": "scid-5095",
        "RealtimeProtection": "scid-5090",
        "BehaviorMonitoring": "scid-5093",
        "PUAProtection": "scid-5091",
        "CloudProtection": "scid-5094",
    },
    "Linux": {
        "SensorDataCollection": "scid-6001",
        "ImpairedCommunications": "scid-6002",
        "AntivirusSignatureVersion": "scid-6095",
        "RealtimeProtection": "scid-6090",
        "PUAProtection": "scid-6091",
        "CloudProtection": "scid-6094",
    },
}
_ALL_SCIDS = sorted({scid for tests in HEALTH_SCIDS.values() for scid in tests.values()})
_SCID_FAMILY = {scid: fam for fam, tests in HEALTH_SCIDS.items() for scid in tests.values()}
_LINUX_PLATFORMS = ("linux", "ubuntu", "redhat", "centos", "debian", "suse", "oracle", "amazon")


def agent_health_query(prefix: str = "") -> str:
    """The KQL for the health SCIDs: one row per device with its latest result per SCID.

    Each assessment travels as ``scid=IsApplicable/IsCompliant`` so the decision stays here,
    in tested Python, and the query uses only operators both Defender and the local store run.
    Every row also carries ``TotalRows``, the full result's row count (``materialize`` keeps
    the service from computing the result twice), so a result cut short is seen.
    """
    scids = ", ".join(f'"{s}"' for s in _ALL_SCIDS)
    where_prefix = f'\n| where DeviceId startswith "{prefix}"' if prefix else ""
    return (
        # DeviceInfo has a full snapshot of every reporting device at least hourly (B.3):
        # two days find every device that still reports, at a fraction of 30 days' rows.
        "let Facing = DeviceInfo\n"
        f"| where Timestamp > ago(2d){where_prefix}\n"
        "| summarize arg_max(Timestamp, IsInternetFacing) by DeviceId\n"
        "| project DeviceId, IsInternetFacing;\n"
        "let Health = materialize(DeviceTvmSecureConfigurationAssessment\n"
        "| where Timestamp > ago(30d)\n"
        f"| where ConfigurationId in ({scids}){where_prefix}\n"
        "| summarize arg_max(Timestamp, IsApplicable, IsCompliant, DeviceName, OSPlatform)"
        " by DeviceId, ConfigurationId\n"
        "| summarize DeviceName = take_any(DeviceName), OSPlatform = take_any(OSPlatform),"
        " LastAssessed = max(Timestamp),\n"
        '    Assessments = make_list(strcat(ConfigurationId, "=", tostring(IsApplicable), "/",'
        " tostring(IsCompliant))) by DeviceId\n"
        "| join kind=leftouter Facing on DeviceId\n"
        "| project-away DeviceId1);\n"
        f"Health\n| extend {_TOTAL} = toscalar(Health | count)"
    )


def fetch_agent_health(ctx: FetchContext) -> Iterator[Unit]:
    """One unit per query; a query cut short or timed out is split, never sent again as it was.

    Raises:
        HuntingQueryTimeout: a query timed out even over the narrowest device-id prefix.
        PermanentError: a result still cut short at the narrowest prefix, or an unusable answer.
    """
    pending = [""]
    devices = ctx.device_count or 0
    while devices > _DEVICES_PER_QUERY * len(pending) and len(pending[0]) < 3:
        pending = [p + c for p in pending for c in _HEX]
    while pending:
        prefix = pending.pop(0)
        try:
            results = _run_query(ctx, agent_health_query(prefix))
        except EpfError as exc:
            why = _too_heavy(exc)
            if why is None:
                raise
            if len(prefix) >= _NARROWEST_ON_TIMEOUT:
                raise HuntingQueryTimeout(_timeout_message(ctx, prefix, why)) from exc
            log.debug("hunting query for prefix %r did not finish (%s); splitting it", prefix, why)
            pending = _narrower(prefix, 1) + pending
            continue
        total = _total_rows(results)
        if total is not None:
            cut = len(results) < total
        else:  # no count came back: a result at the assumed cap may have been cut
            cut = len(results) >= ctx.tenant.hunting_row_limit
        if cut:
            if len(prefix) >= _NARROWEST_ON_TRUNCATION:
                raise PermanentError(
                    f"tenant {ctx.tenant.name!r}: the hunting result for device ids starting "
                    f"{prefix!r} is still cut short ({len(results)} of {total} rows)"
                )
            depth = _split_depth(len(results), total)
            log.debug(
                "hunting result for prefix %r cut short at %d of %s rows; splitting it %d ways",
                prefix,
                len(results),
                total if total is not None else "more",
                16**depth,
            )
            pending = _narrower(prefix, depth) + pending
            continue
        yield Unit(
            f"prefix-{prefix or 'all'}", batches_of(AGENT_HEALTH, results, device_health_row)
        )


def os_family(platform: str | None, scids: Iterable[str] = ()) -> str | None:
    """Windows, macOS or Linux from the OS platform, else from which SCIDs the device has."""
    text = (platform or "").lower()
    if text.startswith("windows"):
        return "Windows"
    if text.startswith("mac") or text == "osx":
        return "macOS"
    if text.startswith(_LINUX_PLATFORMS):
        return "Linux"
    families = {_SCID_FAMILY[s] for s in scids if s in _SCID_FAMILY}
    return families.pop() if len(families) == 1 else None


def device_health_row(record: Any) -> dict[str, Any] | str:
    """The ``EPF_AgentHealth_CL`` row for one query result, or why it cannot be one."""
    if not isinstance(record, Mapping):
        return f"hunting result is a {type(record).__name__}, not an object"
    f = Fields(record)
    device_id = f.get("DeviceId")
    if not isinstance(device_id, str) or not device_id:
        return "hunting result has no DeviceId"
    assessments = _parse_assessments(f.get("Assessments"))
    if assessments is None:
        return "hunting result has no Assessments list"
    platform = f.get("OSPlatform")
    family = os_family(platform if isinstance(platform, str) else None, list(assessments))
    if family is None:
        return f"cannot tell the OS family of platform {platform!r}"
    try:
        facing = f.get_as("IsInternetFacing", as_bool)
    except Invalid as exc:
        return str(exc)
    # A value that does not convert is null in its column and kept raw, under its own
    # spelling, in AdditionalFields, as in every other table.
    extra: dict[str, Any] = {}
    try:
        last_assessed = f.get_as("LastAssessed", as_datetime)
    except Invalid:
        last_assessed = None
        extra.update(_raw(record, "LastAssessed"))
    name = f.get("DeviceName")
    for column, value in (("DeviceName", name), ("OSPlatform", platform)):
        if value is not None and not isinstance(value, str):
            extra.update(_raw(record, column))
    row: dict[str, Any] = {
        "DeviceId": device_id,
        "DeviceName": name if isinstance(name, str) else None,
        "OSPlatform": platform if isinstance(platform, str) else None,
        "OSFamily": family,
        "LastAssessed": last_assessed,
    }
    scids = HEALTH_SCIDS[family]
    for test in AGENT_HEALTH_TESTS:
        scid = scids.get(test)
        if scid is None:
            row[test] = HealthResult.NOT_APPLICABLE.value
        else:
            row[test] = assessments.get(scid, HealthResult.UNKNOWN).value
    row["FailingTests"] = sum(1 for t in AGENT_HEALTH_TESTS if row[t] == HealthResult.FAIL)
    row["IsInternetFacing"] = facing
    row["AdditionalFields"] = extra or None
    return row


def _raw(record: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The field ``name`` of ``record`` (any case) as sent: its key as spelt, and its value."""
    for key, value in record.items():
        if str(key).lower() == name.lower():
            return {str(key): value}
    return {}


def _parse_assessments(value: Any) -> dict[str, HealthResult] | None:
    if isinstance(value, str):  # dynamic columns may arrive as JSON text
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    if not isinstance(value, list):
        return None
    results: dict[str, HealthResult] = {}
    for item in value:
        if not isinstance(item, str) or "=" not in item:
            continue
        scid, _, flags = item.partition("=")
        applicable, _, compliant = flags.partition("/")
        results[scid.strip()] = _decide(_flag(applicable), _flag(compliant))
    return results


def _flag(text: str) -> bool | None:
    lowered = text.strip().lower()
    return True if lowered == "true" else False if lowered == "false" else None


def _decide(applicable: bool | None, compliant: bool | None) -> HealthResult:
    """A test passes when its SCID row is applicable and compliant; not applicable is N/A."""
    if applicable is False:
        return HealthResult.NOT_APPLICABLE
    if applicable is None or compliant is None:
        return HealthResult.UNKNOWN
    return HealthResult.PASS if compliant else HealthResult.FAIL


def _run_query(ctx: FetchContext, query: str) -> list[Any]:
    tenant = ctx.tenant
    if tenant.hunting_api == "graph":
        url, scope = f"{tenant.graph_base_url}/security/runHuntingQuery", tenant.graph_scope
        request: dict[str, str] = {"Query": query, "Timespan": "P30D"}
    else:
        url, scope = f"{tenant.mde_base_url}/api/advancedqueries/run", tenant.mde_scope
        request = {"Query": query}
    # Wait longer than the service runs a query, and never re-send a timed-out one (B.3).
    body = ctx.client.request_json(
        "POST",
        url,
        scope=scope,
        budget=ctx.budget("advanced_hunting"),
        json_body=request,
        timeout_seconds=tenant.hunting_timeout_seconds,
        retry_timeouts=False,
    )
    # Graph says `results`, the MDE API `Results`; accept either (B.3).
    if isinstance(body, dict):
        for key, value in body.items():
            if key.lower() == "results" and isinstance(value, list):
                return value
    raise PermanentError(f"tenant {tenant.name!r}: the hunting API answered without a results list")


def _too_heavy(exc: EpfError) -> str | None:
    """Why the query did not finish, if it timed out or ran past the service's limits."""
    if isinstance(exc, RequestTimedOut):
        return str(exc)
    text = str(exc)
    if isinstance(exc, HttpStatusError) and exc.status == 400:
        if any(marker in text.lower() for marker in _TOO_HEAVY):
            return text
    return None


def _timeout_message(ctx: FetchContext, prefix: str, why: str) -> str:
    return (
        f"tenant {ctx.tenant.name!r}: the agent health hunting query for device ids starting "
        f"{prefix!r} (1/{16 ** len(prefix)} of the fleet) timed out or ran past the service's "
        f"limits even at the narrowest split ({why}); it was not sent again, to spare the "
        "tenant's hunting CPU quota. Run the sync again later; if it keeps timing out, check "
        "the tenant's hunting load (Defender portal: Advanced hunting, query resources report)"
    )


def _total_rows(results: list[Any]) -> int | None:
    """The full result's row count the query carried with its rows, if it did."""
    first = results[0] if results else None
    if isinstance(first, Mapping):
        for key, value in first.items():
            if str(key).lower() == _TOTAL.lower() and isinstance(value, int):
                return value
    return None


def _split_depth(received: int, total: int | None) -> int:
    """Hex digits to add to a prefix so each part's result fits in what came back."""
    if total is None or received < 1:
        return 1
    depth = 1
    while 16**depth * received < total * _SPLIT_MARGIN:
        depth += 1
    return depth


def _narrower(prefix: str, depth: int) -> list[str]:
    parts = [prefix]
    for _ in range(depth):
        parts = [p + c for p in parts for c in _HEX]
    return parts
