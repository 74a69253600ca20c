"""Defender for Endpoint REST datasets: device inventory (B.1), antivirus health (B.2),
security recommendations and the vulnerabilities catalogue (B.5.7, B.5.8).

One function per dataset; each yields batches for one table. Knows nothing of sinks.
May import ``http``, ``config``, ``contracts``, ``errors``, ``tables`` and the other ``sources``
modules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import orjson

from endpoint_forensics.contracts import Batch, Row, Unit, batches_of
from endpoint_forensics.errors import HttpStatusError
from endpoint_forensics.http.odata_lines import SavedPage
from endpoint_forensics.http.paging import iter_skip_pages
from endpoint_forensics.sources import FetchContext
from endpoint_forensics.sources.decode import ExportSpec, record_to_row
from endpoint_forensics.sources.exports import export_units
from endpoint_forensics.sources.wire import FieldMap, convert_record, field_specs
from endpoint_forensics.tables import AV_HEALTH, CVE_CATALOG, DEVICES, RECOMMENDATIONS, Table

__all__ = [
    "AV_MODES",
    "av_health_row",
    "fetch_av_health",
    "fetch_cve_catalog",
    "fetch_machines",
    "fetch_recommendations",
    "machine_to_row",
]

log = logging.getLogger(__name__)

# Wire name -> column (keys match case-insensitively: Defender's casing drifts); the
# column's type picks the converter.
_MACHINE_FIELDS: FieldMap = {
    "id": "DeviceId",
    "computerDnsName": "DeviceName",
    "firstSeen": "FirstSeen",
    "lastSeen": "LastSeen",
    "osPlatform": "OSPlatform",
    "osVersion": "OSVersion",
    "version": "OSVersionInfo",
    "osProcessor": "OSProcessor",
    "osArchitecture": "OSArchitecture",
    "osBuild": "OSBuild",
    "lastIpAddress": "LastIpAddress",
    "lastExternalIpAddress": "LastExternalIpAddress",
    "healthStatus": "HealthStatus",
    "onboardingStatus": "OnboardingStatus",
    "deviceValue": "DeviceValue",
    "rbacGroupId": "RbacGroupId",
    "rbacGroupName": "RbacGroupName",
    "riskScore": "RiskScore",
    "exposureLevel": "ExposureLevel",
    "isAadJoined": "IsAadJoined",
    "aadDeviceId": "AadDeviceId",
    "machineTags": "MachineTags",
    "ipAddresses": "IpAddresses",
    "agentVersion": "AgentVersion",
    "defenderAvStatus": "DefenderAvStatus",
    "managedBy": "ManagedBy",
    "managedByStatus": "ManagedByStatus",
    "isPotentialDuplication": "IsPotentialDuplication",
    "mergedIntoMachineId": "MergedIntoMachineId",
    "isExcluded": "IsExcluded",
    "exclusionReason": "ExclusionReason",
    "vmMetadata": "VmMetadata",
}
_MACHINE_SPECS = field_specs(DEVICES, _MACHINE_FIELDS)

# Most records one call returns, with $top (B.1, B.2).
_MACHINES_TOP = 10_000
_AV_TOP = 10_000

# The doc says `onboarded`, captures say `Onboarded`: store one spelling.
_ONBOARDING_CANONICAL = {
    v.lower(): v for v in ("Onboarded", "CanBeOnboarded", "Unsupported", "InsufficientInfo")
}


def fetch_machines(ctx: FetchContext) -> Iterator[Unit]:
    """One unit per page of ``GET /api/machines``, to the last page.

    Pages are ``$top``/``$skip`` walks: with ``$top`` the service sends no next link (B.1, F).
    A record without a device id is rejected with its reason; unknown fields are kept in
    ``AdditionalFields``; missing fields are null. An empty tenant answers 404 (B.1): no rows.
    """
    tenant = ctx.tenant
    pages = _skip_pages(ctx, "machines", top=min(tenant.page_size, _MACHINES_TOP))
    try:
        for number, page in enumerate(pages):
            yield Unit(f"page-{number:05d}", _batches(page, DEVICES, machine_to_row))
    except HttpStatusError as exc:
        # "Returns 404 Not Found if there are no recent machines" (get-machines.md).
        if exc.status == 404:
            log.info("tenant %s: no recent machines (404)", tenant.name)
            return
        raise


def machine_to_row(record: Any) -> dict[str, Any] | str:
    """The ``EPF_Devices_CL`` row for one machine record, or why it cannot be one."""
    if not isinstance(record, dict):
        return f"machine record is a {type(record).__name__}, not an object"
    row, extra = convert_record(record, _MACHINE_SPECS)
    device_id = row.get("DeviceId")
    if not device_id:
        return "machine record has no id"
    status = row.get("OnboardingStatus")
    if isinstance(status, str):
        row["OnboardingStatus"] = _ONBOARDING_CANONICAL.get(status.lower(), status)
    row["AdditionalFields"] = extra or None
    return row


# --- antivirus health (B.2) ---------------------------------------------------------------

_AV_FIELDS = {
    "machineId": "DeviceId",
    "computerDnsName": "DeviceName",
    "osKind": "OSKind",
    "osPlatform": "OSPlatform",
    "osVersion": "OSVersion",
    "avMode": "AvModeCode",
    "avSignatureVersion": "AvSignatureVersion",
    "avEngineVersion": "AvEngineVersion",
    "avPlatformVersion": "AvPlatformVersion",
    "avIsSignatureUpToDate": "AvIsSignatureUpToDate",
    "avIsEngineUpToDate": "AvIsEngineUpToDate",
    "avIsPlatformUpToDate": "AvIsPlatformUpToDate",
    "avSignatureUpdateTime": "AvSignatureUpdateTime",
    "avSignaturePublishTime": "AvSignaturePublishTime",
    "avEngineUpdateTime": "AvEngineUpdateTime",
    "avPlatformUpdateTime": "AvPlatformUpdateTime",
    "quickScanResult": "QuickScanResult",
    "quickScanError": "QuickScanError",
    "quickScanTime": "QuickScanTime",
    "fullScanResult": "FullScanResult",
    "fullScanError": "FullScanError",
    "fullScanTime": "FullScanTime",
    "lastSeenTime": "LastSeenTime",
    "dataRefreshTimestamp": "DataRefreshTimestamp",
    "rbacGroupId": "RbacGroupId",
    "rbacGroupName": "RbacGroupName",
}
# The files export spells a few fields its own way (PascalCase, "Upto", "Machine"): more wire
# names of the same columns. A record with two spellings of one field (its own and one in
# DeviceGatheredInfo, say) keeps the first that is not empty, the record's own first, and the
# other raw in AdditionalFields, as ``convert_record`` keeps any field spelt twice.
_AV_FILE_ALIASES = {
    "DeviceId": "machineId",
    "DeviceName": "computerDnsName",
    "AvIsSignatureUptoDate": "avIsSignatureUpToDate",
    "AvIsEngineUptodate": "avIsEngineUpToDate",
    "AvIsPlatformUptodate": "avIsPlatformUpToDate",
    "LastSeen": "lastSeenTime",
    "AvSignatureDataRefreshTime": "dataRefreshTimestamp",
}
_AV_RECORD_FIELDS: FieldMap = {
    **_AV_FIELDS,
    **{alias: _AV_FIELDS[name] for alias, name in _AV_FILE_ALIASES.items()},
}
_AV_DEVICE_ID_WIRES = frozenset(w.lower() for w, c in _AV_RECORD_FIELDS.items() if c == "DeviceId")
# avMode is a string-typed int (B.2).
AV_MODES = {
    "": "Other",
    "0": "Active",
    "1": "Passive",
    "2": "Disabled",
    "3": "Other",
    "4": "EDRBlocked",
    "5": "PassiveAudit",
}


def fetch_av_health(ctx: FetchContext) -> Iterator[Unit]:
    """Antivirus health per device: ``/api/deviceavinfo`` pages, or InfoGatheringExport files."""
    tenant = ctx.tenant
    if tenant.use_files(ctx.device_count):
        yield from _av_health_files(ctx)
        return
    # The default page is 20 rows; $top may go to 10,000 (B.2).
    pages = _skip_pages(ctx, "deviceavinfo", top=min(tenant.page_size, _AV_TOP))
    for number, page in enumerate(pages):
        yield Unit(f"page-{number:05d}", _batches(page, AV_HEALTH, _av_row(ctx)))


def av_health_row(record: Any, now: datetime) -> dict[str, Any] | str:
    """The ``EPF_AvHealth_CL`` row for one AV record (JSON or files), or why it cannot be one."""
    if not isinstance(record, dict):
        return f"AV record is a {type(record).__name__}, not an object"
    record = _flatten_gathered_info(record)
    has_device = any(
        k.lower() in _AV_DEVICE_ID_WIRES and v not in (None, "") for k, v in record.items()
    )
    if not has_device and record.get("id"):
        record = {**record, "machineId": record["id"]}  # id and machineId are the same (B.2)
    record = {k: v for k, v in record.items() if k != "id"}
    row = record_to_row(record, AV_HEALTH, _AV_RECORD_FIELDS, ("DeviceId",))
    if isinstance(row, str):
        return row
    code = row.get("AvModeCode")
    row["AvMode"] = AV_MODES.get(code.strip() if isinstance(code, str) else "", "Other")
    published = row.get("AvSignaturePublishTime") or row.get("AvSignatureUpdateTime")
    if isinstance(published, datetime):
        row["SignatureAgeHours"] = round((now - published).total_seconds() / 3600, 2)
    return row


def _av_row(ctx: FetchContext) -> Callable[[Any], dict[str, Any] | str]:
    return lambda record: av_health_row(record, ctx.now)


def _av_health_files(ctx: FetchContext) -> Iterator[Unit]:
    spec = ExportSpec(
        "InfoGatheringExport",
        AV_HEALTH,
        _AV_RECORD_FIELDS,
        ("DeviceId",),
        convert=lambda record: av_health_row(record, ctx.now),
    )
    return export_units(ctx, spec)


def _flatten_gathered_info(record: dict[str, Any]) -> dict[str, Any]:
    """Merge ``DeviceGatheredInfo`` into the record, after the record's own fields.

    Both it and its ``AvScanResults`` come as an object or as a JSON-encoded string (B.2, F);
    the up-to-date flags as ``"True"``/``"False"`` strings or as real booleans (``as_bool``
    reads both). A field in both spelt alike keeps the record's value unless that is empty;
    the other, when it differs, stays raw in what is left of ``DeviceGatheredInfo`` (kept in
    AdditionalFields). Spelt otherwise, both are merged: ``convert_record`` decides.
    """
    name = next((k for k in record if k.lower() == "devicegatheredinfo"), None)
    info = _json_object(record[name]) if name is not None else None
    if name is None or info is None:
        return record
    merged = {k: v for k, v in record.items() if k != name}
    unused: dict[str, Any] = {}
    for key, value in info.items():
        scans = _json_object(value) if key.lower() == "avscanresults" else None
        for field, field_value in (
            _scan_results(scans) if scans is not None else {key: value}
        ).items():
            if merged.get(field) in (None, ""):
                merged[field] = field_value
            elif merged[field] != field_value:
                unused[key] = value
    if unused:
        merged[name] = unused
    return merged


def _json_object(value: Any) -> dict[str, Any] | None:
    """``value`` as an object: itself, or decoded from a JSON-encoded string; else None."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    return value if isinstance(value, dict) else None


