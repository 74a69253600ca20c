"""Threat feeds: a KEV catalogue, an EPSS CSV (plain or gzip) and a Vulnrichment record of any
shape become rows both sinks can write, a reason to quarantine, None where the reader says
so, or a ``FeedFormatError`` (an ``EpfError``) with a message. Nothing else."""

from __future__ import annotations

import gzip
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from endpoint_forensics.errors import EpfError
from endpoint_forensics.sources import feeds, vulnrichment
from endpoint_forensics.tables.feeds import EPSS, KEV, VULNRICHMENT

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

_KEV_FIELDS = [
    "cveID",
    "vendorProject",
    "product",
    "vulnerabilityName",
    "dateAdded",
    "shortDescription",
    "requiredAction",
    "dueDate",
    "knownRansomwareCampaignUse",
    "forensicTriage",
    "notes",
    "cwes",
]
_CONTEXT = {
    "FeedVersion": "2026.12.05",
    "FeedSource": "known_exploited_vulnerabilities.json",
    "DateReleased": datetime(2026, 12, 5, tzinfo=UTC),
}


def _expect_feed_error(exc: EpfError) -> None:
    assert str(exc).strip(), f"{type(exc).__name__} without a message"


# -- KEV ---------------------------------------------------------------------------------------

_timestamps = st.one_of(
    st.sampled_from(
        ["2026-03-04T05:06:07.123456Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]
    ),
    scalars,
)
_kev_entries = st.lists(top_level(records_like(_KEV_FIELDS)), max_size=4)
_kev_catalogue = st.one_of(
    records_like(
        ["title", "catalogVersion", "dateReleased", "count"],
        values=st.one_of(_timestamps, scalars, json_values(3)),
    ).flatmap(lambda head: _kev_entries.map(lambda entries: {**head, "vulnerabilities": entries})),
    top_level(records_like(["title", "catalogVersion", "dateReleased", "vulnerabilities"])),
)


def _kev_bytes() -> st.SearchStrategy[bytes]:
    def encode(value: Any) -> bytes:
        try:
            return orjson.dumps(value)
        except TypeError:  # an integer past 64 bits: orjson cannot write it
            return b"{}"

    return st.one_of(_kev_catalogue.map(encode), st.binary(max_size=64))


@FUZZ
@given(_kev_bytes())
def test_a_kev_catalogue_file(body: bytes) -> None:
    tally("kev catalogue file")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "known_exploited_vulnerabilities.json"
        path.write_bytes(body)
        try:
            catalogue = feeds._kev_catalogue(path)
        except feeds.FeedFormatError as exc:
            _expect_feed_error(exc)
            return
        assert isinstance(catalogue["vulnerabilities"], list)
        try:
            context = feeds._kev_context(catalogue, str(path))
        except feeds.FeedFormatError as exc:
            _expect_feed_error(exc)
            return
        for entry in catalogue["vulnerabilities"]:
            check_row_or_reason(KEV, feeds._kev_row(entry, context))


@FUZZ
@given(top_level(records_like(_KEV_FIELDS, values=st.one_of(_timestamps, scalars, json_values(3)))))
def test_a_kev_entry(entry: object) -> None:
    tally("kev entry")
    check_row_or_reason(KEV, feeds._kev_row(entry, _CONTEXT))


# -- EPSS --------------------------------------------------------------------------------------

_dates = st.one_of(
    st.sampled_from(["2026-12-01T00:00:00+0000", "2026-12-01", "0001-01-01T00:00:00+0100"]),
    st.datetimes().map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S+0000")),
    wire_text,
)
_header = st.one_of(
    st.tuples(st.sampled_from(["v2025.03.14", "v2023.03.01", ""]) | wire_text, _dates).map(
        lambda p: f"#model_version:{p[0]},score_date:{p[1]}"
    ),
    wire_text,
)
_columns = st.one_of(st.just("cve,epss,percentile"), st.just("cve,epss,percentile"), wire_text)
_valid_row = st.tuples(
    st.integers(1999, 2030),
    st.integers(1, 10**7),
    st.floats(0, 1),
    st.floats(0, 1),
).map(lambda r: f"CVE-{r[0]}-{r[1]:04d},{r[2]:.5f},{r[3]:.5f}")
_hostile_row = st.one_of(
    st.lists(wire_text, max_size=4).map(",".join),
    st.tuples(wire_text, wire_text, wire_text).map(lambda r: f"CVE-{r[0]},{r[1]},{r[2]}"),
    wire_text,
)
_epss_text = st.tuples(
    _header, _columns, st.lists(st.one_of(_valid_row, _valid_row, _hostile_row), max_size=6)
).map(lambda p: "\n".join([p[0], p[1], *p[2]]) + "\n")
_epss_file = st.tuples(
    st.one_of(_epss_text.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=64)),
    st.sampled_from(["plain", "gzip", "truncated gzip"]),
)


