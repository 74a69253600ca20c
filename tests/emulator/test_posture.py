"""The TVM and AV posture endpoints: shapes, wire quirks, paging, consistency and the truth."""

from __future__ import annotations

import base64
import re
from collections import Counter
from datetime import datetime
from typing import Any

import httpx
import orjson

from endpoint_forensics.tables.datasets import dataset_names
from epf_emulator import Emulator

from .conftest import bearer, get_all

TVM_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
EVENT_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{7}$")
SCA_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$")
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")
VECTOR = re.compile(
    r"^CVSS:3\.1/AV:[NALP]/AC:[LH]/PR:[NLH]/UI:[NR]/S:[UC]/C:[HLN]/I:[HLN]/A:[HLN]$"
)


def _url(emu: Emulator, name: str) -> str:
    return f"{emu.base_url}/api/machines/{name}"


def test_vulnerability_records_have_the_documented_shape(
    vulnerabilities: list[dict[str, Any]],
) -> None:
    nulls = [r for r in vulnerabilities if r["cveId"] is None]
    cves = [r for r in vulnerabilities if r["cveId"] is not None]
    assert nulls and cves  # software without known CVEs is part of the export
    for r in vulnerabilities[:500]:
        assert TVM_TIME.match(r["lastSeenTimestamp"]) and TVM_TIME.match(r["firstSeenTimestamp"])
        assert r["firstSeenTimestamp"] <= r["lastSeenTimestamp"]
        assert isinstance(r["rbacGroupId"], int) and isinstance(r["rbacGroupName"], str)
        assert r["id"] == (
            f"{r['deviceId']}_{r['softwareName']}_{r['softwareVersion']}_{r['cveId'] or ''}_"
        )
        assert r["recommendationReference"] == f"va-_-{r['softwareVendor']}-_-{r['softwareName']}"
        assert r["exploitabilityLevel"] in (
            "NoExploit",
            "ExploitIsPublic",
            "ExploitIsVerified",
            "ExploitIsInKit",
        )
        assert isinstance(r["diskPaths"], list) and isinstance(r["registryPaths"], list)
        assert isinstance(r["securityUpdateAvailable"], bool)
    assert all(r["vulnerabilitySeverityLevel"] is None for r in nulls)
    assert {r["vulnerabilitySeverityLevel"] for r in cves} <= {"Low", "Medium", "High", "Critical"}
    assert len({r["id"] for r in vulnerabilities}) == len(vulnerabilities)
    # A few records carry a column no document lists.
    assert 0 < sum("cveMitigationStatus" in r for r in vulnerabilities) < len(vulnerabilities) / 20


def test_about_the_configured_cve_rows_per_device(
    posture_emu: Emulator, vulnerabilities: list[dict[str, Any]]
) -> None:
    per_device = Counter(r["deviceId"] for r in vulnerabilities if r["cveId"])
    average = sum(per_device.values()) / posture_emu.stats()["truth"]["EPF_AvHealth_CL"]
    assert 30 * 0.7 < average < 30 * 1.3


def test_every_vulnerability_belongs_to_installed_software(
    vulnerabilities: list[dict[str, Any]], software: list[dict[str, Any]]
) -> None:
    installed = {
        (r["deviceId"], r["softwareVendor"], r["softwareName"], r["softwareVersion"])
        for r in software
    }
    keys = Counter(
        (r["deviceId"], r["softwareVendor"], r["softwareName"], r["softwareVersion"])
        for r in vulnerabilities
        if r["cveId"]
    )
    assert set(keys) <= installed
    for r in software:
        key = (r["deviceId"], r["softwareVendor"], r["softwareName"], r["softwareVersion"])
        assert r["numberOfWeaknesses"] == keys.get(key, 0)
    # Every installed version has rows in the vulnerability export: CVEs or one null row.
    rows = {
        (r["deviceId"], r["softwareVendor"], r["softwareName"], r["softwareVersion"])
        for r in vulnerabilities
    }
    assert rows == installed


def test_software_inventory_shape(software: list[dict[str, Any]]) -> None:
    statuses = Counter(r["endOfSupportStatus"] for r in software)
    assert set(statuses) <= {
        "None",
        "EOS Version",
        "Upcoming EOS Version",
        "EOS Software",
        "Upcoming EOS Software",
    }
    assert statuses["None"] and len(statuses) >= 3
    for r in software:
        assert TVM_TIME.match(r["softwareFirstSeenTimestamp"])
        if r["endOfSupportStatus"] == "None":
            assert r["endOfSupportDate"] is None
        else:
            assert re.match(r"^\d{4}-\d\d-\d\dT00:00:00\+00:00$", r["endOfSupportDate"])
    assert any("productCodeCpe" in r for r in software)


