"""The Logs Ingestion endpoint (defender-apis.md D): the real SDK, raw HTTP, limits and errors."""

from __future__ import annotations

import gzip
import re
import tomllib
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential
from azure.monitor.ingestion import LogsIngestionClient

from endpoint_forensics.config import load_settings
from endpoint_forensics.tables import TABLES, Column, KqlType, Table
from epf_emulator import Emulator, EmulatorSettings, Fault
from epf_emulator.common.clock import WORLD_ANCHOR
from epf_emulator.ingestion.endpoint import UNCOMPRESSED_SLACK_BYTES
from epf_emulator.ingestion.streams import declared_streams

from .conftest import MDE, bearer, client_for, get_token

MONITOR = "https://monitor.azure.com"
AV = "EPF_AvHealth_CL"
ONE_MIB = 1_048_576
# Recent enough to be kept (Azure replaces a TimeGenerated over 2 days old), sent with 7
# fraction digits as the service's own samples have them.
SENT_AT = (WORLD_ANCHOR - timedelta(hours=1)).replace(microsecond=123456)  # the emulated clock
SENT_AT_TEXT = SENT_AT.strftime("%Y-%m-%dT%H:%M:%S.1234567Z")


@pytest.fixture(scope="module")
def ing() -> Iterator[Emulator]:
    """A small tenant of its own, so the ingestion counters are this module's alone."""
    with Emulator(EmulatorSettings(iot_sensors=0, devices=4, seed=21)) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def http(ing: Emulator) -> Iterator[httpx.Client]:
    with client_for(ing) as c:
        yield c


@pytest.fixture(scope="module")
def monitor_token(ing: Emulator, http: httpx.Client) -> str:
    # The tutorial's double-slash scope (A.2); the SDK's single-slash one is used below.
    response = http.post(
        f"{ing.base_url}/{ing.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": ing.client_id,
            "client_secret": ing.client_secret,
            "scope": f"{MONITOR}//.default",
        },
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def url(emu: Emulator, stream: str = f"Custom-{AV}", dcr: str | None = None) -> str:
    dcr_id = emu.dcr_immutable_id if dcr is None else dcr
    return f"{emu.base_url}/dataCollectionRules/{dcr_id}/streams/{stream}"


def post(
    client: httpx.Client,
    emu: Emulator,
    token: str,
    body: Any,
    *,
    stream: str = f"Custom-{AV}",
    gzipped: bool = False,
    api_version: str | None = "2023-01-01",
    dcr: str | None = None,
) -> httpx.Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {**bearer(token), "Content-Type": "application/json"}
    if gzipped:
        raw = gzip.compress(raw)
        headers["Content-Encoding"] = "gzip"
    params = {"api-version": api_version} if api_version is not None else {}
    return client.post(url(emu, stream, dcr), content=raw, headers=headers, params=params)


def av_row(device: str, **extra: Any) -> dict[str, Any]:
    return {
        "TimeGenerated": SENT_AT_TEXT,
        "RunId": "run-1",
        "DeviceId": device,
        "AvIsSignatureUpToDate": True,
        "SignatureAgeHours": 5,
        "RbacGroupId": 42,
        "LastSeenTime": "2026-11-27T23:00:00+01:00",
        "AdditionalFields": {"engine": "1.1", "list": [1, 2]},
        **extra,
    }


def counters(emu: Emulator) -> dict[str, Any]:
    ingestion: dict[str, Any] = emu.stats()["ingestion"]
    return ingestion


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"code", "message"}
    return error


