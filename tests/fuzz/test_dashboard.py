"""``epf serve`` (C.2): the local dashboard, sent real HTTP requests with any query parameters
and path segments, answers without a 5xx and without a traceback; what it refuses is a 4xx
with a plain message."""

from __future__ import annotations

import string
from collections.abc import Iterator

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from endpoint_forensics.web.panels import sections
from endpoint_forensics.web.server import COOKIE, ServeLimits, create_app, start_server
from endpoint_forensics.web.snapshot import WorkspaceSnapshot

from .support import FUZZ, tally, wire_text
from .test_query import HOSTILE_TOKENS, kql_texts, shared_workspace

TOKEN = "fuzz-token-0123456789"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    db = shared_workspace(tmp_path_factory)
    snapshot = WorkspaceSnapshot(db)
    running = start_server(
        create_app(snapshot, token=TOKEN, limits=ServeLimits(query_rows=20, query_seconds=5)),
        host="127.0.0.1",
        port=0,
        token=TOKEN,
    )
    try:
        with httpx.Client(base_url=running.base_url, cookies={COOKIE: TOKEN}, timeout=60) as http:
            device = http.get("/api/query", params={"q": "EPF_Devices_CL | take 1"}).json()
            http.headers["x-fuzz-device"] = str(
                device["rows"][0][device["columns"].index("DeviceId")]
            )
            yield http
    finally:
        running.stop()
        snapshot.close()


# -- values ------------------------------------------------------------------------------------

times = st.one_of(
    wire_text,
    st.sampled_from(
        [
            "2026-11-05T00:00:00Z",
            "2026-11-05",
            "0001-01-01T00:00:00+01:00",
            "0001-01-01T00:00:00-23:59",
            "0001-01-01",
            "9999-12-31T23:59:59+00:00",
            "9999-12-31T23:59:59-23:59",
            "9999-12-31T23:59:59.999999Z",
            "2026-11-05T00:00:00+14:00",
            "2026-11-05T24:00:00",
            "2026-W45-1",
            "20261105T000000Z",
            "2026-11-05T00:00:00.1234567Z",
            "1970-01-01T00:00:00Z",
            "1900-01-01",
        ]
    ),
    st.datetimes(allow_imaginary=True).map(lambda d: d.isoformat()),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
)

hostile = st.one_of(
    wire_text,
    st.sampled_from(HOSTILE_TOKENS),
    st.text(alphabet=string.printable, max_size=40),
    st.sampled_from(
        [
            "' OR 1=1 --",
            '" or 1 == 1 or "',
            '*" | take 1 //',
            "*",
            "{Tenant}",
            "<script>alert(1)</script>",
            "%00",
            "%ff%fe",
            "..%2f..%2fetc%2fpasswd",
            "x" * 9000,
        ]
    ),
)


@st.composite
def device_ids(draw: st.DrawFn) -> str:
    return draw(st.one_of(hostile, st.just("{real}"), st.just("{real} "), st.just("{real}'")))


_SECTIONS = sections()


def _param(name: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, str]]:
    return st.one_of(st.just({}), values.map(lambda v: {name: v}))


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    route = draw(
        st.sampled_from(
            [
                "/api/workbook",
                "/api/device",
                "/api/device",
                "/api/query",
                "/api/query",
                "/api/views",
                "/assets/",
                "/",
                "other",
            ]
        )
    )
    params: dict[str, str] = {}
    if route == "/api/workbook":
        # A section answers in about half a second, the whole workbook in several: mostly
        # a section, often one that is not there.
        section = st.one_of(st.sampled_from(_SECTIONS), hostile)
        if draw(st.integers(0, 15)):
            params["section"] = draw(section)
        for name in ("Tenant", "Group", "OS"):
            params |= _param_draw(draw, name, hostile)
        params |= _param_draw(draw, "at", times)
    elif route == "/api/device":
        params |= _param_draw(draw, "device", device_ids())
        params |= _param_draw(draw, "at", times)
    elif route == "/api/query":
        params |= _param_draw(draw, "q", st.one_of(kql_texts, hostile))
    elif route == "/assets/":
        route += draw(st.one_of(st.sampled_from(["app.js", "app.css", "../server.py"]), hostile))
    elif route == "other":
        route = "/" + draw(hostile)
    if draw(st.integers(0, 5)) == 0:  # an unknown parameter, or the token's name again
        params[draw(st.one_of(hostile, st.just("token")))] = draw(hostile)
    return route, params


def _param_draw(draw: st.DrawFn, name: str, values: st.SearchStrategy[str]) -> dict[str, str]:
    return draw(_param(name, values))


# -- the property ------------------------------------------------------------------------------


def check_response(response: httpx.Response) -> None:
    body = response.text
    assert response.status_code < 500, (response.status_code, body[:2000])
    assert "Traceback" not in body, body[:2000]
    if 400 <= response.status_code < 500:
        if response.headers.get("content-type", "").startswith("application/json"):
            message = orjson.loads(response.content)["error"]
        else:
            message = body
        assert isinstance(message, str) and message.strip(), body[:2000]
        assert "\n" not in message.strip(), message


@FUZZ
@given(requests())
def test_a_dashboard_request(client: httpx.Client, req: tuple[str, dict[str, str]]) -> None:
    tally("epf serve request")
    route, params = req
    real = client.headers["x-fuzz-device"]
    params = {k: v.replace("{real}", real) for k, v in params.items()}
    try:
        response = client.get(route, params=params)
    except httpx.InvalidURL:
        return  # not a request a browser can send (httpx refuses it before the server sees it)
    check_response(response)
