"""How long this emulator took to start, and the most memory its process has held.

Owns the ``process`` part of ``/_emulator/stats`` and the start time of the startup log line:
the seconds from the process's start (Linux's ``/proc``; elsewhere from ``Emulator.start``)
to serving, from ``Emulator.start`` to serving and to the posture timeline being ready (the
first request that needs it waits until then), and the process's peak RSS
(``resource.getrusage``: the whole process, so in a test run the test runner's too).

Imports nothing of the emulator.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Startup", "peak_rss_mb", "process_age_seconds"]


@dataclass
class Startup:
    """The timings of one ``Emulator.start``; ``began`` is when it was called."""

    began: float = field(default_factory=time.perf_counter)
    age_at_begin: float | None = field(default_factory=lambda: process_age_seconds())
    serving_seconds: float | None = None
    ready_seconds: float | None = None

    def serving(self) -> None:
        self.serving_seconds = time.perf_counter() - self.began

    def ready(self) -> None:
        self.ready_seconds = time.perf_counter() - self.began

    @property
    def start_seconds(self) -> float | None:
        """From the process's start to serving (from ``Emulator.start`` where the process's
        start is unknown); None until serving."""
        if self.serving_seconds is None:
            return None
        return (self.age_at_begin or 0.0) + self.serving_seconds

    def document(self) -> dict[str, Any]:
        return {
            "start_seconds": _rounded(self.start_seconds),
            "emulator_start_seconds": _rounded(self.serving_seconds),
            "ready_seconds": _rounded(self.ready_seconds),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }


def peak_rss_mb() -> float:
    """The most resident memory this process has held, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # bytes there, KiB here


def process_age_seconds() -> float | None:
    """Seconds since this process started, from Linux's ``/proc``; None elsewhere."""
    try:
        stat = Path("/proc/self/stat").read_text()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError):
        return None
    # Field 22, start time in clock ticks after boot; counted after the ")" that ends the
    # command name, which may itself hold spaces.
    ticks = int(stat.rsplit(")", 1)[1].split()[19])
    return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
