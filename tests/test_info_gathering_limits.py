"""InfoGatheringExport limits: its doc pages disagree (30/min, 1,000/h, sasValidHours <= 24, or
5/min, 20/h, <= 6; defender-apis.md B.2, F), so both sides take the stricter."""

import ssl

import httpx

from endpoint_forensics.config.models import TenantConfig
from endpoint_forensics.http.ratelimit import DOCUMENTED_LIMITS, RateBudget
from epf_emulator import Emulator, EmulatorSettings
from epf_emulator.common.limits import DEFAULT_RATE_LIMITS


class FakeTime:
    def __init__(self):
        self.now = 1000.0

    def clock(self):
        return self.now

    def sleep(self, seconds):
        assert seconds > 0
        self.now += seconds


def test_the_collector_sends_at_most_5_a_minute_and_20_an_hour():
    t = FakeTime()
    budget = RateBudget(DOCUMENTED_LIMITS["InfoGatheringExport"], clock=t.clock, sleep=t.sleep)
    sent = []
    for _ in range(41):  # as fast as it lets them go
        budget.acquire()
        sent.append(t.now - 1000.0)
    for i, start in enumerate(sent):
        assert sum(1 for x in sent[i:] if x < start + 60) <= 5
        assert sum(1 for x in sent[i:] if x < start + 3600) <= 20
    assert sent[:6] == [0, 0, 0, 0, 0, 60]  # the sixth waits for the first to leave the minute
    assert sent[20] == 3600 and sent[40] == 7200  # the 21st for the first to leave the hour


def test_the_collectors_budget_fits_within_the_emulated_limit():
    limit = DOCUMENTED_LIMITS["InfoGatheringExport"]
    assert ((limit.per_minute, 60.0), (limit.per_hour, 3600.0)) == DEFAULT_RATE_LIMITS[
        "info_gathering_export"
    ]
    # And the links it asks for are within the stricter validity (at most 6 hours).
    assert TenantConfig.model_fields["sas_valid_hours"].default <= 6
    too_long = {"name": "t", "tenant_id": "x", "client_id": "y", "sas_valid_hours": 7}
    try:
        TenantConfig.model_validate(too_long)
    except ValueError as exc:
        assert "sas_valid_hours" in str(exc)
    else:
        raise AssertionError("sas_valid_hours = 7 was accepted")


def test_the_emulator_refuses_the_sixth_call_in_a_minute():
    # sasValidHours above 6 is refused too: tests/emulator/test_exports.py.
    with (
        Emulator(EmulatorSettings(iot_sensors=0, devices=10, seed=2)) as emu,
        httpx.Client(
            verify=ssl.create_default_context(cafile=str(emu.ca_path)), trust_env=False, timeout=60
        ) as client,
    ):
        token = emu.token()  # a valid WindowsDefenderATP token, all roles
        headers = {"Authorization": f"Bearer {token}"}
        url = f"{emu.base_url}/api/machines/InfoGatheringExport"
        statuses = [
            client.get(url, params={"sasValidHours": 6}, headers=headers).status_code
            for _ in range(5)
        ]
        assert statuses == [200] * 5
        sixth = client.get(url, headers=headers)
        assert sixth.status_code == 429
        assert sixth.json()["error"]["code"] == "TooManyRequests"
        assert "Maximum allowed: 5 per 1 minute" in sixth.json()["error"]["message"]
        assert 1 <= int(sixth.headers["Retry-After"]) <= 60
