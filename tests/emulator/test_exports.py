"""Via-files exports: the response, the gzip JSON-lines parts, SAS links as Azure Storage checks them."""

from __future__ import annotations

import gzip
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest

from epf_emulator import Emulator, EmulatorSettings

from .conftest import UNTHROTTLED, bearer, client_for, get_all, get_token

EXPORTS = {
    "SoftwareVulnerabilitiesExport": ("VaExport", "SoftwareVulnerabilitiesByMachine"),
    "SecureConfigurationsAssessmentExport": (
        "ScaExport",
        "SecureConfigurationsAssessmentByMachine",
    ),
    "SoftwareInventoryExport": ("SoftwareInventory", "SoftwareInventoryByMachine"),
}


def _export(client: httpx.Client, emu: Emulator, token: str, name: str, **params: Any) -> Any:
    response = client.get(
        f"{emu.base_url}/api/machines/{name}", params=params or None, headers=bearer(token)
    )
    assert response.status_code == 200, response.text
    return response.json()


def _lines(client: httpx.Client, url: str) -> list[dict[str, Any]]:
    response = client.get(url)  # no Authorization: the SAS is the credential
    assert response.status_code == 200, response.text
    assert response.headers["x-ms-blob-type"] == "BlockBlob"
    assert response.content[:2] == b"\x1f\x8b"  # gzip
    return [orjson.loads(line) for line in gzip.decompress(response.content).splitlines()]


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_export_files_hold_what_the_json_export_serves(
    posture_emu: Emulator, posture_client: httpx.Client, posture_token: str, name: str
) -> None:
    folder, json_name = EXPORTS[name]
    body = _export(posture_client, posture_emu, posture_token, name)
    assert body["@odata.context"].endswith(
        "$metadata#microsoft.windowsDefenderATP.api.ExportFilesResponse"
    )
    assert body["generatedTime"].endswith("Z")
    files = body["exportFiles"]
    assert len(files) >= 2  # 2,500 rows per part in this tenant
    for index, url in enumerate(files):
        parts = urlsplit(url)
        assert url.startswith(posture_emu.base_url + "/tvm-export/")
        segments = parts.path.split("/")
        assert segments[4:7] == [folder, "json", f"OrgId={posture_emu.tenant_id}"]
        assert segments[-1].startswith(f"part-{index:05d}-") and segments[-1].endswith(
            ".c000.json.gz"
        )
        query = parse_qs(parts.query)
        assert set(query) == {"sv", "st", "se", "sr", "sp", "sig"}
        assert query["sr"] == ["b"] and query["sp"] == ["r"]
    lines = [line for url in files for line in _lines(posture_client, url)]
    served, _ = get_all(
        posture_client,
        f"{posture_emu.base_url}/api/machines/{json_name}",
        posture_token,
        pageSize=200_000,
    )
    assert len(lines) == len(served)
    # The same records, PascalCase in the files, camelCase on the wire.
    assert [{k.lower(): v for k, v in line.items()} for line in lines] == [
        {k.lower(): v for k, v in record.items()} for record in served
    ]
    # The same instant, the same files.
    again = _export(posture_client, posture_emu, posture_token, name)
    assert [u.split("?")[0] for u in again["exportFiles"]] == [u.split("?")[0] for u in files]


def test_devices_are_listed_in_device_id_order_in_pages_and_export_files(
    posture_emu: Emulator, posture_client: httpx.Client, posture_token: str
) -> None:
    # Undocumented (B.0); the emulator's choice, which the forensics figures depend on: each
    # snapshot lands in the workspace sorted by device (docs/emulator-fidelity.md).
    machines, _ = get_all(posture_client, f"{posture_emu.base_url}/api/machines", posture_token)
    ids = [m["id"] for m in machines]
    assert len(ids) > 1 and ids == sorted(ids)
    for name in sorted(EXPORTS):
        files = _export(posture_client, posture_emu, posture_token, name)["exportFiles"]
        listed = [line["DeviceId"] for url in files for line in _lines(posture_client, url)]
        assert len(set(listed)) > 1 and listed == sorted(listed), name


def test_info_gathering_export_carries_av_health_in_both_forms(
    posture_emu: Emulator, posture_client: httpx.Client, posture_token: str
) -> None:
    body = _export(posture_client, posture_emu, posture_token, "InfoGatheringExport")
    lines = [line for url in body["exportFiles"] for line in _lines(posture_client, url)]
    assert len(lines) == posture_emu.stats()["truth"]["EPF_AvHealth_CL"]
    assert "/InfoGatheringExport/json/" in body["exportFiles"][0]
    forms: dict[str, set[str]] = {"info": set(), "scans": set(), "flag": set()}
    for line in lines:
        assert set(line) >= {
            "DeviceId",
            "DeviceName",
            "OsPlatform",
            "RbacGroupId",
            "DeviceGatheredInfo",
        }
        info = line["DeviceGatheredInfo"]  # an object, or a string holding one (B.2, F)
        forms["info"].add(type(info).__name__)
        if isinstance(info, str):
            info = orjson.loads(info)
        assert info["AvMode"] in ("", "0", "1", "2", "3", "4", "5")
        flag = info["AvIsSignatureUptoDate"]  # a string, or a real boolean (null: Unknown)
        forms["flag"].add(type(flag).__name__)
        assert flag in ("True", "False", "Unknown", True, False, None)
        scans = info["AvScanResults"]  # an object, or a string holding one
        forms["scans"].add(type(scans).__name__)
        if isinstance(scans, str):
            scans = orjson.loads(scans)
        assert set(scans) == {"Quick", "Full"}
    # Both forms of each, mixed across the devices of one export.
    assert forms == {
        "info": {"str", "dict"},
        "scans": {"str", "dict"},
        "flag": {"str", "bool", "NoneType"},
    }
    # URLs last 3 hours by default here, 1 hour for the TVM exports (B.2, B.5.3).
    se = parse_qs(urlsplit(body["exportFiles"][0]).query)["se"][0]
    st = parse_qs(urlsplit(body["exportFiles"][0]).query)["st"][0]
    hours = (
        time.mktime(time.strptime(se, "%Y-%m-%dT%H:%M:%SZ"))
        - time.mktime(time.strptime(st, "%Y-%m-%dT%H:%M:%SZ"))
    ) / 3600
    assert abs(hours - (3 + 5 / 60)) < 0.01  # valid from 5 minutes ago


