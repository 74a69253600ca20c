"""Rate limits (sliding windows, 429 + Retry-After) and declarative fault injection."""

from __future__ import annotations

import time

import pytest

from epf_emulator import Emulator, EmulatorSettings, Fault, parse_faults
from epf_emulator.common.limits import RateLimiter

from .conftest import GRAPH, bearer, client_for, get_token, hunt


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_counts_only_admitted_calls() -> None:
    clock = FakeClock()
    limiter = RateLimiter({"machines": (3, 10.0)}, clock=clock)
    for _ in range(3):
        assert limiter.acquire("machines") is None
        clock.now += 1.0  # calls at 1000, 1001, 1002
    throttled = limiter.acquire("machines")
    assert throttled is not None
    assert throttled.retry_after == 7  # the call at 1000 leaves the window at 1010
    assert "Maximum allowed: 3 per 10 seconds" in throttled.message
    clock.now = 1009.5
    assert limiter.acquire("machines") is not None  # refused calls did not extend the wait
    clock.now = 1010.0
    assert limiter.acquire("machines") is None
    assert limiter.acquire("advanced_hunting") is None  # limits are per endpoint


def test_the_hourly_window_still_applies_after_an_override() -> None:
    clock = FakeClock()
    limiter = RateLimiter({"advanced_hunting": (10_000, 1.0)}, clock=clock)
    for _ in range(1500):
        assert limiter.acquire("advanced_hunting") is None
        clock.now += 0.5
    throttled = limiter.acquire("advanced_hunting")
    assert throttled is not None
    assert "1500 per 1 hour" in throttled.message
    assert 1 <= throttled.retry_after <= 3600


def test_documented_defaults() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    assert all(limiter.acquire("machines") is None for _ in range(100))
    throttled = limiter.acquire("machines")
    assert throttled is not None and throttled.retry_after == 60
    assert "Maximum allowed: 100 per 1 minute" in throttled.message
    assert all(limiter.acquire("advanced_hunting") is None for _ in range(45))
    assert limiter.acquire("advanced_hunting") is not None


def test_429_with_retry_after_then_success_after_waiting() -> None:
    with (
        Emulator(
            EmulatorSettings(iot_sensors=0, devices=10, seed=2, rate_limits={"machines": (3, 2.0)})
        ) as emu,
        client_for(emu) as client,
    ):
        headers = bearer(get_token(client, emu))
        url = f"{emu.base_url}/api/machines"
        assert [client.get(url, headers=headers).status_code for _ in range(3)] == [200, 200, 200]
        throttled = client.get(url, headers=headers)
        assert throttled.status_code == 429
        retry_after = int(throttled.headers["Retry-After"])
        assert 1 <= retry_after <= 2
        error = throttled.json()["error"]
        assert error["code"] == "TooManyRequests"
        assert error["message"].startswith(
            "API calls quota exceeded! Maximum allowed: 3 per 2 seconds"
        )
        assert error["target"]
        time.sleep(retry_after)
        assert client.get(url, headers=headers).status_code == 200
        assert emu.stats()["requests"]["/api/machines"] == {"200": 4, "429": 1}


def test_both_hunting_endpoints_share_one_limit() -> None:
    with (
        Emulator(
            EmulatorSettings(
                iot_sensors=0, devices=5, seed=2, rate_limits={"advanced_hunting": (2, 30.0)}
            )
        ) as emu,
        client_for(emu) as client,
    ):
        mde, graph = get_token(client, emu), get_token(client, emu, GRAPH)
        assert hunt(client, emu, mde, "print x=1").status_code == 200
        assert hunt(client, emu, graph, "print x=1", graph=True).status_code == 200
        refused = hunt(client, emu, graph, "print x=1", graph=True)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "TooManyRequests"
        assert "innerError" in refused.json()["error"]  # in Graph's dialect
        assert int(refused.headers["Retry-After"]) >= 1
        assert hunt(client, emu, mde, "print x=1").status_code == 429
        # Other endpoints are not affected.
        assert client.get(f"{emu.base_url}/api/machines", headers=bearer(mde)).status_code == 200


def test_a_fault_spec_from_the_cli_syntax() -> None:
    faults = parse_faults(
        "429@/api/machines*2,500@/v1.0/security/runHuntingQuery+1,401@/api/advancedqueries"
    )
    with (
        Emulator(EmulatorSettings(iot_sensors=0, devices=8, seed=2, faults=faults)) as emu,
        client_for(emu) as client,
    ):
        mde, graph = get_token(client, emu), get_token(client, emu, GRAPH)
        url = f"{emu.base_url}/api/machines"
        first = client.get(url, headers=bearer(mde))
        assert first.status_code == 429 and first.headers["Retry-After"] == "1"
        assert first.json()["error"]["code"] == "TooManyRequests"
        assert client.get(url, headers=bearer(mde)).status_code == 429
        assert client.get(url, headers=bearer(mde)).status_code == 200
        assert client.get(url, headers=bearer(mde)).status_code == 200

        assert hunt(client, emu, graph, "print x=1", graph=True).status_code == 200
        failed = hunt(client, emu, graph, "print x=1", graph=True)
        assert failed.status_code == 500
        assert failed.json()["error"]["code"] == "InternalServerError"
        assert "innerError" in failed.json()["error"]
        assert hunt(client, emu, graph, "print x=1", graph=True).status_code == 200

        denied = hunt(client, emu, mde, "print x=1")
        assert denied.status_code == 401
        assert denied.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
        assert denied.json()["error"]["code"] == "Unauthorized"
        assert hunt(client, emu, mde, "print x=1").status_code == 200

        stats = emu.stats()
        assert stats["requests"]["/api/machines"] == {"200": 2, "429": 2}
        assert stats["requests"]["/v1.0/security/runHuntingQuery"] == {"200": 2, "500": 1}
        assert [f["injected"] for f in stats["faults"]] == [2, 1, 1]


