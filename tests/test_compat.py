"""The compat profile: legacy rows derived from ours, and the original workbook's kinds of query
run on them in a real DuckDB workspace (through duckdb-kql)."""

from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from endpoint_forensics.contracts import Batch
from endpoint_forensics.sinks.duckdb import DuckDBSink
from endpoint_forensics.sources.hunting import HEALTH_SCIDS
from endpoint_forensics.tables import (
    AGENT_HEALTH,
    AGENT_HEALTH_TESTS,
    COMMON_COLUMNS,
    IOT_CVES,
    IOT_DEVICES,
    IOT_EVENTS,
    TABLES,
    name_problem,
)
from endpoint_forensics.tables.compat import COMPAT_TABLES, LEGACY_MAC_TESTS
from endpoint_forensics.transforms.compat import DERIVED, derive
from endpoint_forensics.workspace.store import QueryError, run_query

from .analytics.kql_support import error_messages

STAMPS = {c.name for c in COMMON_COLUMNS}
# The vocabularies the original wrote (original-connector.md); Unknown has no value.
WINDOWS = {"Pass": "ENABLED", "Fail": "DISABLED", "NotApplicable": "N/A", "Unknown": None}
MAC = {"Pass": "GOOD", "Fail": "BAD", "NotApplicable": "N/A"}
NOW = datetime.now(UTC)  # run_query has no fixed clock, and the workbook filters by ago(14d)
RUN_OLD, RUN_1, RUN_2 = (
    ("run-0", NOW - timedelta(days=20)),
    ("run-1", NOW - timedelta(days=3)),
    ("run-2", NOW - timedelta(days=1)),
)


# The original workbook's kinds of query, as its users run them on the compat tables; each is
# also valid for Sentinel (Microsoft's parser, against the legacy tables' registry schemas).
WORKBOOK = {
    **{
        f"windows-pie-{test}": "AgentHealthStatusWindows_CL | where TimeGenerated > ago(14d)"
        f" | summarize arg_max(TimeGenerated, *) by DeviceId_s | summarize count() by {test}_s"
        for test in AGENT_HEALTH_TESTS
    },
    "windows-grid": "AgentHealthStatusWindows_CL | where TimeGenerated > ago(14d)"
    " | summarize arg_max(TimeGenerated, *) by DeviceId_s"
    " | project DeviceId_s, Computer = DeviceName_s, SensorEnabled_s, RunId | sort by DeviceId_s asc",
    **{
        f"mac-pie-{test}": "MDE_MAC_devicehealth_CL | where TimeGenerated > ago(14d)"
        " | mv-expand Results = parse_json(Results_s)"
        f" | extend DeviceName = tostring(Results.DeviceName), Value = tostring(Results.{test})"
        " | summarize arg_max(TimeGenerated, *) by DeviceName | summarize count() by Value"
        for test in LEGACY_MAC_TESTS
    },
    "mac-grid": "MDE_MAC_devicehealth_CL | mv-expand Results = parse_json(Results_s)"
    " | extend DeviceName = tostring(Results.DeviceName)"
    " | summarize arg_max(TimeGenerated, *) by DeviceName"
    " | project DeviceName, RTP = tostring(Results.RealtimeProtection),"
    " Cloud = tostring(Results.CloudProtection), Tamper = tostring(Results.TamperProtection)"
    " | sort by DeviceName asc",
    # As the original wrote it: Sentinel runs it, duckdb-kql wants the expansion named.
    "mac-original-mv-expand": "MDE_MAC_devicehealth_CL | mv-expand parse_json(Results_s)",
    "iot-devices-grid": "AD4IOT_Devices_CL | where TimeGenerated > ago(14d)"
    " | summarize arg_max(TimeGenerated, *) by id_d | project id_d, name_s, type_s, authorized_b,"
    " engineeringStation_b, ipAddresses_s | sort by id_d asc",
    "iot-devices-by-type": "AD4IOT_Devices_CL | summarize arg_max(TimeGenerated, *) by id_d"
    " | summarize count() by type_s",
    "iot-addresses": "AD4IOT_Devices_CL | summarize arg_max(TimeGenerated, *) by id_d"
    " | mv-expand ip = parse_json(ipAddresses_s) to typeof(string) | summarize count()",
    "iot-cves-per-address": "AD4IOT_CVE_CL | where TimeGenerated > ago(14d)"
    " | summarize arg_max(TimeGenerated, *) by IPAddress, cveId_s | summarize count() by IPAddress",
    "iot-cves-high": "AD4IOT_CVE_CL | summarize arg_max(TimeGenerated, *) by IPAddress, cveId_s"
    " | where todouble(score_s) >= 7 | project IPAddress, cveId_s, score_s, attackVector_s"
    " | sort by IPAddress asc, cveId_s asc",
    "iot-events-by-severity": "AD4IOT_Events_CL | summarize count() by severity_s",
    "iot-events-newest": "AD4IOT_Events_CL | top 1 by timestamp_d desc"
    " | extend EventTime = datetime_add('millisecond', tolong(timestamp_d), datetime(1970-01-01))"
    " | project EventTime, title_s",
    # Sentinel's own conversion, which the local engine lacks.
    "iot-events-unixtime": "AD4IOT_Events_CL"
    " | extend t = unixtime_milliseconds_todatetime(timestamp_d)",
}


