"""Defender for IoT answers of the wrong shape (found by tests/fuzz/test_iot.py): a body that
cannot be read is a WireFormatError, a record that cannot be a row is quarantined with its
reason and the rest goes on; never another exception.

The fetch functions run as in a sync, on a real context whose client is given each path's JSON
by an httpx.MockTransport."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from endpoint_forensics.config.appliances import ConsoleConfig, SensorConfig
from endpoint_forensics.config.models import Secret
from endpoint_forensics.errors import WireFormatError
from endpoint_forensics.http.client import RAW_TOKEN, ApiClient
from endpoint_forensics.http.ratelimit import RateBudget, RateLimit
from endpoint_forensics.identity.credentials import StaticToken
from endpoint_forensics.sources import ConsoleContext, SensorContext
from endpoint_forensics.sources.iot_console import fetch_device_changes
from endpoint_forensics.sources.iot_console_v3 import pages
from endpoint_forensics.sources.iot_events import fetch_events
from endpoint_forensics.sources.iot_reports import fetch_exposure

_NOW = datetime(2026, 12, 5, tzinfo=UTC)
_TOKEN = Secret("t", source="literal")


def _client(answers: dict[str, Any]) -> ApiClient:
    """Each request answered with the JSON of the first pattern its path matches, else []."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = next((b for p, b in answers.items() if re.search(p, request.url.path)), [])
        return httpx.Response(200, content=orjson.dumps(body))

    return ApiClient(
        StaticToken(_TOKEN),
        transport=httpx.MockTransport(handler),
        max_retries=0,
        auth_style=RAW_TOKEN,
    )


def _budget() -> RateBudget:
    return RateBudget(RateLimit("iot", per_minute=1000, per_hour=10_000))


def _console(answers: dict[str, Any]) -> ConsoleContext:
    appliance = ConsoleConfig(name="cm", url="https://cm", token=_TOKEN)
    return ConsoleContext(_client(answers), _budget(), _NOW, appliance=appliance)


def _sensor(answers: dict[str, Any]) -> SensorContext:
    appliance = SensorConfig(name="s1", url="https://s1", token=_TOKEN)
    return SensorContext(_client(answers), _budget(), _NOW, appliance=appliance)


def _drain(fetched: Any) -> tuple[list[Any], Any]:
    """Every batch a dataset function yields, and the cursor it returns."""
    batches = []
    while True:
        try:
            batches.extend(next(fetched).batches)
        except StopIteration as done:
            return batches, done.value


@pytest.mark.parametrize("count", [2.5, "ten", True, [3]])
def test_a_v3_page_whose_count_is_not_a_whole_number_is_a_wire_format_error(count):
    # Was Invalid (a bare ValueError): not one of our errors, so the run could not say why.
    ctx = _console({r"/devices/": {"u_count": count, "u_devices": [{"u_id": 1}]}})
    with pytest.raises(WireFormatError, match=r"u_count: .* cannot tell where the list ends"):
        list(pages(ctx, "/external/v3/integration/devices/0", "u_devices", {}))


@pytest.mark.parametrize("body", [{"events": []}, "no events", 5, None])
def test_a_sensor_events_body_that_is_not_a_list_is_a_wire_format_error(body):
    ctx = _sensor({r"/api/v1/events$": body})
    with pytest.raises(WireFormatError, match="/api/v1/events: expected a JSON array"):
        next(fetch_events(ctx))


def test_a_deleted_device_with_a_bad_id_is_quarantined_and_the_others_are_recorded():
    # Was: the bad u_id raised out of the dataset, losing every deletion and device change.
    ctx = _console(
        {
            r"/deleteddevices/": [{"u_id": "abc"}, {"u_id": 7}, {"u_id": 2.5}],
            r"/integration/devices/": {"u_count": 1, "u_devices": [{"u_id": 5}]},
        }
    )
    [batch], cursor = _drain(fetch_device_changes(ctx))
    assert [(r["DeviceId"], r["DeviceStatus"]) for r in batch.rows] == [
        (5, "Active"),
        (7, "Deleted"),
    ]
    assert [r.record for r in batch.rejects] == [{"u_id": "abc"}, {"u_id": 2.5}]
    assert all(r.reason.startswith("deleted device: u_id: ") for r in batch.rejects)
    assert cursor["deleted"] == [7]


@pytest.mark.parametrize("timestamp", [1.8446744073709552e19, 2**63 - 1, -(2**63)])
def test_an_event_time_past_what_a_datetime_holds_is_quarantined_and_not_the_cursors(timestamp):
    # Was: the cursor kept it as its newest event: 2**64 it cannot store (TypeError), or a
    # time so late that every later poll asked for the last minute only.
    ctx = _sensor({r"/api/v1/events$": [{"timestamp": timestamp, "type": "X"}]})
    [batch], cursor = _drain(fetch_events(ctx))
    assert batch.rows == []
    assert [r.reason for r in batch.rejects] == [
        f"timestamp: epoch milliseconds out of range: {int(timestamp)}"
    ]
    orjson.dumps(cursor)  # the checkpoint stores it
    assert cursor["newest_ms"] is None


def test_an_event_from_a_sensor_clock_years_ahead_is_kept_but_not_the_cursors(caplog):
    # Was: an event dated 3000 became the newest collected, and every later poll asked for
    # the last minute only (the window reaches back from now to just before the newest).
    future = int(datetime(3000, 1, 1, tzinfo=UTC).timestamp() * 1000)
    now_ms = int(_NOW.timestamp() * 1000)
    events = [{"timestamp": future, "type": "X"}, {"timestamp": now_ms - 600_000, "type": "Y"}]
    ctx = _sensor({r"/api/v1/events$": events})
    [batch], cursor = _drain(fetch_events(ctx))
    assert len(batch.rows) == 2
    assert cursor["newest_ms"] == now_ms - 600_000
    assert "events dated past this machine's clock" in caplog.text

    # A cursor an earlier version saved with such a time is not trusted either: the next poll,
    # an hour on, asks for the hour since and the overlap, not for one minute.
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params["minutesTimeFrame"])
        return httpx.Response(200, content=b"[]")

    client = ApiClient(
        StaticToken(_TOKEN), transport=httpx.MockTransport(handler), auth_style=RAW_TOKEN
    )
    an_hour_on = datetime.fromtimestamp((now_ms + 3_600_000) / 1000, UTC)
    saved = {**cursor, "newest_ms": future}
    later = SensorContext(client, _budget(), an_hour_on, saved, appliance=ctx.appliance)
    _drain(fetch_events(later))
    assert int(asked[0]) >= 60


@pytest.mark.parametrize("port", [2**63, 2**64 - 1])
def test_a_report_rows_port_past_64_bits_is_left_to_its_details(port):
    # Was: the row kept it in Port, a long column, and the workspace's Arrow insert overflowed.
    rows = [{"address": "10.0.0.1", "port": port}, {"address": "10.0.0.2", "port": 502}]
    ctx = _sensor({r"/vulnerabilities/operational$": {"remoteAccess": rows}})
    [batch], _ = _drain(fetch_exposure(ctx))
    assert [(r["IpAddress"], r["Port"], r["Details"]["port"]) for r in batch.rows] == [
        ("10.0.0.1", None, port),
        ("10.0.0.2", 502, 502),
    ]
