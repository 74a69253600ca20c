"""The config loader: a TOML document with the real sections and keys and hostile values, or
text that is not TOML at all, gives a ``Settings`` or a ``ConfigError`` that names the key (or
says the file is not TOML); never another exception. No ``keyvault:`` reference is read: the
loader gets no resolver, so one is a ``ConfigError`` without any network."""

from __future__ import annotations

import math
import re
import string
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from endpoint_forensics.config import (
    CONSOLE_DATASETS,
    DATASETS,
    SENSOR_DATASETS,
    Settings,
    load_settings,
    settings_from_mapping,
)
from endpoint_forensics.config.models import FEED_DATASETS
from endpoint_forensics.errors import ConfigError

from .support import FUZZ, tally, wire_text

_GUID = "11111111-2222-3333-4444-555555555555"
_ENV = {"EPF_TEST_SECRET": "s3cr3t", "EMPTY_SECRET": ""}

# -- values --------------------------------------------------------------------------------

_hostile_text = st.one_of(
    st.sampled_from(
        [
            _GUID,
            "contoso",
            "env:EPF_TEST_SECRET",
            "env:MISSING_SECRET",
            "env:EMPTY_SECRET",
            "env:",
            "file:secret.txt",
            "file:not-utf8.txt",
            "file:empty.txt",
            "file:missing.txt",
            "file:.",
            "file:~nosuchuser-epf/secret",
            "file:a\x00b",
            "keyvault:myvault/secret",
            "keyvault:https://myvault.vault.azure.net/secrets/s",
            "~nosuchuser-epf/x",
            "~",
            "a\x00b",
            "x" * 5000,
            "a/" * 3000,
            "ca.pem",
            "secret.txt",
            ".",
            "https://",
            "https://example.test/",
            "https://mirror.example.test/kev.json",
            "http://example.test",
            "dcr-" + "0" * 32,
            "Custom-EPF_Devices_CL",
            "EPF_Devices_CL",
            "graph",
            "mde",
            "auto",
            "files",
            "v1",
            "v2",
            "low",
            "high",
            "*",
        ]
    ),
    st.sampled_from([*DATASETS, *SENSOR_DATASETS, *CONSOLE_DATASETS, *FEED_DATASETS]),
    wire_text.map(lambda t: t.encode("utf-8", "replace").decode("utf-8")),
)
_toml_scalars = st.one_of(
    _hostile_text,
    _hostile_text,
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, -1, 1, 6, 200, 201, 10_000, 10_001, 2**31]),
    st.floats(),
    st.datetimes(timezones=st.none() | st.just(UTC)),
    st.dates(),
)


def _values(depth: int = 2) -> st.SearchStrategy[Any]:
    return st.recursive(
        _toml_scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.dictionaries(_hostile_text, inner, max_size=3),
        ),
        max_leaves=6,
    )


_value = st.one_of(_toml_scalars, _toml_scalars, _toml_scalars, _values())


