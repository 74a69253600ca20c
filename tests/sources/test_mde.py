from datetime import UTC, datetime

from endpoint_forensics.sources.mde import machine_to_row
from endpoint_forensics.tables import DEVICES

# The documented sample (get-machines.md), plus captured fields.
SAMPLE = {
    "id": "1e5bc9d7e413ddd7902c2932e418702b84d0cc07",
    "computerDnsName": "mymachine1.contoso.com",
    "firstSeen": "2018-08-02T14:55:03.7791856Z",
    "lastSeen": "2018-08-02T14:55:03.7791856Z",
    "osPlatform": "Windows10",
    "version": "1709",
    "osProcessor": "x64",
    "lastIpAddress": "172.17.230.209",
    "lastExternalIpAddress": "167.220.196.71",
    "osBuild": 18209,
    "healthStatus": "Active",
    "rbacGroupId": 140,
    "rbacGroupName": "The-A-Team",
    "riskScore": "Low",
    "exposureLevel": "Medium",
    "isAadJoined": True,
    "aadDeviceId": "80fe8ff8-2624-418e-9591-41f0491218f9",
    "machineTags": ["test tag 1", "test tag 2"],
    "onboardingStatus": "onboarded",
    "ipAddresses": [
        {
            "ipAddress": "10.0.0.4",
            "macAddress": "000D3A1B2C3D",
            "type": "Ethernet",
            "operationalStatus": "Up",
        }
    ],
    "vmMetadata": None,
}


def test_the_documented_record_maps_to_every_column():
    row = machine_to_row(SAMPLE)
    assert isinstance(row, dict)
    assert set(row) <= set(DEVICES.column_names)
    assert row["DeviceId"] == SAMPLE["id"]
    assert row["DeviceName"] == "mymachine1.contoso.com"
    assert row["LastSeen"] == datetime(2018, 8, 2, 14, 55, 3, 779185, tzinfo=UTC)
    assert row["OSBuild"] == 18209
    assert row["OSVersionInfo"] == "1709"
    assert row["RbacGroupId"] == 140
    assert row["MachineTags"] == ["test tag 1", "test tag 2"]
    assert row["IpAddresses"][0]["macAddress"] == "000D3A1B2C3D"
    assert row["OnboardingStatus"] == "Onboarded"  # casing drift folded
    assert row["AdditionalFields"] is None


def test_an_unknown_field_is_kept_not_fatal():
    row = machine_to_row({**SAMPLE, "deviceCategory": "Endpoint", "newThing": {"a": 1}})
    assert isinstance(row, dict)
    assert row["AdditionalFields"] == {"deviceCategory": "Endpoint", "newThing": {"a": 1}}


def test_missing_fields_are_null_not_fatal():
    row = machine_to_row({"id": "abc"})
    assert isinstance(row, dict)
    assert row["DeviceId"] == "abc"
    assert "LastSeen" not in row or row["LastSeen"] is None


def test_a_value_of_the_wrong_type_is_kept_raw():
    row = machine_to_row({**SAMPLE, "lastSeen": "last tuesday", "osBuild": "n/a"})
    assert isinstance(row, dict)
    assert "LastSeen" not in row
    assert row["AdditionalFields"] == {"lastSeen": "last tuesday", "osBuild": "n/a"}


def test_records_without_an_id_are_rejected_with_a_reason():
    assert (
        machine_to_row({k: v for k, v in SAMPLE.items() if k != "id"}) == "machine record has no id"
    )
    assert machine_to_row({**SAMPLE, "id": ""}) == "machine record has no id"
    assert "not an object" in machine_to_row(["not", "a", "record"])


def test_av_health_decodes_modes_string_booleans_and_signature_age():
    from endpoint_forensics.sources.mde import av_health_row

    now = datetime(2022, 8, 3, 0, 3, 39, tzinfo=UTC)
    record = {  # the documented sample (device-health-export-antivirus-health-report-api.md)
        "id": "Sample Guid",
        "machineId": "Sample Machine Guid",
        "computerDnsName": "appblockstg1",
        "osKind": "windows",
        "osPlatform": "Windows10",
        "osVersion": "10.0.19044.1865",
        "avMode": "0",
        "avSignatureVersion": "1.371.1279.0",
        "avEngineVersion": "1.1.19428.0",
        "avPlatformVersion": "4.18.2206.108",
        "lastSeenTime": "2022-08-02T19:40:45Z",
        "quickScanResult": "Completed",
        "quickScanError": "",
        "quickScanTime": "2022-08-02T18:40:15.882Z",
        "fullScanResult": "",
        "fullScanError": "",
        "fullScanTime": None,
        "dataRefreshTimestamp": "2022-08-02T21:16:23Z",
        "avEngineUpdateTime": "2022-08-02T00:03:39Z",
        "avSignatureUpdateTime": "2022-08-02T00:03:39Z",
        "avPlatformUpdateTime": "2022-06-20T16:59:35Z",
        "avIsSignatureUpToDate": "True",
        "avIsEngineUpToDate": "Unknown",
        "avIsPlatformUpToDate": "False",
        "avSignaturePublishTime": "2022-08-01T00:03:39Z",
        "rbacGroupName": "TVM1",
        "rbacGroupId": 4415,
    }
    row = av_health_row(record, now)
    assert row["DeviceId"] == "Sample Machine Guid" and row["DeviceName"] == "appblockstg1"
    assert (row["AvMode"], row["AvModeCode"]) == ("Active", "0")
    assert row["AvIsSignatureUpToDate"] is True
    assert row["AvIsEngineUpToDate"] is None
    assert row["AvIsPlatformUpToDate"] is False
    assert row["SignatureAgeHours"] == 48.0  # from the publish time
    assert row["RbacGroupId"] == 4415 and row["FullScanTime"] is None
    assert row["AdditionalFields"] is None


def test_av_modes_and_the_files_shape():
    from endpoint_forensics.sources.mde import av_health_row

    now = datetime(2024, 1, 2, tzinfo=UTC)
    for code, mode in [
        ("", "Other"),
        ("1", "Passive"),
        ("2", "Disabled"),
        ("4", "EDRBlocked"),
        ("5", "PassiveAudit"),
        ("9", "Other"),
    ]:
        assert av_health_row({"machineId": "m", "avMode": code}, now)["AvMode"] == mode
    gathered = {
        "DeviceId": "m2",
        "DeviceName": "mac-1",
        "OsPlatform": "macOS",
        "DeviceGatheredInfo": '{"AvMode": "1", "AvIsSignatureUptoDate": "False", "AvSignatureUpdateTime": "2024-01-01T00:00:00Z", '
        '"AvScanResults": {"Quick": {"ScanStatus": "Failed", "ErrorCode": "0x80508023", "Timestamp": "2024-01-01T01:00:00Z"}}}',
    }
    row = av_health_row(gathered, now)
    assert row["DeviceId"] == "m2" and row["OSPlatform"] == "macOS"
    assert row["AvMode"] == "Passive" and row["AvIsSignatureUpToDate"] is False
    assert row["QuickScanResult"] == "Failed" and row["QuickScanError"] == "0x80508023"
    assert row["SignatureAgeHours"] == 24.0
