"""Lexing for the ``$filter`` parser: tokens and OData date-time literals.

Owns how ``$filter`` text splits into tokens (strings with ``''`` escapes, numbers, instants,
names, punctuation) and how an ISO 8601 instant, in a literal or in a machine record, becomes
a comparable UTC ``datetime``. ``mde.odata`` builds the grammar on top.

Imports nothing of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

__all__ = ["ODataFilterError", "Token", "parse_instant", "tokenize"]


class ODataFilterError(ValueError):
    """The ``$filter`` text is not valid for this entity; the message says why."""


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<datetime>\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:\d{2}))
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<string>'(?:[^']|'')*')
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[(),:/])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    """One lexeme: its kind (``datetime``, ``number``, ``string``, ``ident``, ``punct``, ``end``)."""

    kind: str
    text: str
    pos: int


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens, ending with an ``end`` token.

    Raises:
        ODataFilterError: a character that cannot start any token (e.g. an unclosed quote).
    """
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ODataFilterError(
                f"Syntax error: character '{text[pos]}' is not valid at position {pos} in '{text}'."
            )
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


_INSTANT = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?(Z|[+-]\d{2}:\d{2})?$"
)


@lru_cache(maxsize=100_000)  # records' lastSeen values repeat across pages and filters
def parse_instant(value: Any) -> datetime | None:
    """An ISO 8601 instant (any number of fractional digits; no zone means UTC), else None."""
    if not isinstance(value, str):
        return None
    match = _INSTANT.match(value)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        instant = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            micros,
            tzinfo=UTC,
        )
        if zone and zone != "Z":
            sign = 1 if zone[0] == "+" else -1
            instant -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    except ValueError:
        return None
    return instant