def _section(keys: list[str], **nested: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A table with some of ``keys`` (hostile values), ``nested`` sub-tables, and maybe an
    unknown key; now and then not a table at all."""
    known = st.fixed_dictionaries({}, optional={k: _value for k in keys} | nested)
    extra = st.dictionaries(_hostile_text, _value, max_size=1)
    table = st.tuples(known, extra).map(lambda p: {**p[1], **p[0]})
    return st.one_of(table, table, table, table, _value)


def _dataset_map(names: tuple[str, ...]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.dictionaries(st.sampled_from(names) | _hostile_text, _value, max_size=3), _value
    )


def _dataset_list(names: tuple[str, ...]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(st.sampled_from(names) | _hostile_text, max_size=3), _value)


_IDENTITY = [
    "tenant_id",
    "client_id",
    "client_secret",
    "certificate_path",
    "certificate_password",
    "managed_identity",
    "managed_identity_client_id",
    "authority_host",
    "ca_bundle",
]
_TENANT = [
    *_IDENTITY,
    "name",
    "mde_base_url",
    "graph_base_url",
    "mde_scope",
    "graph_scope",
    "hunting_api",
    "page_size",
    "hunting_row_limit",
    "hunting_timeout_seconds",
    "timeout_seconds",
    "max_retries",
    "export_mode",
    "files_threshold_devices",
    "export_page_size",
    "sas_valid_hours",
]
_APPLIANCE = [
    "name",
    "url",
    "token",
    "ca_bundle",
    "certificate_fingerprint",
    "timeout_seconds",
    "max_retries",
    "defender_tenant_id",
    "alerts_api",
    "alerts_overlap_minutes",
]
_SENSOR = [
    *_APPLIANCE,
    "site",
    "zone",
    "authorized",
    "cve_top",
    "events_initial_minutes",
    "events_overlap_minutes",
    "event_types",
]
_CONSOLE = [*_APPLIANCE, "page_size", "sensor_ids"]
_SENTINEL = [
    *_IDENTITY,
    "endpoint",
    "dcr_immutable_id",
    "scope",
    "stream_prefix",
    "max_concurrency",
    "timeout_seconds",
    "outbox_dir",
    "outbox_max_mb",
]
_RULE = ["group", "tag", "name", "value"]


def _listed(section: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(section, min_size=1, max_size=2), _value)


_location = _section(["url", "path"])
_document = st.fixed_dictionaries(
    {},
    optional={
        "store": _section(["path", "enabled"]),
        "state": _section(["dir"]),
        "sentinel": _section(
            _SENTINEL,
            dcrs=_listed(_section(["immutable_id", "tables", "endpoint"])),
            workspace=_section(["resource_id", "endpoint", "scope"]),
        ),
        "keyvault": _section(_IDENTITY),
        "output": _section(["compat"]),
        "history": _section(["baseline_days"], mode=_dataset_map(DATASETS)),
        "tenants": _listed(
            _section(
                _TENANT, datasets=_dataset_list(DATASETS), interval_hours=_dataset_map(DATASETS)
            )
        ),
        "sensors": _listed(
            _section(
                _SENSOR,
                datasets=_dataset_list(SENSOR_DATASETS),
                interval_hours=_dataset_map(SENSOR_DATASETS),
            )
        ),
        "consoles": _listed(
            _section(
                _CONSOLE,
                datasets=_dataset_list(CONSOLE_DATASETS),
                interval_hours=_dataset_map(CONSOLE_DATASETS),
            )
        ),
        "feeds": _section(
            ["ca_bundle", "timeout_seconds", "max_retries"],
            datasets=_dataset_list(FEED_DATASETS),
            interval_hours=_dataset_map(FEED_DATASETS),
            kev=_location,
            epss=_location,
            vulnrichment=_location,
        ),
        "triage": _section(
            ["mission_default", "interval_hours"],
            mission=_listed(_section(_RULE)),
            exposed=_listed(_section(_RULE)),
        ),
    },
)
_ENV_KEYS = [
    "EPF_STORE__PATH",
    "EPF_STORE__ENABLED",
    "EPF_STATE__DIR",
    "EPF_TENANTS__0__CLIENT_SECRET",
    "EPF_TENANTS__0__PAGE_SIZE",
    "EPF_TENANTS__1__NAME",
    "EPF_TENANTS__0__DATASETS",
    "EPF_SENSORS__0__TOKEN",
    "EPF_FEEDS__KEV__PATH",
    "EPF_TRIAGE__MISSION_DEFAULT",
    "EPF_HISTORY__BASELINE_DAYS",
]
_environ = st.dictionaries(
    st.sampled_from(_ENV_KEYS),
    st.one_of(_hostile_text, st.sampled_from(["[", '["machines"]', "[1, {}]", "[]"])),
    max_size=2,
).map(lambda extra: {**_ENV, **{k: v.replace("\x00", "") for k, v in extra.items()}})


# -- a small TOML writer -----------------------------------------------------------------------

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _key(key: str) -> str:
    return key if _BARE.match(key) else _string(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value).__name__)


def toml_document(doc: dict[str, Any]) -> str:
    """Scalars first, then each table under its header, each list of tables as ``[[...]]``."""
    lines = [f"{_key(k)} = {toml_value(v)}" for k, v in doc.items() if not _is_table(v)]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines += ["", f"[{_key(k)}]", *(f"{_key(a)} = {toml_value(b)}" for a, b in v.items())]
        elif _is_table(v):
            for item in v:
                lines += ["", f"[[{_key(k)}]]"]
                lines += [f"{_key(a)} = {toml_value(b)}" for a, b in item.items()]
    return "\n".join(lines) + "\n"


def _is_table(value: Any) -> bool:
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
    )


# -- the checks --------------------------------------------------------------------------------


def _keys_of(value: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            found.add(str(k))
            found |= _keys_of(v)
    elif isinstance(value, list):
        for v in value:
            found |= _keys_of(v)
    return found


def _check_error(exc: ConfigError, doc: Any, environ: dict[str, str]) -> None:
    message = str(exc)
    assert message.strip(), "a ConfigError without a message"
    if "not valid TOML" in message or "cannot be read" in message or "(top level)" in message:
        return
    if "environment variable" in message:
        return
    named = _keys_of(doc) | {"keyvault", "store", "sentinel"}
    named |= {p.lower() for k in environ for p in k.removeprefix("EPF_").split("__")}
    assert any(key and key in message for key in named), f"no key named in {message!r}"


def _prepare(folder: Path) -> None:
    (folder / "secret.txt").write_text("s3cr3t\n")
    (folder / "empty.txt").write_text("  \n")
    (folder / "not-utf8.txt").write_bytes(b"\xff\xfe\x80secret")
    (folder / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")


@FUZZ
@given(_document, _environ)
def test_a_config_file(tmp_path: Path, doc: dict[str, Any], environ: dict[str, str]) -> None:
    tally("config file (TOML)")
    _prepare(tmp_path)
    path = tmp_path / "epf.toml"
    path.write_text(toml_document(doc), encoding="utf-8")
    try:
        settings = load_settings(path, environ=environ)
    except ConfigError as exc:
        _check_error(exc, doc, environ)
        return
    assert isinstance(settings, Settings)


_GOOD = (
    '[store]\npath = "ws.duckdb"\n\n[[tenants]]\nname = "contoso"\n'
    f'tenant_id = "{_GUID}"\nclient_id = "{_GUID}"\nclient_secret = "env:EPF_TEST_SECRET"\n'
)
_raw = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.text(alphabet=string.printable, max_size=200).map(str.encode),
    st.tuples(st.integers(0, len(_GOOD)), st.text(max_size=8)).map(
        lambda p: (_GOOD[: p[0]] + p[1] + _GOOD[p[0] :]).encode("utf-8", "surrogatepass")
    ),
)


@FUZZ
@given(_raw)
def test_a_config_file_that_is_not_toml(tmp_path: Path, body: bytes) -> None:
    tally("config file (raw text)")
    _prepare(tmp_path)
    path = tmp_path / "epf.toml"
    path.write_bytes(body)
    try:
        settings = load_settings(path, environ=_ENV)
    except ConfigError as exc:
        assert str(exc).strip(), "a ConfigError without a message"
        return
    assert isinstance(settings, Settings)


@FUZZ
@given(st.one_of(_document, _document, _values()), _environ)
def test_a_config_mapping(tmp_path: Path, doc: Any, environ: dict[str, str]) -> None:
    tally("config mapping")
    _prepare(tmp_path)
    try:
        settings = settings_from_mapping(doc, base_dir=tmp_path, environ=environ)
    except ConfigError as exc:
        _check_error(exc, doc, environ)
        return
    assert isinstance(settings, Settings)