def test_secure_configuration_is_the_latest_assessment(
    posture_emu: Emulator,
    posture_client: httpx.Client,
    configurations: list[dict[str, Any]],
) -> None:
    token = posture_emu.token("https://graph.microsoft.com", roles=["ThreatHunting.Read.All"])
    query = (
        "DeviceTvmSecureConfigurationAssessment"
        " | summarize arg_max(Timestamp, IsCompliant, IsApplicable) by DeviceId, ConfigurationId"
    )
    response = posture_client.post(
        f"{posture_emu.base_url}/v1.0/security/runHuntingQuery",
        json={"Query": query},
        headers=bearer(token),
    )
    assert response.status_code == 200, response.text
    latest = {
        (r["DeviceId"], r["ConfigurationId"]): (r["IsCompliant"], r["IsApplicable"])
        for r in response.json()["results"]
    }
    served = {
        (r["deviceId"], r["configurationId"]): (r["isCompliant"], r["isApplicable"])
        for r in configurations
    }
    assert served == latest
    per_device = Counter(r["deviceId"] for r in configurations)
    assert all(20 <= n <= 30 for n in per_device.values())
    for r in configurations[:300]:
        assert SCA_TIME.match(r["timestamp"])
        assert isinstance(r["configurationImpact"], int) and 1 <= r["configurationImpact"] <= 10
        assert r["recommendationReference"] == f"sca-_-{r['configurationId']}"
        assert r["configurationCategory"] in (
            "Application",
            "OS",
            "Network",
            "Accounts",
            "Security controls",
        )


def test_antivirus_health_records(posture_emu: Emulator, av: list[dict[str, Any]]) -> None:
    assert len(av) == posture_emu.stats()["truth"]["EPF_AvHealth_CL"]
    modes = Counter(r["avMode"] for r in av)
    assert modes.most_common(1)[0][0] == "0" and "1" in modes
    assert set(modes) <= {"", "0", "1", "2", "3", "4", "5"}
    assert {r["osKind"] for r in av} == {"windows", "mac", "linux"}
    for r in av:
        assert r["id"] == r["machineId"]
        for key in ("avIsSignatureUpToDate", "avIsEngineUpToDate", "avIsPlatformUpToDate"):
            assert r[key] in ("True", "False", "Unknown")
        assert r["quickScanResult"] in ("Completed", "Canceled", "Failed", "")
        assert (r["quickScanTime"] is None) == (r["quickScanResult"] == "")
        assert r["quickScanError"] == "" or re.match(r"^0x[0-9a-f]{8}$", r["quickScanError"])
        assert ISO_Z.match(r["lastSeenTime"]) and ISO_Z.match(r["avSignatureUpdateTime"])
        assert isinstance(r["rbacGroupId"], int)
    stale = Counter(r["avIsSignatureUpToDate"] for r in av)
    assert stale["True"] > stale["False"] > 0


def test_deviceavinfo_pages_by_20_and_filters(
    posture_emu: Emulator, posture_client: httpx.Client, posture_token: str
) -> None:
    url = f"{posture_emu.base_url}/api/deviceavinfo"
    first = posture_client.get(url, headers=bearer(posture_token)).json()
    assert len(first["value"]) == 20 and first["@odata.nextLink"].endswith("$skip=20")
    records, _ = get_all(
        posture_client, url, posture_token, **{"$filter": "osKind eq 'linux' and avMode eq '0'"}
    )
    assert records and all(r["osKind"] == "linux" and r["avMode"] == "0" for r in records)
    for query, code in (("$filter=id eq 'x'", "ODataError"), ("$top=10001", "BadRequest")):
        response = posture_client.get(f"{url}?{query}", headers=bearer(posture_token))
        assert response.status_code == 400 and response.json()["error"]["code"] == code


