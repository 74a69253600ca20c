"""Paging past one call's cap: with ``$top`` Defender sends no next link (defender-apis.md B.0-B.2,
B.5.7, B.5.8, F), so the collector pages with ``$skip`` itself and stops when a page repeats."""

import logging
import math
import ssl
from urllib.parse import parse_qs, urlsplit

import duckdb
import httpx
import pytest

from epf_emulator import Emulator, EmulatorSettings, Fault

from .conftest import settings_for, sync

pytestmark = pytest.mark.e2e

DEVICES = 25_000
DATASETS = ["machines", "av_health", "cve_catalog"]


@pytest.fixture(scope="module")
def large_tenant():
    """25,000 devices: two and a half pages of machines and AV rows at the 10,000 cap."""
    with Emulator(EmulatorSettings(iot_sensors=0, devices=DEVICES, seed=25)) as emu:
        yield emu


def client_for(emu):
    """A raw HTTPS client trusting only the emulator's CA: the wire as a user would see it."""
    return httpx.Client(
        verify=ssl.create_default_context(cafile=str(emu.ca_path)), trust_env=False, timeout=60
    )


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def _ok_requests(emu, path):
    return emu.stats()["requests"].get(path, {}).get("200", 0)


def _query(db, sql):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_a_25000_device_tenant_on_json_pages_lands_every_machine_av_row_and_cve(
    large_tenant, tmp_path
):
    truth = large_tenant.stats()["truth"]
    assert truth["EPF_Devices_CL"] == DEVICES
    assert truth["EPF_CveCatalog_CL"] > 8_000  # past one $top page of the catalogue
    assert truth["EPF_AvHealth_CL"] > 10_000
    paths = ("/api/machines", "/api/deviceavinfo", "/api/vulnerabilities")
    before = {p: _ok_requests(large_tenant, p) for p in paths}
    settings = settings_for(large_tenant, tmp_path, export_mode="json", datasets=DATASETS)
    summary = sync(settings)
    assert summary.exit_code == 0, summary.errors()
    db = settings.store.path
    for table, key in (
        ("EPF_Devices_CL", "DeviceId"),
        ("EPF_AvHealth_CL", "DeviceId"),
        ("EPF_CveCatalog_CL", "CveId"),
    ):
        rows, keys = _query(db, f'SELECT count(*), count(DISTINCT "{key}") FROM "{table}"')[0]
        assert rows == keys == truth[table], table  # all of them, each once
    # Whole pages at the caps (10,000; 10,000; 8,000), then the short page that ends the walk.
    calls = {p: _ok_requests(large_tenant, p) - before[p] for p in paths}
    assert calls == {
        "/api/machines": 3,
        "/api/deviceavinfo": math.floor(truth["EPF_AvHealth_CL"] / 10_000) + 1,
        "/api/vulnerabilities": math.floor(truth["EPF_CveCatalog_CL"] / 8_000) + 1,
    }


def test_without_top_machines_come_10000_a_call_with_a_skip_link(large_tenant):
    with client_for(large_tenant) as client:
        headers = bearer(large_tenant.token())
        url: str | None = f"{large_tenant.base_url}/api/machines"
        ids, sizes, links = [], [], []
        while url:
            body = client.get(url, headers=headers).json()
            ids += [m["id"] for m in body["value"]]
            sizes.append(len(body["value"]))
            url = body.get("@odata.nextLink")
            links.append(url)
    assert sizes == [10_000, 10_000, 5_000]
    assert [parse_qs(urlsplit(u).query) for u in links[:2]] == [
        {"$skip": ["10000"]},
        {"$skip": ["20000"]},
    ]
    assert links[2] is None
    assert len(set(ids)) == DEVICES