# --- the real SDK ------------------------------------------------------------------------------
def test_the_sdk_uploads_rows_that_show_in_stats_and_ingested_rows(ing: Emulator) -> None:
    ca = str(ing.ca_path)
    credential = ClientSecretCredential(
        ing.tenant_id,
        ing.client_id,
        ing.client_secret,
        authority=ing.base_url,
        disable_instance_discovery=True,
        connection_verify=ca,
    )
    rows: list[MutableMapping[str, Any]] = [
        av_row(f"sdk-{i}", RbacGroupId=str(i)) for i in range(300)
    ]
    before = counters(ing)
    with LogsIngestionClient(ing.base_url, credential, connection_verify=ca) as client:
        client.upload(ing.dcr_immutable_id, f"Custom-{AV}", rows)
        with pytest.raises(HttpResponseError) as refused:
            client.upload(ing.dcr_immutable_id, f"Custom-{AV}", [av_row("x", Bogus=1)])
    credential.close()
    assert refused.value.status_code == 400 and "Bogus" in str(refused.value)
    after = counters(ing)
    assert after["accepted"] == before["accepted"] + 1
    assert after["rejected"].get("400", 0) == before["rejected"].get("400", 0) + 1
    assert after["bytes"] > before["bytes"]
    stored = [r for r in ing.ingested_rows(AV) if r["DeviceId"].startswith("sdk-")]
    assert [r["DeviceId"] for r in stored] == [f"sdk-{i}" for i in range(300)]
    first = stored[0]
    assert set(first) == set(TABLES[AV].column_names)  # every column, None where not sent
    assert first["TimeGenerated"] == SENT_AT
    assert first["LastSeenTime"] == datetime(2026, 11, 27, 22, 0, tzinfo=UTC)
    assert first["AvIsSignatureUpToDate"] is True
    assert first["SignatureAgeHours"] == 5.0 and isinstance(first["SignatureAgeHours"], float)
    assert [r["RbacGroupId"] for r in stored[:3]] == [0, 1, 2]  # integer strings convert
    assert first["AdditionalFields"] == {"engine": "1.1", "list": [1, 2]}
    assert first["OSPlatform"] is None
    assert ing.stats()["ingested"][AV] == len(ing.ingested_rows(AV))


# --- raw HTTP: success -------------------------------------------------------------------------
@pytest.mark.parametrize("gzipped", [False, True])
def test_plain_and_gzip_bodies_get_an_empty_204(
    ing: Emulator, http: httpx.Client, monitor_token: str, gzipped: bool
) -> None:
    device = f"raw-{gzipped}"
    response = post(http, ing, monitor_token, [av_row(device), av_row(device)], gzipped=gzipped)
    assert response.status_code == 204
    assert response.content == b""
    assert len([r for r in ing.ingested_rows(AV) if r["DeviceId"] == device]) == 2


def test_every_registry_table_has_a_stream(
    ing: Emulator, http: httpx.Client, monitor_token: str
) -> None:
    before = ing.stats()["ingested"]
    for name in TABLES:  # each in the one DCR that declares it
        response = post(
            http, ing, monitor_token, [{}], stream=f"Custom-{name}", dcr=ing.dcr_for(name)
        )
        assert response.status_code == 204, (name, response.text)
    after = ing.stats()["ingested"]
    assert {name: after[name] - before.get(name, 0) for name in TABLES} == dict.fromkeys(TABLES, 1)


def test_streams_follow_the_registry_as_it_is_when_the_app_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    added = Table(
        name="EPF_Later_CL",
        description="A table added after this module was written.",
        source="test",
        key=("Name",),
        columns=(Column("Name", KqlType.STRING, "a name"),),
    )
    monkeypatch.setitem(TABLES, added.name, added)
    stream = declared_streams()["Custom-EPF_Later_CL"]
    assert stream.table == "EPF_Later_CL" and dict(stream.columns) == {"Name": KqlType.STRING}


def test_a_missing_time_generated_is_the_ingestion_time(
    ing: Emulator, http: httpx.Client, monitor_token: str
) -> None:
    row = {"RunId": "no-time", "DeviceId": "no-time", "TimeGenerated": None}
    assert post(http, ing, monitor_token, [row]).status_code == 204
    (stored,) = [r for r in ing.ingested_rows(AV) if r["DeviceId"] == "no-time"]
    assert abs(stored["TimeGenerated"] - ing.now) < timedelta(minutes=1)


