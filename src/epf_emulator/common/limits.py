"""Throttling, fault injection and request accounting of the emulated tenant.

Owns the documented per-tenant rate limits as sliding windows (defender-apis.md B.1, B.3, B.6) and
what each budget saw (every call counted against it, admitted or not, and the most in any minute
and any hour: the proof that a client kept to the documented budget, which the admitted calls
alone cannot give), the declarative ``Fault`` counters, and the per-path/per-status request
counts and per-text hunting query counts that ``/_emulator/stats`` reports. All are
thread-safe: uvicorn's event loop, the worker threads running hunting queries and the caller
of ``Emulator.stats()`` share them.

Imports only ``common.settings`` of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from epf_emulator.common.settings import RATE_LIMIT_NAMES, Fault

__all__ = ["DEFAULT_RATE_LIMITS", "FaultInjector", "RateLimiter", "RequestStats", "Throttled"]

#: name -> windows of (calls, seconds). The first window is the per-minute one overrides replace.
_JSON_EXPORT = ((30, 60.0), (1000, 3600.0))  # ...ByMachine, the delta, deviceavinfo (B.2, B.6)
_FILE_EXPORT = ((5, 60.0), (20, 3600.0))  # Va, Sca and SoftwareInventory via files (B.5.3)
# /api/recommendations, /api/vulnerabilities and the scores state no limit (B.6): assume the
# machines one.
_UNSTATED = ((100, 60.0), (1500, 3600.0))
DEFAULT_RATE_LIMITS: dict[str, tuple[tuple[int, float], ...]] = {
    "machines": ((100, 60.0), (1500, 3600.0)),
    "advanced_hunting": ((45, 60.0), (1500, 3600.0)),
    "deviceavinfo": _JSON_EXPORT,
    # B.2 and B.6 say 30/min and 1,000/h, the via-files page 5/min and 20/h: the stricter.
    "info_gathering_export": _FILE_EXPORT,
    "software_vulnerabilities_by_machine": _JSON_EXPORT,
    "software_vulnerabilities_export": _FILE_EXPORT,
    "software_vulnerability_changes": _JSON_EXPORT,
    "secure_config_by_machine": _JSON_EXPORT,
    "secure_config_export": _FILE_EXPORT,
    "software_inventory_by_machine": _JSON_EXPORT,
    "software_inventory_export": _FILE_EXPORT,
    "recommendations": _UNSTATED,
    "vulnerabilities": _UNSTATED,
    "scores": _UNSTATED,
}
assert set(DEFAULT_RATE_LIMITS) == set(RATE_LIMIT_NAMES)


@dataclass(frozen=True)
class Throttled:
    """A call refused by a rate limit: when to retry and the service's message."""

    retry_after: int
    message: str


class _BudgetUse:
    """Every call counted against one budget, admitted or throttled: totals, and the most calls
    in any 60 seconds (exactly) and in any hour (in whole seconds, rounded so it is never
    under: a window may be up to a second wider than the hour)."""

    __slots__ = ("_hour", "_minute", "_seconds", "calls", "peak_per_hour", "peak_per_minute",
                 "throttled")  # fmt: skip

    def __init__(self) -> None:
        self.calls = 0
        self.throttled = 0
        self.peak_per_minute = 0
        self.peak_per_hour = 0
        self._minute: deque[float] = deque()  # call times in the last 60 s
        # [whole second, calls in it] over the last hour: bounded, however fast the calls.
        self._seconds: deque[list[int]] = deque()
        self._hour = 0

    def count(self, now: float, *, throttled: bool) -> None:
        self.calls += 1
        self.throttled += throttled
        minute = self._minute
        minute.append(now)
        while minute[0] <= now - 60.0:
            minute.popleft()
        self.peak_per_minute = max(self.peak_per_minute, len(minute))
        second = math.floor(now)
        if self._seconds and self._seconds[-1][0] == second:
            self._seconds[-1][1] += 1
        else:
            self._seconds.append([second, 1])
        self._hour += 1
        while self._seconds[0][0] < second - 3600:
            self._hour -= self._seconds.popleft()[1]
        self.peak_per_hour = max(self.peak_per_hour, self._hour)


