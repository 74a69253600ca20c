"""The emulated data collection rules (defender-apis.md D.2, D.5): at most 10 streams and 10
data flows each, every registry table in exactly one, and each DCR ingesting only its own
streams, over real HTTPS with the real SDK."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential
from azure.monitor.ingestion import LogsIngestionClient

from endpoint_forensics.tables import TABLES, Column, KqlType, Table
from epf_emulator import Emulator, EmulatorSettings
from epf_emulator.ingestion.rules import (
    DataCollectionRule,
    DataFlow,
    emulated_rules,
)
from epf_emulator.ingestion.streams import declared_streams

from .conftest import bearer, client_for, get_token

MONITOR = "https://monitor.azure.com"
AV, RUNS = "EPF_AvHealth_CL", "EPF_Runs_CL"


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(EmulatorSettings(iot_sensors=0, devices=4, seed=31)) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def http(emu: Emulator) -> Iterator[httpx.Client]:
    with client_for(emu) as client:
        yield client


def post(
    client: httpx.Client, emu: Emulator, token: str, dcr: str, table: str, rows: Any
) -> httpx.Response:
    return client.post(
        f"{emu.base_url}/dataCollectionRules/{dcr}/streams/Custom-{table}",
        json=rows,
        headers=bearer(token),
        params={"api-version": "2023-01-01"},
    )


def rule(streams: int, flows: int | None = None) -> DataCollectionRule:
    declared = dict(list(declared_streams().items())[:streams])
    names = list(declared)
    count = len(names) if flows is None else flows
    return DataCollectionRule(
        name="test",
        immutable_id="dcr-" + "0" * 32,
        streams=declared,
        data_flows=tuple(
            DataFlow((names[i % len(names)],), names[i % len(names)]) for i in range(count)
        ),
    )


# --- what a DCR can be -------------------------------------------------------------------------
def test_a_dcr_of_10_streams_and_10_data_flows_can_be_built() -> None:
    assert len(rule(10).streams) == 10 and len(rule(10).data_flows) == 10


@pytest.mark.parametrize(
    ("streams", "flows", "refusal"),
    [(11, None, "11 streams declared"), (5, 11, "11 data flows")],
)
def test_a_dcr_past_either_limit_cannot_be_built(
    streams: int, flows: int | None, refusal: str
) -> None:
    with pytest.raises(ValueError, match=refusal):
        rule(streams, flows)


def test_a_data_flow_takes_only_declared_streams() -> None:
    streams = dict(list(declared_streams().items())[:2])
    with pytest.raises(ValueError, match="Custom-Nope_CL"):
        DataCollectionRule(
            name="test",
            immutable_id="dcr-" + "0" * 32,
            streams=streams,
            data_flows=(DataFlow(("Custom-Nope_CL",), "Custom-Nope_CL"),),
        )


def test_the_tenant_has_every_table_in_exactly_one_dcr_of_at_most_10() -> None:
    rules = emulated_rules(31)
    tables = [t for r in rules for t in r.tables]
    assert sorted(tables) == sorted(TABLES) and len(tables) == len(set(tables))
    assert len(TABLES) > 10 and len(rules) >= 3
    for r in rules:
        assert 1 <= len(r.streams) <= 10 and len(r.data_flows) == len(r.streams)
        assert re.fullmatch(r"dcr-[0-9a-f]{32}", r.immutable_id)
        # Core and compat tables never share a DCR, as in the deployment template.
        assert len({TABLES[t].profile for t in r.tables}) == 1
    assert len({r.immutable_id for r in rules}) == len(rules)
    assert [r.immutable_id for r in emulated_rules(31)] == [r.immutable_id for r in rules]
    assert emulated_rules(32)[0].immutable_id != rules[0].immutable_id


def test_a_table_added_to_the_registry_gets_a_stream_in_some_dcr(
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
    rules = emulated_rules(31)
    assert [r for r in rules if "EPF_Later_CL" in r.tables]
    assert all(len(r.streams) <= 10 for r in rules)


def test_the_emulator_names_its_dcrs(emu: Emulator) -> None:
    assert emu.dcrs == [(r.immutable_id, r.tables) for r in emulated_rules(31)]
    assert emu.dcr_immutable_id == emu.dcrs[0][0] == emu.dcr_for(AV)
    assert emu.dcr_for(RUNS) != emu.dcr_for(AV)
    with pytest.raises(KeyError):
        emu.dcr_for("Nope_CL")


# --- what a DCR takes over HTTP ----------------------------------------------------------------
def test_a_dcr_refuses_a_stream_another_dcr_declares(emu: Emulator, http: httpx.Client) -> None:
    token = get_token(http, emu, MONITOR)
    own, other = emu.dcr_for(RUNS), emu.dcr_for(AV)
    before = emu.stats()["ingestion"]["rejected"].get("404", 0)
    refused = post(http, emu, token, other, RUNS, [{"RunId": "elsewhere"}])
    assert refused.status_code == 404
    error = refused.json()["error"]
    assert error["code"] == "NotFound"
    assert f"Custom-{RUNS}" in error["message"] and other in error["message"]
    assert post(http, emu, token, own, RUNS, [{"RunId": "home"}]).status_code == 204
    kept = [r["RunId"] for r in emu.ingested_rows(RUNS) if r["RunId"] in ("home", "elsewhere")]
    assert kept == ["home"]
    assert emu.stats()["ingestion"]["rejected"]["404"] == before + 1


def test_the_sdk_upload_to_the_wrong_dcr_raises_404(emu: Emulator) -> None:
    credential = ClientSecretCredential(
        emu.tenant_id,
        emu.client_id,
        emu.client_secret,
        authority=emu.base_url,
        disable_instance_discovery=True,
        connection_verify=str(emu.ca_path),
    )
    try:
        with LogsIngestionClient(
            emu.base_url, credential, connection_verify=str(emu.ca_path)
        ) as client:
            with pytest.raises(HttpResponseError) as refused:
                client.upload(emu.dcr_for(AV), f"Custom-{RUNS}", [{"RunId": "sdk"}])
            client.upload(emu.dcr_for(RUNS), f"Custom-{RUNS}", [{"RunId": "sdk"}])
    finally:
        credential.close()
    assert refused.value.status_code == 404
    assert [r for r in emu.ingested_rows(RUNS) if r["RunId"] == "sdk"] != []


def test_the_request_limit_is_per_dcr() -> None:
    settings = EmulatorSettings(iot_sensors=0, devices=2, seed=33, ingestion_rate_limit=(1, 60.0))
    with Emulator(settings) as emu, client_for(emu) as client:
        token = get_token(client, emu, MONITOR)
        first = post(client, emu, token, emu.dcr_for(AV), AV, [{"DeviceId": "a"}])
        other_dcr = post(client, emu, token, emu.dcr_for(RUNS), RUNS, [{"RunId": "b"}])
        again = post(client, emu, token, emu.dcr_for(AV), AV, [{"DeviceId": "c"}])
    assert (first.status_code, other_dcr.status_code, again.status_code) == (204, 204, 429)
    assert 1 <= int(again.headers["Retry-After"]) <= 60
