"""MDE records (B.1, B.2): a machine or an antivirus health record of any shape becomes a row
both sinks can write, or a reason to quarantine it."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given

from endpoint_forensics.sources import mde
from endpoint_forensics.tables import AV_HEALTH, DEVICES

from .support import FUZZ, check_row_or_reason, records_like, tally, top_level

_NOW = datetime(2026, 12, 5, tzinfo=UTC)


@FUZZ
@given(top_level(records_like(mde._MACHINE_FIELDS)))
def test_a_machine_record(record: object) -> None:
    tally("mde machine record")
    check_row_or_reason(DEVICES, mde.machine_to_row(record))


@FUZZ
@given(top_level(records_like([*mde._AV_FIELDS, *mde._AV_FILE_ALIASES])))
def test_an_antivirus_health_record(record: object) -> None:
    tally("mde antivirus health record")
    check_row_or_reason(AV_HEALTH, mde.av_health_row(record, _NOW))
