"""Fixtures for the emulator's tests: real HTTPS over loopback, clients trusting the test CA."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from epf_emulator import Emulator, EmulatorSettings
from epf_emulator.common.settings import RATE_LIMIT_NAMES

MDE = "https://api.securitycenter.microsoft.com"
GRAPH = "https://graph.microsoft.com"

# The agent-health SCIDs, straight from shared/reference/original-connector.md (not from the
# emulator's code, so the tests stay an independent check).
HEALTH_SCIDS = {
    "Windows": {
        "scid-2000",
        "scid-2001",
        "scid-2002",
        "scid-2003",
        "scid-2010",
        "scid-2011",
        "scid-2012",
        "scid-91",
        "scid-2013",
        "scid-2014",
        "scid-2016",
    },
    "macOS": {
        "scid-5001",
        "scid-5002",
        "scid-5092",
        "scid-5095",
        "scid-5090",
        "scid-5093",
        "scid-5091",
        "scid-5094",
    },
    "Linux": {"scid-6001", "scid-6002", "scid-6095", "scid-6090", "scid-6091", "scid-6094"},
}
ALL_HEALTH_SCIDS = set().union(*HEALTH_SCIDS.values())
# Generous limits for the shared emulator, so read-only tests never throttle each other.
UNTHROTTLED = {name: (100_000, 60.0) for name in RATE_LIMIT_NAMES}


def client_for(emu: Emulator) -> httpx.Client:
    """An httpx client that trusts only the emulator's CA (never verify=False)."""
    return httpx.Client(
        verify=ssl.create_default_context(cafile=str(emu.ca_path)),
        trust_env=False,
        timeout=30.0,
    )


def get_token(client: httpx.Client, emu: Emulator, resource: str = MDE) -> str:
    response = client.post(
        f"{emu.base_url}/{emu.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": emu.client_id,
            "client_secret": emu.client_secret,
            "scope": f"{resource}/.default",
        },
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    result: dict[str, Any] = orjson.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return result


def all_machines(
    client: httpx.Client, emu: Emulator, token: str, **params: Any
) -> tuple[list[dict[str, Any]], int]:
    """Every machine: by ``$skip`` with ``$top``, else by next links; records and page count."""
    records, bodies = get_all(client, f"{emu.base_url}/api/machines", token, **params)
    return records, len(bodies)


def hunt(
    client: httpx.Client,
    emu: Emulator,
    token: str,
    query: str,
    *,
    graph: bool = False,
    **extra: Any,
) -> httpx.Response:
    if graph:
        return client.post(
            f"{emu.base_url}/v1.0/security/runHuntingQuery",
            json={"Query": query, **extra},
            headers=bearer(token),
        )
    return client.post(
        f"{emu.base_url}/api/advancedqueries/run",
        json={"Query": query, **extra},
        headers=bearer(token),
    )


@pytest.fixture(scope="session")
def emu() -> Iterator[Emulator]:
    """A 150-device tenant shared by read-only tests (no throttling)."""
    with Emulator(
        EmulatorSettings(iot_sensors=0, devices=150, seed=7, rate_limits=UNTHROTTLED)
    ) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def client(emu: Emulator) -> Iterator[httpx.Client]:
    with client_for(emu) as c:
        yield c


@pytest.fixture(scope="session")
def mde_token(emu: Emulator, client: httpx.Client) -> str:
    return get_token(client, emu, MDE)


@pytest.fixture(scope="session")
def graph_token(emu: Emulator, client: httpx.Client) -> str:
    return get_token(client, emu, GRAPH)


@pytest.fixture(scope="session")
def machines(emu: Emulator, client: httpx.Client, mde_token: str) -> list[dict[str, Any]]:
    records, _ = all_machines(client, emu, mde_token)
    return records


