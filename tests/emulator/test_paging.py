"""Paging of the OData collections as the service pages them (defender-apis.md B.0-B.2, B.5.7,
B.5.8, F): no next link with ``$top``, the documented caps and default pages, and a CVE
catalogue larger than one ``$top`` page whatever the fleet."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from epf_emulator import Emulator, EmulatorSettings
from epf_emulator.world import cve_catalog as cves
from epf_emulator.world.software import PRODUCTS

from .conftest import bearer, client_for, get_all, get_token

CAPS = {"machines": 10_000, "deviceavinfo": 10_000, "recommendations": 10_000}
CAPS["vulnerabilities"] = 8_000


@pytest.mark.parametrize("path", sorted(CAPS))
def test_with_top_a_collection_sends_no_next_link(
    posture_emu: Emulator, posture_client: httpx.Client, posture_token: str, path: str
) -> None:
    url = f"{posture_emu.base_url}/api/{path}"
    body = posture_client.get(url, params={"$top": 3}, headers=bearer(posture_token)).json()
    assert len(body["value"]) == 3 and "@odata.nextLink" not in body
    # $skip pages on from there, still without links.
    body = posture_client.get(
        url, params={"$top": 3, "$skip": 3}, headers=bearer(posture_token)
    ).json()
    assert len(body["value"]) == 3 and "@odata.nextLink" not in body


@pytest.mark.parametrize("path", sorted(CAPS))
def test_top_over_the_documented_cap_is_400(
    posture_emu: Emulator, posture_client: httpx.Client, posture_token: str, path: str
) -> None:
    url = f"{posture_emu.base_url}/api/{path}"
    at_cap = posture_client.get(url, params={"$top": CAPS[path]}, headers=bearer(posture_token))
    assert at_cap.status_code == 200
    over = posture_client.get(url, params={"$top": CAPS[path] + 1}, headers=bearer(posture_token))
    assert over.status_code == 400
    assert over.json()["error"]["code"] == "BadRequest"
    assert f"The limit of '{CAPS[path]}' for Top query has been exceeded" in over.text


def test_deviceavinfo_pages_20_records_with_a_skip_link_by_default(
    posture_emu: Emulator, posture_client: httpx.Client, posture_token: str
) -> None:
    url = f"{posture_emu.base_url}/api/deviceavinfo"
    first = posture_client.get(url, headers=bearer(posture_token)).json()
    assert len(first["value"]) == 20
    link = first["@odata.nextLink"]
    assert link.startswith(url + "?") and parse_qs(urlsplit(link).query) == {"$skip": ["20"]}
    records, bodies = get_all(posture_client, url, posture_token)
    truth = posture_emu.stats()["truth"]["EPF_AvHealth_CL"]
    assert len(records) == truth and len(bodies) == -(-truth // 20)
    assert len({r["id"] for r in records}) == truth
    assert "@odata.nextLink" not in bodies[-1]


def test_the_cve_catalogue_is_larger_than_one_top_page(
    catalogue: list[dict[str, Any]], posture_emu: Emulator
) -> None:
    # Defender's catalogue is the world's: far more CVEs than any fleet has, most unexposed.
    assert len(catalogue) == posture_emu.stats()["truth"]["EPF_CveCatalog_CL"]
    assert len(catalogue) >= cves.CATALOGUE_MIN > 8_000
    assert len({c["id"] for c in catalogue}) == len(catalogue)
    unexposed = sum(1 for c in catalogue if c["exposedMachines"] == 0)
    assert unexposed > len(catalogue) / 2


def test_an_empty_tenant_still_has_the_worlds_catalogue() -> None:
    with (
        Emulator(EmulatorSettings(iot_sensors=0, devices=0, seed=3)) as emu,
        client_for(emu) as client,
    ):
        token = get_token(client, emu)
        records, bodies = get_all(
            client, f"{emu.base_url}/api/vulnerabilities", token, **{"$top": 8000}
        )
        assert len(records) == emu.stats()["truth"]["EPF_CveCatalog_CL"] >= cves.CATALOGUE_MIN
        assert len(bodies) == 2
        assert all(r["exposedMachines"] == 0 for r in records)


def test_the_added_cves_leave_the_fleets_cves_as_they_were(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    anchor = 1_700_000_000_000_000
    os_versions: dict[tuple[int, int], int] = {}
    kinds = {"client": 40, "server": 10}
    full = cves.build_cves(5, anchor, per_device=30, os_versions=os_versions, kinds=kinds)
    monkeypatch.setattr(cves, "CATALOGUE_MIN", 0)
    fleet_only = cves.build_cves(5, anchor, per_device=30, os_versions=os_versions, kinds=kinds)
    assert len(fleet_only) < 8_000 < len(full)
    assert full[: len(fleet_only)] == fleet_only  # the same CVEs, the same facts
    added = full[len(fleet_only) :]
    assert all(c.prod is None and c.pub_us <= anchor for c in added)  # nobody runs them
    assert {c.product for c in added}.isdisjoint(p.name for p in PRODUCTS)
