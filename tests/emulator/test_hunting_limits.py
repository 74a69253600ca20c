"""The hunting APIs' time limits and the emulator's simulated slowness (defender-apis.md B.3).

Graph answers a query past about 3 minutes with ``504`` and code ``UnknownError``, an empty
message (microsoft-graph-docs issue 19954); the MDE API's 200 s limit is answered with the
advanced-hunting errors page's "Query exceeded the timeout period." as a 400.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from epf_emulator import Emulator, EmulatorSettings

from .conftest import GRAPH, UNTHROTTLED, client_for, get_token, hunt

# 0.5 s per result row: one row answers in 0.5 s, twenty would take 10 s.
SLOW = EmulatorSettings(
    iot_sensors=0,
    devices=30,
    seed=4,
    rate_limits=UNTHROTTLED,
    hunting_seconds_per_row=0.5,
    graph_hunting_timeout_seconds=1.0,
    hunting_timeout_seconds=1.5,
)


@pytest.fixture(scope="module")
def slow() -> Iterator[Emulator]:
    with Emulator(SLOW) as emulator:
        yield emulator


def timed(client: httpx.Client, emu: Emulator, token: str, query: str, *, graph: bool):
    began = time.monotonic()
    response = hunt(client, emu, token, query, graph=graph)
    return response, time.monotonic() - began


def test_graph_answers_504_unknown_error_once_its_limit_has_passed(slow: Emulator) -> None:
    with client_for(slow) as client:
        token = get_token(client, slow, GRAPH)
        response, elapsed = timed(client, slow, token, "DeviceInfo | take 20", graph=True)
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "UnknownError" and error["message"] == ""
    assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}
    assert 1.0 <= elapsed < 8.0  # at the limit, not after the 10 s the query would take


def test_the_mde_api_answers_its_timeout_as_a_400(slow: Emulator) -> None:
    with client_for(slow) as client:
        token = get_token(client, slow)
        response, elapsed = timed(client, slow, token, "DeviceInfo | take 20", graph=False)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "BadRequest",
        "message": "Query exceeded the timeout period.",
        "target": response.json()["error"]["target"],
    }
    assert 1.5 <= elapsed < 8.0


def test_a_query_inside_the_limit_answers_after_its_simulated_time(slow: Emulator) -> None:
    with client_for(slow) as client:
        token = get_token(client, slow, GRAPH)
        response, elapsed = timed(client, slow, token, "DeviceInfo | take 1", graph=True)
    assert response.status_code == 200 and len(response.json()["results"]) == 1
    assert elapsed >= 0.5


def test_every_hunting_query_is_counted_by_text_with_its_outcome(slow: Emulator) -> None:
    query = "DeviceInfo | take 1 | project DeviceId"
    with client_for(slow) as client:
        token = get_token(client, slow, GRAPH)
        for _ in range(2):
            assert hunt(client, slow, token, query, graph=True).status_code == 200
        assert hunt(client, slow, token, "NoSuchTable", graph=True).status_code == 400
    counted = {(q["api"], q["query"]): q for q in slow.stats()["hunting_queries"]}
    assert counted[("graph", query)]["runs"] == 2
    assert counted[("graph", query)]["outcomes"] == {"answered": 2}
    assert counted[("graph", "NoSuchTable")]["outcomes"] == {"refused": 1}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("graph_hunting_row_limit", 0),
        ("hunting_timeout_seconds", 0.0),
        ("graph_hunting_timeout_seconds", float("inf")),
        ("hunting_delay_seconds", -1.0),
        ("hunting_seconds_per_row", float("nan")),
    ],
)
def test_hunting_settings_are_validated(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        EmulatorSettings(**{field: value})  # type: ignore[arg-type]