@pytest.mark.parametrize("name", sorted(WORKBOOK))
def test_each_original_workbook_query_is_valid_for_sentinel(name, kustology, schema):
    assert error_messages(kustology, WORKBOOK[name], schema) == []


def test_a_wrong_legacy_column_is_caught(kustology, schema):
    # The check above would pass anything if the binder saw no legacy table.
    assert error_messages(
        kustology, WORKBOOK["iot-cves-high"].replace("score_s", "score_d"), schema
    )


def health(device: str, family: str, **results: str) -> dict:
    scids = HEALTH_SCIDS[family]
    row = {"DeviceId": device, "DeviceName": f"{device}.corp", "OSPlatform": family}
    row["OSFamily"] = family
    for test in AGENT_HEALTH_TESTS:
        row[test] = results.get(test, "Pass" if test in scids else "NotApplicable")
    return row


HEALTH_RUNS = {
    RUN_OLD: [health("w-old", "Windows", SensorEnabled="Fail")],  # outside the time range
    RUN_1: [
        health("w1", "Windows"),
        health("w2", "Windows", SensorEnabled="Fail", RealtimeProtection="Unknown"),
        health(
            "w3", "Windows", AntivirusEnabled="Fail", RealtimeProtection="Unknown"
        ),  # not seen again: run 1 is its latest
        health("m1", "macOS", RealtimeProtection="Fail"),
        health("m2", "macOS", TamperProtection="NotApplicable"),
        health("l1", "Linux", RealtimeProtection="Fail"),
    ],
    RUN_2: [
        health("w1", "Windows", SensorEnabled="Fail", CloudProtection="NotApplicable"),
        health("w2", "Windows"),
        health("m1", "macOS", CloudProtection="Unknown"),
        health("m2", "macOS", TamperProtection="NotApplicable"),
        health("l1", "Linux"),
    ],
}


def write(sink: DuckDBSink, table, rows: list[dict], run: tuple[str, datetime]) -> None:
    run_id, when = run
    with sink.open(table, unit=f"t1/{run_id}/{table.name}") as writer:
        writer.write(
            Batch(table, rows=rows),
            {"TimeGenerated": when, "RunId": run_id, "DefenderTenantId": "t1"},
        )


def write_with_legacy(sink: DuckDBSink, table, rows: list[dict], run) -> None:
    """What the compat profile does: our rows, and the legacy rows derived from them."""
    write(sink, table, rows, run)
    for legacy_table, legacy_rows in derive(table.name, rows):
        write(sink, legacy_table, legacy_rows, run)


