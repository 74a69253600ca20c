"""Many tenants on one emulator: each its own credentials, fleet, limits and truth; a token
reaches its own tenant's data only; the written config syncs every tenant."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import duckdb
import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CertificateCredential

from epf_emulator import Emulator, EmulatorSettings

from .conftest import GRAPH, MDE, UNTHROTTLED, bearer, claims_of, client_for, get_all, hunt

if TYPE_CHECKING:
    from epf_emulator.core.seats import TenantCredentials


def token_of(
    client: httpx.Client, emu: Emulator, tenant: TenantCredentials, resource: str = MDE
) -> str:
    """A token from ``tenant``'s own token endpoint with its own credentials."""
    response = client.post(
        f"{emu.base_url}/{tenant.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": tenant.client_id,
            "client_secret": tenant.client_secret,
            "scope": f"{resource}/.default",
        },
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


@pytest.fixture(scope="module")
def pair() -> Iterator[Emulator]:
    """Two tenants of 40 devices on one emulator (no throttling)."""
    settings = EmulatorSettings(
        tenants=2, devices=40, seed=21, iot_sensors=0, rate_limits=UNTHROTTLED
    )
    with Emulator(settings) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def pair_client(pair: Emulator) -> Iterator[httpx.Client]:
    with client_for(pair) as c:
        yield c


def machine_ids(client: httpx.Client, emu: Emulator, token: str) -> set[str]:
    records, _ = get_all(client, f"{emu.base_url}/api/machines", token)
    return {r["id"] for r in records}


def test_each_tenant_has_its_own_credentials_and_fleet_reproducibly(
    pair: Emulator, pair_client: httpx.Client
) -> None:
    first, second = pair.tenants
    assert (first.name, second.name) == ("t000", "t001")
    assert first.tenant_id == pair.tenant_id and first.client_secret == pair.client_secret
    for field in ("tenant_id", "client_id", "client_secret"):
        assert getattr(first, field) != getattr(second, field), field
    tokens = [token_of(pair_client, pair, tenant) for tenant in (first, second)]
    assert [claims_of(t)["tid"] for t in tokens] == [first.tenant_id, second.tenant_id]
    fleets = [machine_ids(pair_client, pair, token) for token in tokens]
    assert len(fleets[0]) == len(fleets[1]) == 40 and not fleets[0] & fleets[1]
    truths = [pair.stats(tenant=t.name) for t in (first, second)]
    assert [t["truth"]["EPF_Devices_CL"] for t in truths] == [40, 40]
    assert truths[0]["fleet"]["seed"] == 21 and truths[1]["fleet"]["seed"] != 21
    # The same settings make the same tenants at the next start: ids, and the same fleet.
    with Emulator(pair.settings) as again, client_for(again) as client:
        assert [(t.tenant_id, t.client_id) for t in again.tenants] == [
            (t.tenant_id, t.client_id) for t in pair.tenants
        ]
        assert again.tenants[1].client_secret != second.client_secret  # fresh each start
        assert machine_ids(client, again, token_of(client, again, again.tenants[1])) == fleets[1]


def test_each_tenant_has_its_own_client_certificate(pair: Emulator, tmp_path: Path) -> None:
    config = tmp_path / "epf.toml"
    pair.write_config(config, credential="certificate", iot="none", sentinel=False)
    paths = [Path(e["certificate_path"]) for e in tomllib.loads(config.read_text())["tenants"]]
    assert paths[0] == pair.client_certificate_path.resolve()
    assert paths[1] == pair.tenant_certificate_path("t001").resolve() != paths[0]
    assert paths[0].read_bytes() != paths[1].read_bytes()
    for tenant, path in zip(pair.tenants, paths, strict=True):
        credential = CertificateCredential(
            tenant.tenant_id,
            tenant.client_id,
            str(path),
            authority=pair.base_url,
            disable_instance_discovery=True,
            connection_verify=str(pair.ca_path),
        )
        assert claims_of(credential.get_token(f"{MDE}/.default").token)["tid"] == tenant.tenant_id
    # One tenant's certificate is no credential of the other's app.
    stranger = CertificateCredential(
        pair.tenants[1].tenant_id,
        pair.tenants[1].client_id,
        str(paths[0]),
        authority=pair.base_url,
        disable_instance_discovery=True,
        connection_verify=str(pair.ca_path),
    )
    with pytest.raises(ClientAuthenticationError, match="AADSTS700027"):
        stranger.get_token(f"{MDE}/.default")