def get_all(
    client: httpx.Client, url: str, token: str, **params: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every record and every page body of a collection.

    With ``$top`` the MDE collections send no next link (defender-apis.md F), so this pages
    with an increasing ``$skip`` until a short page, checking that no link came; without it,
    it follows ``@odata.nextLink`` verbatim to the end.
    """
    records: list[dict[str, Any]] = []
    bodies: list[dict[str, Any]] = []
    if "$top" in params:
        top = int(params["$top"])
        skip = int(params.get("$skip", 0))
        while True:
            query = {**params, "$skip": skip}
            response = client.get(url, params=query, headers=bearer(token))
            assert response.status_code == 200, response.text[:500]
            body = response.json()
            assert "@odata.nextLink" not in body
            bodies.append(body)
            records += body["value"]
            skip += len(body["value"])
            if len(body["value"]) < top or top == 0:
                return records, bodies
    query_or_none: dict[str, Any] | None = params or None
    next_url: str | None = url
    while next_url:
        response = client.get(next_url, params=query_or_none, headers=bearer(token))
        assert response.status_code == 200, response.text[:500]
        body = response.json()
        bodies.append(body)
        records += body["value"]
        next_url = body.get("@odata.nextLink")
        query_or_none = None  # the next link is opaque and complete
    return records, bodies


#: Chosen so the small posture fleet has a device-group move inside the delta window.
POSTURE_SEED = 11


@pytest.fixture(scope="session")
def posture_emu() -> Iterator[Emulator]:
    """A 300-device tenant for read-only posture tests: small export parts, no throttling."""
    settings = EmulatorSettings(
        iot_sensors=0,
        devices=300,
        seed=POSTURE_SEED,
        rate_limits=UNTHROTTLED,
        export_part_rows=2500,
    )
    with Emulator(settings) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def posture_client(posture_emu: Emulator) -> Iterator[httpx.Client]:
    with client_for(posture_emu) as c:
        yield c


@pytest.fixture(scope="session")
def posture_token(posture_emu: Emulator, posture_client: httpx.Client) -> str:
    return get_token(posture_client, posture_emu, MDE)


def _tvm(emu: Emulator, name: str) -> str:
    return f"{emu.base_url}/api/machines/{name}"


@pytest.fixture(scope="session")
def vulnerabilities(
    posture_emu: Emulator, posture_client: httpx.Client, posture_token: str
) -> list[dict[str, Any]]:
    records, _ = get_all(
        posture_client,
        _tvm(posture_emu, "SoftwareVulnerabilitiesByMachine"),
        posture_token,
        pageSize=3000,
    )
    return records


@pytest.fixture(scope="session")
def software(
    posture_emu: Emulator, posture_client: httpx.Client, posture_token: str
) -> list[dict[str, Any]]:
    url = _tvm(posture_emu, "SoftwareInventoryByMachine")
    return get_all(posture_client, url, posture_token)[0]


@pytest.fixture(scope="session")
def configurations(
    posture_emu: Emulator, posture_client: httpx.Client, posture_token: str
) -> list[dict[str, Any]]:
    url = _tvm(posture_emu, "SecureConfigurationsAssessmentByMachine")
    return get_all(posture_client, url, posture_token, pageSize=2000)[0]


@pytest.fixture(scope="session")
def av(
    posture_emu: Emulator, posture_client: httpx.Client, posture_token: str
) -> list[dict[str, Any]]:
    return get_all(posture_client, f"{posture_emu.base_url}/api/deviceavinfo", posture_token)[0]


@pytest.fixture(scope="session")
def catalogue(
    posture_emu: Emulator, posture_client: httpx.Client, posture_token: str
) -> list[dict[str, Any]]:
    url = f"{posture_emu.base_url}/api/vulnerabilities"
    return get_all(posture_client, url, posture_token, **{"$top": 8000})[0]


@pytest.fixture(scope="session")
def recommendations(
    posture_emu: Emulator, posture_client: httpx.Client, posture_token: str
) -> list[dict[str, Any]]:
    url = f"{posture_emu.base_url}/api/recommendations"
    return get_all(posture_client, url, posture_token, **{"$top": 50})[0]
