"""Wire values and records into row values: one set of converters, one way to read a record.

Owns the decoding of the APIs' wire quirks (defender-apis.md C.2, F): ISO timestamps with seven
fractional digits, TVM timestamps without ``T`` or zone, IoT epoch milliseconds, booleans and
numbers sent as strings, CVSS scores as strings, casing drift in keys, fields added without
notice, and passwords that must never be kept.

A converter takes a wire value and returns the row value, None for a missing or empty one, or
raises ``Invalid`` saying what it expected. It does not know the field's name: ``Fields`` (one
record, keys matched case-insensitively, remembering what was read) adds it, and
``convert_record`` (a record mapped by a field table) keeps a value that does not convert raw,
with the fields it does not know. Whether a bad value rejects the record or only the field is
the caller's choice. May import ``tables``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from endpoint_forensics.tables import KqlType, Table

__all__ = [
    "Converter",
    "FieldMap",
    "Fields",
    "Invalid",
    "as_bool",
    "as_datetime",
    "as_dynamic",
    "as_float",
    "as_int",
    "as_int32",
    "as_score",
    "as_str",
    "as_text",
    "convert_record",
    "field_specs",
    "first_real",
    "from_epoch_ms",
    "list_of",
    "text_list",
    "to_epoch_ms",
    "without_passwords",
]

T = TypeVar("T")
Converter = Callable[[Any], Any]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
# Keys whose values are secrets wherever they appear (the IoT devices report's plain-text
# password findings carry the password itself, C.2).
_SECRET_KEYS = frozenset({"password", "passwords", "secret", "token"})


class Invalid(ValueError):
    """A value of the wrong kind; the message says what was expected (and, once a caller that
    knows it has added it, in which field)."""


def _shown(value: Any) -> str:
    """``value`` short enough for a quarantine reason."""
    return repr(str(value)[:40])


# --- converters: (value) -> row value | None, raising Invalid ----------------------------


def as_str(value: Any) -> str | None:
    """A string; numbers and booleans as their JSON text. Objects and lists are not strings."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise Invalid(f"expected a string, got {type(value).__name__}")


def as_text(value: Any) -> str | None:
    """Any value as text (free-text fields, where an odd value must not cost the record)."""
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def as_int(value: Any) -> int | None:
    """A whole number that a long column holds (64 bits), or its digits in a string; 3.0 is 3,
    but 3.7, booleans and numbers past 64 bits are refused."""
    return _whole(value, 63)


def as_int32(value: Any) -> int | None:
    """``as_int`` for an int column: 32 bits."""
    return _whole(value, 31)


def _whole(value: Any, bits: int) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise Invalid("expected a whole number, got a boolean")
    number: int | None = None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            pass
    if number is None:
        raise Invalid(f"expected a whole number, got {_shown(value)}")
    if not -(2**bits) <= number < 2**bits:
        raise Invalid(f"{_shown(value)} does not fit in {bits + 1} bits")
    return number


def as_float(value: Any) -> float | None:
    """A number, or one in a string."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise Invalid("expected a number, got a boolean")
    number: float | None = None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            pass
    # "NaN" and "1e999" read as floats, but no JSON stream can carry them to Sentinel.
    if number is None or not math.isfinite(number):
        raise Invalid(f"expected a number, got {_shown(value)}")
    return number


def as_score(value: Any) -> float | None:
    """A CVSS score, 0-10, sent as a number or a string ("9.3")."""
    try:
        score = as_float(value)
    except Invalid:
        raise Invalid(f"expected a score 0-10, got {_shown(value)}") from None
    if score is not None and not 0.0 <= score <= 10.0:
        raise Invalid(f"score {score} is outside 0-10")
    return score


def as_bool(value: Any) -> bool | None:
    """JSON booleans, 0/1, and the strings true/false, 1/0, yes/no in any case (AV health sends
    ``"True"``/``"False"``); ``Unknown`` is None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        if lowered == "unknown":
            return None
    raise Invalid(f"expected true or false, got {_shown(value)}")


def as_datetime(value: Any) -> datetime | None:
    """ISO 8601 (up to 7 fractional digits, ``Z``) or TVM's ``2020-12-30 14:17:26``; naive is UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        # Python 3.11 reads both forms, and truncates a 7th fractional digit (100 ns).
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise Invalid(f"expected an ISO 8601 timestamp, got {_shown(value)}") from None
    else:
        raise Invalid(f"expected a timestamp string, got {type(value).__name__}")
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # year 1 east of UTC, year 9999 west of it
        raise Invalid(f"timestamp {_shown(value)} is out of range") from None


def from_epoch_ms(value: Any) -> datetime | None:
    """Epoch milliseconds (a number or digits) as an aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise Invalid("expected epoch milliseconds, got a boolean")
    try:
        ms = int(value) if isinstance(value, int | str) else int(float(value))
    except (TypeError, ValueError, OverflowError):
        raise Invalid(f"expected epoch milliseconds, got {_shown(value)}") from None
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise Invalid(f"epoch milliseconds out of range: {ms}") from None


