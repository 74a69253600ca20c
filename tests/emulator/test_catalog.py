"""The catalogues: the CVE catalogue (CVSS v3.1 vectors and scores) and the recommendations."""

from __future__ import annotations

import re
from typing import Any

import httpx

from epf_emulator import Emulator
from epf_emulator.world.cvss import base_score, severity

from .conftest import bearer, get_all

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")
VECTOR = re.compile(
    r"^CVSS:3\.1/AV:[NALP]/AC:[LH]/PR:[NLH]/UI:[NR]/S:[UC]/C:[HLN]/I:[HLN]/A:[HLN]$"
)


def test_cve_catalogue(
    catalogue: list[dict[str, Any]], vulnerabilities: list[dict[str, Any]]
) -> None:
    by_id = {c["id"]: c for c in catalogue}
    in_use = {r["cveId"] for r in vulnerabilities if r["cveId"]}
    assert in_use <= set(by_id)  # every CVE in use is in the catalogue
    assert set(by_id) - in_use  # and some that are not
    for c in catalogue:
        assert VECTOR.match(c["cvssVector"]), c["cvssVector"]
        assert c["cvssV3"] == base_score(c["cvssVector"])
        assert c["severity"] == severity(c["cvssV3"])
        assert 0 <= c["EPSS"] <= 1  # spelt as the doc's property table spells it
        assert c["CveSupportability"].lower() in (
            "supported",
            "not supported",
            "supportedinpremium",
        )
        assert ISO_Z.match(c["publishedOn"]) and c["publishedOn"] <= c["updatedOn"]
        assert c["publicExploit"] == bool(c["exploitTypes"]) == bool(c["exploitUris"])
        assert not c["exploitInKit"] or c["exploitVerified"]
        assert (c["exposedMachines"] > 0) == (c["id"] in in_use)
    for r in vulnerabilities:
        if r["cveId"]:
            assert r["vulnerabilitySeverityLevel"] == by_id[r["cveId"]]["severity"]
            assert r["cvssScore"] == by_id[r["cveId"]]["cvssV3"]


def test_collections_filter_their_documented_fields(
    posture_emu: Emulator,
    posture_client: httpx.Client,
    posture_token: str,
    catalogue: list[dict[str, Any]],
    recommendations: list[dict[str, Any]],
) -> None:
    base = posture_emu.base_url
    cves, _ = get_all(
        posture_client,
        f"{base}/api/vulnerabilities",
        posture_token,
        **{"$filter": "severity eq 'Critical' or cvssV3 ge 8.5"},
    )
    assert cves == [c for c in catalogue if c["severity"] == "Critical" or c["cvssV3"] >= 8.5]
    recent, _ = get_all(
        posture_client,
        f"{base}/api/vulnerabilities",
        posture_token,
        **{"$filter": f"publishedOn ge {catalogue[-1]['publishedOn']}"},
    )
    assert recent and all(c["publishedOn"] >= catalogue[-1]["publishedOn"] for c in recent)
    updates, _ = get_all(
        posture_client,
        f"{base}/api/recommendations",
        posture_token,
        **{"$filter": "remediationType eq 'ConfigurationChange'"},
    )
    assert updates == [r for r in recommendations if r["remediationType"] == "ConfigurationChange"]
    bad = posture_client.get(f"{base}/api/vulnerabilities?$top=8001", headers=bearer(posture_token))
    assert bad.status_code == 400


def test_cvss_scores_match_the_specification_examples() -> None:
    # Worked examples of the FIRST CVSS v3.1 specification and NVD.
    assert base_score("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H") == 9.8
    assert base_score("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H") == 10.0
    assert base_score("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H") == 7.8
    assert base_score("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N") == 6.1
    assert base_score("CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:N/A:N") == 3.1
    assert base_score("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:N") == 0.0


def test_recommendations_count_the_fleet(
    recommendations: list[dict[str, Any]],
    software: list[dict[str, Any]],
    vulnerabilities: list[dict[str, Any]],
    configurations: list[dict[str, Any]],
) -> None:
    va = {r["id"]: r for r in recommendations if r["id"].startswith("va-_-")}
    sca = {r["id"]: r for r in recommendations if r["id"].startswith("sca-_-")}
    assert set(va) == {f"va-_-{r['softwareVendor']}-_-{r['softwareName']}" for r in software}
    assert set(sca) == {f"sca-_-{r['configurationId']}" for r in configurations}
    for rec in va.values():
        installed = {
            r["deviceId"]
            for r in software
            if rec["id"].endswith(f"-_-{r['softwareName']}")
            and rec["vendor"] == r["softwareVendor"]
        }
        exposed = {
            r["deviceId"]
            for r in vulnerabilities
            if r["cveId"] and r["recommendationReference"] == rec["id"]
        }
        assert rec["totalMachineCount"] == len(installed)
        assert rec["exposedMachinesCount"] == len(exposed)
        assert rec["remediationType"] in ("Update", "Upgrade", "Uninstall", "ConfigurationChange")
    for rec in sca.values():
        scid = rec["id"][len("sca-_-") :]
        failing = {
            r["deviceId"]
            for r in configurations
            if r["configurationId"] == scid and r["isApplicable"] and not r["isCompliant"]
        }
        assert rec["exposedMachinesCount"] == len(failing)
        assert rec["remediationType"] == "ConfigurationChange"
