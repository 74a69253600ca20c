"""Helpers for the Defender for IoT emulator tests (no tests here): clients that trust exactly
one appliance's self-signed certificate, and raw-token requests.

The expectations in the IoT tests come from shared/reference/defender-apis.md C, not from the
emulator's code, so they stay an independent check.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from epf_emulator import Emulator, EmulatorSettings
from epf_emulator.iot.state import IotAppliance

from .conftest import UNTHROTTLED

#: A small MDE fleet (IT/OT joins need Windows machines), two sensors and the console; events
#: at 1000/h so the 100-event cap bites.
IOT_SETTINGS = EmulatorSettings(
    devices=40, seed=5, rate_limits=UNTHROTTLED, iot_events_per_hour=1000.0
)


def appliance(emu: Emulator, name: str) -> IotAppliance:
    return next(a for a in emu.iot_appliances if a.name == name)


def trusting(app: IotAppliance) -> ssl.SSLContext:
    """Trusts only ``app``'s own certificate, strictly (as Python 3.13's default does)."""
    context = ssl.create_default_context(cafile=str(app.certificate_path))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


@contextmanager
def iot_client(app: IotAppliance) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=app.base_url,
        verify=trusting(app),
        trust_env=False,
        timeout=30.0,
        headers={"Authorization": app.token},  # the raw token: no "Bearer" (C.1)
    ) as client:
        yield client


def get_json(client: httpx.Client, path: str, **params: Any) -> Any:
    response = client.get(path, params=params or None)
    assert response.status_code == 200, (path, response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def now_ms(emu: Emulator) -> int:
    return int(emu.now.timestamp() * 1000)


def v3_all(client: httpx.Client, path: str, key: str, size: int, **params: Any) -> list[Any]:
    """Every item of a paged v3 delta, page by page until a short page; checks ``u_count``."""
    items: list[Any] = []
    page = 0
    while True:
        body = get_json(client, path, page=page, size=size, **params)
        items += body[key]
        if len(body[key]) < size:
            assert body["u_count"] == len(items)
            return items
        page += 1