def test_with_top_no_collection_sends_a_next_link(large_tenant):
    with client_for(large_tenant) as client:
        headers = bearer(large_tenant.token())
        for path, top in (
            ("machines", 10_000),
            ("deviceavinfo", 10_000),
            ("vulnerabilities", 8_000),
            ("recommendations", 5),
        ):
            body = client.get(
                f"{large_tenant.base_url}/api/{path}", params={"$top": top}, headers=headers
            ).json()
            assert len(body["value"]) == top, path  # a full page, and more behind it
            assert "@odata.nextLink" not in body, path


def test_a_filtered_walk_without_top_loops_on_skip_10000(large_tenant):
    # Reported for the service: the links of a filtered list say $skip=10000 again and again.
    with client_for(large_tenant) as client:
        headers = bearer(large_tenant.token())
        url = f"{large_tenant.base_url}/api/machines"
        first = client.get(url, params={"$filter": "rbacGroupId ge 0"}, headers=headers).json()
        second = client.get(first["@odata.nextLink"], headers=headers).json()
        third = client.get(second["@odata.nextLink"], headers=headers).json()
    query = parse_qs(urlsplit(second["@odata.nextLink"]).query)
    assert query == {"$skip": ["10000"], "$filter": ["rbacGroupId ge 0"]}
    assert second["@odata.nextLink"] == first["@odata.nextLink"]
    assert [m["id"] for m in third["value"]] == [m["id"] for m in second["value"]]


@pytest.mark.parametrize("after", [1, 2])
def test_the_collector_stops_when_a_page_repeats(tmp_path, caplog, after):
    # From request after+1 on, the emulator ignores $skip: the first page comes again.
    faults = (Fault("/api/machines", 200, times=100, after=after, ignore_skip=True),)
    with Emulator(EmulatorSettings(iot_sensors=0, devices=45, seed=4, faults=faults)) as emu:
        settings = settings_for(emu, tmp_path, datasets=["machines"], page_size=10)
        with caplog.at_level(logging.WARNING, "endpoint_forensics.http.paging"):
            summary = sync(settings)
        assert summary.exit_code == 0, summary.errors()
        assert emu.stats()["faults"][0]["injected"] == 1  # one repeat, and no request after it
        assert _ok_requests(emu, "/api/machines") == after + 1
    rows, ids = _query(
        settings.store.path, 'SELECT count(*), count(DISTINCT "DeviceId") FROM "EPF_Devices_CL"'
    )[0]
    assert rows == ids == 10 * after  # the pages before the repeat, each once
    assert "repeated an earlier page" in caplog.text
    assert f"stopped after {10 * after} records" in caplog.text
    # The run record says the snapshot may be incomplete, and why.
    [gap] = summary.outcomes[0].gaps
    assert "repeated an earlier page" in gap["reason"] and "may be incomplete" in gap["reason"]
    [recorded] = _query(settings.store.path, 'SELECT "Gaps" FROM "EPF_Runs_CL"')[0]
    assert "may be incomplete" in recorded


def test_the_ignore_skip_fault_is_strict():
    with pytest.raises(ValueError, match="ignore_skip"):
        Fault("/api/machines", 200, body="{}", ignore_skip=True)
    with pytest.raises(ValueError, match="ignore_skip"):
        Fault("/api/machines", 500, ignore_skip=True)


def test_an_emulated_collection_answers_the_first_page_when_skip_is_ignored():
    faults = (Fault("/api/deviceavinfo", 200, after=1, ignore_skip=True),)
    with (
        Emulator(EmulatorSettings(iot_sensors=0, devices=30, seed=4, faults=faults)) as emu,
        client_for(emu) as client,
    ):
        headers = bearer(emu.token())
        url = f"{emu.base_url}/api/deviceavinfo"
        first = client.get(url, params={"$top": 5}, headers=headers).json()["value"]
        ignored = client.get(url, params={"$top": 5, "$skip": 5}, headers=headers).json()["value"]
        honoured = client.get(url, params={"$top": 5, "$skip": 5}, headers=headers)
    assert ignored == first
    assert honoured.status_code == 200 and honoured.json()["value"] != first