def test_sas_valid_hours_sets_the_expiry_and_is_bounded(
    posture_emu: Emulator, posture_client: httpx.Client, posture_token: str
) -> None:
    body = _export(
        posture_client, posture_emu, posture_token, "SoftwareInventoryExport", sasValidHours=6
    )
    query = parse_qs(urlsplit(body["exportFiles"][0]).query)
    start = time.strptime(query["st"][0], "%Y-%m-%dT%H:%M:%SZ")
    expiry = time.strptime(query["se"][0], "%Y-%m-%dT%H:%M:%SZ")
    assert abs((time.mktime(expiry) - time.mktime(start)) / 3600 - (6 + 5 / 60)) < 0.01
    # InfoGatheringExport's pages say at most 24 or at most 6: the stricter (B.2, F).
    for name, hours in (("SoftwareInventoryExport", 7), ("InfoGatheringExport", 7)):
        response = posture_client.get(
            f"{posture_emu.base_url}/api/machines/{name}?sasValidHours={hours}",
            headers=bearer(posture_token),
        )
        assert response.status_code == 400 and response.json()["error"]["code"] == "BadRequest"
        assert "'sasValidHours' must be between 1 and 6" in response.text
    assert (
        _export(posture_client, posture_emu, posture_token, "InfoGatheringExport", sasValidHours=6)
    )["exportFiles"]


def test_a_blob_refuses_bearer_tokens_and_forged_or_broken_signatures(
    posture_emu: Emulator, posture_client: httpx.Client, posture_token: str
) -> None:
    body = _export(posture_client, posture_emu, posture_token, "SoftwareInventoryExport")
    url = body["exportFiles"][0]
    with_token = posture_client.get(url, headers=bearer(posture_token))
    assert with_token.status_code == 400
    assert with_token.headers["content-type"].startswith("application/xml")
    assert "<Code>InvalidAuthenticationInfo</Code>" in with_token.text
    forged = posture_client.get(url.replace("sig=", "sig=A"))
    assert forged.status_code == 403 and "<Code>AuthenticationFailed</Code>" in forged.text
    assert "Signature did not match" in forged.text
    broken = posture_client.get(url.split("?")[0] + "?sv=2020-08-04&sr=b&sp=r")
    assert broken.status_code == 403 and "Signature fields not well formed" in broken.text
    missing = posture_client.get(url.replace("part-00000-", "part-99999-"))
    assert missing.status_code == 403  # the signature covers the path


def test_an_expired_link_is_403_and_a_new_request_gives_fresh_links(tmp_path: Any) -> None:
    settings = EmulatorSettings(
        iot_sensors=0,
        devices=30,
        seed=4,
        rate_limits=UNTHROTTLED,
        sas_valid_seconds=1.5,
        state_dir=tmp_path,
    )
    with Emulator(settings) as emu, client_for(emu) as client:
        token = get_token(client, emu)
        url = _export(client, emu, token, "SoftwareVulnerabilitiesExport")["exportFiles"][0]
        assert _lines(client, url)
        time.sleep(2.5)
        expired = client.get(url)
        assert expired.status_code == 403
        assert "<Code>AuthenticationFailed</Code>" in expired.text
        assert "Signature not valid in the specified time frame" in expired.text
        fresh = _export(client, emu, token, "SoftwareVulnerabilitiesExport")["exportFiles"][0]
        assert _lines(client, fresh)
        assert (tmp_path / "exports").is_dir()  # parts live in the state directory
    assert not (tmp_path / "exports").exists()  # and go with the emulator


def test_after_an_advance_the_exports_asked_for_are_made_again_before_the_next_request(
    tmp_path: Any,
) -> None:
    """After an advance, the datasets asked for before are exported as of the new instant
    unasked, and the next request gets that export; a dataset never asked for is not."""
    settings = EmulatorSettings(
        iot_sensors=0, devices=30, seed=4, rate_limits=UNTHROTTLED, state_dir=tmp_path
    )
    with Emulator(settings) as emu, client_for(emu) as client:
        token = get_token(client, emu)
        first = _export(client, emu, token, "SecureConfigurationsAssessmentExport")
        emu.advance(24)
        exports = emu._tenant.exports  # what the emulator holds, before any request
        deadline = time.monotonic() + 30
        while len({job.at for job in exports._jobs.values()}) < 2:
            assert time.monotonic() < deadline, "the export was not made again"
            time.sleep(0.05)
        renewed = {(job.dataset, job.generated_time) for job in exports._jobs.values()}
        body = _export(client, emu, token, "SecureConfigurationsAssessmentExport")
        assert body["generatedTime"] > first["generatedTime"]
        assert len(renewed) == 2 and {d for d, _ in renewed} == {"secure_config"}
        assert ("secure_config", body["generatedTime"]) in renewed  # the request got it
        assert _lines(client, body["exportFiles"][0])
