"""MDE and TVM exports (B.5): recommendations, the CVE catalogue, the three TVM export specs,
agent health from hunting, the tenant's scores, the JSON-lines decoder of export parts and
spills, and the device-group move pairing of the vulnerability delta.

Each record of any shape becomes a row both sinks can write, or a reason to quarantine it; a
file of any lines decodes to such rows and rejects (the careful path never raises, the fast
path raises only ``RedoUnit`` or one of our errors, and loses nothing the careful path keeps).
"""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from endpoint_forensics.contracts import Batch, RedoUnit
from endpoint_forensics.sinks.rows import to_arrow
from endpoint_forensics.sources import hunting, mde, scores, tvm, tvm_changes
from endpoint_forensics.sources.decode import LINE_FIELD, ExportSpec, decode_part
from endpoint_forensics.tables import (
    AGENT_HEALTH,
    COMMON_COLUMNS,
    CVE_CATALOG,
    RECOMMENDATIONS,
    KqlType,
)
from endpoint_forensics.tables.catalogues import TENANT_SCORES

from .support import (
    FUZZ,
    check_batch,
    check_row_or_reason,
    json_values,
    records_like,
    scalars,
    tally,
    top_level,
    wire_text,
)

RECOMMENDATION_EXPORT = ExportSpec(
    "recommendations", RECOMMENDATIONS, mde._RECOMMENDATION_FIELDS, ("RecommendationId",)
)
CVE_EXPORT = ExportSpec("vulnerabilities", CVE_CATALOG, mde._CVE_FIELDS, ("CveId",))
TVM_EXPORTS = {
    "vulnerabilities": tvm.VULNERABILITY_EXPORT,
    "secure config": tvm.SECURE_CONFIG_EXPORT,
    "software inventory": tvm.SOFTWARE_EXPORT,
}
DECODED = [*TVM_EXPORTS.values(), tvm_changes.CHANGES, CVE_EXPORT]
_FILES = itertools.count()
_STAMPS = {c.name for c in COMMON_COLUMNS}


def _check_spec(spec: ExportSpec, record: object) -> None:
    check_row_or_reason(spec.table, spec.to_row(record))


# -- record converters -------------------------------------------------------------------------


@FUZZ
@given(top_level(records_like(mde._RECOMMENDATION_FIELDS)))
def test_a_recommendation_record(record: object) -> None:
    tally("mde recommendation record")
    _check_spec(RECOMMENDATION_EXPORT, record)


@FUZZ
@given(top_level(records_like(mde._CVE_FIELDS)))
def test_a_cve_catalog_record(record: object) -> None:
    tally("mde cve catalog record")
    _check_spec(CVE_EXPORT, record)


@FUZZ
@given(top_level(records_like(tvm.VULNERABILITY_FIELDS)))
def test_a_tvm_vulnerability_record(record: object) -> None:
    tally("tvm vulnerability record")
    _check_spec(tvm.VULNERABILITY_EXPORT, record)


@FUZZ
@given(top_level(records_like(tvm.SECURE_CONFIG_EXPORT.fields)))
def test_a_tvm_secure_config_record(record: object) -> None:
    tally("tvm secure config record")
    _check_spec(tvm.SECURE_CONFIG_EXPORT, record)


@FUZZ
@given(top_level(records_like(tvm.SOFTWARE_EXPORT.fields)))
def test_a_tvm_software_inventory_record(record: object) -> None:
    tally("tvm software inventory record")
    _check_spec(tvm.SOFTWARE_EXPORT, record)


@FUZZ
@given(top_level(records_like(tvm_changes.CHANGES.fields)))
def test_a_tvm_vulnerability_change_record(record: object) -> None:
    tally("tvm vulnerability change record")
    _check_spec(tvm_changes.CHANGES, record)


_SCIDS = sorted({s for family in hunting.HEALTH_SCIDS.values() for s in family.values()})
_flags = st.sampled_from(["true", "false", "True", "FALSE", "", "maybe", " true "])
_assessment = st.one_of(
    st.tuples(st.sampled_from(_SCIDS), _flags, _flags).map(lambda t: f"{t[0]}={t[1]}/{t[2]}"),
    wire_text,
    scalars,
)
_assessments = st.lists(_assessment, max_size=6)
_health_values = st.one_of(
    scalars,
    scalars,
    _assessments,
    _assessments.map(lambda a: orjson.dumps(a).decode()),
    st.sampled_from(["Windows10", "Windows11", "macOS", "Linux", "Ubuntu", "osx", "iOS"]),
    json_values(3),
)
_HEALTH_FIELDS = [
    "DeviceId",
    "DeviceName",
    "OSPlatform",
    "Assessments",
    "LastAssessed",
    "IsInternetFacing",
]


@FUZZ
@given(top_level(records_like(_HEALTH_FIELDS, values=_health_values)))
def test_a_hunting_device_health_record(record: object) -> None:
    tally("hunting device health row")
    check_row_or_reason(AGENT_HEALTH, hunting.device_health_row(record))


@FUZZ
@given(
    st.sampled_from(sorted(scores.SCORE_ENDPOINTS)),
    top_level(records_like(["score", "time", "@odata.context"])),
)
def test_a_score_answer(name: str, body: object) -> None:
    tally("scores score row")
    check_row_or_reason(TENANT_SCORES, scores._score_row((name, body)))


# -- decode_part -------------------------------------------------------------------------------