def test_values_over_64_kb_are_truncated_and_counted(
    ing: Emulator, http: httpx.Client, monitor_token: str
) -> None:
    before = counters(ing)["truncated_fields"]
    long_ascii = "a" * 70_000
    long_wide = "a" + "é" * 40_000  # the cut at byte 65,536 falls inside an "é"
    big_dynamic = {"k": "b" * 70_000}
    row = av_row("long", DeviceName=long_ascii, OSVersion=long_wide, AdditionalFields=big_dynamic)
    exact = av_row("exact", DeviceName="c" * 65_536)
    assert post(http, ing, monitor_token, [row, exact], gzipped=True).status_code == 204
    assert counters(ing)["truncated_fields"] == before + 3
    stored = {r["DeviceId"]: r for r in ing.ingested_rows(AV) if r["DeviceId"] in ("long", "exact")}
    assert stored["long"]["DeviceName"] == "a" * 65_536
    assert stored["long"]["OSVersion"] == "a" + "é" * 32_767
    assert len(stored["long"]["AdditionalFields"].encode()) == 65_536
    assert stored["exact"]["DeviceName"] == "c" * 65_536


# --- raw HTTP: refusals ------------------------------------------------------------------------
def test_bodies_over_one_mib_get_413_compressed_or_not(
    ing: Emulator, http: httpx.Client, monitor_token: str
) -> None:
    def body_of(size: int) -> bytes:
        prefix, suffix = b'[{"DeviceId":"big","DeviceName":"', b'"}]'
        return prefix + b"x" * (size - len(prefix) - len(suffix)) + suffix

    before = counters(ing)["rejected"].get("413", 0)
    assert post(http, ing, monitor_token, body_of(ONE_MIB)).status_code == 204  # the limit
    plain = post(http, ing, monitor_token, body_of(ONE_MIB + 1))
    assert plain.status_code == 413 and error_of(plain)["message"]
    # Small on the wire, over the limit once inflated (inflated JSON gets room for the
    # array's separators, which the SDK's chunking does not count).
    limit = ONE_MIB + UNCOMPRESSED_SLACK_BYTES
    inflated = post(http, ing, monitor_token, body_of(limit + 1), gzipped=True)
    assert inflated.status_code == 413
    assert post(http, ing, monitor_token, body_of(limit), gzipped=True).status_code == 204
    assert counters(ing)["rejected"]["413"] == before + 2
    assert len([r for r in ing.ingested_rows(AV) if r["DeviceId"] == "big"]) == 2


def test_an_unknown_column_refuses_the_whole_request(
    ing: Emulator, http: httpx.Client, monitor_token: str
) -> None:
    rows = [av_row("all-or-nothing"), av_row("all-or-nothing", Colour="blue")]
    response = post(http, ing, monitor_token, rows)
    assert response.status_code == 400
    assert "'Colour'" in error_of(response)["message"]
    assert not [r for r in ing.ingested_rows(AV) if r["DeviceId"] == "all-or-nothing"]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("RbacGroupId", "forty-two"),  # a string in a long column
        ("RbacGroupId", 4.5),
        ("RbacGroupId", True),
        ("RbacGroupId", 2**63),
        ("LastSeenTime", "yesterday"),  # not ISO 8601
        ("LastSeenTime", 1764291723),
        ("DeviceName", 12),
        ("AvIsSignatureUpToDate", "true"),
        ("SignatureAgeHours", "5"),
    ],
)
def test_a_value_of_the_wrong_type_gets_400(
    ing: Emulator, http: httpx.Client, monitor_token: str, column: str, value: Any
) -> None:
    response = post(http, ing, monitor_token, [av_row("typed", **{column: value})])
    assert response.status_code == 400
    assert f"'{column}'" in error_of(response)["message"]
    assert not [r for r in ing.ingested_rows(AV) if r["DeviceId"] == "typed"]


def test_int_columns_are_32_bit(ing: Emulator, http: httpx.Client, monitor_token: str) -> None:
    stream = "Custom-EPF_AgentHealth_CL"
    too_big = post(http, ing, monitor_token, [{"FailingTests": 2**31}], stream=stream)
    assert too_big.status_code == 400
    fits = post(http, ing, monitor_token, [{"FailingTests": "-7", "RunId": "i"}], stream=stream)
    assert fits.status_code == 204
    stored = [r for r in ing.ingested_rows("EPF_AgentHealth_CL") if r["RunId"] == "i"]
    assert [r["FailingTests"] for r in stored] == [-7]