def test_a_token_reaches_only_its_own_tenants_data(
    pair: Emulator, pair_client: httpx.Client
) -> None:
    client, base = pair_client, pair.base_url
    first, second = pair.tenants
    token = token_of(client, pair, first)
    theirs = sorted(machine_ids(client, pair, token_of(client, pair, second)))[0]
    # Another tenant's device id is no device of this tenant: 404, as for any unknown id.
    response = client.get(f"{base}/api/machines/{theirs}", headers=bearer(token))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "ResourceNotFound"
    # Hunting sees this tenant's devices only.
    rows = hunt(client, pair, token, "DeviceInfo | distinct DeviceId").json()["Results"]
    assert {r["DeviceId"] for r in rows} == machine_ids(client, pair, token)
    # A token naming the other tenant that this one signed: the other refuses it, 401.
    forged = pair.token(MDE, tenant=first.name, tenant_id=second.tenant_id)
    response = client.get(f"{base}/api/machines", headers=bearer(forged))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    error = response.json()["error"]
    assert error["code"] == "Unauthorized" and len(error["target"]) == 36
    forged_graph = pair.token(GRAPH, tenant=first.name, tenant_id=second.tenant_id)
    response = hunt(client, pair, forged_graph, "DeviceInfo | take 1", graph=True)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
    # This tenant's app at the other tenant's token endpoint: not in that directory.
    response = client.post(
        f"{base}/{second.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": first.client_id,
            "client_secret": first.client_secret,
            "scope": f"{MDE}/.default",
        },
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "unauthorized_client" and body["error_codes"] == [700016]
    assert second.tenant_id in body["error_description"]
    # An export link of this tenant moved under the other's OrgId: its signature fails there.
    export = client.get(f"{base}/api/machines/SoftwareVulnerabilitiesExport", headers=bearer(token))
    link = urlsplit(export.json()["exportFiles"][0])
    assert f"OrgId={first.tenant_id}" in link.path
    moved = link._replace(path=link.path.replace(first.tenant_id, second.tenant_id))
    response = client.get(urlunsplit(moved))
    assert response.status_code == 403 and "<Code>AuthenticationFailed</Code>" in response.text
    assert client.get(urlunsplit(link)).status_code == 200


