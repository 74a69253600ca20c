"""Wire shapes of the Defender for IoT appliances (defender-apis.md C.1-C.3), quirks included.

Owns how the OT model looks on the wire, shared by the sensor and console APIs: JSON bodies
(orjson, valid JSON: the doc's trailing commas and unquoted keys are artefacts), the
documented plain-text failure ``Failure - error``, query-parameter parsing (anything that does
not parse answers that failure, as the appliances' Java back end does), and the device, CVE,
connection, alert and event objects. Times are epoch milliseconds everywhere; a CVE ``score``
is a string in the CVE lists and a number in the vulnerability report.

Imports only ``iot.model`` and ``iot.timeline`` types of the emulator: it shares no code with
the collector.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:
    from epf_emulator.iot.model import OtConnection, OtCve, OtDevice
    from epf_emulator.iot.timeline import OtAlert, OtEvent

__all__ = [
    "FAILURE_BODY",
    "IotFailure",
    "alert_json",
    "bool_param",
    "connection_json",
    "cve_json",
    "device_json",
    "event_json",
    "failure",
    "int_list",
    "int_param",
    "iot_json",
    "text",
]

FAILURE_BODY = "Failure - error"
_INT = re.compile(r"^-?\d{1,18}$")


class IotFailure(Exception):
    """A request the appliance cannot serve: answered 500 ``Failure - error``."""


def iot_json(payload: Any, status: int = 200) -> Response:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return Response(body, status_code=status, media_type="application/json")


def text(body: str, status: int) -> Response:
    return Response(body.encode(), status_code=status, media_type="text/plain; charset=utf-8")


def failure(status: int = 500) -> Response:
    """The documented failure response: plain text, no JSON error schema (C.1)."""
    return text(FAILURE_BODY, status)


def int_param(request: Request, name: str, default: int | None = None) -> int | None:
    """An integer query parameter; absent gives ``default``, anything unparsable fails."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not _INT.match(raw.strip()):
        raise IotFailure(name)
    return int(raw.strip())


def int_list(request: Request, name: str) -> set[int] | None:
    """A comma list of integers (``siteId=1,2``); None when absent."""
    raw = request.query_params.get(name)
    if raw is None or raw.strip() == "":
        return None
    values = set()
    for part in raw.split(","):
        if not _INT.match(part.strip()):
            raise IotFailure(name)
        values.add(int(part.strip()))
    return values


def bool_param(request: Request, name: str) -> bool | None:
    """``true``/``false`` (any case); other values are ignored, like the alerts' ``type``."""
    raw = (request.query_params.get(name) or "").strip().lower()
    return {"true": True, "false": False}.get(raw)


def device_json(device: OtDevice) -> dict[str, Any]:
    return dict(device.record)


def connection_json(connection: OtConnection, now_ms: int) -> dict[str, Any]:
    return {
        "firstDeviceId": connection.first.id,
        "secondDeviceId": connection.second.id,
        "lastSeen": connection.last_seen(now_ms),
        "discovered": connection.discovered_ms,
        "ports": list(connection.ports),
        "protocols": [{"name": n, "commands": list(c)} for n, c in connection.protocols],
    }


def cve_json(device: OtDevice, cve: OtCve) -> dict[str, Any]:
    return {
        "cveId": cve.cve_id,
        "score": cve.score,  # a string on the sensor's CVE list (C.2)
        "ipAddress": device.ips[0],
        "attackVector": cve.attack_vector,
        "description": cve.description,
    }


def alert_json(alert: OtAlert, *, v2: bool, ids: str = "sensor") -> dict[str, Any]:
    """A sensor alert; ``ids="console"`` gives device ids in the console's id space."""
    source, destination = alert.source, alert.destination
    if ids == "console":
        source_id = source.uid if source is not None else None
        destination_id = destination.uid if destination is not None else None
    else:
        source_id = source.id if source is not None else None
        destination_id = destination.id if destination is not None else None
    key = "additionalinformation" if alert.lower_case_key else "additionalInformation"
    body: dict[str, Any] = {
        "engine": alert.engine,
        "severity": alert.severity,
        "title": alert.title,
        "sourceDevice": source_id,
        "destinationDevice": destination_id,
        "time": alert.time_ms,
        "message": alert.message,
        "id": alert.id,
        key: None if alert.information is None else dict(alert.information),
    }
    if v2:
        body["sourceDeviceAddress"] = source.ips[0] if source is not None else None
        body["destinationDeviceAddress"] = destination.ips[0] if destination is not None else None
        body["remediationSteps"] = list(alert.remediation)
    return body


def event_json(event: OtEvent) -> dict[str, Any]:
    return {
        "severity": event.severity,
        "title": event.title,
        "timestamp": event.timestamp_ms,
        "content": event.content,
        "owner": event.owner,
        "type": event.type,
    }