@pytest.mark.parametrize(
    ("status", "code"),
    [(403, "Forbidden"), (503, "InternalServerError"), (404, "ResourceNotFound")],
)
def test_fault_bodies_use_the_mde_dialect(status: int, code: str) -> None:
    faults = (Fault("/api/machines", status, retry_after=5 if status == 503 else None),)
    with (
        Emulator(EmulatorSettings(iot_sensors=0, devices=3, seed=2, faults=faults)) as emu,
        client_for(emu) as client,
    ):
        response = client.get(f"{emu.base_url}/api/machines")  # faults fire before auth
        assert response.status_code == status
        assert response.json()["error"]["code"] == code
        assert response.headers.get("Retry-After") == ("5" if status == 503 else None)


def test_a_fault_on_the_token_endpoint_speaks_entra() -> None:
    faults = (Fault("/", 503, times=1),)
    with (
        Emulator(EmulatorSettings(iot_sensors=0, devices=3, seed=2, faults=faults)) as emu,
        client_for(emu) as client,
    ):
        response = client.post(
            f"{emu.base_url}/{emu.tenant_id}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": emu.client_id,
                "client_secret": emu.client_secret,
                "scope": f"{GRAPH}/.default",
            },
        )
        assert response.status_code == 503
        body = response.json()
        assert body["error"] == "temporarily_unavailable" and body["error_codes"] == [90033]
        assert get_token(client, emu)  # the next one goes through
        # The control plane is never faulted nor counted.
        assert client.get(f"{emu.base_url}/_emulator/stats").status_code == 200
        assert not any(p.startswith("/_emulator") for p in emu.stats()["requests"])


def test_an_empty_200_fault_answers_exactly_that() -> None:
    faults = parse_faults("200@/api/machines/SoftwareVulnerabilitiesByMachine*1=")
    with (
        Emulator(EmulatorSettings(iot_sensors=0, devices=20, seed=2, faults=faults)) as emu,
        client_for(emu) as client,
    ):
        headers = bearer(get_token(client, emu))
        url = f"{emu.base_url}/api/machines/SoftwareVulnerabilitiesByMachine"
        empty = client.get(url, headers=headers)
        assert empty.status_code == 200 and empty.content == b""  # the documented empty 200
        again = client.get(url, headers=headers)
        assert again.status_code == 200 and again.json()["value"]
        assert emu.stats()["faults"][0]["injected"] == 1


def test_the_file_exports_allow_five_calls_a_minute() -> None:
    with (
        Emulator(EmulatorSettings(iot_sensors=0, devices=10, seed=2)) as emu,
        client_for(emu) as client,
    ):
        headers = bearer(get_token(client, emu))
        for name in ("SoftwareVulnerabilitiesExport", "SoftwareInventoryExport"):
            url = f"{emu.base_url}/api/machines/{name}"
            assert [client.get(url, headers=headers).status_code for _ in range(5)] == [200] * 5
            throttled = client.get(url, headers=headers)
            assert throttled.status_code == 429
            assert throttled.json()["error"]["code"] == "TooManyRequests"
            assert "Maximum allowed: 5 per 1 minute" in throttled.json()["error"]["message"]
            assert 1 <= int(throttled.headers["Retry-After"]) <= 60
        # Per endpoint: the JSON export has its own, larger budget.
        url = f"{emu.base_url}/api/machines/SoftwareVulnerabilitiesByMachine?$top=1"
        assert client.get(url, headers=headers).status_code == 200


def test_an_advance_of_the_clock_lets_the_quota_windows_pass() -> None:
    """A simulated day between two syncs frees the hourly quota, as a real day would; without
    an advance the window holds."""
    with (
        Emulator(EmulatorSettings(iot_sensors=0, devices=10, seed=2)) as emu,
        client_for(emu) as client,
    ):
        headers = bearer(get_token(client, emu))
        url = f"{emu.base_url}/api/machines/SoftwareInventoryExport"
        assert [client.get(url, headers=headers).status_code for _ in range(5)] == [200] * 5
        assert client.get(url, headers=headers).status_code == 429
        emu.advance(0.5 / 60)  # 30 s: the minute is not over
        assert client.get(url, headers=headers).status_code == 429
        emu.advance(1)
        assert client.get(url, headers=headers).status_code == 200
