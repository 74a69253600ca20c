from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from endpoint_forensics.sources.normalize import (
    as_bool,
    as_datetime,
    as_int,
    as_str,
    convert_record,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2018-08-02T14:55:03.7791856Z", datetime(2018, 8, 2, 14, 55, 3, 779185, tzinfo=UTC)),
        ("2020-12-30 14:17:26", datetime(2020, 12, 30, 14, 17, 26, tzinfo=UTC)),  # TVM, not ISO
        ("2020-11-03 10:13:34.8476880", datetime(2020, 11, 3, 10, 13, 34, 847688, tzinfo=UTC)),
        ("2021-05-11T00:00:00+00:00", datetime(2021, 5, 11, tzinfo=UTC)),
        ("2021-05-11T02:00:00+02:00", datetime(2021, 5, 11, tzinfo=UTC)),
        (None, None),
        ("", None),
    ],
)
def test_defender_timestamps(text, expected):
    assert as_datetime(text) == expected


@pytest.mark.parametrize("bad", ["yesterday", "2020-13-01", 1594550986000, True, {}])
def test_bad_timestamps_raise(bad):
    with pytest.raises(ValueError):
        as_datetime(bad)


@pytest.mark.parametrize(
    "value, expected",
    [
        (True, True),
        (False, False),
        ("True", True),
        ("False", False),
        ("true", True),
        ("Unknown", None),
        (None, None),
    ],
)
def test_booleans_including_av_health_strings(value, expected):
    assert as_bool(value) is expected


def test_bool_rejects_nonsense():
    with pytest.raises(ValueError):
        as_bool("maybe")


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_integers_survive_as_numbers_and_strings(n):
    assert as_int(n) == n
    assert as_int(str(n)) == n


def test_int_rejects_booleans_and_fractions():
    with pytest.raises(ValueError):
        as_int(True)
    with pytest.raises(ValueError):
        as_int(1.5)


def test_convert_record_matches_keys_case_insensitively_and_keeps_leftovers():
    fields = {"onboardingstatus": ("OnboardingStatus", as_str), "osbuild": ("OSBuild", as_int)}
    row, extra = convert_record(
        {"OnboardingStatus": "Onboarded", "osBuild": "not-a-number", "brandNew": 1}, fields
    )
    assert row == {"OnboardingStatus": "Onboarded"}
    assert extra == {"osBuild": "not-a-number", "brandNew": 1}