def latest_in_range(runs: dict, family: str) -> dict[str, dict]:
    """The hand-built rows a workbook grid shows: the newest per device within 14 days."""
    latest: dict[str, dict] = {}
    for (_, when), rows in sorted(runs.items(), key=lambda item: item[0][1]):
        if when > NOW - timedelta(days=14):
            latest.update({r["DeviceId"]: r for r in rows if r["OSFamily"] == family})
    return latest


def counts(result) -> dict:
    return {value: n for value, n in result.rows}


# --- the registry ----------------------------------------------------------------------------


def test_the_legacy_tables_are_registered_with_the_original_names_and_columns():
    legacy = {t.name: t for t in TABLES.values() if t.profile == "compat"}
    assert legacy == {t.name: t for t in COMPAT_TABLES}
    assert all(t.profile == "core" for t in TABLES.values() if t.name.startswith("EPF_"))

    def own(name: str) -> list[str]:
        return [c for c in legacy[name].column_names if c not in STAMPS]

    windows = own("AgentHealthStatusWindows_CL")
    assert windows == ["DeviceId_s", "DeviceName_s", *(f"{t}_s" for t in AGENT_HEALTH_TESTS)]
    assert own("MDE_MAC_devicehealth_CL") == ["Results_s", "DeviceId_s", "DeviceName_s"]
    assert own("AD4IOT_Devices_CL") == [
        "id_d", "name_s", "vendor_s", "type_s", "operatingSystem_s", "ipAddresses_s",
        "macAddresses_s", "protocols_s", "firmware_s", "authorized_b", "engineeringStation_b",
        "scanner_b", "hasDynamicAddress_b", "Appliance",
    ]  # fmt: skip
    assert own("AD4IOT_CVE_CL") == [
        "cveId_s",
        "score_s",
        "attackVector_s",
        "description_s",
        "IPAddress",
        "ipAddress_s",
        "Appliance",
    ]
    assert own("AD4IOT_Events_CL") == [
        "timestamp_d",
        "type_s",
        "title_s",
        "severity_s",
        "content_s",
        "owner_s",
        "Appliance",
    ]
    for table in legacy.values():
        assert table.column_names[: len(COMMON_COLUMNS)] == tuple(c.name for c in COMMON_COLUMNS)
        for column in table.column_names:
            assert name_problem(column) is None, column
            suffix = column.rsplit("_", 1)[-1]
            expected = {"s": "string", "d": "real", "b": "bool"}.get(suffix)
            if expected and column not in STAMPS:
                assert table.column(column).type.value == expected, column


def test_the_mac_tests_are_those_with_a_macos_scid():
    assert set(LEGACY_MAC_TESTS) == set(HEALTH_SCIDS["macOS"])
    assert len(LEGACY_MAC_TESTS) == 8


def test_every_legacy_row_has_exactly_its_tables_columns_less_the_stamps():
    samples = {
        AGENT_HEALTH.name: [health("w1", "Windows"), health("m1", "macOS")],
        IOT_DEVICES.name: IOT_RUNS[RUN_1]["devices"],
        IOT_CVES.name: IOT_RUNS[RUN_1]["cves"],
        IOT_EVENTS.name: IOT_RUNS[RUN_1]["events"],
    }
    produced = set()
    for ours, rows in samples.items():
        for table, legacy in derive(ours, rows):
            produced.add(table.name)
            for row in legacy:  # the sink ignores unknown keys: a typo would lose a column
                assert set(row) == set(table.column_names) - STAMPS
    assert produced == {t.name for t in COMPAT_TABLES}
    assert set(DERIVED) == set(samples)


# --- the row mapping -------------------------------------------------------------------------


