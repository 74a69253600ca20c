"""The streams the emulated data collection rules declare, and the record checks.

Owns the stream declarations (defender-apis.md D.1, D.2, D.5): one ``Custom-<Table>`` stream
per table of the registry (read when the app is built, so tables added later are included)
with the registry's column types, which ``ingestion.rules`` spreads over the DCRs, and how a
request's records are checked and stored against a stream the way Azure does: an unknown
column or a value of the wrong type refuses the whole request; integer strings convert into
int/long columns; a field value over 64 KB is kept but truncated; a missing
``TimeGenerated`` becomes the receive time, and so does one more than 2 days before it or more
than a day after it (defender-apis.md F; log-standard-columns): the value sent is not kept
anywhere.

Imports nothing of the emulator; only ``endpoint_forensics.tables`` (the registry) and the
standard library, so that ``core.server`` can name the DCRs without loading Starlette.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from endpoint_forensics.tables import TABLES, KqlType

__all__ = [
    "MAX_FIELD_BYTES",
    "STREAM_PREFIX",
    "TIME_GENERATED_MAX_AGE",
    "TIME_GENERATED_MAX_LEAD",
    "Checked",
    "RecordError",
    "Stream",
    "check_records",
    "declared_streams",
]

STREAM_PREFIX = "Custom-"
#: Longer field values are truncated on storage, not refused (service limits, D.2).
MAX_FIELD_BYTES = 65_536
#: A TimeGenerated further from the receive time than these becomes the receive time
#: (log-standard-columns: "older than 2 days ... or more than a day in the future").
TIME_GENERATED_MAX_AGE = timedelta(days=2)
TIME_GENERATED_MAX_LEAD = timedelta(days=1)
_INT_RANGES = {
    KqlType.INT: (-(2**31), 2**31 - 1),
    KqlType.LONG: (-(2**63), 2**63 - 1),
}
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_SHOWN_VALUE_CHARS = 80


@dataclass(frozen=True)
class Stream:
    """One ``streamDeclarations`` entry: its name, the table it feeds, its typed columns."""

    name: str
    table: str
    columns: Mapping[str, KqlType]


def declared_streams() -> dict[str, Stream]:
    """``Custom-<Table>`` -> its stream, for every table of the registry as of now."""
    return {
        f"{STREAM_PREFIX}{table.name}": Stream(
            name=f"{STREAM_PREFIX}{table.name}",
            table=table.name,
            columns={column.name: column.type for column in table.columns},
        )
        for table in TABLES.values()
    }


class RecordError(ValueError):
    """A record the stream refuses; the message (naming record and column) goes into the 400."""


@dataclass(frozen=True)
class Checked:
    """The rows to store (every column of the stream, None where absent; empty when only
    checked), how many records were checked, and how many field values were truncated."""

    rows: list[dict[str, Any]]
    count: int
    truncated_fields: int


def check_records(
    stream: Stream, records: Sequence[Any], *, now: datetime, keep: bool = True
) -> Checked:
    """Check every record against ``stream`` and convert it to the row Log Analytics keeps.

    Stored values: strings (string, guid), ints, floats, bools, aware UTC datetimes and the
    parsed JSON of dynamic columns. ``now`` is the receive time: it replaces a missing or null
    ``TimeGenerated``, and one more than 2 days before ``now`` or more than a day after it.
    Without ``keep`` the records are only checked and counted (``rows`` stays empty): the
    endpoint keeps the body and converts it again when its rows are read.

    Raises:
        RecordError: a record is not an object, has an undeclared column or a value of the
            wrong type (the whole request is refused: nothing is stored).
    """
    rows: list[dict[str, Any]] = []
    truncated = 0
    columns = stream.columns
    declared = columns.keys()
    empty = dict.fromkeys(columns)
    received = now.astimezone(UTC)
    for index, record in enumerate(records):
        if type(record) is not dict:
            raise RecordError(
                f"Record {index} is not a JSON object; the body must be an array of objects."
            )
        if not record.keys() <= declared:
            name = next(n for n in record if n not in declared)
            raise RecordError(
                f"Record {index} has the column '{name}', which stream '{stream.name}' does"
                " not declare."
            )
        row = empty.copy() if keep else empty
        # Only the fields sent: a column not sent is stored as None.
        for name, value in record.items():
            if value is None:
                continue
            kind = columns[name]
            # The common cases first: a short text in a text column, a bool in a bool column
            # and a float in a real column are stored as they are.
            sent = type(value)
            if sent is str:
                if kind in _TEXTUAL and len(value) <= _SHORT_CHARS:
                    if keep:
                        row[name] = value
                    continue
            elif sent is _KEPT_AS_SENT.get(kind):
                if keep:
                    row[name] = value
                continue
            converted = _convert(kind, value)
            if converted is _WRONG:
                shown = json.dumps(value, ensure_ascii=False)[:_SHOWN_VALUE_CHARS]
                raise RecordError(
                    f"Record {index}: the value {shown} of column '{name}' is not a valid"
                    f" {kind.value}."
                )
            if type(converted) in _MEASURED:
                converted, cut = _truncated(kind, converted)
                truncated += cut
            if keep:
                row[name] = converted
        if keep:
            if "TimeGenerated" in declared:
                row["TimeGenerated"] = _time_generated(row["TimeGenerated"], received)
            rows.append(row)
    return Checked(rows=rows, count=len(records), truncated_fields=truncated)


_TEXTUAL = frozenset((KqlType.STRING, KqlType.GUID))
_KEPT_AS_SENT = {KqlType.BOOL: bool, KqlType.REAL: float}
_MEASURED = frozenset((str, dict, list))  # the values _truncated may cut
_WRONG = object()  # _convert's "not this type" (None is a valid converted value nowhere)


def _time_generated(sent: datetime | None, received: datetime) -> datetime:
    """The ``TimeGenerated`` Log Analytics keeps: ``sent``, or ``received`` when it is missing,
    more than 2 days older or more than a day newer (the boundaries themselves are kept)."""
    if sent is None or not -TIME_GENERATED_MAX_LEAD <= received - sent <= TIME_GENERATED_MAX_AGE:
        return received
    return sent


def _convert(kind: KqlType, value: Any) -> Any:
    """``value`` as column type ``kind`` stores it, or ``_WRONG``."""
    if kind is KqlType.DYNAMIC:
        return value
    if kind in (KqlType.STRING, KqlType.GUID):
        return value if isinstance(value, str) else _WRONG
    if kind is KqlType.BOOL:
        return value if isinstance(value, bool) else _WRONG
    if kind is KqlType.REAL:
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if is_number else _WRONG
    if kind in _INT_RANGES:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
            number = int(value)  # Azure converts numeric strings into integer columns
        low, high = _INT_RANGES[kind]
        return number if number is not None and low <= number <= high else _WRONG
    if kind is KqlType.DATETIME:
        return _datetime(value) if isinstance(value, str) else _WRONG
    raise AssertionError(f"unhandled column type {kind}")


def _datetime(text: str) -> Any:
    """An ISO 8601 timestamp as an aware UTC datetime (no offset: UTC), or ``_WRONG``."""
    try:
        # 3.11's fromisoformat takes the service's forms: "Z", offsets, 7 fraction digits,
        # and the space separator of the doc's own sample ("2023-11-14 15:10:02").
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return _WRONG
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


#: A text of at most this many characters is within ``MAX_FIELD_BYTES`` whatever they are
#: (UTF-8 takes at most 4 bytes a character).
_SHORT_CHARS = MAX_FIELD_BYTES // 4


def _surely_short(value: Any) -> bool:
    """Whether ``value``'s JSON is surely within ``MAX_FIELD_BYTES``: orjson's text, a few
    times faster to make, is within half of it (the two texts differ only in how a float or
    a non-finite number is written, never by a factor of two)."""
    try:
        return len(orjson.dumps(value)) * 2 <= MAX_FIELD_BYTES
    except (TypeError, orjson.JSONEncodeError):
        return False


def _truncated(kind: KqlType, value: Any) -> tuple[Any, int]:
    """``value`` cut to ``MAX_FIELD_BYTES`` of UTF-8 where it is longer, and 1 if it was."""
    if isinstance(value, str):
        if len(value) <= _SHORT_CHARS:  # short enough in any encoding: no need to measure
            return value, 0
        encoded = value.encode()
        if len(encoded) <= MAX_FIELD_BYTES:
            return value, 0
        # errors="ignore" drops a character split by the cut, as a byte-wise truncation would.
        return encoded[:MAX_FIELD_BYTES].decode(errors="ignore"), 1
    if kind is KqlType.DYNAMIC and isinstance(value, dict | list):
        if _surely_short(value):
            return value, 0
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        if len(text.encode()) <= MAX_FIELD_BYTES:
            return value, 0
        # The cut JSON is no longer JSON: it is kept as its (truncated) text.
        return text.encode()[:MAX_FIELD_BYTES].decode(errors="ignore"), 1
    return value, 0