@pytest.mark.parametrize(
    ("body", "gzipped"),
    [
        (b'{"DeviceId": "not an array"}', False),
        (b"[1, 2]", False),
        (b'[{"DeviceId": "x"', False),
        (b"\xff\xfe", False),
        (b"[]", True),  # fine JSON, then cut below: not a whole gzip stream
    ],
)
def test_bodies_that_are_not_arrays_of_objects_get_400(
    ing: Emulator, http: httpx.Client, monitor_token: str, body: bytes, gzipped: bool
) -> None:
    headers = {**bearer(monitor_token), "Content-Type": "application/json"}
    if gzipped:
        body = gzip.compress(body)[:-4]
        headers["Content-Encoding"] = "gzip"
    response = http.post(
        url(ing), content=body, headers=headers, params={"api-version": "2023-01-01"}
    )
    assert response.status_code == 400
    assert error_of(response)["code"]


def test_unknown_dcr_and_stream_get_404(
    ing: Emulator, http: httpx.Client, monitor_token: str
) -> None:
    other = "dcr-" + "0" * 32
    unknown_dcr = post(http, ing, monitor_token, [av_row("404")], dcr=other)
    assert unknown_dcr.status_code == 404 and other in error_of(unknown_dcr)["message"]
    unknown_stream = post(http, ing, monitor_token, [av_row("404")], stream="Custom-Nope_CL")
    assert unknown_stream.status_code == 404
    assert "Custom-Nope_CL" in error_of(unknown_stream)["message"]
    bare = post(http, ing, monitor_token, [av_row("404")], stream=AV)  # no Custom- prefix
    assert bare.status_code == 404


@pytest.mark.parametrize("version", [None, "2021-11-01-preview"])
def test_another_api_version_gets_400(
    ing: Emulator, http: httpx.Client, monitor_token: str, version: str | None
) -> None:
    response = post(http, ing, monitor_token, [av_row("v")], api_version=version)
    assert response.status_code == 400 and "2023-01-01" in error_of(response)["message"]


def test_tokens_for_another_audience_expired_or_missing_get_401(
    ing: Emulator, http: httpx.Client
) -> None:
    mde_token = get_token(http, ing, MDE)
    expired = ing.token(MONITOR, lifetime_seconds=-60)
    for token in (mde_token, expired):
        response = post(http, ing, token, [av_row("401")])
        assert response.status_code == 401
        assert error_of(response)["code"] == "InvalidToken"
    missing = http.post(url(ing), json=[av_row("401")], params={"api-version": "2023-01-01"})
    assert missing.status_code == 401 and error_of(missing)["code"] == "InvalidToken"
    assert "Bearer" in missing.headers["WWW-Authenticate"]
    assert not [r for r in ing.ingested_rows(AV) if r["DeviceId"] == "401"]


def test_a_token_of_another_tenant_gets_403_operation_failed(
    ing: Emulator, http: httpx.Client
) -> None:
    token = ing.token(MONITOR, tenant_id="00000000-0000-0000-0000-000000000001")
    response = post(http, ing, token, [av_row("403")])
    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == "OperationFailed"
    assert error["message"].startswith(
        "The authentication token provided does not have access to ingest data for the data"
        f" collection rule with immutable Id '{ing.dcr_immutable_id}' PipelineAccessResult:"
        " AccessGranted: False, IsRbacPresent: False,"
    )


def test_stats_count_requests_by_outcome(
    ing: Emulator, http: httpx.Client, monitor_token: str
) -> None:
    before = counters(ing)
    body = orjson.dumps([av_row("counted")])
    assert post(http, ing, monitor_token, body).status_code == 204
    assert post(http, ing, monitor_token, body, stream="Custom-Nope_CL").status_code == 404
    after = counters(ing)
    assert after["requests"] == before["requests"] + 2
    assert after["accepted"] == before["accepted"] + 1
    assert after["rejected"]["404"] == before["rejected"].get("404", 0) + 1
    assert after["bytes"] == before["bytes"] + len(body)