def test_one_tenants_rate_limit_does_not_throttle_another() -> None:
    settings = EmulatorSettings(
        tenants=2, devices=10, seed=3, iot_sensors=0, rate_limits={"machines": (3, 60.0)}
    )
    with Emulator(settings) as emu, client_for(emu) as client:
        first, second = emu.tenants
        url = f"{emu.base_url}/api/machines"
        tokens = [token_of(client, emu, t) for t in (first, second)]
        statuses = [client.get(url, headers=bearer(tokens[0])).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        refused = client.get(url, headers=bearer(tokens[0]))
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"]["code"] == "TooManyRequests"
        # The other tenant has its whole budget, and no more.
        statuses = [client.get(url, headers=bearer(tokens[1])).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        budgets = {t.name: emu.stats(tenant=t.name)["budgets"]["machines"] for t in emu.tenants}
        assert budgets["t000"] | {"windows": None} == {
            "calls": 5,
            "throttled": 2,
            "peak_per_minute": 5,
            "peak_per_hour": 5,
            "windows": None,
        }
        assert budgets["t001"]["calls"] == 4 and budgets["t001"]["throttled"] == 1
        assert budgets["t001"]["peak_per_minute"] == 4
        assert budgets["t000"]["windows"] == [[3, 60.0], [1500, 3600.0]]
        requests = emu.stats()["tenants"][second.tenant_id]["requests"]
        assert requests["/api/machines"] == {"200": 3, "429": 1}


def test_tenants_are_built_on_their_first_data_request_and_stats_say_so() -> None:
    settings = EmulatorSettings(tenants=3, devices=10, seed=8, iot_sensors=0)
    with Emulator(settings) as emu, client_for(emu) as client:
        stats_url = f"{emu.base_url}/_emulator/stats"
        third = emu.tenants[2]
        token = token_of(client, emu, third)  # a token costs no world
        stats = client.get(stats_url).json()
        assert stats["tenant_count"] == 3 and stats["tenants_built"] == 1
        brief = stats["tenants"][third.tenant_id]
        assert brief["built"] is False and brief["tokens_issued"] == 1 and "truth" not in brief
        assert client.get(f"{emu.base_url}/api/machines", headers=bearer(token)).status_code == 200
        stats = client.get(stats_url).json()
        assert stats["tenants_built"] == 2
        assert stats["tenants"][third.tenant_id]["truth"]["EPF_Devices_CL"] == 10
        one = client.get(stats_url, params={"tenant": third.tenant_id}).json()
        assert one["name"] == "t002" and one["truth"]["EPF_Devices_CL"] == 10
        missing = client.get(stats_url, params={"tenant": "t999"})
        assert missing.status_code == 404 and "t999" in missing.json()["error"]["message"]
        # The clock: every tenant's by default, or one tenant's.
        advance = f"{emu.base_url}/_emulator/advance"
        assert client.post(advance, params={"hours": 2}).json()["advanced_hours"] == 2
        body = client.post(advance, params={"hours": 1, "tenant": "t001"}).json()
        assert body["advanced_hours"] == 3
        clocks = {t["name"]: t["clock"]["advanced_hours"] for t in emu.stats()["tenants"].values()}
        assert clocks == {"t000": 2, "t001": 3, "t002": 2}


def _count(db: Path, table: str, tenant_id: str) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        exists = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
        ).fetchone()
        if not exists or not exists[0]:
            return 0
        where = "DefenderTenantId = ?" + (
            " AND Dataset <> 'triage'" if table == "EPF_Runs_CL" else ""
        )
        row = con.execute(f'SELECT count(*) FROM "{table}" WHERE {where}', [tenant_id]).fetchone()
        return int(row[0]) if row else 0
    finally:
        con.close()


def test_the_written_config_syncs_every_tenant_to_its_truth(tmp_path: Path) -> None:
    settings = EmulatorSettings(tenants=2, devices=50, seed=13, iot_sensors=0)
    with Emulator(settings) as emu:
        config = tmp_path / "epf.toml"
        emu.write_config(config, iot="none", sentinel=False)
        written = tomllib.loads(config.read_text())
        entries = written["tenants"]
        assert [
            (e["name"], e["tenant_id"], e["client_id"], e["client_secret"]) for e in entries
        ] == [(t.name, t.tenant_id, t.client_id, t.client_secret) for t in emu.tenants]
        assert {e["mde_base_url"] for e in entries} == {emu.base_url}
        db = tmp_path / "ws.duckdb"
        now = emu.now.strftime("%Y-%m-%dT%H:%M:%SZ")
        result = subprocess.run(
            [sys.executable, "-m", "endpoint_forensics", "sync", "--config", str(config),
             "--db", str(db), "--now", now],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        for tenant in emu.tenants:
            truth: dict[str, Any] = emu.stats(tenant=tenant.name)["truth"]
            assert truth["EPF_Devices_CL"] == 50
            counted = {table: _count(db, table, tenant.tenant_id) for table in truth}
            assert counted == truth, tenant.name
