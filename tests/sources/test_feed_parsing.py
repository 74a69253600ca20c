"""The feed readers on malformed copies and records (found by tests/fuzz/test_feeds.py): a bad
copy is a FeedFormatError with a message, a bad record a reason; never another exception."""

from __future__ import annotations

import gzip
import zlib
from datetime import UTC, datetime

import orjson
import pytest

from endpoint_forensics.sources import feeds
from endpoint_forensics.sources.feeds import FeedFormatError
from endpoint_forensics.sources.vulnrichment import vulnrichment_row

_HEADER = b"#model_version:v2025.03.14,score_date:2026-12-01T00:00:00+0000\n"
_CONTEXT = {"FeedVersion": "v", "FeedSource": "s", "ScoreDate": datetime(2026, 12, 1, tzinfo=UTC)}


@pytest.mark.parametrize(
    "body",
    [
        b"\x80",  # not UTF-8: UnicodeDecodeError
        gzip.compress(_HEADER)[:10],  # a truncated gzip: EOFError
        b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"\xff" * 20,  # a corrupt deflate stream: zlib.error
    ],
)
def test_an_epss_copy_whose_first_line_cannot_be_read(tmp_path, body):
    path = tmp_path / "epss.csv.gz"
    path.write_bytes(body)
    with pytest.raises(FeedFormatError, match="EPSS copy"):
        feeds._epss_copy_header(path)


def test_an_epss_copy_with_rows_that_are_not_utf8(tmp_path):
    path = tmp_path / "epss.csv"
    path.write_bytes(_HEADER + b"cve,epss,percentile\nCVE-2024-0001,0.1,0.2\n\xff\xfe\n")
    with pytest.raises(FeedFormatError, match="cannot be read to its end"):
        list(feeds._epss_batches(path, _CONTEXT))


def test_an_epss_score_date_utc_cannot_hold():
    with pytest.raises(FeedFormatError, match="score_date"):
        feeds._epss_header("#model_version:v1,score_date:0001-01-01T00:00:00+0100\n")


def test_a_kev_release_date_that_is_not_a_timestamp(tmp_path):
    catalogue = {"catalogVersion": "2026.12.05", "dateReleased": "soon", "vulnerabilities": []}
    with pytest.raises(FeedFormatError, match="dateReleased"):
        feeds._kev_context(catalogue, "kev.json")


def test_a_kev_entry_with_a_date_utc_cannot_hold_is_a_reason():
    row = feeds._kev_row({"cveID": "CVE-2024-0001", "dateAdded": "0001-01-01T00:00:00+01:00"}, {})
    assert isinstance(row, str) and "dateAdded" in row


def _record(metrics=None, **content):
    content = {
        "id": "CVE-2024-0001",
        "options": [{"Exploitation": "none"}, {"Automatable": "no"}, {"Technical Impact": "total"}],
        **content,
    }
    if metrics is None:
        metrics = [{"other": {"type": "ssvc", "content": content}}]
    adp = {"providerMetadata": {"shortName": "CISA-ADP"}, "metrics": metrics}
    return orjson.dumps({"containers": {"adp": [adp]}})


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_record(metrics=5), "metrics are a int"),  # was TypeError: not iterable
        (_record(options=7), "options are a int"),  # was TypeError: not iterable
        (_record(timestamp="0001-01-01T00:00:00+01:00"), "out of range"),  # was OverflowError
        (_record(role={"a": 1}), "ssvc role"),  # a dict in a string column
    ],
)
def test_a_malformed_vulnrichment_record_is_a_reason(body, reason):
    row = vulnrichment_row(body)
    assert isinstance(row, str) and reason in row


def test_a_good_vulnrichment_record_is_a_row():
    row = vulnrichment_row(_record(role="CISA Coordinator", version="2.0.3"))
    assert isinstance(row, dict)
    assert row["CveId"] == "CVE-2024-0001" and row["SsvcRole"] == "CISA Coordinator"


def test_zlib_error_is_not_an_oserror():
    # Why _UNREADABLE lists zlib.error: a corrupt stream is not caught as OSError.
    assert not issubclass(zlib.error, OSError)
