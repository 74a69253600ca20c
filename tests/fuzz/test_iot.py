"""Defender for IoT payloads (C.2, C.3): sensor and console answers of any shape become rows
both sinks can write, records set aside with a reason, or one of our errors.

The row functions at module level are called on generated records. Parsing that lives in a
closure of a fetch function is reached through the fetch function itself, with a real
``SensorContext``/``ConsoleContext`` whose ``ApiClient`` is given the example's JSON by an
``httpx.MockTransport`` (httpx's own test transport: none of our classes is replaced).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from hypothesis import given
from hypothesis import strategies as st

from endpoint_forensics.config.appliances import ConsoleConfig, SensorConfig
from endpoint_forensics.config.models import Secret
from endpoint_forensics.errors import EpfError
from endpoint_forensics.http.client import RAW_TOKEN, ApiClient
from endpoint_forensics.http.ratelimit import RateBudget, RateLimit
from endpoint_forensics.identity.credentials import StaticToken
from endpoint_forensics.sources import (
    ConsoleContext,
    SensorContext,
    iot,
    iot_console,
    iot_events,
    iot_reports,
)
from endpoint_forensics.sources.wire import Fields, Invalid
from endpoint_forensics.tables import IOT_ALERTS, IOT_DEVICES

from .support import (
    FUZZ,
    check_batch,
    check_rows,
    scalars,
    tally,
    wire_text,
)

_NOW = datetime(2026, 12, 5, tzinfo=UTC)
_SENSOR_ORIGIN = {"Appliance": "s1", "ApplianceKind": "sensor", "Source": "sensor/v1/devices"}
_CONSOLE_ORIGIN = {"Appliance": "cm", "ApplianceKind": "console", "Source": "console/v3/devices"}

# -- the fields each parser reads (its Fields.get calls) --------------------------------------

_DEVICE_FIELDS = [
    "id",
    "name",
    "vendor",
    "type",
    "operatingSystem",
    "ipAddresses",
    "addresses",
    "macAddresses",
    "protocols",
    "firmware",
    "authorized",
    "engineeringStation",
    "scanner",
    "hasDynamicAddress",
    "sensorId",
    "siteId",
    "zoneId",
]
_FIRMWARE_FIELDS = ["firmwareVersion", "u_firmware_version", "name", "version"]
_SCORE_FIELDS = ["securityScore", "ipAddresses", "addresses", "name"]
_CONNECTION_FIELDS = [
    "firstDeviceId",
    "secondDeviceId",
    "ports",
    "protocols",
    "discovered",
    "lastSeen",
]
_CVE_FIELDS = ["cveId", "id", "ipAddress", "score", "attackVector", "description"]
_ALERT_FIELDS = [
    "id",
    "sensorId",
    "additionalInformation",
    "remediationSteps",
    "time",
    "title",
    "message",
    "severity",
    "engine",
    "sourceDevice",
    "destinationDevice",
    "sourceDeviceAddress",
    "destinationDeviceAddress",
    "handled",
    "sensorName",
    "siteId",
    "siteName",
    "zoneId",
    "zoneName",
]
_EVENT_FIELDS = ["timestamp", "type", "title", "severity", "owner", "content"]
_V3_DEVICE_FIELDS = [
    "u_id",
    "u_device_type",
    "u_purdue_layer",
    "u_ip_address_objects",
    "u_sensor_ids",
    "u_firmwares",
    "u_appliance",
    "u_name",
    "u_vendor",
    "u_operating_system",
    "u_mac_address_objects",
    "u_protocol_objects",
    "u_authorized",
    "u_is_authorized",
    "u_site",
    "u_zone",
    "u_first_discovered",
    "u_last_activity",
    "u_last_update",
]
_V3_INNER_FIELDS = [
    "u_name",
    "u_category",
    "u_purdue_layer",
    "u_ip_address",
    "u_mac_address",
    "u_protocol",
    "u_sensor_id",
    "u_firmware_version",
    "firmwareVersion",
]
_V3_CVE_DEVICE_FIELDS = ["u_id", "u_last_update", "u_name", "u_cves"]
_V3_CVE_FIELDS = ["u_cve_id", "u_ip_address", "u_score", "u_attack_vector", "u_description"]
_V3_CONNECTION_FIELDS = [
    "u_src_device_id",
    "u_dest_device_id",
    "u_appliance",
    "u_src_device_name",
    "u_dest_device_name",
    "u_connection_type",
]
_SENSOR_FIELDS = [
    "u_id",
    "u_connection_state",
    "u_name",
    "u_uid",
    "u_version",
    "u_is_activated",
    "u_device_count",
    "u_alert_count",
    "u_unhandled_alert_count",
]
_REPORT_DEVICE_FIELDS = ["name", "ipAddresses", "addresses", "securityScore", "vulnerabilities"]
_FLAG_FIELDS = [
    "isBackupServer",
    "isEngineeringStation",
    "isKnownScanner",
    "isUnauthorized",
    "malwareIndicationsDetected",
    "isWirelessAccessPoint",
    "cves",
]
_FINDING_KEYS = [
    "remoteAccess",
    "openedPorts",
    "plainTextPasswords",
    "weakAuthentication",
    "antiViruses",
]
_FINDING_FIELDS = [
    "port",
    "transport",
    "protocol",
    "clientSoftware",
    "client",
    "strength",
    "password",
]
_REPORT_ROW_FIELDS = [
    "address",
    "ipAddress",
    "internalAddress",
    "server",
    "name",
    "client",
    "port",
    "transport",
    "protocol",
]

# -- payloads ----------------------------------------------------------------------------------
#
# Drawing an example cost Hypothesis more than the parsers take to read it, so the shapes of
# support.py are drawn here more cheaply, and no smaller: objects without a flatmap (which
# builds a strategy at every draw), nested JSON level by level (``st.recursive`` draws again
# whenever a value outgrows its leaves), and the objects a parser reads inside (a device's
# firmware list, a v3 device's address objects) only in the fields where it reads inside them:
# in any other field such a value is read like the nested JSON every field may hold anyway.


def _one(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``strategy`` as one branch of a ``one_of`` (which would draw from each of its own)."""
    return st.tuples(strategy).map(operator.itemgetter(0))