def to_epoch_ms(moment: datetime) -> int:
    """The inverse of ``from_epoch_ms``, exact to the millisecond."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def as_dynamic(value: Any) -> Any:
    return value


def list_of(convert: Callable[[Any], T]) -> Callable[[Any], list[T] | None]:
    """A converter of a list whose items ``convert`` converts."""

    def convert_list(value: Any) -> list[T] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            raise Invalid(f"expected a list, got {type(value).__name__}")
        return [convert(item) for item in value]

    return convert_list


# --- reading a record ---------------------------------------------------------------------


class Fields:
    """Case-insensitive access to one record's fields, remembering which were read.

    ``within`` names the object the record sits in, for the field names of its errors.
    """

    def __init__(self, record: Any, *, within: str = "") -> None:
        if not isinstance(record, Mapping):
            raise Invalid(f"expected an object, got {type(record).__name__}")
        self._by_lower = {str(k).lower(): k for k in record}
        self._record = record
        self._read: set[Any] = set()
        self._within = f"{within}." if within else ""

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._by_lower

    def get(self, *names: str) -> Any:
        """The first of ``names`` present (any case), or None."""
        for name in names:
            key = self._by_lower.get(name.lower())
            if key is not None:
                self._read.add(key)
                return self._record[key]
        return None

    def get_as(self, names: str | tuple[str, ...], convert: Callable[[Any], T]) -> T:
        """The first of ``names`` present, converted; ``Invalid`` names the field."""
        for name in (names,) if isinstance(names, str) else names:
            key = self._by_lower.get(name.lower())
            if key is not None:
                self._read.add(key)
                try:
                    return convert(self._record[key])
                except Invalid as exc:
                    raise Invalid(f"{self._within}{key}: {exc}") from None
        return convert(None)

    def mark(self, *names: str) -> None:
        """Count ``names`` as read (known fields this table does not keep)."""
        for name in names:
            key = self._by_lower.get(name.lower())
            if key is not None:
                self._read.add(key)

    def unread(self, name: str) -> None:
        """Count ``name`` as not read: it is handed back by ``rest``."""
        self._read.discard(self._by_lower.get(name.lower()))

    def rest(self) -> dict[str, Any] | None:
        """The fields not read, or None when there are none."""
        rest = {k: v for k, v in self._record.items() if k not in self._read}
        return rest or None


# Wire field name -> column. Keys are matched case-insensitively; the column's KQL type picks
# the converter, so the registry stays the one place a type is decided.
FieldMap = Mapping[str, str]

_CONVERTERS: dict[KqlType, Converter] = {
    KqlType.STRING: as_str,
    KqlType.GUID: as_str,
    KqlType.INT: as_int32,
    KqlType.LONG: as_int,
    KqlType.REAL: as_float,
    KqlType.BOOL: as_bool,
    KqlType.DATETIME: as_datetime,
    KqlType.DYNAMIC: as_dynamic,
}


def field_specs(table: Table, fields: FieldMap) -> dict[str, tuple[str, Converter]]:
    """The ``convert_record`` spec for ``fields`` (wire name -> column) of ``table``."""
    return {
        wire.lower(): (col, _CONVERTERS[table.column(col).type]) for wire, col in fields.items()
    }


def convert_record(
    record: Mapping[str, Any], fields: Mapping[str, tuple[str, Converter]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Map a wire record to row values by ``fields`` (lower-case wire name -> column, converter).

    Returns the row (a column only for a field present) and the fields left over: unknown
    ones, and known ones whose value did not convert (kept raw, under their wire name, so
    nothing is lost).
    """
    # The hot path of every JSON-page record: one pass, no ``Fields`` (twice as fast).
    row: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    came_from: dict[str, str] = {}  # column -> the wire key its value came from
    for key, value in record.items():
        spec = fields.get(key.lower())
        if spec is None:
            if value is not None:  # an unknown field that says nothing is not kept
                extra[key] = value
            continue
        column, convert = spec
        try:
            converted = convert(value)
        except (ValueError, TypeError, OverflowError):
            extra[key] = value
            continue
        earlier = came_from.get(column)
        if earlier is not None:
            # The same field twice, spelt in two casings: the row keeps one value (the first
            # that is not empty), the other stays raw under its own spelling.
            if row[column] not in (None, ""):
                extra[key] = value
                continue
            extra[earlier] = record[earlier]
        row[column] = converted
        came_from[column] = key
    return row, extra


# --- IoT lists and secrets ----------------------------------------------------------------


def text_list(values: Any, *keys: str) -> list[str]:
    """Strings from a list of strings, or from a list of objects by the first of ``keys``."""
    if values is None:
        return []
    if not isinstance(values, list):
        values = [values]
    out: list[str] = []
    for item in values:
        if isinstance(item, Mapping):
            item = Fields(item).get(*keys)
        if item is not None and item != "":
            out.append(str(item))
    return out


def first_real(values: Iterable[Any]) -> str | None:
    """The first value that is not empty and not "N/A" (firmware fields use it for unknown)."""
    for value in values:
        if value not in (None, "", "N/A"):
            return str(value)
    return None


def without_passwords(value: Any) -> Any:
    """``value`` with every password-like key removed, at any depth."""
    if isinstance(value, Mapping):
        return {
            k: without_passwords(v)
            for k, v in value.items()
            if not (isinstance(k, str) and k.lower() in _SECRET_KEYS)
        }
    if isinstance(value, list):
        return [without_passwords(v) for v in value]
    return value