def test_windows_values_use_the_original_vocabulary_and_unknown_stays_empty():
    row = health("w", "Windows", SensorEnabled="Fail", PUAProtection="NotApplicable")
    row["RealtimeProtection"] = "Unknown"
    [(table, [legacy])] = list(derive(AGENT_HEALTH.name, [row]))
    assert table.name == "AgentHealthStatusWindows_CL"
    assert legacy["DeviceId_s"] == "w" and legacy["DeviceName_s"] == "w.corp"
    assert legacy["SensorEnabled_s"] == "DISABLED"
    assert legacy["PUAProtection_s"] == "N/A"
    assert legacy["RealtimeProtection_s"] is None
    assert legacy["CloudProtection_s"] == "ENABLED"


def test_a_mac_is_one_row_whose_results_hold_one_object_of_its_macos_tests():
    row = health("m", "macOS", RealtimeProtection="Fail", TamperProtection="NotApplicable")
    row["CloudProtection"] = "Unknown"
    [(table, [legacy])] = list(derive(AGENT_HEALTH.name, [row]))
    assert table.name == "MDE_MAC_devicehealth_CL"
    [result] = orjson.loads(legacy["Results_s"])
    assert result == {
        "DeviceId": "m",
        "DeviceName": "m.corp",
        "SensorDataCollection": "GOOD",
        "ImpairedCommunications": "GOOD",
        "TamperProtection": "N/A",
        "AntivirusSignatureVersion": "GOOD",
        "RealtimeProtection": "BAD",
        "BehaviorMonitoring": "GOOD",
        "PUAProtection": "GOOD",
    }  # CloudProtection is unknown: no key; SensorEnabled has no macOS SCID: no key
    assert (legacy["DeviceId_s"], legacy["DeviceName_s"]) == ("m", "m.corp")


def test_linux_devices_and_unknown_tables_derive_nothing():
    assert list(derive(AGENT_HEALTH.name, [health("l", "Linux")])) == []
    assert list(derive("EPF_Devices_CL", [{"DeviceId": "x"}])) == []


def test_derive_reads_a_one_shot_iterable_for_both_health_tables():
    rows = (r for r in [health("w", "Windows"), health("m", "macOS")])
    assert [(t.name, len(r)) for t, r in derive(AGENT_HEALTH.name, rows)] == [
        ("AgentHealthStatusWindows_CL", 1),
        ("MDE_MAC_devicehealth_CL", 1),
    ]


def test_iot_values_are_written_as_the_original_wrote_them():
    [(_, devices)] = list(derive(IOT_DEVICES.name, IOT_RUNS[RUN_1]["devices"]))
    assert [d["id_d"] for d in devices] == [1.0, 2.0]  # the console's copy is left out
    assert devices[0]["ipAddresses_s"] == '["10.0.0.1"]'
    assert orjson.loads(devices[0]["firmware_s"]) == [{"model": "CJ2", "firmwareVersion": "2.1"}]
    assert devices[1]["macAddresses_s"] is None
    [(_, cves)] = list(derive(IOT_CVES.name, IOT_RUNS[RUN_2]["cves"]))
    assert [(c["IPAddress"], c["ipAddress_s"], c["score_s"]) for c in cves] == [
        ("10.0.0.1", "10.0.0.1", "9.8"),
        ("10.0.0.2", "10.0.0.2", "10.0"),
    ]
    [(_, events)] = list(derive(IOT_EVENTS.name, IOT_RUNS[RUN_1]["events"]))
    assert events[0]["timestamp_d"] == 1_793_534_400_123.0  # 2026-11-01T12:00:00.123Z


# --- the workbook's queries on a real workspace ----------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    path = tmp_path_factory.mktemp("compat") / "ws.duckdb"
    sink = DuckDBSink(path)
    for run, rows in HEALTH_RUNS.items():
        write_with_legacy(sink, AGENT_HEALTH, rows, run)
    for run, parts in IOT_RUNS.items():
        write_with_legacy(sink, IOT_DEVICES, parts["devices"], run)
        write_with_legacy(sink, IOT_CVES, parts["cves"], run)
        write_with_legacy(sink, IOT_EVENTS, parts["events"], run)
    sink.close()
    return path


