"""Defender for Endpoint REST datasets: device inventory (``GET /api/machines``, B.1).

One function per dataset; each yields batches for one table. Knows nothing of sinks.
May import ``http``, ``ratelimit``, ``tables``, ``contracts`` and ``config``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from endpoint_forensics.config import TenantConfig
from endpoint_forensics.contracts import Batch, batch_of
from endpoint_forensics.errors import HttpStatusError
from endpoint_forensics.http import ApiClient
from endpoint_forensics.ratelimit import RateBudget
from endpoint_forensics.sources.normalize import (
    Converter,
    as_bool,
    as_datetime,
    as_dynamic,
    as_int,
    as_str,
    convert_record,
)
from endpoint_forensics.tables import DEVICES

__all__ = ["fetch_machines", "machine_to_row"]

log = logging.getLogger(__name__)

# Wire name (lower case: Defender's casing drifts) -> column and converter.
_MACHINE_FIELDS: dict[str, tuple[str, Converter]] = {
    "id": ("DeviceId", as_str),
    "computerdnsname": ("DeviceName", as_str),
    "firstseen": ("FirstSeen", as_datetime),
    "lastseen": ("LastSeen", as_datetime),
    "osplatform": ("OSPlatform", as_str),
    "osversion": ("OSVersion", as_str),
    "version": ("OSVersionInfo", as_str),
    "osprocessor": ("OSProcessor", as_str),
    "osarchitecture": ("OSArchitecture", as_str),
    "osbuild": ("OSBuild", as_int),
    "lastipaddress": ("LastIpAddress", as_str),
    "lastexternalipaddress": ("LastExternalIpAddress", as_str),
    "healthstatus": ("HealthStatus", as_str),
    "onboardingstatus": ("OnboardingStatus", as_str),
    "devicevalue": ("DeviceValue", as_str),
    "rbacgroupid": ("RbacGroupId", as_int),
    "rbacgroupname": ("RbacGroupName", as_str),
    "riskscore": ("RiskScore", as_str),
    "exposurelevel": ("ExposureLevel", as_str),
    "isaadjoined": ("IsAadJoined", as_bool),
    "aaddeviceid": ("AadDeviceId", as_str),
    "machinetags": ("MachineTags", as_dynamic),
    "ipaddresses": ("IpAddresses", as_dynamic),
    "agentversion": ("AgentVersion", as_str),
    "defenderavstatus": ("DefenderAvStatus", as_str),
    "managedby": ("ManagedBy", as_str),
    "managedbystatus": ("ManagedByStatus", as_str),
    "ispotentialduplication": ("IsPotentialDuplication", as_bool),
    "mergedintomachineid": ("MergedIntoMachineId", as_str),
    "isexcluded": ("IsExcluded", as_bool),
    "exclusionreason": ("ExclusionReason", as_str),
    "vmmetadata": ("VmMetadata", as_dynamic),
}

# The doc says `onboarded`, captures say `Onboarded`: store one spelling.
_ONBOARDING_CANONICAL = {
    v.lower(): v for v in ("Onboarded", "CanBeOnboarded", "Unsupported", "InsufficientInfo")
}


def fetch_machines(client: ApiClient, tenant: TenantConfig, budget: RateBudget) -> Iterator[Batch]:
    """Yield one batch per page of ``GET /api/machines``, to the last page.

    A record without a device id is rejected with its reason; unknown fields are kept in
    ``AdditionalFields``; missing fields are null. An empty tenant answers 404 (B.1): no rows.
    """
    url = f"{tenant.mde_base_url}/api/machines"
    try:
        for page in client.iter_odata_pages(
            url, scope=tenant.mde_scope, budget=budget, params={"$top": str(tenant.page_size)}
        ):
            yield batch_of(DEVICES, page, machine_to_row)
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
    row, extra = convert_record(record, _MACHINE_FIELDS)
    device_id = row.get("DeviceId")
    if not device_id:
        return "machine record has no id"
    status = row.get("OnboardingStatus")
    if isinstance(status, str):
        row["OnboardingStatus"] = _ONBOARDING_CANONICAL.get(status.lower(), status)
    row["AdditionalFields"] = extra or None
    return row
