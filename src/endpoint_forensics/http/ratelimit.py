"""Per-endpoint rate budgets: never send more calls than Defender documents.

Owns a thread-safe sliding-window budget that blocks until a call may go out, so concurrent work
for one tenant shares one budget; the documented limits (defender-apis.md B.6) are declared with
the datasets in ``tables.datasets``. Imports only ``tables.datasets``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from endpoint_forensics.tables.datasets import IOT_APPLIANCE_LIMIT, RateLimit, documented_limits

__all__ = ["DOCUMENTED_LIMITS", "IOT_APPLIANCE_LIMIT", "RateBudget", "RateLimit"]


# The limits are declared with the datasets whose endpoints they budget (tables.datasets).
DOCUMENTED_LIMITS: dict[str, RateLimit] = documented_limits()


class RateBudget:
    """A sliding-window log of the calls made under one limit."""

    def __init__(
        self,
        limit: RateLimit,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limit = limit
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._calls: deque[float] = deque()
        self.waited_seconds = 0.0

    def acquire(self) -> float:
        """Block until one more call fits in both windows, record it, return the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                wait = self._wait_needed(now)
                if wait <= 0:
                    self._calls.append(now)
                    self.waited_seconds += waited
                    return waited
            self._sleep(wait)
            waited += wait

    def record(self) -> list[float]:
        """The calls of the last hour as Unix times: what the next holder of this budget, in
        another process or on another machine, must count too (``state.budgets``)."""
        with self._lock:
            now = self._clock()
            offset = time.time() - now
            return [t + offset for t in self._calls if t > now - 3600.0]

    @classmethod
    def resumed(cls, limit: RateLimit, calls: Iterable[float]) -> RateBudget:
        """A budget that counts ``calls`` (Unix times, from ``record``) as its own."""
        budget = cls(limit)
        offset = time.time() - budget._clock()
        budget._calls.extend(sorted(t - offset for t in calls))
        return budget

    def calls_in_window(self, window_seconds: float) -> int:
        with self._lock:
            now = self._clock()
            return sum(1 for t in self._calls if t > now - window_seconds)

    def _wait_needed(self, now: float) -> float:
        while self._calls and self._calls[0] <= now - 3600.0:
            self._calls.popleft()
        wait = 0.0
        for window, allowed in ((60.0, self.limit.per_minute), (3600.0, self.limit.per_hour)):
            in_window = (
                [t for t in self._calls if t > now - window] if window < 3600 else self._calls
            )
            if len(in_window) >= allowed:
                # The call that must leave the window before another may enter it.
                oldest = list(in_window)[len(in_window) - allowed]
                wait = max(wait, oldest + window - now)
        return wait
