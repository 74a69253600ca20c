"""The emulated clock and the world's calendar: the instant every dataset is served "as of".

Owns the fixed calendar of the emulated world: ``WORLD_ANCHOR``, the instant the world is
described from (every device, CVE and assessment time is a fixed offset from it, so what the
tenant serves at an emulated time T depends on T and the seed, never on when the emulator
started), the timeline it covers (``TIMELINE_START``, 120 days before the anchor, to
``TIMELINE_END``, 14 days after), the earliest instant the clock may start at
(``CLOCK_EARLIEST``: advanced hunting still holds its 30 days there) and ``INCIDENT_AT``, the
instant of the incident story.

Owns "now" for the posture data and the hunting tables: the start time (the ``start``
setting, by default the anchor) plus the hours ``advance`` added. It does not follow the wall
clock, so a snapshot, the truth and a collector's sync never disagree because real seconds
passed between them; only ``advance`` moves it, and every consumer reads the same instant.
Listeners run after each advance (the machine records follow it that way). Tokens and SAS
links keep using the wall clock, as Entra and Azure Storage would.

Imports nothing of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

__all__ = [
    "CLOCK_EARLIEST",
    "INCIDENT_AT",
    "TIMELINE_END",
    "TIMELINE_START",
    "WORLD_ANCHOR",
    "EmulatedClock",
    "epoch_us",
    "from_epoch_us",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: The instant the emulated world is described from: a constant, not the start time.
WORLD_ANCHOR = datetime(2026, 11, 5, tzinfo=UTC)
#: The incident story's instant (``world.incident``).
INCIDENT_AT = datetime(2026, 11, 3, 14, tzinfo=UTC)
#: The world's history: every timeline table covers this range.
TIMELINE_START = WORLD_ANCHOR - timedelta(days=120)
TIMELINE_END = WORLD_ANCHOR + timedelta(days=14)
#: The earliest clock time: advanced hunting's 30-day window still lies inside the timeline.
CLOCK_EARLIEST = TIMELINE_START + timedelta(days=30)


def epoch_us(t: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime, exactly."""
    delta = t - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_epoch_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


class EmulatedClock:
    """``now()`` = anchor + advanced hours; thread-safe."""

    def __init__(self, anchor: datetime) -> None:
        if anchor.tzinfo is None:
            raise ValueError("the anchor must be an aware datetime")
        self.anchor = anchor.astimezone(UTC)
        self._offset = timedelta()
        self._lock = threading.Lock()
        self._listeners: list[Callable[[datetime, datetime], None]] = []

    def now(self) -> datetime:
        with self._lock:
            return self.anchor + self._offset

    def now_us(self) -> int:
        return epoch_us(self.now())

    @property
    def advanced_hours(self) -> float:
        with self._lock:
            return self._offset.total_seconds() / 3600

    def on_advance(self, listener: Callable[[datetime, datetime], None]) -> None:
        """Call ``listener(before, after)`` after every advance."""
        self._listeners.append(listener)

    def advance(self, hours: float) -> datetime:
        """Move now forward by ``hours`` (>= 0); returns the new now.

        Raises:
            ValueError: negative or not finite.
        """
        if not hours >= 0 or hours == float("inf"):
            raise ValueError(f"hours must be a finite number >= 0: {hours}")
        with self._lock:
            before = self.anchor + self._offset
            # Whole microseconds, so every consumer renders the same instant.
            self._offset += timedelta(microseconds=round(hours * 3_600_000_000))
            after = self.anchor + self._offset
        for listener in self._listeners:
            listener(before, after)
        return after
