import pytest

from endpoint_forensics.config.models import Secret, TenantConfig
from endpoint_forensics.sources.hunting import (
    HEALTH_SCIDS,
    agent_health_query,
    device_health_row,
    os_family,
)
from endpoint_forensics.tables import AGENT_HEALTH_TESTS


def result(platform, assessments, device="d1"):
    return {
        "DeviceId": device,
        "DeviceName": "pc1",
        "OSPlatform": platform,
        "LastAssessed": "2026-11-20T10:00:00.0000000Z",
        "Assessments": assessments,
    }


def test_windows_results_follow_applicable_and_compliant():
    row = device_health_row(
        result(
            "Windows11",
            [
                "scid-2000=True/True",  # SensorEnabled: pass
                "scid-2001=True/False",  # SensorDataCollection: fail
                "scid-2013=False/",  # PUA not applicable
                "scid-2016=true/true",  # lower case as Kusto's tostring(bool) gives
                "scid-2012=True/",  # compliance unknown
            ],
        )
    )
    assert row["OSFamily"] == "Windows"
    assert row["SensorEnabled"] == "Pass"
    assert row["SensorDataCollection"] == "Fail"
    assert row["PUAProtection"] == "NotApplicable"
    assert row["CloudProtection"] == "Pass"
    assert row["RealtimeProtection"] == "Unknown"
    assert row["TamperProtection"] == "Unknown"  # no row for scid-2003
    assert row["FailingTests"] == 1


def test_macos_tests_without_a_scid_are_not_applicable():
    row = device_health_row(result("macOS", ["scid-5001=True/True", "scid-5092=True/False"]))
    assert row["OSFamily"] == "macOS"
    assert row["SensorEnabled"] == "NotApplicable"
    assert row["AntivirusEnabled"] == "NotApplicable"
    assert row["AntivirusReporting"] == "NotApplicable"
    assert row["SensorDataCollection"] == "Pass"
    assert row["TamperProtection"] == "Fail"
    assert row["BehaviorMonitoring"] == "Unknown"


def test_linux_and_the_vocabulary():
    row = device_health_row(result("Ubuntu", ["scid-6001=True/True"]))
    assert row["OSFamily"] == "Linux"
    assert {row[t] for t in AGENT_HEALTH_TESTS} <= {"Pass", "Fail", "NotApplicable", "Unknown"}
    assert row["TamperProtection"] == "NotApplicable"


def test_family_falls_back_to_the_scids_seen():
    assert os_family(None, ["scid-5001"]) == "macOS"
    assert os_family("SomethingNew", ["scid-6001", "scid-6002"]) == "Linux"
    assert os_family("SomethingNew", ["scid-6001", "scid-5001"]) is None


def test_assessments_as_json_text_are_accepted():
    row = device_health_row(result("Linux", '["scid-6001=True/False"]'))
    assert row["SensorDataCollection"] == "Fail"


def test_values_that_do_not_convert_are_kept_raw_not_nulled():
    """An invalid ``LastAssessed`` (and a name or platform that is not text) became null
    silently; as in every other table, the row keeps the raw value in AdditionalFields."""
    record = {**result("Windows11", ["scid-2000=True/True"]), "LastAssessed": "yesterday"}
    row = device_health_row(record)
    assert row["LastAssessed"] is None
    assert row["AdditionalFields"] == {"LastAssessed": "yesterday"}
    record = {**record, "lastassessed": "x", "DeviceName": 42, "OSPlatform": ["Windows11"]}
    del record["LastAssessed"]
    row = device_health_row({**record, "Assessments": ["scid-2000=True/True"]})
    assert (row["DeviceName"], row["OSPlatform"], row["OSFamily"]) == (None, None, "Windows")
    assert row["AdditionalFields"] == {
        "lastassessed": "x",
        "DeviceName": 42,
        "OSPlatform": ["Windows11"],
    }
    assert device_health_row(result("Windows11", []))["AdditionalFields"] is None


@pytest.mark.parametrize(
    "bad, reason",
    [
        ({"DeviceName": "x", "Assessments": []}, "no DeviceId"),
        ({"DeviceId": "x"}, "no Assessments"),
        ({"DeviceId": "x", "OSPlatform": "iOS", "Assessments": []}, "OS family"),
        ("just text", "not an object"),
    ],
)
def test_unusable_results_are_rejected_with_reasons(bad, reason):
    assert reason in device_health_row(bad)


def test_query_names_every_health_scid_and_the_prefix():
    q = agent_health_query("ab")
    for tests in HEALTH_SCIDS.values():
        for scid in tests.values():
            assert f'"{scid}"' in q
    assert 'startswith "ab"' in q
    assert "startswith" not in agent_health_query()


def test_the_hunting_wait_must_exceed_the_services_200_seconds():
    secret = Secret("s", source="literal")
    base = {"name": "t", "tenant_id": "x", "client_id": "y", "client_secret": secret}
    assert TenantConfig.model_validate(base).hunting_timeout_seconds > 200
    with pytest.raises(ValueError, match="hunting_timeout_seconds"):
        TenantConfig.model_validate({**base, "hunting_timeout_seconds": 200})


def test_the_query_carries_the_full_results_row_count():
    import duckdb_kql

    con = duckdb_kql.connect(":memory:")
    con.execute(
        "CREATE TABLE DeviceTvmSecureConfigurationAssessment AS SELECT * FROM (VALUES"
        " ('ab1', 'pc1', 'Windows11', now(), 'scid-2000', true, true),"
        " ('ab2', 'pc2', 'Windows11', now(), 'scid-2000', true, false),"
        " ('cd3', 'pc3', 'Linux', now(), 'scid-6001', true, true))"
        " AS t(DeviceId, DeviceName, OSPlatform, Timestamp, ConfigurationId, IsApplicable,"
        " IsCompliant)"
    )
    con.execute(
        "CREATE TABLE DeviceInfo AS SELECT * FROM (VALUES ('ab1', now(), true),"
        " ('ab1', now() - INTERVAL 3 DAY, false)) AS t(DeviceId, Timestamp, IsInternetFacing)"
    )
    rows = duckdb_kql.kql(con, agent_health_query("ab") + " | take 1").fetchall()
    assert len(rows) == 1 and rows[0][-1] == 2  # one row came, of two
    result = duckdb_kql.kql(con, agent_health_query())
    facing = [d[0] for d in result.description].index("IsInternetFacing")
    rows = result.fetchall()
    assert [row[-1] for row in rows] == [3, 3, 3]
    # The newest DeviceInfo row of the last two days; a device with none has no signal.
    assert sorted((row[0], row[facing]) for row in rows) == [
        ("ab1", True),
        ("ab2", None),
        ("cd3", None),
    ]