def _epss_bytes(body: bytes, packing: str) -> bytes:
    if packing == "plain":
        return body
    packed = gzip.compress(body)
    return packed if packing == "gzip" else packed[: max(2, len(packed) // 2)]


@FUZZ
@given(_epss_file)
def test_an_epss_file(case: tuple[bytes, str]) -> None:
    tally("epss csv file")
    body, packing = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "epss_scores-2026-12-01.csv.gz"
        path.write_bytes(_epss_bytes(body, packing))
        try:
            model, score_date = feeds._epss_copy_header(path)
            context = {
                "ModelVersion": model,
                "ScoreDate": score_date,
                "FeedVersion": f"{model} {score_date:%Y-%m-%d}",
                "FeedSource": str(path),
            }
            for batch in feeds._epss_batches(path, context):
                assert batch.table is EPSS
                check_batch(batch, Path(tmp))
        except feeds.FeedFormatError as exc:
            _expect_feed_error(exc)


@FUZZ
@given(st.lists(st.one_of(wire_text, st.sampled_from(["CVE-2024-0001", "0.5", "1", "-0"]))))
def test_an_epss_record(record: list[str]) -> None:
    tally("epss record")
    context = {
        "ModelVersion": "v2025.03.14",
        "ScoreDate": datetime(2026, 12, 1, tzinfo=UTC),
        "FeedVersion": "v2025.03.14 2026-12-01",
        "FeedSource": "epss_scores-2026-12-01.csv.gz",
    }
    check_row_or_reason(EPSS, feeds._epss_row(record, context))


# -- Vulnrichment ------------------------------------------------------------------------------

_option_values = st.one_of(
    st.sampled_from(["none", "poc", "active", "no", "yes", "partial", "total", "Active", "YES"]),
    scalars,
)
_options = st.lists(
    st.dictionaries(
        st.sampled_from(["Exploitation", "Automatable", "Technical Impact"]) | wire_text,
        _option_values,
        max_size=3,
    )
    | json_values(3),
    max_size=4,
)
_ssvc_content = st.one_of(
    st.fixed_dictionaries(
        {"id": st.sampled_from(["CVE-2024-0001"]) | scalars},
        optional={
            "options": _options | st.sampled_from([7, "poc", {}]) | json_values(3),
            "timestamp": _timestamps,
            "role": scalars | json_values(3),
            "version": scalars | json_values(3),
        },
    ),
    json_values(4),
)
_metric = st.one_of(
    st.fixed_dictionaries(
        {
            "other": st.fixed_dictionaries(
                {"type": st.just("ssvc") | scalars, "content": _ssvc_content}
            )
        }
    ),
    json_values(3),
)
_provider = st.one_of(
    st.fixed_dictionaries(
        {"shortName": st.just("CISA-ADP") | wire_text},
        optional={"dateUpdated": _timestamps},
    ),
    json_values(3),
)
_adp = st.fixed_dictionaries(
    {},
    optional={
        "providerMetadata": _provider,
        "metrics": st.lists(_metric, max_size=3) | st.sampled_from([5, "x", {}]) | json_values(3),
    },
)
_record = st.fixed_dictionaries(
    {"dataType": st.just("CVE_RECORD")},
    optional={
        "containers": st.one_of(
            st.fixed_dictionaries(
                {}, optional={"adp": st.lists(_adp | json_values(3), max_size=3) | json_values(3)}
            ),
            json_values(3),
        ),
    },
)


def _vulnrichment_bytes() -> st.SearchStrategy[bytes]:
    def encode(value: Any) -> bytes:
        try:
            return orjson.dumps(value)
        except TypeError:  # an integer past 64 bits
            return b"{}"

    return st.one_of(top_level(_record).map(encode), st.binary(max_size=64))


@FUZZ
@given(_vulnrichment_bytes())
def test_a_vulnrichment_record(body: bytes) -> None:
    tally("vulnrichment record")
    row = vulnrichment.vulnrichment_row(body)
    if row is None:
        return
    if isinstance(row, dict):
        row = {**row, "FeedVersion": "archive sha256:0", "FeedSource": "vulnrichment.zip"}
    check_row_or_reason(VULNRICHMENT, row)
