"""Advanced hunting datasets: Defender agent health from the secure configuration assessment.

Runs KQL through Microsoft Graph ``POST /security/runHuntingQuery`` (or the retiring MDE
``POST /api/advancedqueries/run``; B.3) over ``DeviceTvmSecureConfigurationAssessment``, takes
the latest row per (device, SCID) and turns each device's health SCIDs into the 11 test columns
of ``EPF_AgentHealth_CL`` (SCIDs: original-connector.md). A result that reaches the row limit
may have been cut short, so the query is split by device id prefix until every part fits.
May import ``http``, ``ratelimit``, ``tables``, ``contracts`` and ``config``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

from endpoint_forensics.contracts import Unit, batches_of
from endpoint_forensics.errors import PermanentError
from endpoint_forensics.sources import FetchContext
from endpoint_forensics.sources.normalize import as_datetime
from endpoint_forensics.tables import AGENT_HEALTH, AGENT_HEALTH_TESTS, HealthResult

__all__ = [
    "HEALTH_SCIDS",
    "agent_health_query",
    "device_health_row",
    "fetch_agent_health",
    "os_family",
]

log = logging.getLogger(__name__)

_HEX = "0123456789abcdef"
_DEVICES_PER_QUERY = 25_000

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
    """
    scids = ", ".join(f'"{s}"' for s in _ALL_SCIDS)
    where_prefix = f'\n| where DeviceId startswith "{prefix}"' if prefix else ""
    return (
        "DeviceTvmSecureConfigurationAssessment\n"
        "| where Timestamp > ago(30d)\n"
        f"| where ConfigurationId in ({scids}){where_prefix}\n"
        "| summarize arg_max(Timestamp, IsApplicable, IsCompliant, DeviceName, OSPlatform)"
        " by DeviceId, ConfigurationId\n"
        "| summarize DeviceName = take_any(DeviceName), OSPlatform = take_any(OSPlatform),"
        " LastAssessed = max(Timestamp),\n"
        '    Assessments = make_list(strcat(ConfigurationId, "=", tostring(IsApplicable), "/",'
        " tostring(IsCompliant))) by DeviceId"
    )


def fetch_agent_health(ctx: FetchContext) -> Iterator[Unit]:
    """One unit per query, splitting any query whose result reaches the row limit."""
    row_limit = ctx.tenant.hunting_row_limit
    # Large fleets start split, so no answer is huge (one 100,000-row answer is ~40 MB of JSON).
    pending = [""]
    devices = ctx.device_count or 0
    while devices > _DEVICES_PER_QUERY * len(pending) and len(pending[0]) < 3:
        pending = [p + c for p in pending for c in _HEX]
    while pending:
        prefix = pending.pop(0)
        results = _run_query(ctx, agent_health_query(prefix))
        if len(results) >= row_limit and len(prefix) < 8:
            log.info("hunting result for prefix %r reached %d rows; splitting", prefix, row_limit)
            pending = [prefix + c for c in _HEX] + pending
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
    fields = {k.lower(): v for k, v in record.items()}
    device_id = fields.get("deviceid")
    if not isinstance(device_id, str) or not device_id:
        return "hunting result has no DeviceId"
    assessments = _parse_assessments(fields.get("assessments"))
    if assessments is None:
        return "hunting result has no Assessments list"
    platform = fields.get("osplatform")
    family = os_family(platform if isinstance(platform, str) else None, list(assessments))
    if family is None:
        return f"cannot tell the OS family of platform {platform!r}"
    try:
        last_assessed = as_datetime(fields.get("lastassessed"))
    except ValueError:
        last_assessed = None
    row: dict[str, Any] = {
        "DeviceId": device_id,
        "DeviceName": fields.get("devicename")
        if isinstance(fields.get("devicename"), str)
        else None,
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
    return row


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
    client, tenant, budget = ctx.client, ctx.tenant, ctx.budget("advanced_hunting")
    if tenant.hunting_api == "graph":
        body = client.request_json(
            "POST",
            f"{tenant.graph_base_url}/security/runHuntingQuery",
            scope=tenant.graph_scope,
            budget=budget,
            json_body={"Query": query, "Timespan": "P30D"},
        )
    else:
        body = client.request_json(
            "POST",
            f"{tenant.mde_base_url}/api/advancedqueries/run",
            scope=tenant.mde_scope,
            budget=budget,
            json_body={"Query": query},
        )
    # Graph says `results`, the MDE API `Results`; accept either (B.3).
    if isinstance(body, dict):
        for key, value in body.items():
            if key.lower() == "results" and isinstance(value, list):
                return value
    raise PermanentError(f"tenant {tenant.name!r}: the hunting API answered without a results list")