_garbage = st.one_of(
    st.sampled_from([b"{", b"not json", b'{"a": 1', b"[1, 2", b"\xff\xfe", b"NaN", b'"x']),
    st.binary(max_size=20).filter(lambda b: b"\n" not in b),
)


def _lines(spec: ExportSpec) -> st.SearchStrategy[list[bytes]]:
    record = top_level(records_like(spec.fields)).map(orjson.dumps)
    line = st.one_of(record, record, record, record, _garbage, st.sampled_from([b"", b"  "]))
    return st.lists(line, max_size=5)


@st.composite
def _part(draw: st.DrawFn) -> tuple[ExportSpec, list[bytes], bool, bool, set[int]]:
    """A file to decode, and the ``_line`` numbers to skip. Like the delta's spill, a file
    with skipped lines numbers each object it holds (and only objects)."""
    spec = draw(st.sampled_from(DECODED))
    lines = draw(_lines(spec))
    skip: set[int] = set()
    if draw(st.booleans()):
        numbered = []
        for n, line in enumerate(lines):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                numbered.append(line)
                continue
            if isinstance(record, dict):
                record = {**record, LINE_FIELD: n}
            numbered.append(orjson.dumps(record))
        lines = numbered
        skip = draw(st.sets(st.integers(0, max(len(lines), 1)), max_size=3))
    return spec, lines, draw(st.booleans()), draw(st.booleans()), skip


def _write(tmp: Path, lines: list[bytes], *, gz: bool, truncate: bool) -> Path:
    data = b"".join(line + b"\n" for line in lines)
    if truncate and lines:
        data = data[: max(0, len(data) - 1 - len(lines[-1]) // 2)]  # cut in the last line
    path = tmp / f"part-{next(_FILES):05d}.json{'.gz' if gz else 'l'}"
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _decoded(batches: list[Batch], tmp: Path) -> tuple[list[str], list[str]]:
    """What a decode gave, comparable between its paths: each row's values as the sinks write
    them (one JSON text a row, dynamic values parsed, sorted), and each reject's reason."""
    rows: list[str] = []
    reasons: list[str] = []
    for batch in batches:
        check_batch(batch, tmp)
        reasons += [r.reason for r in batch.rejects]
        tables = [batch.arrow] if batch.arrow is not None else []
        if batch.rows:
            tables.append(to_arrow(batch.table, batch.rows, stamped=_STAMPS))
        dynamic = {c.name for c in batch.table.columns if c.type is KqlType.DYNAMIC}
        for table in tables:
            for row in table.to_pylist():
                shown = {
                    k: (orjson.loads(v) if k in dynamic and v is not None else v)
                    for k, v in row.items()
                }
                rows.append(orjson.dumps(shown, option=orjson.OPT_SORT_KEYS, default=str).decode())
    return sorted(rows), sorted(reasons)


@FUZZ
@given(_part())
def test_decode_part(
    tmp_path: Path, case: tuple[ExportSpec, list[bytes], bool, bool, set[int]]
) -> None:
    tally("decode_part (fast and careful)")
    spec, lines, gz, truncate, skip = case
    path = _write(tmp_path, lines, gz=gz, truncate=truncate)
    careful = _decoded(list(decode_part(path, spec, careful=True, skip_lines=skip)), tmp_path)
    try:
        fast = _decoded(list(decode_part(path, spec, careful=False, skip_lines=skip)), tmp_path)
    except RedoUnit as exc:  # the pipeline reads the unit again, carefully
        assert str(exc).strip(), "RedoUnit without a message"
        return
    # A PermanentError here would lose a part that the careful path reads (the pipeline
    # falls back on RedoUnit only): every file these cases write is whole and readable.
    assert fast[0] == careful[0], "the fast path gave other rows than the careful path"
    # The reasons may differ: a line ``null`` is "not an object" to one, "has no DeviceId" to
    # the other.
    assert len(fast[1]) == len(careful[1]), "the fast path refused other records"


# -- the vulnerability delta -------------------------------------------------------------------

_change_values = st.one_of(
    st.sampled_from(["Fixed", "New", "Updated"]),
    st.sampled_from(["r1", "r2", "g1", "g2"]),
    st.sampled_from(["2026-03-04T05:06:07Z", "2026-03-04 05:06:07"]),
    scalars,
)
_CHANGE_KEYS = ["id", "eventTimestamp", "status", "rbacGroupName", "rbacGroupId"]


@FUZZ
@given(top_level(records_like(_CHANGE_KEYS, values=_change_values)))
def test_a_raw_change_key(record: Any) -> None:
    tally("tvm_changes _raw_change_key")
    if not isinstance(record, dict):
        return  # the spill reads only objects for their key
    key, event = tvm_changes._raw_change_key(record)
    assert isinstance(key, str)
    assert event is None or event.tzinfo is not None


@FUZZ
@given(
    st.lists(top_level(records_like(_CHANGE_KEYS, values=_change_values)), max_size=6),
    st.booleans(),
)
def test_group_move_lines(tmp_path: Path, records: list[Any], numbered: bool) -> None:
    tally("tvm_changes group_move_lines")
    lines = [
        orjson.dumps({**r, LINE_FIELD: n} if numbered and isinstance(r, dict) else r)
        for n, r in enumerate(records)
    ]
    path = _write(tmp_path, lines, gz=False, truncate=False)
    moves = tvm_changes.group_move_lines(path)  # a spill is ours: the pairing never fails
    assert moves <= set(range(len(records))) | {None}
