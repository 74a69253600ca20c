"""An ``InfoGatheringExport`` line in each of the forms clients meet (defender-apis.md B.2, F):
``DeviceGatheredInfo`` and ``AvScanResults`` as objects or JSON-encoded strings, the
up-to-date flags as ``"True"``/``"False"`` strings or real booleans."""

from datetime import UTC, datetime

import orjson
import pytest

from endpoint_forensics.sources.mde import av_health_row

NOW = datetime(2024, 1, 2, tzinfo=UTC)
SCANS = {
    "Quick": {
        "ScanStatus": "Failed",
        "ErrorCode": "0x80508023",
        "Timestamp": "2024-01-01T01:00:00Z",
    },
    "Full": {"ScanStatus": "Completed", "ErrorCode": "", "Timestamp": "2023-12-20T02:30:00.125Z"},
}


def _line(*, info_as_string, scans_as_string, flags_as_booleans):
    flag = {True: "True", False: "False"}
    info = {
        "AvMode": "0",
        "AvIsSignatureUptoDate": False if flags_as_booleans else flag[False],
        "AvIsEngineUptodate": True if flags_as_booleans else flag[True],
        "AvIsPlatformUptodate": None if flags_as_booleans else "Unknown",
        "AvScanResults": orjson.dumps(SCANS).decode() if scans_as_string else SCANS,
    }
    return {
        "DeviceId": "d1",
        "DeviceName": "ws-0001.contoso.com",
        "OsPlatform": "Windows11",
        "DeviceGatheredInfo": orjson.dumps(info).decode() if info_as_string else info,
    }


@pytest.mark.parametrize("info_as_string", [True, False])
@pytest.mark.parametrize("scans_as_string", [True, False])
@pytest.mark.parametrize("flags_as_booleans", [True, False])
def test_every_form_gives_the_same_row(info_as_string, scans_as_string, flags_as_booleans):
    row = av_health_row(
        _line(
            info_as_string=info_as_string,
            scans_as_string=scans_as_string,
            flags_as_booleans=flags_as_booleans,
        ),
        NOW,
    )
    assert isinstance(row, dict), row
    assert (row["QuickScanResult"], row["QuickScanError"]) == ("Failed", "0x80508023")
    assert row["QuickScanTime"] == datetime(2024, 1, 1, 1, tzinfo=UTC)
    assert (row["FullScanResult"], row["FullScanError"]) == ("Completed", "")
    assert row["FullScanTime"] == datetime(2023, 12, 20, 2, 30, 0, 125000, tzinfo=UTC)
    assert row["AvIsSignatureUpToDate"] is False
    assert row["AvIsEngineUpToDate"] is True
    assert row["AvIsPlatformUpToDate"] is None
    assert "AvScanResults" not in (row["AdditionalFields"] or {})


def test_scan_results_that_are_not_json_are_kept_not_lost():
    line = _line(info_as_string=False, scans_as_string=True, flags_as_booleans=True)
    line["DeviceGatheredInfo"]["AvScanResults"] = "{not json"
    row = av_health_row(line, NOW)
    assert isinstance(row, dict) and row.get("QuickScanResult") is None
    assert row["AdditionalFields"]["AvScanResults"] == "{not json"


def test_two_spellings_of_a_field_keep_the_records_own_and_the_other_raw():
    """The files' spellings (``DeviceId``, ``LastSeen``) were renamed to the API's after
    ``DeviceGatheredInfo`` was merged in, so a record holding both spellings kept whichever came
    last, silently: here the device id and the last-seen time of ``DeviceGatheredInfo``. The
    record's own value is kept; the other stays raw in AdditionalFields under its own name,
    as ``convert_record`` keeps a field spelt twice."""
    line = {
        "DeviceId": "d1",
        "DeviceName": "ws-0001.contoso.com",
        "LastSeen": "2024-01-01T00:00:00Z",
        "DeviceGatheredInfo": {
            "AvMode": "0",
            "machineId": "d2",
            "lastSeenTime": "2024-01-01T05:00:00Z",
        },
    }
    row = av_health_row(line, NOW)
    assert row["DeviceId"] == "d1" and row["LastSeenTime"] == datetime(2024, 1, 1, tzinfo=UTC)
    assert row["AdditionalFields"] == {
        "machineId": "d2",
        "lastSeenTime": "2024-01-01T05:00:00Z",
    }


def test_an_empty_field_of_the_record_gives_way_to_the_other_spelling():
    line = {"DeviceId": "", "DeviceGatheredInfo": {"machineId": "d2", "AvMode": "1"}}
    row = av_health_row(line, NOW)
    assert row["DeviceId"] == "d2" and row["AvMode"] == "Passive"
    assert row["AdditionalFields"] == {"DeviceId": ""}


def test_a_field_of_the_record_spelt_alike_in_gathered_info_is_not_lost():
    """``DeviceGatheredInfo`` holding a field of the record under the same name, with another
    value: the record's is kept, the other stays raw in what is left of
    ``DeviceGatheredInfo`` (it was dropped silently); the same value is not kept twice."""
    line = {
        "DeviceId": "d1",
        "AvMode": "0",
        "quickScanResult": "Completed",
        "DeviceGatheredInfo": {"AvMode": "1", "DeviceId": "d1", "AvScanResults": SCANS},
    }
    row = av_health_row(line, NOW)
    assert (row["DeviceId"], row["AvMode"], row["QuickScanResult"]) == ("d1", "Active", "Completed")
    assert row["FullScanResult"] == "Completed"
    assert row["AdditionalFields"] == {
        "DeviceGatheredInfo": {"AvMode": "1", "AvScanResults": SCANS}
    }


def test_the_files_spellings_are_read_without_gathered_info():
    row = av_health_row(
        {"DeviceId": "d1", "DeviceName": "ws-1", "DeviceGatheredInfo": "{oops"}, NOW
    )
    assert row["DeviceId"] == "d1" and row["DeviceName"] == "ws-1"
    assert row["AdditionalFields"] == {"DeviceGatheredInfo": "{oops"}