# --- throttling and faults ---------------------------------------------------------------------
def test_rate_limit_and_injected_faults_answer_429_with_retry_after() -> None:
    settings = EmulatorSettings(
        iot_sensors=0,
        devices=2,
        seed=22,
        ingestion_rate_limit=(2, 60.0),
        faults=(Fault("/dataCollectionRules", 429, times=1, retry_after=7),),
    )
    with Emulator(settings) as emu, client_for(emu) as client:
        token = get_token(client, emu, MONITOR)
        injected = post(client, emu, token, [av_row("t")])
        assert injected.status_code == 429 and injected.headers["Retry-After"] == "7"
        assert [post(client, emu, token, [av_row("t")]).status_code for _ in range(2)] == [
            204,
            204,
        ]
        throttled = post(client, emu, token, [av_row("t")])
        assert throttled.status_code == 429
        assert 1 <= int(throttled.headers["Retry-After"]) <= 60
        assert error_of(throttled)["code"] == "TooManyRequests"
        stats = emu.stats()
        assert stats["ingested"] == {AV: 2}
        assert stats["ingestion"]["rejected"] == {"429": 1}  # the injected one never got here
        assert stats["faults"][0]["injected"] == 1


# --- identity of the DCR and the collector config ----------------------------------------------
def test_the_dcr_id_is_deterministic_per_seed() -> None:
    first = Emulator(EmulatorSettings(seed=5)).dcr_immutable_id
    assert re.fullmatch(r"dcr-[0-9a-f]{32}", first)
    assert Emulator(EmulatorSettings(seed=5)).dcr_immutable_id == first
    assert Emulator(EmulatorSettings(seed=6)).dcr_immutable_id != first


def test_write_config_adds_a_sentinel_block_the_collector_loads(
    ing: Emulator, tmp_path: Path
) -> None:
    path = tmp_path / "epf.toml"
    ing.write_config(path, iot="none")
    sentinel = tomllib.loads(path.read_text(encoding="utf-8"))["sentinel"]
    assert sentinel == {
        "endpoint": ing.base_url,
        "tenant_id": ing.tenant_id,
        "client_id": ing.client_id,
        "client_secret": ing.client_secret,
        "authority_host": ing.base_url,
        "ca_bundle": str(ing.ca_path.resolve()),
        # One entry per DCR (a DCR declares at most 10 streams), together every table.
        "dcrs": [{"immutable_id": dcr, "tables": list(tables)} for dcr, tables in ing.dcrs],
    }
    loaded = load_settings(path, environ={})
    assert loaded.sentinel is not None and loaded.sentinel.dcr_immutable_id is None
    assert {t: loaded.sentinel.route(t) for t in TABLES} == {
        t: (ing.base_url, ing.dcr_for(t)) for t in TABLES
    }
    ing.write_config(path, iot="none", credential="certificate")
    sentinel = tomllib.loads(path.read_text(encoding="utf-8"))["sentinel"]
    assert "client_secret" not in sentinel
    assert sentinel["certificate_path"] == str(ing.client_certificate_path.resolve())
    ing.write_config(path, iot="none", sentinel=False)
    assert "sentinel" not in tomllib.loads(path.read_text(encoding="utf-8"))


def test_kept_rows_keep_their_order_and_types_across_reads() -> None:
    """What the endpoint kept waits on disk between requests, as the bodies received; reading
    it converts them as the check did when they arrived, each with its own receive time, and
    leaves the next request appended after it."""
    from epf_emulator.ingestion.endpoint import Ingested, Received

    stream = declared_streams()[f"Custom-{AV}"]
    kept = Ingested()
    first = [{"TimeGenerated": SENT_AT_TEXT, "AdditionalFields": {"a": [1, 2]}, "RbacGroupId": "1"}]
    second = [{"DeviceId": f"d-{n}", "RbacGroupId": n} for n in (2, 3)]
    later = SENT_AT + timedelta(days=3)  # the first row's TimeGenerated is then too old

    def received(records: list[dict[str, Any]], encoding: str, at: datetime) -> Received:
        body = orjson.dumps(records)
        return Received(
            stream, gzip.compress(body) if encoding else body, encoding, at, len(records), 0
        )

    try:
        kept.accept(received(first, "gzip", SENT_AT))
        (row,) = kept.rows(AV)
        assert row["TimeGenerated"] == SENT_AT and row["TimeGenerated"].tzinfo is not None
        assert row["AdditionalFields"] == {"a": [1, 2]} and row["RbacGroupId"] == 1
        assert row.keys() == set(TABLES[AV].column_names) and row["DeviceId"] is None
        kept.accept(received(second, "", later))
        kept.accept(received([], "gzip", later))  # counted, nothing kept
        rows = kept.rows(AV)
        assert rows[0] == row
        assert [(r["DeviceId"], r["RbacGroupId"], r["TimeGenerated"]) for r in rows[1:]] == [
            ("d-2", 2, later),
            ("d-3", 3, later),
        ]
        assert kept.rows("EPF_Devices_CL") == []
        assert kept.row_counts() == {AV: 3}
        assert kept.counters()["accepted"] == 3
    finally:
        kept.close()