@pytest.mark.parametrize("test", AGENT_HEALTH_TESTS)
def test_windows_pie_counts_the_latest_row_per_device(workspace, test):
    latest = latest_in_range(HEALTH_RUNS, "Windows")
    expected = Counter(WINDOWS[row[test]] for row in latest.values())
    assert counts(run_query(workspace, WORKBOOK[f"windows-pie-{test}"])) == expected
    # The same answer as our own table gives.
    ours = (
        "EPF_AgentHealth_CL | where TimeGenerated > ago(14d) | where OSFamily == 'Windows' "
        f"| summarize arg_max(TimeGenerated, *) by DeviceId | summarize count() by {test}"
    )
    assert {WINDOWS[k]: n for k, n in run_query(workspace, ours).rows} == expected


def test_windows_pie_literal_counts_and_the_grid_now_has_device_names(workspace):
    assert run_query(workspace, WORKBOOK["windows-grid"]).rows == [
        ("w1", "w1.corp", "DISABLED", "run-2"),  # run 2 changed it: the latest row wins
        ("w2", "w2.corp", "ENABLED", "run-2"),
        ("w3", "w3.corp", "ENABLED", "run-1"),
    ]  # w-old is outside the 14-day range


@pytest.mark.parametrize("test", LEGACY_MAC_TESTS)
def test_mac_pie_expands_results_and_counts_the_latest_per_device(workspace, test):
    latest = latest_in_range(HEALTH_RUNS, "macOS")
    # The workbook reads a missing key as an empty string.
    expected = Counter(MAC.get(row[test], "") for row in latest.values())
    assert counts(run_query(workspace, WORKBOOK[f"mac-pie-{test}"])) == expected


def test_mac_grid_literal_values(workspace):
    assert run_query(workspace, WORKBOOK["mac-grid"]).rows == [
        ("m1.corp", "GOOD", "", "GOOD"),  # run 2: RTP fixed, cloud protection unknown
        ("m2.corp", "GOOD", "GOOD", "N/A"),
    ]


def test_the_unnamed_mv_expand_of_the_original_is_not_supported_by_duckdb_kql(workspace):
    # The original writes `mv-expand parse_json(Results_s)`; duckdb-kql wants a name for it,
    # so the tests above use `mv-expand Results = parse_json(Results_s)`. Sentinel runs both.
    with pytest.raises(QueryError, match="mv-expand"):
        run_query(workspace, WORKBOOK["mac-original-mv-expand"])


# IoT: run 1 sees devices 1 and 2 (plus the console's copy of device 1, which the original
# never read); run 2 sees device 1 unauthorized now, 2 again, and a new device 3.
def _device(device_id: int, kind: str, *, authorized: bool, source="sensor/v1/devices") -> dict:
    return {
        "Appliance": "console-1" if source.startswith("console") else "sensor-1",
        "Source": source,
        "DeviceId": device_id,
        "DeviceName": f"10.0.0.{device_id}",
        "Vendor": "Omron",
        "DeviceType": kind,
        "IpAddresses": [f"10.0.0.{device_id}"],
        "MacAddresses": None if device_id == 2 else [f"00:00:00:00:00:0{device_id}"],
        "Protocols": ["Omron FINS"],
        "Firmware": [{"model": "CJ2", "firmwareVersion": "2.1"}],
        "Authorized": authorized,
        "EngineeringStation": kind == "Engineering Station",
        "Scanner": False,
        "HasDynamicAddress": False,
    }


def _cve(address: str, cve: str, score: float, source="sensor/v1/cves") -> dict:
    return {
        "Source": source,
        "IpAddress": address,
        "CveId": cve,
        "Score": score,
        "AttackVector": "NETWORK",
        "Description": f"{cve} text",
    }


