from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from endpoint_forensics.sources.wire import (
    Fields,
    Invalid,
    as_bool,
    as_datetime,
    as_float,
    as_int,
    as_int32,
    as_score,
    as_str,
    convert_record,
    from_epoch_ms,
    list_of,
    to_epoch_ms,
    without_passwords,
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
        ("", None),
        ("yes", True),
        ("No", False),
        ("1", True),
        ("0", False),
        (1, True),
        (0, False),
    ],
)
def test_booleans_including_av_health_strings(value, expected):
    assert as_bool(value) is expected


@pytest.mark.parametrize("bad", ["maybe", 2, 1.0, [], {}])
def test_bool_rejects_nonsense(bad):
    with pytest.raises(Invalid, match="expected true or false"):
        as_bool(bad)


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_integers_survive_as_numbers_and_strings(n):
    assert as_int(n) == n
    assert as_int(str(n)) == n


def test_int_takes_whole_floats_and_padded_digits():
    assert as_int(3.0) == 3
    assert as_int(" 12 ") == 12
    assert as_int("") is None


@pytest.mark.parametrize("bad", [True, 1.5, 3.7, "3.7", "twelve", float("inf"), [1]])
def test_int_rejects_booleans_fractions_and_text(bad):
    with pytest.raises(Invalid, match="expected a whole number"):
        as_int(bad)


@pytest.mark.parametrize(
    ("convert", "bad"),
    [(as_int, 2**63), (as_int, -(2**63) - 1), (as_int, "18446744073709551615"),
     (as_int, 1e300), (as_int32, 2**31), (as_int32, "-2147483649")],
)  # fmt: skip
def test_numbers_past_their_columns_width_are_refused(convert, bad):
    # The JSON reader hands over integers up to 2**64 - 1; a long column takes 64 bits, an
    # int column 32 (the record keeps the raw value in AdditionalFields instead).
    with pytest.raises(Invalid, match="does not fit in"):
        convert(bad)
    assert as_int32(2**31 - 1) == 2**31 - 1


@pytest.mark.parametrize("bad", ["NaN", "1e999", "-Infinity", float("nan")])
def test_a_number_no_json_stream_can_carry_is_refused(bad):
    with pytest.raises(Invalid, match="expected a number"):
        as_float(bad)


def test_convert_record_matches_keys_case_insensitively_and_keeps_leftovers():
    fields = {"onboardingstatus": ("OnboardingStatus", as_str), "osbuild": ("OSBuild", as_int)}
    row, extra = convert_record(
        {"OnboardingStatus": "Onboarded", "osBuild": "not-a-number", "brandNew": 1}, fields
    )
    assert row == {"OnboardingStatus": "Onboarded"}
    assert extra == {"osBuild": "not-a-number", "brandNew": 1}


def test_convert_record_keeps_both_spellings_of_a_field():
    """Fuzzing: {"deviceId": "d", "DEVICEID": "e"} kept only "e", and "d" was lost."""
    fields = {"deviceid": ("DeviceId", as_str)}
    row, extra = convert_record({"deviceId": "d", "DEVICEID": "e"}, fields)
    assert row == {"DeviceId": "d"} and extra == {"DEVICEID": "e"}
    # An empty first spelling gives way to a real value, and is kept raw.
    row, extra = convert_record({"MachineId": "", "machineId": "x"}, {"machineid": ("M", as_str)})
    assert row == {"M": "x"} and extra == {"MachineId": ""}


def test_epoch_milliseconds_round_trip():
    moment = datetime(2017, 9, 17, 12, 33, 25, 123000, tzinfo=UTC)
    assert from_epoch_ms(to_epoch_ms(moment)) == moment
    assert from_epoch_ms(str(to_epoch_ms(moment))) == moment
    assert from_epoch_ms(None) is None


@pytest.mark.parametrize("bad", ["yesterday", True, 10**20])
def test_bad_epoch_milliseconds_raise(bad):
    with pytest.raises(Invalid, match="epoch milliseconds"):
        from_epoch_ms(bad)


def test_scores_are_0_to_10_numbers_or_strings():
    assert as_score("9.3") == 9.3
    assert as_score(0) == 0.0
    with pytest.raises(Invalid, match="outside 0-10"):
        as_score("11")
    with pytest.raises(Invalid, match="expected a score 0-10"):
        as_score("high")


def test_fields_name_the_field_of_a_bad_value_as_the_record_spells_it():
    f = Fields({"Time": "yesterday", "ports": [80, "x"]})
    with pytest.raises(Invalid, match=r"^Time: expected epoch milliseconds, got 'yesterday'$"):
        f.get_as("time", from_epoch_ms)
    with pytest.raises(Invalid, match=r"^ports: expected a whole number, got 'x'$"):
        f.get_as("ports", list_of(as_int))
    nested = Fields({"port": "eighty"}, within="openedPorts")
    with pytest.raises(Invalid, match=r"^openedPorts.port: expected a whole number"):
        nested.get_as("port", as_int)


def test_fields_read_aliases_and_hand_back_what_was_not_read():
    f = Fields({"u_is_authorized": "true", "u_name": "plc", "brandNew": 1})
    assert f.get_as(("u_authorized", "u_is_authorized"), as_bool) is True
    assert f.get_as("missing", as_int) is None
    assert f.get("U_NAME") == "plc"
    assert f.rest() == {"brandNew": 1}


def test_a_record_that_is_not_an_object_is_invalid():
    with pytest.raises(Invalid, match="expected an object, got list"):
        Fields([1, 2])


def test_passwords_are_removed_at_any_depth():
    report = [{"name": "plc", "findings": [{"protocol": "ftp", "Password": "hunter2"}]}]
    assert without_passwords(report) == [{"name": "plc", "findings": [{"protocol": "ftp"}]}]


@pytest.mark.parametrize("edge", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_time_utc_cannot_hold_is_refused(edge):
    with pytest.raises(Invalid, match="out of range"):
        as_datetime(edge)
