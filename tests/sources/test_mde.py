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
