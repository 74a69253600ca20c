import gzip
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from endpoint_forensics.contracts import RedoUnit
from endpoint_forensics.sources import decode
from endpoint_forensics.sources.decode import LINE_FIELD, decode_part
from endpoint_forensics.sources.tvm import SECURE_CONFIG_EXPORT, VULNERABILITY_EXPORT
from endpoint_forensics.tables import KqlType

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


# -- the fast path keeps every field the careful path keeps -------------------------------------


def _plain(table, row):
    """A row as the sinks see it: every column, dynamic values decoded (the SQL path hands
    them over as JSON text), so rows of the two paths compare equal."""
    out = {}
    for column in table.columns:
        value = row.get(column.name)
        if column.type is KqlType.DYNAMIC and isinstance(value, str) and "_arrow" in row:
            value = orjson.loads(value)
        out[column.name] = value
    return out


def _kept(record):
    """A quarantined record, less its null fields (the SQL path cannot see them)."""
    if isinstance(record, dict):
        record = {k: v for k, v in record.items() if v is not None}
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def _decoded(path, spec, *, careful=False, skip_lines=()):
    """The rows and rejects a unit delivers: the fast path, or, when it gives up
    (``RedoUnit``), the careful path, as the pipeline does."""
    try:
        batches = list(decode_part(path, spec, careful=careful, skip_lines=skip_lines))
    except RedoUnit:
        batches = list(decode_part(path, spec, careful=True, skip_lines=skip_lines))
    rows, rejects = [], []
    for batch in batches:
        if batch.arrow is not None:
            arrow_rows = pa.Table.from_batches([batch.arrow]).to_pylist()
            rows.extend(_plain(spec.table, {**r, "_arrow": True}) for r in arrow_rows)
        rows.extend(_plain(spec.table, r) for r in batch.rows)
        rejects.extend((r.reason, _kept(r.record)) for r in batch.rejects)
    return rows, sorted(rejects)


def _same_as_careful(path, spec, skip_lines=()):
    fast = _decoded(path, spec, skip_lines=skip_lines)
    careful = _decoded(path, spec, careful=True, skip_lines=skip_lines)
    key = lambda row: orjson.dumps(row, option=orjson.OPT_SORT_KEYS, default=str)  # noqa: E731
    assert sorted(fast[0], key=key) == sorted(careful[0], key=key)
    assert fast[1] == careful[1]
    return careful[0]


def test_an_unknown_field_first_seen_past_the_sample_is_kept(tmp_path):
    """The SQL path learnt unknown fields from the first 2,000 lines only: a field that first
    appeared later was dropped, where the careful path keeps it in AdditionalFields."""
    records = [{**RECORD, "id": f"r{i}"} for i in range(2_500)]
    records[2_200] = {**records[2_200], "addedLater": {"a": 1}}
    records[2_300] = {**records[2_300], "DEVICEID": "spelt-otherwise"}
    rows = _same_as_careful(part(tmp_path, records), VULNERABILITY_EXPORT)
    by_id = {r["RecordId"]: r for r in rows}
    assert by_id["r2200"]["AdditionalFields"] == {"addedLater": {"a": 1}}
    assert by_id["r2300"]["AdditionalFields"] == {"DEVICEID": "spelt-otherwise"}
    assert by_id["r2201"]["AdditionalFields"] is None


def test_a_value_of_another_json_type_is_kept_as_the_careful_path_keeps_it(tmp_path):
    """The SQL path reads a text or number field as text, which hid a value's JSON type: a
    list in a text column was stored as its JSON text, ``false`` in a number column was kept
    raw as the string "false", a boolean became "true" where the careful path said "True"."""
    records = [{**RECORD, "id": f"r{i}"} for i in range(6)]
    records[0]["deviceName"] = True
    records[1]["deviceName"] = ["a", 1]
    records[2]["cvssScore"] = False
    records[3]["deviceName"] = "[not a list]"
    records[4]["unknownNull"] = None
    records[5]["osVersion"] = 1e20
    rows = _same_as_careful(part(tmp_path, records), VULNERABILITY_EXPORT)
    by_id = {r["RecordId"]: r for r in rows}
    assert by_id["r0"]["DeviceName"] == "true"
    assert by_id["r1"]["DeviceName"] is None
    assert by_id["r1"]["AdditionalFields"] == {"deviceName": ["a", 1]}
    assert by_id["r2"]["CvssScore"] is None
    assert by_id["r2"]["AdditionalFields"] == {"cvssScore": False}
    assert by_id["r3"]["DeviceName"] == "[not a list]"
    assert by_id["r4"]["AdditionalFields"] is None
    assert by_id["r5"]["OSVersion"] == "1e+20"


def test_a_record_the_raw_reread_does_not_find_sends_the_part_line_by_line(tmp_path, monkeypatch):
    """The refused records are read again by the same conditions; should they not be found
    again, one for one, the part is read line by line rather than lose or repeat one."""
    records = [{**RECORD, "id": "r0", "cvssScore": "high"}, {**RECORD, "id": "r1"}]
    monkeypatch.setattr(decode, "VARCHAR_OF_JSON", "'9.5'")  # a reread that refuses all
    with pytest.raises(RedoUnit, match="1 records the SQL casts refused, 2 read again"):
        list(decode_part(part(tmp_path, records), VULNERABILITY_EXPORT))


_KEYS = ["id", "deviceId", "DeviceId", "cveId", "diskPaths", "new", "New", "", LINE_FIELD]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(_KEYS),
            st.one_of(st.none(), st.sampled_from(["d1", "d2", ""])),
            max_size=5,
        ),
        min_size=1,
        max_size=6,
    ),
    st.integers(1, 3),
    st.sets(st.integers(0, 6), max_size=2),
)
def test_the_fast_path_keeps_every_field_whatever_the_sample_saw(records, sample, skip):
    """Whichever fields the first lines show, and however later lines spell theirs, both
    paths give the same rows (the SQL path learns fields from a sample of ``sample`` lines)."""
    lines = [orjson.dumps(r) for r in records]
    with (
        tempfile.TemporaryDirectory() as folder,
        mock.patch.object(decode, "_SAMPLE_LINES", sample),
    ):
        path = part(Path(folder), lines)
        _same_as_careful(path, VULNERABILITY_EXPORT, skip_lines=skip)
