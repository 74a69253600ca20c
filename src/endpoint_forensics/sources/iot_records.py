"""Reading Defender for IoT records: case-insensitive fields, epoch milliseconds, loose
booleans, scores sent as strings, and passwords that must never be kept.

The appliance APIs drift in case (``additionalInformation`` / ``additionalinformation``) and
add fields without notice (C.2, F); a record is read through ``Fields``, which matches keys
case-insensitively and hands back what was not read, for ``AdditionalFields``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "Fields",
    "Invalid",
    "as_bool",
    "as_int",
    "as_score",
    "as_text",
    "first_real",
    "from_epoch_ms",
    "text_list",
    "to_epoch_ms",
    "without_passwords",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Keys whose values are secrets wherever they appear (the devices report's plain-text
# password findings carry the password itself, C.2).
_SECRET_KEYS = frozenset({"password", "passwords", "secret", "token"})


class Invalid(ValueError):
    """A field has a value of the wrong kind; the record goes to quarantine with this reason."""


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


class Fields:
    """Case-insensitive access to one record's fields, remembering which were read."""

    def __init__(self, record: Any) -> None:
        if not isinstance(record, Mapping):
            raise Invalid(f"expected an object, got {type(record).__name__}")
        self._by_lower = {str(k).lower(): k for k in record}
        self._record = record
        self._read: set[str] = set()

    def get(self, *names: str) -> Any:
        """The first of ``names`` present (any case), or None."""
        for name in names:
            key = self._by_lower.get(name.lower())
            if key is not None:
                self._read.add(key)
                return self._record[key]
        return None

    def mark(self, *names: str) -> None:
        """Count ``names`` as read (known fields this table does not keep)."""
        self.get(*names)
        for name in names:
            key = self._by_lower.get(name.lower())
            if key is not None:
                self._read.add(key)

    def rest(self) -> dict[str, Any] | None:
        """The fields not read, or None when there are none."""
        rest = {k: v for k, v in self._record.items() if k not in self._read}
        return rest or None


def from_epoch_ms(value: Any, name: str) -> datetime | None:
    """Epoch milliseconds (a number or digits) as an aware UTC datetime; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise Invalid(f"{name}: expected epoch milliseconds, got a boolean")
    try:
        ms = int(value) if isinstance(value, int | str) else int(float(value))
    except (TypeError, ValueError):
        raise Invalid(f"{name}: expected epoch milliseconds, got {str(value)[:40]!r}") from None
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise Invalid(f"{name}: epoch milliseconds out of range: {ms}") from None


def to_epoch_ms(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def as_int(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise Invalid(f"{name}: expected a number, got a boolean")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Invalid(f"{name}: expected a whole number, got {str(value)[:40]!r}") from None


def as_score(value: Any, name: str) -> float | None:
    """A CVSS score sent as a string ("9.3") or a number; 0-10."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise Invalid(f"{name}: expected a score, got a boolean")
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise Invalid(f"{name}: expected a score 0-10, got {str(value)[:40]!r}") from None
    if not 0.0 <= score <= 10.0:
        raise Invalid(f"{name}: score {score} is outside 0-10")
    return score


def as_bool(value: Any, name: str) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise Invalid(f"{name}: expected true or false, got {str(value)[:40]!r}")


def as_text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def text_list(values: Any, *keys: str) -> list[str]:
    """Strings from a list of strings, or from a list of objects by the first of ``keys``."""
    if values is None:
        return []
    if not isinstance(values, list):
        values = [values]
    out: list[str] = []
    for item in values:
        if isinstance(item, Mapping):
            fields = Fields(item)
            item = fields.get(*keys)
        if item is not None and item != "":
            out.append(str(item))
    return out


def first_real(values: Iterable[Any]) -> str | None:
    """The first value that is not empty and not "N/A" (firmware fields use it for unknown)."""
    for value in values:
        if value not in (None, "", "N/A"):
            return str(value)
    return None