def _scan_results(results: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for kind, scan in results.items():
        prefix = "quick" if kind.lower().startswith("quick") else "full"
        if not isinstance(scan, dict):
            continue
        for key, value in scan.items():
            lowered = key.lower()
            if "status" in lowered or "result" in lowered:
                flat[f"{prefix}ScanResult"] = value
            elif "error" in lowered:
                flat[f"{prefix}ScanError"] = value
            elif "time" in lowered:
                flat[f"{prefix}ScanTime"] = value
    return flat


# --- recommendations and the CVE catalogue (B.5.7, B.5.8) ---------------------------------

_RECOMMENDATION_FIELDS = {
    "id": "RecommendationId",
    "recommendationName": "RecommendationName",
    "productName": "ProductName",
    "vendor": "Vendor",
    "recommendedVersion": "RecommendedVersion",
    "recommendedProgram": "RecommendedProgram",
    "recommendedVendor": "RecommendedVendor",
    "recommendationCategory": "RecommendationCategory",
    "subCategory": "SubCategory",
    "severityScore": "SeverityScore",
    "weaknesses": "Weaknesses",
    "publicExploit": "PublicExploit",
    "activeAlert": "ActiveAlert",
    "associatedThreats": "AssociatedThreats",
    "remediationType": "RemediationType",
    "status": "Status",
    "configScoreImpact": "ConfigScoreImpact",
    "exposureImpact": "ExposureImpact",
    "totalMachineCount": "TotalMachineCount",
    "exposedMachinesCount": "ExposedMachinesCount",
    "nonProductivityImpactedAssets": "NonProductivityImpactedAssets",
    "relatedComponent": "RelatedComponent",
    "exposedCriticalDevices": "ExposedCriticalDevices",
}
_CVE_FIELDS = {
    "id": "CveId",
    "name": "Name",
    "description": "Description",
    "severity": "Severity",
    "cvssV3": "CvssV3",
    "cvssVector": "CvssVector",
    "exposedMachines": "ExposedMachines",
    "publishedOn": "PublishedOn",
    "updatedOn": "UpdatedOn",
    "publicExploit": "PublicExploit",
    "exploitVerified": "ExploitVerified",
    "exploitInKit": "ExploitInKit",
    "exploitTypes": "ExploitTypes",
    "exploitUris": "ExploitUris",
    "cveSupportability": "CveSupportability",
    "epss": "Epss",  # the doc spells it EPSS; keys match case-insensitively
}


def fetch_recommendations(ctx: FetchContext) -> Iterator[Unit]:
    """Security recommendations, one unit per page ($top at most 10,000, B.5.7)."""
    return _odata_units(ctx, "recommendations", 10_000, RECOMMENDATIONS, _RECOMMENDATION_FIELDS)


def fetch_cve_catalog(ctx: FetchContext) -> Iterator[Unit]:
    """The whole vulnerabilities catalogue, one unit per page ($top at most 8,000, B.5.8)."""
    return _odata_units(ctx, "vulnerabilities", 8_000, CVE_CATALOG, _CVE_FIELDS)


def _odata_units(
    ctx: FetchContext, endpoint: str, top: int, table: Table, fields: dict[str, str]
) -> Iterator[Unit]:
    key = next(iter(fields.values()))
    for number, page in enumerate(_skip_pages(ctx, endpoint, top=top)):
        batches = _batches(page, table, lambda r: record_to_row(r, table, fields, (key,)))
        yield Unit(f"page-{number:05d}", batches)


def _batches(page: SavedPage, table: Table, to_row: Callable[[Any], Row | str]) -> Iterator[Batch]:
    """The page's rows, read from its file a batch at a time; the file goes once read."""
    try:
        yield from batches_of(table, page.records(), to_row)
    finally:
        page.lines.unlink(missing_ok=True)


def _skip_pages(ctx: FetchContext, endpoint: str, *, top: int) -> Iterator[SavedPage]:
    """``/api/<endpoint>`` by ``$top`` and ``$skip``: with ``$top`` the service sends no next
    link (B.0, F). A repeating page ends the walk and is recorded as a gap of the run. Pages
    are saved in the dataset's work folder and read back a record at a time."""
    tenant = ctx.tenant

    def gap(reason: str) -> None:
        when = ctx.now.isoformat()
        ctx.gaps.append({"start": when, "end": when, "reason": reason})

    return iter_skip_pages(
        ctx.client,
        f"{tenant.mde_base_url}/api/{endpoint}",
        scope=tenant.mde_scope,
        budget=ctx.budget(endpoint),
        top=top,
        spool=lambda number: ctx.work_dir / f"{endpoint}-{number:05d}.jsonl",
        on_repeat=gap,
    )