def any_json(depth: int) -> st.SearchStrategy[Any]:
    """Any JSON value, lists and objects nested up to ``depth`` deep, as ``support.json_values``
    draws them but without ``st.recursive``, which draws again whenever a value outgrows its
    leaves: one of a scalar, or a list or object (of up to two items) of any shallower value."""
    levels = [_one(scalars)]
    for _ in range(depth):
        inner = st.one_of(levels)
        levels += [st.lists(inner, max_size=2), st.dictionaries(wire_text, inner, max_size=2)]
    return _one(st.one_of(levels))


def top_level(record: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """What a page or a line may hold where an object is expected: one, or any JSON (as
    ``support.top_level``)."""
    return st.one_of(record, _ANY_JSON)


_ANY_JSON = any_json(3)  # as support.json_values(4)
_VALUE = st.one_of(scalars, any_json(2))  # mostly a scalar (as support.records_like's values)


def spellings(name: str) -> list[str]:
    """A field name as the service spells it today, or with its casing drifted (as
    ``support.drift``, as a list to draw from)."""
    return [name, name.lower(), name.upper(), name[:1].lower() + name[1:]]


@st.composite
def _object(
    draw: st.DrawFn,
    keys: st.SearchStrategy[list[str]],
    value_of: Mapping[str, st.SearchStrategy[Any]],
    unknown: st.SearchStrategy[dict[str, Any]],
) -> dict[str, Any]:
    # A new object: Hypothesis prints a drawn one as it was drawn, before keys were added to it.
    record = dict(draw(unknown))
    for key in draw(keys):
        record[key] = draw(value_of[key])
    return record


def records_like(
    fields: list[str],
    *,
    values: st.SearchStrategy[Any] = _VALUE,
    shaped: Mapping[str, st.SearchStrategy[Any]] | None = None,
) -> st.SearchStrategy[dict[str, Any]]:
    """Objects whose keys are mostly the parser's own field names (casing drifted, some left
    out), a few unknown ones, and whose values are ``values`` (mostly a scalar, or any JSON),
    as ``support.records_like`` draws them; a field named in ``shaped`` may also hold that."""
    names = sorted(set(fields))
    value_of = {
        spelled: st.one_of(values, shaped[name]) if shaped and name in shaped else values
        for name in names
        for spelled in spellings(name)
    }
    keys = st.lists(
        st.sampled_from([spelled for name in names for spelled in spellings(name)]),
        unique=True,
        max_size=len(names),
    )
    return _object(keys, value_of, st.dictionaries(wire_text, values, max_size=3))


def page_of(record: st.SearchStrategy[Any], max_size: int = 4) -> st.SearchStrategy[Any]:
    """A list answer: mostly a list of mostly records; or any JSON at all."""
    return top_level(st.lists(top_level(record), max_size=max_size))


def nested(fields: list[str]) -> st.SearchStrategy[Any]:
    """A value where the parser expects a list of small objects (or a string list)."""
    inner = records_like(fields)
    return st.one_of(scalars, st.lists(st.one_of(inner, scalars), max_size=3), inner)


def holding(fields: list[str], shape: st.SearchStrategy[Any]) -> dict[str, Any]:
    """``shaped`` for ``records_like``: each of ``fields`` may hold ``shape``."""
    return dict.fromkeys(fields, shape)


# Shaped: the fields the parsers read inside (text_list, a nested object's Fields, list items).
_device = records_like(
    _DEVICE_FIELDS,
    shaped=holding(
        ["firmware", "protocols", "ipAddresses", "addresses", "macAddresses"],
        nested(_FIRMWARE_FIELDS),
    ),
)
_v3_device = records_like(
    _V3_DEVICE_FIELDS,
    shaped=holding(
        [
            "u_device_type",
            "u_ip_address_objects",
            "u_sensor_ids",
            "u_mac_address_objects",
            "u_protocol_objects",
            "u_firmwares",
        ],
        nested(_V3_INNER_FIELDS),
    ),
)
_v3_cve_device = records_like(
    _V3_CVE_DEVICE_FIELDS,
    shaped={"u_cves": st.lists(top_level(records_like(_V3_CVE_FIELDS)), max_size=3)},
)
_report_device = records_like(
    _REPORT_DEVICE_FIELDS,
    values=st.one_of(scalars, st.lists(scalars, max_size=3), any_json(2)),
    shaped={
        "vulnerabilities": records_like(
            [*_FLAG_FIELDS, *_FINDING_KEYS],
            values=st.one_of(scalars, any_json(2)),
            shaped=holding(_FINDING_KEYS, nested(_FINDING_FIELDS)),
        )
    },
)
_report_body = top_level(
    st.dictionaries(
        st.sampled_from(["remoteAccess", "openPorts", "backupServer", "x"]),
        st.one_of(page_of(records_like(_REPORT_ROW_FIELDS)), scalars),
        max_size=3,
    )
)


def v3_body(items: str, record: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A v3 integration page: ``{"u_count": N, "<items>": [...]}``, or not."""
    return top_level(
        st.fixed_dictionaries(
            {"u_count": st.one_of(st.integers(0, 10), scalars), items: page_of(record)}
        )
    )


# -- a context whose client is given the example's answers ------------------------------------


def _client(answer: Callable[[str], Any]) -> ApiClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=orjson.dumps(answer(request.url.path)))

    return ApiClient(
        StaticToken(Secret("t", source="literal")),
        transport=httpx.MockTransport(handler),
        sleep=lambda s: None,
        max_retries=0,
        auth_style=RAW_TOKEN,
    )


def _budget() -> RateBudget:
    return RateBudget(RateLimit("fuzz", per_minute=10**9, per_hour=10**9))


def _answers(table: Mapping[str, Any], default: Any = ()) -> Callable[[str], Any]:
    """The answer to a path: the first pattern of ``table`` it matches, else ``default``."""

    def answer(path: str) -> Any:
        for pattern, body in table.items():
            if re.search(pattern, path):
                return body
        return list(default)

    return answer


def sensor(table: Mapping[str, Any], cursor: dict[str, Any] | None = None) -> SensorContext:
    config = SensorConfig(name="s1", url="https://s1", token=Secret("t", source="literal"))
    return SensorContext(_client(_answers(table)), _budget(), _NOW, cursor=cursor, appliance=config)


def console(
    table: Mapping[str, Any], cursor: dict[str, Any] | None = None, **config: Any
) -> ConsoleContext:
    appliance = ConsoleConfig(
        name="cm", url="https://cm", token=Secret("t", source="literal"), **config
    )
    return ConsoleContext(
        _client(_answers(table)), _budget(), _NOW, cursor=cursor, appliance=appliance
    )


def run(fetched: Iterator[Any], tmp: Path) -> None:
    """Every batch of every unit ``fetched`` yields fits its table; its cursor can be stored.
    One of our errors (with a message) is an answer too."""
    try:
        while True:
            try:
                unit = next(fetched)
            except StopIteration as done:
                if done.value is not None:
                    orjson.dumps(done.value)
                return
            for batch in unit.batches:
                check_batch(batch, tmp)
    except EpfError as exc:
        assert str(exc).strip(), repr(exc)


def rows_or_error(make: Callable[[], Any], tmp: Path) -> None:
    try:
        batch = make()
    except EpfError as exc:
        assert str(exc).strip(), repr(exc)
        return
    check_batch(batch, tmp)


# -- sensors (C.2) -----------------------------------------------------------------------------


@FUZZ
@given(page_of(_device), page_of(records_like(_SCORE_FIELDS)))
def test_sensor_devices(tmp_path: Path, records: Any, scores: Any) -> None:
    tally("iot sensor devices")
    ctx = sensor({r"/reports/vulnerabilities/devices$": scores, r"/api/v1/devices$": records})
    run(iot.fetch_devices(ctx), tmp_path)


@FUZZ
@given(page_of(_device))
def test_console_v1_devices(tmp_path: Path, records: Any) -> None:
    tally("iot console v1 devices")
    run(iot_console.fetch_console_devices(console({r"/external/v1/devices$": records})), tmp_path)


@FUZZ
@given(page_of(records_like(_CONNECTION_FIELDS)))
def test_sensor_connections(tmp_path: Path, records: Any) -> None:
    tally("iot sensor connections")
    run(iot.fetch_connections(sensor({r"/connections$": records})), tmp_path)


@FUZZ
@given(page_of(records_like(_CVE_FIELDS)))
def test_sensor_cves(tmp_path: Path, records: Any) -> None:
    tally("iot sensor cves")
    run(iot.fetch_cves(sensor({r"/api/v1/devices/cves$": records})), tmp_path)


@FUZZ
@given(page_of(records_like(_ALERT_FIELDS)))
def test_alert_rows(tmp_path: Path, records: Any) -> None:
    tally("iot alert_row")
    rows_or_error(
        lambda: iot.rows_of(
            IOT_ALERTS, records, lambda f: iot.alert_row(f, _SENSOR_ORIGIN), "alerts"
        ),
        tmp_path,
    )


@FUZZ
@given(page_of(records_like(_ALERT_FIELDS)), st.booleans())
def test_sensor_and_console_alerts(tmp_path: Path, records: Any, on_console: bool) -> None:
    tally("iot alerts (sensor and console)")
    cursor = {"to_ms": 1_700_000_000_000, "seen": {"1": 1}}
    if on_console:
        ctx = console({r"/alerts$": records}, cursor, sensor_ids=(1, 2))
        run(iot_console.fetch_console_alerts(ctx), tmp_path)
    else:
        run(iot.fetch_alerts(sensor({r"/alerts$": records}, cursor)), tmp_path)


@FUZZ
@given(page_of(records_like(_EVENT_FIELDS), max_size=6))
def test_sensor_events(tmp_path: Path, records: Any) -> None:
    tally("iot sensor events")
    if isinstance(records, list):
        for record in records:
            if isinstance(record, Mapping):
                assert len(iot_events.event_key(record)) == 32
    run(iot_events.fetch_events(sensor({r"/api/v1/events$": records})), tmp_path)


@FUZZ
@given(page_of(_report_device), _report_body, _report_body)
def test_exposure_reports(tmp_path: Path, devices: Any, security: Any, operational: Any) -> None:
    tally("iot exposure reports")
    ctx = sensor(
        {
            r"/vulnerabilities/devices$": devices,
            r"/vulnerabilities/security$": security,
            r"/vulnerabilities/operational$": operational,
        }
    )
    run(iot_reports.fetch_exposure(ctx), tmp_path)


@FUZZ
@given(top_level(_report_device))
def test_device_findings(record: Any) -> None:
    tally("iot reports _device_findings")
    try:
        rows = iot_reports._device_findings(Fields(record), _SENSOR_ORIGIN)
    except Invalid as exc:
        assert str(exc).strip()
        return
    from endpoint_forensics.tables import IOT_EXPOSURE

    check_rows(IOT_EXPOSURE, rows)


# -- the management console (C.3) --------------------------------------------------------------


@FUZZ
@given(page_of(_v3_device))
def test_console_v3_device_rows(tmp_path: Path, records: Any) -> None:
    tally("iot console v3_device_row")
    rows_or_error(
        lambda: iot.rows_of(
            IOT_DEVICES, records, lambda f: iot_console.v3_device_row(f, _CONSOLE_ORIGIN), "v3"
        ),
        tmp_path,
    )


@FUZZ
@given(
    v3_body("u_devices", _v3_device),
    page_of(records_like(["u_id"])),
    st.sampled_from([(), (3,)]),
)
def test_console_device_changes(
    tmp_path: Path, body: Any, deleted: Any, sensors: tuple[int, ...]
) -> None:
    tally("iot console device changes")
    ctx = console(
        {r"/deleteddevices/": deleted, r"/integration/devices/": body}, sensor_ids=sensors
    )
    run(iot_console.fetch_device_changes(ctx), tmp_path)


@FUZZ
@given(v3_body("u_device_cves", _v3_cve_device))
def test_console_cves(tmp_path: Path, body: Any) -> None:
    tally("iot console cves")
    run(iot_console.fetch_console_cves(console({r"/devicecves/": body})), tmp_path)


@FUZZ
@given(
    v3_body("u_connections", records_like(_V3_CONNECTION_FIELDS)),
    page_of(records_like(["id"])),
    st.sampled_from([(), (3,)]),
)
def test_console_connections(
    tmp_path: Path, body: Any, devices: Any, sensors: tuple[int, ...]
) -> None:
    tally("iot console connections")
    ctx = console({r"/connections/": body, r"/external/v1/devices$": devices}, sensor_ids=sensors)
    run(iot_console.fetch_console_connections(ctx), tmp_path)


@FUZZ
@given(page_of(records_like(_SENSOR_FIELDS)), st.sampled_from([(), (3,)]))
def test_console_sensors(tmp_path: Path, records: Any, sensors: tuple[int, ...]) -> None:
    tally("iot console sensors")
    ctx = console({r"/integration/sensors$": records}, sensor_ids=sensors)
    run(iot_console.fetch_sensors(ctx), tmp_path)