def _event(when: datetime, severity: str, title: str) -> dict:
    return {
        "Source": "sensor/v1/events",
        "EventTime": when,
        "EventType": "PROGRAM_DEVICE",
        "EventTitle": title,
        "Severity": severity,
        "Owner": None,
        "Content": f"{title} on 10.0.0.1",
    }


IOT_RUNS = {
    RUN_1: {
        "devices": [
            _device(1, "PLC", authorized=True),
            _device(2, "HMI", authorized=False),
            _device(501, "PLC", authorized=True, source="console/v1/devices"),
        ],
        "cves": [
            _cve("10.0.0.1", "CVE-2020-0001", 9.8),
            _cve("10.0.0.1", "CVE-2020-0002", 5.0),
            _cve("10.0.0.2", "CVE-2020-0001", 9.8),
            _cve("10.0.0.9", "CVE-2020-0009", 7.5, source="console/v3/cves"),
        ],
        "events": [
            _event(datetime(2026, 11, 1, 12, 0, 0, 123000, tzinfo=UTC), "NOTICE", "PLC Program"),
            _event(datetime(2026, 11, 1, 13, 0, tzinfo=UTC), "ALERT", "Remote access"),
        ],
    },
    RUN_2: {
        "devices": [
            _device(1, "PLC", authorized=False),
            _device(2, "HMI", authorized=False),
            _device(3, "Engineering Station", authorized=True),
        ],
        "cves": [_cve("10.0.0.1", "CVE-2020-0001", 9.8), _cve("10.0.0.2", "CVE-2021-0003", 10.0)],
        "events": [_event(datetime(2026, 11, 2, 8, 30, tzinfo=UTC), "NOTICE", "PLC Stop")],
    },
}


def test_iot_devices_grid_shows_the_latest_row_per_sensor_device(workspace):
    assert run_query(workspace, WORKBOOK["iot-devices-grid"]).rows == [
        (1.0, "10.0.0.1", "PLC", False, False, '["10.0.0.1"]'),  # run 2: no longer authorized
        (2.0, "10.0.0.2", "HMI", False, False, '["10.0.0.2"]'),
        (3.0, "10.0.0.3", "Engineering Station", True, True, '["10.0.0.3"]'),
    ]
    assert counts(run_query(workspace, WORKBOOK["iot-devices-by-type"])) == {
        "PLC": 1,
        "HMI": 1,
        "Engineering Station": 1,
    }
    assert run_query(workspace, WORKBOOK["iot-addresses"]).rows == [(3,)]


def test_iot_cve_grid_counts_latest_cves_per_address(workspace):
    assert counts(run_query(workspace, WORKBOOK["iot-cves-per-address"])) == {
        "10.0.0.1": 2,
        "10.0.0.2": 2,
    }
    assert run_query(workspace, WORKBOOK["iot-cves-high"]).rows == [
        ("10.0.0.1", "CVE-2020-0001", "9.8", "NETWORK"),
        ("10.0.0.2", "CVE-2020-0001", "9.8", "NETWORK"),
        ("10.0.0.2", "CVE-2021-0003", "10.0", "NETWORK"),
    ]  # the console's CVE on 10.0.0.9 is not in the legacy table


def test_iot_events_grid_counts_every_event_and_its_epoch_ms_converts(workspace):
    assert counts(run_query(workspace, WORKBOOK["iot-events-by-severity"])) == {
        "NOTICE": 2,
        "ALERT": 1,
    }
    [(when, title)] = run_query(workspace, WORKBOOK["iot-events-newest"]).rows
    assert (when.replace(tzinfo=UTC), title) == (
        datetime(2026, 11, 2, 8, 30, tzinfo=UTC),
        "PLC Stop",
    )
    # Sentinel's own conversion function has no DuckDB mapping in duckdb-kql 1.1.2.
    with pytest.raises(QueryError, match="unixtime_milliseconds_todatetime"):
        run_query(workspace, WORKBOOK["iot-events-unixtime"])
