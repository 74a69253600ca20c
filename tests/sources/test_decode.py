import gzip
from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pytest

from endpoint_forensics.contracts import RedoUnit
from endpoint_forensics.sources.decode import decode_part
from endpoint_forensics.sources.tvm import SECURE_CONFIG_EXPORT, VULNERABILITY_EXPORT

RECORD = {
    "id": "dev1_edge_10.0_CVE-2024-1_",
    "deviceId": "dev1",
    "rbacGroupName": "hhh",
    "deviceName": "pc1.contoso.com",
    "osPlatform": "Windows11",
    "osVersion": "10.0.22631",
    "osArchitecture": "x64",
    "softwareVendor": "microsoft",
    "softwareName": "edge",
    "softwareVersion": "10.0",
    "cveId": "CVE-2024-1",
    "vulnerabilitySeverityLevel": "High",
    "cvssScore": 7.5,
    "recommendedSecurityUpdate": None,
    "diskPaths": ["C:\\edge.exe"],
    "registryPaths": [],
    "lastSeenTimestamp": "2020-12-30 14:17:26",
    "firstSeenTimestamp": "2020-11-03 10:13:34.8476880",
    "exploitabilityLevel": "NoExploit",
    "securityUpdateAvailable": True,
}


def part(tmp_path, lines):
    path = tmp_path / "part-00000.json.gz"
    with gzip.open(path, "wb") as fh:
        for line in lines:
            fh.write((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n")
    return path


def rows_of(batches):
    rows, rejects = [], []
    for batch in batches:
        if batch.arrow is not None:
            rows.extend(pa.Table.from_batches([batch.arrow]).to_pylist())
        rows.extend(batch.rows)
        rejects.extend(batch.rejects)
    return rows, rejects


def test_the_fast_path_types_every_field(tmp_path):
    records = [
        {**RECORD, "id": f"r{i}", "cveId": None if i % 3 == 0 else RECORD["cveId"]}
        for i in range(10)
    ]
    rows, rejects = rows_of(decode_part(part(tmp_path, records), VULNERABILITY_EXPORT))
    assert rejects == [] and len(rows) == 10
    first = rows[1]
    assert first["RecordId"] == "r1"
    assert first["CvssScore"] == 7.5
    assert first["SecurityUpdateAvailable"] is True
    assert first["LastSeenTimestamp"] == datetime(2020, 12, 30, 14, 17, 26, tzinfo=UTC)
    assert first["FirstSeenTimestamp"] == datetime(2020, 11, 3, 10, 13, 34, 847688, tzinfo=UTC)
    assert orjson.loads(first["DiskPaths"]) == ["C:\\edge.exe"]
    assert first["AdditionalFields"] is None
    assert rows[0]["CveId"] is None  # installed software with no known CVE is kept


def test_unknown_fields_are_kept_and_bad_values_take_the_tolerant_path(tmp_path):
    records = [
        {**RECORD, "brandNew": {"a": 1}},
        {**RECORD, "id": "odd", "cvssScore": "high"},  # not a number
        {**RECORD, "id": "nodevice", "deviceId": ""},  # no key: quarantined
    ]
    rows, rejects = rows_of(decode_part(part(tmp_path, records), VULNERABILITY_EXPORT))
    by_id = {r["RecordId"]: r for r in rows}
    assert set(by_id) == {RECORD["id"], "odd"}
    extra = by_id[RECORD["id"]]["AdditionalFields"]
    assert orjson.loads(extra) == {"brandNew": {"a": 1}}
    assert by_id["odd"].get("CvssScore") is None
    assert by_id["odd"]["AdditionalFields"]["cvssScore"] == "high"  # nothing lost
    assert [r.reason for r in rejects] == ["record has no DeviceId"]


def test_a_line_that_is_not_json_sends_the_part_line_by_line(tmp_path):
    path = part(tmp_path, [RECORD, b"{not json", {**RECORD, "id": "second"}])
    with pytest.raises(RedoUnit):
        list(decode_part(path, VULNERABILITY_EXPORT))
    rows, rejects = rows_of(decode_part(path, VULNERABILITY_EXPORT, careful=True))
    assert [r["RecordId"] for r in rows] == [RECORD["id"], "second"]
    assert rejects[0].reason == "line 2 is not valid JSON" and rejects[0].record == "{not json"


@pytest.mark.parametrize(
    "extra",
    [{"x": 1, "X": 2}, {"DEVICEID": "other"}, {"": 1}],
    ids=["unknown-fields-in-two-casings", "a-known-field-in-two-casings", "an-empty-name"],
)
def test_field_names_sql_cannot_tell_apart_send_the_part_line_by_line(tmp_path, extra):
    """Fuzzing: keys differing only in case, or an empty key, made the SQL reader fail
    (DuckDB "Duplicate named argument", "zero-length delimited identifier") with a
    PermanentError, which loses the part; the line-by-line reader keeps every field."""
    path = part(tmp_path, [{**RECORD, **extra}])
    with pytest.raises(RedoUnit):
        list(decode_part(path, VULNERABILITY_EXPORT))
    rows, rejects = rows_of(decode_part(path, VULNERABILITY_EXPORT, careful=True))
    assert rejects == [] and len(rows) == 1
    kept = {**rows[0]["AdditionalFields"], "deviceId": rows[0]["DeviceId"]}
    assert all(kept[k] == v for k, v in extra.items())


def test_skipping_lines_of_a_part_whose_sample_has_no_line_numbers(tmp_path):
    """Fuzzing: lines to skip (the delta's move pairs, found over every spill file) and a
    spill file whose sample holds no object, so no ``_line``: the SQL failed ("Referenced
    column _line not found") with a PermanentError, losing the delta; now its lines are
    rejected, as by the careful path."""
    path = part(tmp_path, [None, b"null"])
    for careful in (False, True):
        rows, rejects = rows_of(
            decode_part(path, VULNERABILITY_EXPORT, careful=careful, skip_lines={0})
        )
        assert rows == [] and len(rejects) == 2
    path = part(tmp_path, [[1, 2]])
    with pytest.raises(RedoUnit):  # not an object: DuckDB refuses it, the careful path reads
        list(decode_part(path, VULNERABILITY_EXPORT, skip_lines={0}))


def test_an_unreadable_duckdb_message_sends_the_part_line_by_line(tmp_path):
    """Fuzzing: DuckDB quotes a refused line cut at a byte count; cut inside a character
    (here U+10000), its message raised UnicodeDecodeError out of the decode."""
    item = ["00000\x1f\U00010000\U00010000\U00010000"] * 2
    path = part(tmp_path, [item])
    with pytest.raises(RedoUnit):
        list(decode_part(path, VULNERABILITY_EXPORT))
    rows, rejects = rows_of(decode_part(path, VULNERABILITY_EXPORT, careful=True))
    assert rows == [] and [r.record for r in rejects] == [item]


def test_arrow_batches_have_the_tables_column_order(tmp_path):
    """Fuzzing: the SQL put AdditionalFields last, but HistoryKind follows it in the table."""
    path = part(tmp_path, [{"deviceId": False}])
    batches = [b for b in decode_part(path, VULNERABILITY_EXPORT) if b.arrow is not None]
    names = batches[0].arrow.schema.names
    assert names == [c.name for c in VULNERABILITY_EXPORT.table.columns if c.name in names]


def test_pascal_case_spelling_in_files_is_matched(tmp_path):
    record = {
        "DeviceId": "d1",
        "ConfigurationId": "scid-1",
        "IsCompliant": "False",
        "ConfigurationImpact": 9,
        "Timestamp": "2021-01-11 09:47:58.854",
    }
    rows, rejects = rows_of(decode_part(part(tmp_path, [record]), SECURE_CONFIG_EXPORT))
    assert rejects == []
    assert rows[0]["DeviceId"] == "d1" and rows[0]["IsCompliant"] is False
    assert rows[0]["ConfigurationImpact"] == 9.0
    assert rows[0]["AssessedTime"] == datetime(2021, 1, 11, 9, 47, 58, 854000, tzinfo=UTC)


def test_a_line_that_is_not_json_past_the_sample_sends_the_part_line_by_line(tmp_path):
    """DuckDB finds the bad line itself, and its error comes through the Arrow reader."""
    records = [{**RECORD, "id": f"r{i}"} for i in range(3_000)]
    path = part(tmp_path, [*records[:2_500], b'{"deviceId": "x", broken', *records[2_500:]])
    with pytest.raises(RedoUnit, match="Invalid Input Error"):
        list(decode_part(path, VULNERABILITY_EXPORT))
    rows, rejects = rows_of(decode_part(path, VULNERABILITY_EXPORT, careful=True))
    assert len(rows) == 3_000
    assert [r.reason for r in rejects] == ["line 2501 is not valid JSON"]


def test_a_decode_out_of_memory_sends_the_part_line_by_line(tmp_path, monkeypatch):
    """More memory than the SQL decode may take is not a failure: the line-by-line reader,
    bounded by its batch size, reads the same part."""
    from endpoint_forensics.sources import decode

    monkeypatch.setattr(decode, "_DECODE_MEMORY_MB", 8)  # under one JSON read buffer
    records = [{**RECORD, "id": f"r{i}"} for i in range(200)]
    path = part(tmp_path, records)
    with pytest.raises(RedoUnit, match="Out of Memory Error"):
        list(decode_part(path, VULNERABILITY_EXPORT))
    rows, rejects = rows_of(decode_part(path, VULNERABILITY_EXPORT, careful=True))
    assert rejects == [] and [r["RecordId"] for r in rows] == [r["id"] for r in records]
