"""AV health via files (``InfoGatheringExport``, defender-apis.md B.2, F): ``DeviceGatheredInfo``
and its ``AvScanResults`` come as objects or JSON-encoded strings, the up-to-date flags as
strings or booleans; a sync keeps every scan result and flag of both forms."""

import gzip
import ssl
from datetime import UTC, datetime

import httpx
import orjson
import pytest

from endpoint_forensics.workspace import store
from epf_emulator import Emulator, EmulatorSettings

from .conftest import settings_for, sync

pytestmark = pytest.mark.e2e

FLAGS = {"True": True, "False": False, "Unknown": None}
SCAN_FIELDS = ("ScanResult", "ScanError", "ScanTime")


def _wire_time(text):
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _emulator_view(emu):
    """The emulator's own answers, read as a plain client: the JSON records (its truth of
    every AV field) and, per device, the forms its export files used."""
    with httpx.Client(
        verify=ssl.create_default_context(cafile=str(emu.ca_path)), trust_env=False, timeout=60
    ) as client:
        token = emu.token()  # a valid WindowsDefenderATP token, all roles
        headers = {"Authorization": f"Bearer {token}"}
        records = client.get(
            f"{emu.base_url}/api/deviceavinfo", params={"$top": 10_000}, headers=headers
        ).json()["value"]
        export = client.get(
            f"{emu.base_url}/api/machines/InfoGatheringExport", headers=headers
        ).json()
        forms = {}
        for url in export["exportFiles"]:
            for raw in gzip.decompress(client.get(url).content).splitlines():
                line = orjson.loads(raw)
                info = line["DeviceGatheredInfo"]
                decoded = orjson.loads(info) if isinstance(info, str) else info
                forms[line["DeviceId"]] = (
                    type(info).__name__,
                    type(decoded["AvScanResults"]).__name__,
                    type(decoded["AvIsSignatureUptoDate"]).__name__,
                )
    return {r["machineId"]: r for r in records}, forms


def test_a_files_sync_keeps_every_scan_result_and_flag_of_both_forms(tmp_path):
    settings = EmulatorSettings(iot_sensors=0, devices=240, seed=8, export_part_rows=70)
    with Emulator(settings) as emu:
        config = settings_for(emu, tmp_path, export_mode="files", datasets=["av_health"])
        summary = sync(config)
        assert summary.exit_code == 0, summary.errors()
        truth, forms = _emulator_view(emu)
        assert emu.stats()["requests"]["/api/machines/InfoGatheringExport"] == {"200": 2}
    assert len(truth) == len(forms) == summary.outcomes[0].rows
    # The export mixed both forms of each of the three.
    assert {f[0] for f in forms.values()} == {"str", "dict"}
    assert {f[1] for f in forms.values()} == {"str", "dict"}
    assert {f[2] for f in forms.values()} == {"str", "bool", "NoneType"}
    rows = {
        r["DeviceId"]: r for r in store.run_query(config.store.path, "EPF_AvHealth_CL").records()
    }
    assert set(rows) == set(truth)
    kept = {"str": 0, "dict": 0}
    for device, record in truth.items():
        row = rows[device]
        for kind in ("quick", "full"):
            assert row[f"{kind.title()}ScanResult"] == record[f"{kind}ScanResult"], device
            assert row[f"{kind.title()}ScanError"] == record[f"{kind}ScanError"], device
            stored = _wire_time(row[f"{kind.title()}ScanTime"])
            assert stored == _wire_time(record[f"{kind}ScanTime"]), device
        for flag in ("Signature", "Engine", "Platform"):
            expected = FLAGS[record[f"avIs{flag}UpToDate"]]
            assert row[f"AvIs{flag}UpToDate"] is expected, (device, flag)
        if record["quickScanResult"]:
            kept[forms[device][1]] += 1
    # Not vacuous: scan results of devices whose AvScanResults came as a string, and as an object.
    assert kept["str"] > 10 and kept["dict"] > 10
    assert not any("AvScanResults" in (row["AdditionalFields"] or {}) for row in rows.values())