def test_json_pages_follow_skiptokens_and_top_stops_paging(
    posture_emu: Emulator, posture_client: httpx.Client, posture_token: str
) -> None:
    url = _url(posture_emu, "SecureConfigurationsAssessmentByMachine")
    records, bodies = get_all(posture_client, url, posture_token, pageSize=1000)
    assert len(bodies) == -(-len(records) // 1000) >= 3
    assert all(len(b["value"]) == 1000 for b in bodies[:-1])
    link = bodies[0]["@odata.nextLink"]
    assert "pagesize=1000&$skiptoken=" in link and link.startswith(posture_emu.base_url)
    token = link.split("$skiptoken=")[1].replace("%3D", "=").replace("%2B", "+").replace("%2F", "/")
    decoded = orjson.loads(base64.b64decode(token))
    assert decoded["ExportDefinition"]["TimePath"].count("/") == 2
    assert decoded["ExportFileIndex"] * decoded["PartRows"] + decoded["LineStoppedAt"] == 1000
    top = posture_client.get(f"{url}?$top=7", headers=bearer(posture_token)).json()
    assert len(top["value"]) == 7 and "@odata.nextLink" not in top
    default = posture_client.get(url, headers=bearer(posture_token)).json()
    assert len(default["value"]) == len(records) and "@odata.nextLink" not in default  # < 50,000
    for query in ("pageSize=0", "pageSize=200001", "$skiptoken=garbage", "pageSize=x"):
        response = posture_client.get(f"{url}?{query}", headers=bearer(posture_token))
        assert response.status_code == 400, query
        assert response.json()["error"]["code"] == "BadRequest"


def test_each_endpoint_needs_its_app_role(
    posture_emu: Emulator, posture_client: httpx.Client
) -> None:
    needs = {
        "/api/machines/SoftwareVulnerabilitiesByMachine": "Vulnerability.Read.All",
        "/api/machines/SoftwareInventoryByMachine": "Software.Read.All",
        "/api/machines/SoftwareInventoryExport": "Software.Read.All",
        "/api/machines/InfoGatheringExport": "Vulnerability.Read.All",
        "/api/deviceavinfo": "Machine.Read.All",
        "/api/recommendations": "SecurityRecommendation.Read.All",
        "/api/vulnerabilities": "Vulnerability.Read.All",
    }
    mde = "https://api.securitycenter.microsoft.com"
    for path, role in needs.items():
        others = [
            r
            for r in (
                "Machine.Read.All",
                "Vulnerability.Read.All",
                "Software.Read.All",
                "SecurityRecommendation.Read.All",
            )
            if r != role
        ]
        denied = posture_client.get(
            posture_emu.base_url + path, headers=bearer(posture_emu.token(mde, roles=others))
        )
        assert denied.status_code == 403, path
        assert role in denied.json()["error"]["message"]
        allowed = posture_client.get(
            posture_emu.base_url + path + "?$top=1" * ("Export" not in path),
            headers=bearer(posture_emu.token(mde, roles=[role])),
        )
        assert allowed.status_code == 200, (path, allowed.text[:200])


def test_paths_are_case_insensitive(
    posture_emu: Emulator, posture_client: httpx.Client, posture_token: str
) -> None:
    for path in (
        "/api/Machines/InfoGatheringExport",
        "/api/Vulnerabilities?$top=1",
        "/api/DeviceAvInfo",
    ):
        response = posture_client.get(posture_emu.base_url + path, headers=bearer(posture_token))
        assert response.status_code == 200, path


def test_the_truth_equals_a_recount_from_the_served_data(
    posture_emu: Emulator,
    vulnerabilities: list[dict[str, Any]],
    software: list[dict[str, Any]],
    configurations: list[dict[str, Any]],
    av: list[dict[str, Any]],
    catalogue: list[dict[str, Any]],
    recommendations: list[dict[str, Any]],
) -> None:
    truth = posture_emu.stats()["truth"]
    assert truth["EPF_Vulnerabilities_CL"] == len(vulnerabilities)
    assert truth["EPF_SoftwareInventory_CL"] == len(software)
    assert truth["EPF_SecureConfig_CL"] == len(configurations)
    assert truth["EPF_AvHealth_CL"] == len(av)
    assert truth["EPF_CveCatalog_CL"] == len(catalogue)
    assert truth["EPF_Recommendations_CL"] == len(recommendations)
    assert truth["EPF_Runs_CL"] == len(dataset_names("tenant"))
    assert datetime.fromisoformat(posture_emu.stats()["clock"]["now"]) == posture_emu.now