def test_bodies_checked_in_a_process_pool_get_the_same_answers() -> None:
    """``IngestionApi``'s ``checker`` (a process pool, as bench/ingest_receiver.py gives it)
    changes where a body is decoded and checked, not the answer: the same 204s, the same 400
    and 413 bodies, the same rows kept."""
    import asyncio
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from starlette.applications import Starlette

    from epf_emulator.common.limits import RequestStats
    from epf_emulator.identity.entra import Identity
    from epf_emulator.ingestion.endpoint import Ingested, IngestionApi
    from epf_emulator.ingestion.rules import emulated_rules

    identity = Identity(
        tenant_id="t-1",
        client_id="c-1",
        client_secret="s",
        token_lifetime_seconds=3600,
        stats=RequestStats(),
    )
    token = identity.mint(MONITOR)
    rules = emulated_rules(5)
    dcr = next(r for r in rules if f"Custom-{AV}" in r.streams).immutable_id
    path = f"/dataCollectionRules/{dcr}/streams/Custom-{AV}?api-version=2023-01-01"
    too_big = b"[" + b",".join([orjson.dumps(av_row("d"))] * 6000) + b"]"
    bodies = [
        gzip.compress(orjson.dumps([av_row("d-1"), av_row("d-2", RbacGroupId="7")])),
        gzip.compress(orjson.dumps([av_row("d-3", Unknown=1)])),  # 400: undeclared column
        gzip.compress(orjson.dumps([av_row("d-4", SignatureAgeHours="five")])),  # 400: type
        gzip.compress(orjson.dumps([av_row("d-5")]))[:-6],  # 400: truncated gzip
        gzip.compress(too_big),  # 413: over 1 MiB uncompressed
    ]

    def answers(checker: Any) -> tuple[list[tuple[int, bytes]], list[dict[str, Any]]]:
        ingested = Ingested()
        api = IngestionApi(
            identity=identity,
            ingested=ingested,
            rules=rules,
            now=lambda: SENT_AT,
            rate_limit=None,
            checker=checker,
        )
        headers = {**bearer(token), "Content-Type": "application/json", "Content-Encoding": "gzip"}
        transport = httpx.ASGITransport(app=Starlette(routes=api.routes()))

        async def post_all() -> list[httpx.Response]:
            async with httpx.AsyncClient(transport=transport, base_url="https://ingest") as c:
                return [await c.post(path, content=b, headers=headers) for b in bodies]

        try:
            got = asyncio.run(post_all())
            return [(r.status_code, r.content) for r in got], ingested.rows(AV)
        finally:
            ingested.close()

    class CountingPool(ProcessPoolExecutor):
        submitted = 0

        def submit(self, *args: Any, **kwargs: Any) -> Any:
            CountingPool.submitted += 1
            return super().submit(*args, **kwargs)

    in_thread = answers(None)
    with CountingPool(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        in_pool = answers(pool)
    assert [status for status, _ in in_thread[0]] == [204, 400, 400, 400, 413]
    assert in_pool == in_thread
    assert CountingPool.submitted == 5  # every body (an uncompressed size is found decoding)
    assert [row["DeviceId"] for row in in_pool[1]] == ["d-1", "d-2"]
