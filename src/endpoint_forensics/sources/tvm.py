"""Defender Vulnerability Management exports by machine (defender-apis.md B.5): vulnerabilities,
their changes, secure configuration and software inventory.

Each full export comes as JSON pages (``…ByMachine?pageSize=N``, ``$skiptoken`` next links) or,
for large tenants, as files (``sources.exports``); the mode is per tenant (``export_mode``).
Both are resumable: a page's next link or an export part's index is the resume token. The
changes delta (B.5.4) reads from the dataset's cursor, removes the Fixed/New pairs that a device
moving between device groups produces, and moves the cursor only when the run delivered it all.
May import ``http``, ``contracts``, ``tables`` and the other ``sources`` modules.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from endpoint_forensics.contracts import SnapshotChanged, Unit, batch_of
from endpoint_forensics.errors import HttpStatusError
from endpoint_forensics.sources import FetchContext
from endpoint_forensics.sources.exports import ExportSpec, export_units
from endpoint_forensics.sources.normalize import as_datetime
from endpoint_forensics.tables import (
    SECURE_CONFIG,
    SOFTWARE_INVENTORY,
    VULNERABILITIES,
    VULNERABILITY_CHANGES,
)

__all__ = [
    "SECURE_CONFIG_EXPORT",
    "SOFTWARE_EXPORT",
    "VULNERABILITY_EXPORT",
    "fetch_secure_config",
    "fetch_software_inventory",
    "fetch_vulnerabilities",
    "fetch_vulnerability_changes",
    "without_group_moves",
]

log = logging.getLogger(__name__)

_VULN_FIELDS = {
    "id": "RecordId",
    "deviceId": "DeviceId",
    "deviceName": "DeviceName",
    "rbacGroupName": "RbacGroupName",
    "rbacGroupId": "RbacGroupId",
    "osPlatform": "OSPlatform",
    "osVersion": "OSVersion",
    "osArchitecture": "OSArchitecture",
    "softwareVendor": "SoftwareVendor",
    "softwareName": "SoftwareName",
    "softwareVersion": "SoftwareVersion",
    "cveId": "CveId",
    "vulnerabilitySeverityLevel": "VulnerabilitySeverityLevel",
    "cvssScore": "CvssScore",
    "exploitabilityLevel": "ExploitabilityLevel",
    "securityUpdateAvailable": "SecurityUpdateAvailable",
    "recommendedSecurityUpdate": "RecommendedSecurityUpdate",
    "recommendedSecurityUpdateId": "RecommendedSecurityUpdateId",
    "recommendedSecurityUpdateUrl": "RecommendedSecurityUpdateUrl",
    "recommendationReference": "RecommendationReference",
    "diskPaths": "DiskPaths",
    "registryPaths": "RegistryPaths",
    "firstSeenTimestamp": "FirstSeenTimestamp",
    "lastSeenTimestamp": "LastSeenTimestamp",
}

VULNERABILITY_EXPORT = ExportSpec(
    "SoftwareVulnerabilitiesExport", VULNERABILITIES, _VULN_FIELDS, ("DeviceId",)
)
SECURE_CONFIG_EXPORT = ExportSpec(
    "SecureConfigurationsAssessmentExport",
    SECURE_CONFIG,
    {
        "deviceId": "DeviceId",
        "deviceName": "DeviceName",
        "osPlatform": "OSPlatform",
        "osVersion": "OSVersion",
        "rbacGroupName": "RbacGroupName",
        "rbacGroupId": "RbacGroupId",
        "configurationId": "ConfigurationId",
        "configurationName": "ConfigurationName",
        "configurationCategory": "ConfigurationCategory",
        "configurationSubcategory": "ConfigurationSubcategory",
        "configurationImpact": "ConfigurationImpact",
        "isCompliant": "IsCompliant",
        "isApplicable": "IsApplicable",
        "isExpectedUserImpact": "IsExpectedUserImpact",
        "recommendationReference": "RecommendationReference",
        "timestamp": "AssessedTime",
    },
    ("DeviceId", "ConfigurationId"),
)
SOFTWARE_EXPORT = ExportSpec(
    "SoftwareInventoryExport",
    SOFTWARE_INVENTORY,
    {
        "deviceId": "DeviceId",
        "deviceName": "DeviceName",
        "rbacGroupName": "RbacGroupName",
        "rbacGroupId": "RbacGroupId",
        "osPlatform": "OSPlatform",
        "softwareVendor": "SoftwareVendor",
        "softwareName": "SoftwareName",
        "softwareVersion": "SoftwareVersion",
        "numberOfWeaknesses": "NumberOfWeaknesses",
        "endOfSupportStatus": "EndOfSupportStatus",
        "endOfSupportDate": "EndOfSupportDate",
        "diskPaths": "DiskPaths",
        "registryPaths": "RegistryPaths",
        "softwareFirstSeenTimestamp": "SoftwareFirstSeenTimestamp",
        "productCodeCpe": "ProductCodeCpe",
    },
    ("DeviceId", "SoftwareName"),
)
_CHANGES = ExportSpec(
    "SoftwareVulnerabilityChangesByMachine",
    VULNERABILITY_CHANGES,
    {
        **_VULN_FIELDS,
        "status": "Status",
        "eventTimestamp": "EventTimestamp",
        "isOnboarded": "IsOnboarded",
    },
    ("DeviceId", "RecordId", "Status"),
)
# The JSON endpoint of each files export.
_JSON_ENDPOINT = {
    "SoftwareVulnerabilitiesExport": "SoftwareVulnerabilitiesByMachine",
    "SecureConfigurationsAssessmentExport": "SecureConfigurationsAssessmentByMachine",
    "SoftwareInventoryExport": "SoftwareInventoryByMachine",
}
_DELTA_MAX_DAYS = 14  # sinceTime may go back at most 14 days (B.5.4)
_BUCKET = timedelta(hours=6)  # changes are computed in 6-hour buckets


def fetch_vulnerabilities(ctx: FetchContext) -> Iterator[Unit]:
    """The full vulnerability baseline (every device x software x CVE, null CVEs included)."""
    return _full_export(ctx, VULNERABILITY_EXPORT)


def fetch_secure_config(ctx: FetchContext) -> Iterator[Unit]:
    """Secure configuration assessment: one row per device and configuration."""
    return _full_export(ctx, SECURE_CONFIG_EXPORT)


def fetch_software_inventory(ctx: FetchContext) -> Iterator[Unit]:
    """Software inventory: one row per device and software version."""
    return _full_export(ctx, SOFTWARE_EXPORT)


def fetch_vulnerability_changes(ctx: FetchContext) -> Iterator[Unit]:
    """New, Fixed and Updated vulnerabilities since the cursor (at most 14 days back).

    The cursor keeps the newest event time delivered and the keys of the events in the bucket
    it falls in, because the service serves that whole bucket again.
    """
    cursor = ctx.cursor or {}
    earliest = ctx.now - timedelta(days=_DELTA_MAX_DAYS) + timedelta(seconds=1)
    since = as_datetime(cursor.get("since")) or earliest
    if since < earliest:
        log.warning(
            "tenant %s: the last change delivered is older than 14 days; changes between %s "
            "and %s cannot be fetched again (the baseline covers the state)",
            ctx.tenant.name,
            since.isoformat(),
            earliest.isoformat(),
        )
        since = earliest
    seen = set(cursor.get("seen", []))
    try:
        records = _json_records(ctx, _CHANGES.endpoint, {"sinceTime": _iso(since)})
    except HttpStatusError as exc:
        if exc.status != 400 or since > earliest:
            raise
        # Our clock is behind Defender's: 14 days back is already too far for it. The
        # next bucket is the earliest it can still serve.
        since = _bucket_start(since) + _BUCKET
        log.warning(
            "tenant %s: sinceTime refused (%s); asking from %s", ctx.tenant.name, exc, since
        )
        records = _json_records(ctx, _CHANGES.endpoint, {"sinceTime": _iso(since)})
    kept, moves = without_group_moves(records)
    batch = batch_of(VULNERABILITY_CHANGES, kept, _CHANGES.to_row)
    fresh: list[dict[str, Any]] = []
    newest = since
    for row in batch.rows:
        key = _change_key(row)
        if key in seen:
            continue  # delivered by an earlier run: its bucket is served again
        fresh.append(row)
        event = row.get("EventTimestamp")
        if isinstance(event, datetime) and event > newest:
            newest = event
    log.info(
        "tenant %s: %d changes since %s (%d already delivered, %d device-group move rows removed)",
        ctx.tenant.name,
        len(fresh),
        since.isoformat(),
        len(batch.rows) - len(fresh),
        moves,
    )
    batch.rows = fresh
    boundary = newest - _BUCKET
    keys = {_change_key(r) for r in fresh if _after(r, boundary)}
    keys |= {k for k in seen if _key_time(k) > boundary}
    ctx.new_cursor = {"since": newest.isoformat(), "seen": sorted(keys)}
    yield Unit("delta", iter([batch]))


def without_group_moves(records: list[Any]) -> tuple[list[Any], int]:
    """Drop the Fixed/New pairs of a device moving between device groups (B.5.4).

    Such a pair has the same record id and event time, one Fixed under the old group and one
    New under the new: the exposure did not change. Returns the records kept and how many
    were dropped.
    """
    by_event: dict[tuple[Any, Any], list[int]] = {}
    for i, rec in enumerate(records):
        if isinstance(rec, dict) and _field(rec, "status") in ("Fixed", "New"):
            by_event.setdefault((_field(rec, "id"), _field(rec, "eventTimestamp")), []).append(i)
    dropped: set[int] = set()
    for indexes in by_event.values():
        fixed = [i for i in indexes if _field(records[i], "status") == "Fixed"]
        new = [i for i in indexes if _field(records[i], "status") == "New"]
        for f, n in zip(fixed, new, strict=False):
            if _field(records[f], "rbacGroupName") != _field(records[n], "rbacGroupName") or (
                _field(records[f], "rbacGroupId") != _field(records[n], "rbacGroupId")
            ):
                dropped.update((f, n))
    return [r for i, r in enumerate(records) if i not in dropped], len(dropped)


def _full_export(ctx: FetchContext, spec: ExportSpec) -> Iterator[Unit]:
    if ctx.tenant.use_files(ctx.device_count):
        yield from export_units(ctx, spec)
    else:
        yield from _json_units(ctx, spec)


def _json_units(ctx: FetchContext, spec: ExportSpec) -> Iterator[Unit]:
    tenant = ctx.tenant
    endpoint = _JSON_ENDPOINT[spec.endpoint]
    url = f"{tenant.mde_base_url}/api/machines/{endpoint}"
    params: dict[str, str] | None = {"pageSize": str(tenant.export_page_size)}
    number = 0
    if ctx.resume:
        if ctx.resume.get("mode") != "json" or not ctx.resume.get("next"):
            raise SnapshotChanged("the unfinished snapshot was read as files, not JSON pages")
        url, params, number = str(ctx.resume["next"]), None, int(ctx.resume["page"]) + 1
    pages = ctx.client.iter_odata_pages(
        url, scope=tenant.mde_scope, budget=ctx.budget(endpoint), params=params
    )
    try:
        for page in pages:
            batch = batch_of(spec.table, page.value, spec.to_row)
            resume = {"mode": "json", "next": page.next_link, "page": number}
            yield Unit(f"page-{number:05d}", iter([batch]), resume)
            number += 1
    except HttpStatusError as exc:
        if ctx.resume and exc.status in (400, 404, 410):
            # A $skiptoken names an export snapshot; once that is refreshed it is refused.
            raise SnapshotChanged(f"the saved next link was refused ({exc.status})") from exc
        raise


def _json_records(ctx: FetchContext, endpoint: str, params: dict[str, str]) -> list[Any]:
    tenant = ctx.tenant
    params = {**params, "pageSize": str(tenant.export_page_size)}
    records: list[Any] = []
    for page in ctx.client.iter_odata_pages(
        f"{tenant.mde_base_url}/api/machines/{endpoint}",
        scope=tenant.mde_scope,
        budget=ctx.budget(endpoint),
        params=params,
    ):
        records.extend(page.value)
    return records


def _field(record: dict[str, Any], name: str) -> Any:
    if name in record:
        return record[name]
    lowered = name.lower()
    for key, value in record.items():
        if key.lower() == lowered:
            return value
    return None


def _change_key(row: dict[str, Any]) -> str:
    event = row.get("EventTimestamp")
    when = event.isoformat() if isinstance(event, datetime) else ""
    return f"{when}|{row.get('RecordId')}|{row.get('RbacGroupName')}|{row.get('Status')}"


def _key_time(key: str) -> datetime:
    parsed = as_datetime(key.split("|", 1)[0])
    return parsed if parsed is not None else datetime.min.replace(tzinfo=UTC)


def _after(row: dict[str, Any], boundary: datetime) -> bool:
    event = row.get("EventTimestamp")
    return isinstance(event, datetime) and event > boundary


def _bucket_start(when: datetime) -> datetime:
    day = when.replace(hour=0, minute=0, second=0, microsecond=0)
    return day + _BUCKET * ((when - day) // _BUCKET)


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
