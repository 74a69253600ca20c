"""Defender Vulnerability Management exports by machine (defender-apis.md B.5): vulnerabilities,
secure configuration and software inventory (their changes are ``sources.tvm_changes``).

Each full export comes as JSON pages (``…ByMachine?pageSize=N``, ``$skiptoken`` next links) or,
for large tenants, as files (``sources.exports``); the mode is per tenant (``export_mode``).
Both are resumable: a page's next link or an export part's index is the resume token.
May import ``http``, ``contracts``, ``tables`` and the other ``sources`` modules.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from endpoint_forensics.contracts import Batch, RedoUnit, SnapshotChanged, Unit
from endpoint_forensics.errors import HttpStatusError
from endpoint_forensics.sources import FetchContext
from endpoint_forensics.sources.decode import (
    ExportSpec,
    decode_part,
)
from endpoint_forensics.sources.exports import export_units
from endpoint_forensics.tables import (
    SECURE_CONFIG,
    SOFTWARE_INVENTORY,
    VULNERABILITIES,
)

__all__ = [
    "SECURE_CONFIG_EXPORT",
    "SOFTWARE_EXPORT",
    "VULNERABILITY_EXPORT",
    "VULNERABILITY_FIELDS",
    "fetch_secure_config",
    "fetch_software_inventory",
    "fetch_vulnerabilities",
]

log = logging.getLogger(__name__)

VULNERABILITY_FIELDS = {
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
    "SoftwareVulnerabilitiesExport", VULNERABILITIES, VULNERABILITY_FIELDS, ("DeviceId",)
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
# The JSON endpoint of each files export.
_JSON_ENDPOINT = {
    "SoftwareVulnerabilitiesExport": "SoftwareVulnerabilitiesByMachine",
    "SecureConfigurationsAssessmentExport": "SecureConfigurationsAssessmentByMachine",
    "SoftwareInventoryExport": "SoftwareInventoryByMachine",
}


def fetch_vulnerabilities(ctx: FetchContext) -> Iterator[Unit]:
    """The full vulnerability baseline (every device x software x CVE, null CVEs included)."""
    return _full_export(ctx, VULNERABILITY_EXPORT)


def fetch_secure_config(ctx: FetchContext) -> Iterator[Unit]:
    """Secure configuration assessment: one row per device and configuration."""
    return _full_export(ctx, SECURE_CONFIG_EXPORT)


def fetch_software_inventory(ctx: FetchContext) -> Iterator[Unit]:
    """Software inventory: one row per device and software version."""
    return _full_export(ctx, SOFTWARE_EXPORT)


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
    next_url: str | None = url
    try:
        while next_url is not None:
            # The page's records go to disk as JSON lines without the page held in memory,
            # and decode like an export part.
            spill = ctx.work_dir / f"page-{number:05d}.jsonl"
            link = ctx.client.save_odata_page(
                next_url, spill, scope=tenant.mde_scope, budget=ctx.budget(endpoint), params=params
            ).next_link
            resume = {"mode": "json", "next": link, "page": number}

            def fallback(path: Path = spill) -> Iterator[Batch]:
                return _decoded(path, spec, careful=True)

            yield Unit(f"page-{number:05d}", _decoded(spill, spec, careful=False), resume, fallback)
            # The link is opaque and complete ($skiptoken): never re-add parameters.
            next_url, params, number = link, None, number + 1
    except HttpStatusError as exc:
        if ctx.resume and exc.status in (400, 404, 410):
            # A $skiptoken names an export snapshot; once that is refreshed it is refused.
            raise SnapshotChanged(f"the saved next link was refused ({exc.status})") from exc
        raise


def _decoded(path: Path, spec: ExportSpec, *, careful: bool) -> Iterator[Batch]:
    """The page's rows, decoded like an export part; the spill goes once it is read."""
    if not path.exists() or path.stat().st_size == 0:
        path.unlink(missing_ok=True)
        return
    try:
        yield from decode_part(path, spec, careful=careful)
    except RedoUnit:
        raise
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    path.unlink(missing_ok=True)