class RateLimiter:
    """Sliding-window call counters per limit name; throttled calls are not counted against
    the limit, but every call counts in what the budget saw (``usage``)."""

    def __init__(
        self,
        overrides: Mapping[str, tuple[int, float]] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[tuple[int, float], ...]] = {}
        for name, windows in DEFAULT_RATE_LIMITS.items():
            if overrides and name in overrides:
                calls, seconds = overrides[name]
                windows = ((int(calls), float(seconds)),) + windows[1:]
            self._windows[name] = windows
        self._calls: dict[str, list[float]] = {name: [] for name in self._windows}
        self._use: dict[str, _BudgetUse] = {}

    def usage(self) -> dict[str, dict[str, Any]]:
        """Per budget that saw a call: its calls, how many were throttled, the most in any
        minute and any hour (admitted or not), and the windows in force as (calls, seconds)."""
        with self._lock:
            return {
                name: {
                    "calls": use.calls,
                    "throttled": use.throttled,
                    "peak_per_minute": use.peak_per_minute,
                    "peak_per_hour": use.peak_per_hour,
                    "windows": [[calls, seconds] for calls, seconds in self._windows[name]],
                }
                for name, use in sorted(self._use.items())
            }

    def acquire(self, name: str) -> Throttled | None:
        """Count one call against ``name``, or say how long to wait if a window is full."""
        windows = self._windows[name]
        longest = max(seconds for _, seconds in windows)
        with self._lock:
            now = self._clock()
            calls = self._calls[name]  # ascending call times
            del calls[: bisect.bisect_right(calls, now - longest)]
            waits: list[tuple[float, int, float]] = []
            for limit, seconds in windows:
                in_window = len(calls) - bisect.bisect_right(calls, now - seconds)
                if in_window >= limit:
                    # A slot frees when the limit-th newest call leaves the window.
                    waits.append((calls[len(calls) - limit] + seconds - now, limit, seconds))
            use = self._use.get(name)
            if use is None:
                use = self._use[name] = _BudgetUse()
            use.count(now, throttled=bool(waits))
            if waits:
                wait, limit, seconds = max(waits)
                retry_after = max(1, math.ceil(wait))
                return Throttled(
                    retry_after,
                    f"API calls quota exceeded! Maximum allowed: {limit} per {_describe(seconds)}. "
                    f"Please retry after {retry_after} seconds.",
                )
            calls.append(now)
            return None


def _describe(seconds: float) -> str:
    if seconds == 60:
        return "1 minute"
    if seconds == 3600:
        return "1 hour"
    return f"{seconds:g} seconds"


class FaultInjector:
    """Decides, per request path, whether a configured ``Fault`` answers instead of the API.

    Every fault counts the requests whose path starts with its prefix, independently of the
    other faults; the first fault whose turn it is wins.
    """

    def __init__(self, faults: tuple[Fault, ...]) -> None:
        self._faults = faults
        self._seen = [0] * len(faults)
        self._injected = [0] * len(faults)
        self._lock = threading.Lock()

    def check(self, path: str) -> Fault | None:
        if not self._faults:
            return None
        chosen: Fault | None = None
        with self._lock:
            for index, fault in enumerate(self._faults):
                if not path.startswith(fault.path):
                    continue
                self._seen[index] += 1
                turn = self._seen[index]
                if chosen is None and fault.after < turn <= fault.after + fault.times:
                    chosen = fault
                    self._injected[index] += 1
        return chosen

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"path": f.path, "status": f.status, "matched": seen, "injected": injected}
                for f, seen, injected in zip(self._faults, self._seen, self._injected, strict=True)
            ]


class RequestStats:
    """Counts responses by path and status, tokens issued, and hunting queries by text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[str, dict[str, int]] = {}
        self._tokens = 0
        # (api, query text) -> {"runs": n, outcome: n...}: shows a client re-sending a query.
        self._hunting: dict[tuple[str, str], dict[str, int]] = {}

    def hunting_query(self, api: str, query: str) -> None:
        """Count one run of ``query`` on hunting ``api`` (``mde`` or ``graph``)."""
        with self._lock:
            entry = self._hunting.setdefault((api, query), {"runs": 0})
            entry["runs"] += 1

    def hunting_outcome(self, api: str, query: str, outcome: str) -> None:
        """Count how a run ended: answered, truncated, timed_out or refused."""
        with self._lock:
            entry = self._hunting.setdefault((api, query), {"runs": 0})
            entry[outcome] = entry.get(outcome, 0) + 1

    def hunting_queries(self) -> list[dict[str, Any]]:
        """Each distinct hunting query: its API, text, runs and outcomes, in arrival order."""
        with self._lock:
            return [
                {"api": api, "query": query, "runs": entry["runs"]}
                | {"outcomes": {k: v for k, v in sorted(entry.items()) if k != "runs"}}
                for (api, query), entry in self._hunting.items()
            ]

    def record(self, path: str, status: int) -> None:
        with self._lock:
            by_status = self._requests.setdefault(path, {})
            key = str(status)
            by_status[key] = by_status.get(key, 0) + 1

    def token_issued(self) -> None:
        with self._lock:
            self._tokens += 1

    @property
    def tokens_issued(self) -> int:
        with self._lock:
            return self._tokens

    def requests(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {path: dict(sorted(s.items())) for path, s in sorted(self._requests.items())}
