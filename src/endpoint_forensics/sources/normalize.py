"""Tolerant conversion of wire values into typed row values.

Owns the decoding of Defender's wire quirks (defender-apis.md F): ISO timestamps with seven
fractional digits, TVM timestamps without ``T`` or zone, booleans as strings, numbers as strings,
casing drift in keys. A value that cannot be converted raises ``ValueError``; the caller
decides whether that rejects the record or only the field. Imports only ``tables``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from endpoint_forensics.tables import KqlType, Table

__all__ = [
    "Converter",
    "FieldMap",
    "as_bool",
    "as_datetime",
    "as_dynamic",
    "as_float",
    "as_int",
    "as_str",
    "convert_record",
    "field_specs",
]

Converter = Callable[[Any], Any]


def as_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    raise ValueError(f"expected a string, got {type(value).__name__}")


def as_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError(f"expected an integer, got {type(value).__name__}")


def as_float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    raise ValueError(f"expected a number, got {type(value).__name__}")


_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def as_bool(value: Any) -> bool | None:
    """JSON booleans, and the strings ``True``/``False`` of AV health; ``Unknown`` is None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        if lowered == "unknown":
            return None
    raise ValueError(f"expected a boolean, got {value!r}"[:80])


def as_datetime(value: Any) -> datetime | None:
    """ISO 8601 (up to 7 fractional digits, ``Z``) or TVM's ``2020-12-30 14:17:26``; naive is UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        # Python 3.11 reads both forms, and truncates a 7th fractional digit (100 ns).
        text = value.strip()
        parsed = datetime.fromisoformat(text)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("expected a timestamp string, got a number")
    else:
        raise ValueError(f"expected a timestamp, got {type(value).__name__}")
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def as_dynamic(value: Any) -> Any:
    return value


def convert_record(
    record: Mapping[str, Any], fields: Mapping[str, tuple[str, Converter]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Map a wire record to row values by ``fields`` (lower-case wire name -> column, converter).

    Keys match case-insensitively (Defender's casing drifts). Returns the row and the fields
    left over: unknown ones, and known ones whose value did not convert (kept raw, under
    their wire name, so nothing is lost).
    """
    row: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in record.items():
        spec = fields.get(key.lower())
        if spec is None:
            extra[key] = value
            continue
        column, convert = spec
        try:
            row[column] = convert(value)
        except (ValueError, TypeError, OverflowError):
            extra[key] = value
    return row, extra


# Wire field name -> column. Keys are matched case-insensitively; the column's KQL type picks
# the converter, so the registry stays the one place a type is decided.
FieldMap = Mapping[str, str]

_CONVERTERS: dict[KqlType, Converter] = {
    KqlType.STRING: as_str,
    KqlType.GUID: as_str,
    KqlType.INT: as_int,
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
