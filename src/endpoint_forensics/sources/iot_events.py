"""The sensor event timeline (``/api/v1/events``), collected so the API's limits lose nothing.

The API has three traps (C.2): it answers only the **latest 100** events of a window that
always ends *now* (``minutesTimeFrame``, at most 4320), so a busy window silently drops its
older events; an **identical call within the hour** returns the cached first answer; and
events carry **no id**. So each poll:

1. asks for the minutes since the newest event already collected, plus an overlap for clock
   skew, choosing a window length not asked in the past hour (a cached answer would be stale);
2. if the answer is full (100 events, the oldest newer than what is already collected), asks
   again type by type (every documented type, every type seen so far), since shrinking the
   window only keeps the newest; a type whose answer is still full leaves a gap, recorded with
   its time range in ``EPF_Runs_CL`` (``Gaps``): poll more often to close it;
3. keys each event by a hash of its fields and skips those already delivered in the overlap.

The cursor (poll time, newest event, keys in the overlap, windows asked in the last hour,
types seen) advances only after the rows are delivered.
May import ``contracts``, ``errors``, ``tables`` and the other ``sources`` modules.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping
from typing import Any

from endpoint_forensics.contracts import Row, Unit
from endpoint_forensics.errors import WireFormatError
from endpoint_forensics.sources import Fetched, SensorContext
from endpoint_forensics.sources.iot import rows_of
from endpoint_forensics.sources.wire import (
    Fields,
    Invalid,
    as_text,
    from_epoch_ms,
    to_epoch_ms,
)
from endpoint_forensics.tables import IOT_EVENTS

__all__ = ["EVENTS_CAP", "MAX_WINDOW_MINUTES", "event_key", "fetch_events"]

log = logging.getLogger(__name__)

EVENTS_CAP = 100  # the API answers the latest 100 events of a window
MAX_WINDOW_MINUTES = 4_320  # larger minutesTimeFrame values are clamped silently
_CACHE_MS = 3_600_000  # identical calls within the hour get the cached answer
# Types named in the API reference; the rest are learnt from the answers.
DOCUMENTED_TYPES = ("DEVICE_CONNECTION_CREATED", "REMOTE_ACCESS", "PROGRAM_DEVICE")


def event_key(record: Mapping[str, Any]) -> str:
    """A stable key of an event: the API gives none, so a hash of everything it says."""
    f = Fields(record)
    parts = [
        str(f.get(name)) for name in ("timestamp", "type", "title", "severity", "owner", "content")
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def fetch_events(ctx: SensorContext) -> Fetched:
    poll = _Poll(ctx)
    records = poll.collect()
    origin = {
        "Appliance": ctx.appliance.name,
        "ApplianceKind": "sensor",
        "Source": "sensor/v1/events",
    }

    def to_row(f: Fields) -> Row:
        when = f.get_as("timestamp", from_epoch_ms)
        if when is None:
            raise Invalid("timestamp: missing")
        return {
            **origin,
            "EventKey": f.get("_epf_key"),
            "EventTime": when,
            "EventType": as_text(f.get("type")),
            "EventTitle": as_text(f.get("title")),
            "Severity": as_text(f.get("severity")),
            "Owner": as_text(f.get("owner")),
            "Content": as_text(f.get("content")),
        }

    batch = rows_of(IOT_EVENTS, records, to_row, "/api/v1/events")
    for reject in batch.rejects:  # the key is ours, not the sensor's
        if isinstance(reject.record, dict):
            reject.record.pop("_epf_key", None)
    yield Unit("events", iter([batch]))
    return poll.cursor()


class _Poll:
    def __init__(self, ctx: SensorContext) -> None:
        self.ctx = ctx
        cursor = ctx.cursor or {}
        self.now_ms = to_epoch_ms(ctx.now)
        self.overlap_ms = ctx.appliance.events_overlap_minutes * 60_000
        self.since_ms: int | None = cursor.get("since_ms")
        self.newest_ms: int | None = self._plausible(cursor.get("newest_ms"))
        self.seen: dict[str, int] = dict(cursor.get("seen") or {})
        self.asked: dict[str, int] = {
            q: t for q, t in (cursor.get("asked") or {}).items() if t > self.now_ms - _CACHE_MS
        }
        configured = tuple(ctx.appliance.event_types)
        self.types: set[str] = {*DOCUMENTED_TYPES, *configured, *(cursor.get("types") or [])}
        self.delivered_keys: dict[str, int] = {}

    def collect(self) -> list[dict[str, Any]]:
        if self.since_ms is None:
            initial = self.ctx.appliance.events_initial_minutes
            minutes, covered_ms = initial, self.now_ms - initial * 60_000
            skip_before = covered_ms
        else:
            # Everything up to here was visible to the last poll: its newest event (the
            # sensor's own clock, so no skew), or its time less the overlap when it was quiet.
            skip_before = self.since_ms - self.overlap_ms
            covered_ms = max(self.newest_ms or skip_before, skip_before)
            # The window reaches back past it by the overlap, for clock skew.
            minutes = math.ceil((self.now_ms - covered_ms + self.overlap_ms) / 60_000)
            if minutes > MAX_WINDOW_MINUTES:
                reach_ms = self.now_ms - MAX_WINDOW_MINUTES * 60_000
                self._gap(covered_ms, reach_ms, "longer since the last poll than the API reaches")
                minutes, covered_ms = MAX_WINDOW_MINUTES, reach_ms
        answer = self._ask(minutes, None)
        found = list(answer)
        if self._full(answer, covered_ms):
            log.info(
                "sensor %s: the events window of %d minutes came back full; asking type by type",
                self.ctx.appliance.name,
                minutes,
            )
            self.types.update(t for t in (_type_of(e) for e in answer) if t)
            for event_type in sorted(self.types):
                typed = self._ask(minutes, event_type)
                found.extend(typed)
                if self._full(typed, covered_ms):
                    oldest = min(t for t in (_timestamp(e) for e in typed) if t is not None)
                    self._gap(covered_ms, oldest, f"more than {EVENTS_CAP} {event_type} events")
        stamps = [t for t in (_timestamp(e) for e in found) if t is not None]
        future = [t for t in stamps if self._plausible(t) is None]
        if future:
            log.warning(
                "sensor %s: %d events dated past this machine's clock by more than the overlap "
                "(the latest %s): kept, but not taken as the newest collected (check the "
                "sensor's clock)",
                self.ctx.appliance.name,
                len(future),
                from_epoch_ms(max(future)),
            )
        stamps = [t for t in stamps if t not in future]
        if stamps:
            self.newest_ms = max(self.newest_ms or 0, *stamps)
        return self._new_events(found, skip_before)

    def _plausible(self, stamp_ms: int | None) -> int | None:
        """``stamp_ms``, unless it is later than now by more than the overlap allows for skew:
        taken as the newest collected event, such a time (a sensor clock set years ahead) would
        make every later poll ask for the last minute only."""
        if stamp_ms is None or stamp_ms > self.now_ms + self.overlap_ms:
            return None
        return stamp_ms

    def cursor(self) -> dict[str, Any]:
        keep_after = self.now_ms - self.overlap_ms - 60_000
        seen = {**self.seen, **self.delivered_keys}
        return {
            "since_ms": self.now_ms,
            "newest_ms": self.newest_ms,
            "seen": {k: t for k, t in seen.items() if t >= keep_after},
            "asked": self.asked,
            "types": sorted(self.types),
        }

    def _ask(self, minutes: int, event_type: str | None) -> list[Any]:
        # A window length asked in the past hour would return that call's cached answer.
        minutes = max(1, minutes)
        while True:
            params = {"minutesTimeFrame": str(minutes)}
            if event_type:
                params["type"] = event_type
            query = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
            if query not in self.asked or minutes >= MAX_WINDOW_MINUTES:
                break
            minutes += 1
        self.asked[query] = self.now_ms
        answer = self.ctx.get("/api/v1/events", params)
        if not isinstance(answer, list):
            raise WireFormatError(
                f"/api/v1/events: expected a JSON array, got {type(answer).__name__}",
                method="GET",
                url="/api/v1/events",
            )
        return answer

    def _full(self, answer: list[Any], covered_ms: int) -> bool:
        """Whether the cap may have cut events newer than ``covered_ms`` from ``answer``."""
        if len(answer) < EVENTS_CAP:
            return False
        stamps = [t for t in (_timestamp(e) for e in answer) if t is not None]
        return bool(stamps) and min(stamps) > covered_ms

    def _new_events(self, found: list[Any], skip_before: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for record in found:
            if not isinstance(record, Mapping):
                out.append({"_epf_key": None, "record": record})
                continue
            stamp = _timestamp(record)
            key = event_key(record)
            if key in self.seen or key in self.delivered_keys:
                continue
            if stamp is not None and self.since_ms is not None and stamp < skip_before:
                continue  # older than the overlap: delivered by an earlier poll
            # A record without a usable timestamp goes on, to be quarantined with its reason.
            self.delivered_keys[key] = stamp if stamp is not None else self.now_ms
            out.append({**record, "_epf_key": key})
        return out

    def _gap(self, start_ms: int, end_ms: int, reason: str) -> None:
        start, end = from_epoch_ms(start_ms), from_epoch_ms(end_ms)
        self.ctx.gaps.append(
            {
                "start": start.isoformat() if start else None,
                "end": end.isoformat() if end else None,
                "reason": reason,
            }
        )
        log.warning(
            "sensor %s: events may be missing: %s to %s (%s)",
            self.ctx.appliance.name,
            start,
            end,
            reason,
        )


def _timestamp(record: Any) -> int | None:
    """The event's time in epoch ms; None where its row has none (quarantined for it): a
    time past what a datetime holds would outgrow the cursor's integers, and be its newest."""
    if not isinstance(record, Mapping):
        return None
    value = Fields(record).get("timestamp")
    if isinstance(value, bool):
        return None
    try:
        ms = int(value)
        from_epoch_ms(ms)
    except (TypeError, ValueError, OverflowError):  # Invalid is a ValueError
        return None
    return ms


def _type_of(record: Any) -> str | None:
    if not isinstance(record, Mapping):
        return None
    value = Fields(record).get("type")
    return value if isinstance(value, str) and value else None
