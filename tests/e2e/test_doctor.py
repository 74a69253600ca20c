"""`epf doctor` against the emulator: a good config passes, and each thing a tenant admin can
get wrong fails with a fix that names what to change, never showing a secret."""

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from endpoint_forensics.config import Settings, load_settings
from endpoint_forensics.doctor.run import Check, exit_code, render, run_doctor
from endpoint_forensics.doctor.sentinel import tables_written
from endpoint_forensics.sinks.outbox import Outbox
from epf_emulator import Emulator, EmulatorSettings

pytestmark = pytest.mark.e2e

WRONG_SECRET = "not-the-secret-Zq8"
WRONG_TOKEN = "0123456789abcdef0123456789abcdef"
UNROUTED = ("EPF_Runs_CL", "EPF_Devices_CL")


@pytest.fixture(scope="module")
def site() -> Iterator[Emulator]:
    """A small tenant, one sensor and the console, and the Logs Ingestion endpoint."""
    with Emulator(EmulatorSettings(devices=30, seed=21, iot_sensors=1)) as emu:
        yield emu


def doctor_settings(
    emu: Emulator, tmp_path: Path, overrides: dict[str, Any] | None = None
) -> Settings:
    config = tmp_path / "epf.toml"
    emu.write_config(config, iot="pin", mde=True, sentinel=True)
    values: dict[str, Any] = {
        "store.path": str(tmp_path / "ws.duckdb"),
        "state.dir": str(tmp_path / "state"),
    }
    values.update(overrides or {})
    return load_settings(config, environ={}, overrides=values)


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.ok is False]


def only(checks: list[Check], area: str, name: str) -> Check:
    found = [c for c in checks if c.area == area and c.name == name]
    assert len(found) == 1, (area, name, render(checks))
    return found[0]


def secrets_of(emu: Emulator) -> list[str]:
    return [emu.client_secret, *(a.token for a in emu.iot_appliances)]


def assert_no_secret(emu: Emulator, text: str, *extra: str) -> None:
    for secret in (*secrets_of(emu), *extra):
        assert secret not in text


def test_a_good_config_is_all_green(site: Emulator, tmp_path: Path) -> None:
    checks = run_doctor(doctor_settings(site, tmp_path))
    text = render(checks)
    assert failed(checks) == [], text
    assert exit_code(checks) == 0
    # Every area was looked at: tenant APIs, sensor, console, Sentinel, the local store.
    for area, name in (
        ("tenant emulated", "MDE permissions"),
        ("tenant emulated", "MDE API"),
        ("tenant emulated", "Graph API"),
        ("sensor sensor-1", "API"),
        ("console console", "API"),
        ("local", "store"),
    ):
        assert only(checks, area, name).ok is True, text
    # One DCR check for each DCR the written tables go to (a DCR holds 10 streams at most).
    dcr_checks = [c for c in checks if (c.area, c.name) == ("sentinel", "DCR")]
    used = {site.dcr_for(t) for t in tables_written(doctor_settings(site, tmp_path))}
    assert {c.detail.split()[0] for c in dcr_checks} == used and len(used) > 1
    assert "Nothing to fix." in text
    # Nothing was stored by the empty uploads.
    assert site.stats()["ingested"] == {}
    assert_no_secret(site, text)


def test_a_missing_permission_names_it_and_where_to_grant_it(tmp_path: Path) -> None:
    roles = (
        "Machine.Read.All",
        "Vulnerability.Read.All",
        "SecurityRecommendation.Read.All",
        "ThreatHunting.Read.All",
    )
    settings = EmulatorSettings(devices=10, seed=22, iot_sensors=0, app_roles=roles)
    with Emulator(settings) as emu:
        config = tmp_path / "epf.toml"
        emu.write_config(config, iot="none", sentinel=False)
        loaded = load_settings(config, environ={}, overrides={"state.dir": str(tmp_path / "s")})
        checks = run_doctor(loaded)
    text = render(checks)
    assert exit_code(checks) == 1
    [failure] = failed(checks)
    assert (failure.area, failure.name) == ("tenant emulated", "MDE permissions")
    assert "Software.Read.All" in failure.detail and "software_inventory" in failure.detail
    assert "WindowsDefenderATP (APIs my organization uses)" in failure.fix
    assert "Application permissions > Software.Read.All, then Grant admin consent" in failure.fix
    assert emu.client_id in failure.fix
    assert failure.fix in text


def test_without_machine_read_the_api_call_is_refused_and_says_so(tmp_path: Path) -> None:
    roles = ("Vulnerability.Read.All", "ThreatHunting.Read.All")
    settings = EmulatorSettings(devices=10, seed=23, iot_sensors=0, app_roles=roles)
    with Emulator(settings) as emu:
        config = tmp_path / "epf.toml"
        emu.write_config(config, iot="none", sentinel=False)
        overrides = {"state.dir": str(tmp_path / "s"), "tenants.0.datasets": ["machines"]}
        checks = run_doctor(load_settings(config, environ={}, overrides=overrides))
    probe = only(checks, "tenant emulated", "MDE API")
    assert probe.ok is False and "403" in probe.detail
    assert "Machine.Read.All" in probe.fix and "WindowsDefenderATP" in probe.fix
    # Graph is not called: no configured dataset uses it.
    assert not [c for c in checks if c.name.startswith("Graph")]


def test_a_wrong_client_secret_says_which_secret_to_renew(site: Emulator, tmp_path: Path) -> None:
    overrides = {"tenants.0.client_secret": WRONG_SECRET}
    checks = run_doctor(doctor_settings(site, tmp_path, overrides))
    text = render(checks)
    assert exit_code(checks) == 1
    token = only(checks, "tenant emulated", "MDE token")
    assert token.ok is False
    assert "AADSTS7000215" in token.detail
    assert "client_secret" in token.fix and "Certificates & secrets" in token.fix
    # One refusal is enough: the same credential is not tried on Graph.
    assert [c for c in checks if c.area == "tenant emulated"] == [token]
    # Sentinel still has the right secret.
    dcr_checks = [c for c in checks if (c.area, c.name) == ("sentinel", "DCR")]
    assert dcr_checks and all(c.ok for c in dcr_checks)
    assert_no_secret(site, text, WRONG_SECRET)


def test_a_secret_from_the_environment_is_named_by_its_variable(
    site: Emulator, tmp_path: Path
) -> None:
    config = tmp_path / "epf.toml"
    site.write_config(config, iot="none", sentinel=False)
    settings = load_settings(
        config,
        environ={"EPF_TENANTS__0__CLIENT_SECRET": "env:DEFENDER_SECRET", "DEFENDER_SECRET": "x1"},
        overrides={"state.dir": str(tmp_path / "s")},
    )
    token = only(run_doctor(settings), "tenant emulated", "MDE token")
    assert token.ok is False and "env:DEFENDER_SECRET" in token.fix


def test_a_wrong_sensor_token_asks_for_a_new_one(site: Emulator, tmp_path: Path) -> None:
    checks = run_doctor(doctor_settings(site, tmp_path, {"sensors.0.token": WRONG_TOKEN}))
    text = render(checks)
    assert exit_code(checks) == 1
    token = only(checks, "sensor sensor-1", "token")
    assert token.ok is False and "401" in token.detail
    assert "Access Tokens" in token.fix
    assert only(checks, "sensor sensor-1", "TLS").ok is True
    assert only(checks, "console console", "token").ok is True
    assert_no_secret(site, text, WRONG_TOKEN)


def test_a_wrong_pin_shows_the_presented_fingerprint(site: Emulator, tmp_path: Path) -> None:
    sensor = next(a for a in site.iot_appliances if a.kind == "sensor")
    checks = run_doctor(
        doctor_settings(site, tmp_path, {"sensors.0.certificate_fingerprint": "ab" * 32})
    )
    assert exit_code(checks) == 1
    tls = only(checks, "sensor sensor-1", "TLS")
    assert tls.ok is False
    assert sensor.fingerprint_sha256 in tls.detail
    assert f'certificate_fingerprint = "{sensor.fingerprint_sha256}"' in tls.fix
    # Nothing is sent over a connection that is not trusted.
    assert only(checks, "sensor sensor-1", "token").ok is None


def test_an_untrusted_certificate_says_what_to_set(site: Emulator, tmp_path: Path) -> None:
    sensor = next(a for a in site.iot_appliances if a.kind == "sensor")
    checks = run_doctor(
        doctor_settings(site, tmp_path, {"sensors.0.certificate_fingerprint": None})
    )
    tls = only(checks, "sensor sensor-1", "TLS")
    assert tls.ok is False and "system trust store" in tls.detail
    assert "ca_bundle" in tls.fix and sensor.fingerprint_sha256 in tls.fix


def test_a_table_without_a_route_names_the_table(site: Emulator, tmp_path: Path) -> None:
    dcrs = [
        {"immutable_id": dcr, "tables": routed}
        for dcr, tables in site.dcrs
        if (routed := [t for t in tables if t not in UNROUTED])
    ]
    checks = run_doctor(doctor_settings(site, tmp_path, {"sentinel.dcrs": dcrs}))
    assert exit_code(checks) == 1
    [failure] = failed(checks)
    assert failure.name == "routes" and "never be delivered" in failure.detail
    assert all(t in failure.detail and t in failure.fix for t in UNROUTED)
    assert "[[sentinel.dcrs]]" in failure.fix


def test_one_dcr_for_every_table_cannot_exist(site: Emulator, tmp_path: Path) -> None:
    # dcr_immutable_id takes every table no entry names: here all of them, in one DCR.
    overrides = {"sentinel.dcrs": [], "sentinel.dcr_immutable_id": site.dcr_immutable_id}
    settings = doctor_settings(site, tmp_path, overrides)
    written = tables_written(settings)
    checks = run_doctor(settings)
    assert exit_code(checks) == 1
    routes = [c for c in checks if (c.area, c.name) == ("sentinel", "routes")]
    assert [c.ok for c in routes] == [False]
    assert f"{len(written)} tables route to the DCR {site.dcr_immutable_id}" in routes[0].detail
    assert "at most 10 streams" in routes[0].fix
    # The DCR itself refuses the streams it does not declare, each named.
    refused = {c.name for c in failed(checks) if c.name.startswith("stream ")}
    declared = set(dict(site.dcrs)[site.dcr_immutable_id])
    assert refused == {f"stream {t}" for t in written if t not in declared}


def test_a_dcr_without_the_streams_points_at_the_template(site: Emulator, tmp_path: Path) -> None:
    settings = doctor_settings(site, tmp_path, {"sentinel.stream_prefix": "Other-"})
    checks = run_doctor(settings)
    # One finding per DCR, not one per table.
    failures = failed(checks)
    used = {site.dcr_for(t) for t in tables_written(settings)}
    assert len(failures) == len(used) > 1
    assert all(f.name == "DCR" and "404" in f.detail for f in failures), [
        f.detail for f in failures
    ]
    assert any("Other-EPF_Devices_CL" in f.detail for f in failures)
    assert all("stream_prefix" in f.fix and "epf deploy arm" in f.fix for f in failures)


def test_a_wrong_tenant_id_points_at_the_directory_id(site: Emulator, tmp_path: Path) -> None:
    overrides = {"tenants.0.tenant_id": "00000000-0000-0000-0000-00000000beef"}
    token = only(
        run_doctor(doctor_settings(site, tmp_path, overrides)), "tenant emulated", "MDE token"
    )
    assert token.ok is False and "Directory (tenant) ID" in token.fix


def test_waiting_and_rejected_uploads_are_warnings(site: Emulator, tmp_path: Path) -> None:
    settings = doctor_settings(site, tmp_path)
    outbox = Outbox(settings.state.dir / "outbox" / "sentinel")
    for unit in ("u1", "u2"):
        staged = outbox.stage(unit, "EPF_Devices_CL")
        staged.add(gzip.compress(b'[{"DeviceId": "d"}]'), 1)
        staged.commit()
    outbox.reject(next(outbox.pending()), "HTTP 400 from Custom-EPF_Devices_CL: bad column")
    checks = run_doctor(settings)
    assert exit_code(checks) == 0
    waiting = only(checks, "sentinel", "outbox")
    assert waiting.ok is None and waiting.detail.startswith("1 upload(s) wait")
    rejected = only(checks, "sentinel", "rejected uploads")
    assert rejected.ok is None and str(outbox.dir / "rejected") in rejected.detail
    assert "warn  sentinel" in render(checks)


def test_a_store_that_is_not_duckdb_fails(site: Emulator, tmp_path: Path) -> None:
    settings = doctor_settings(site, tmp_path)
    settings.store.path.write_bytes(b"not a database")
    store = only(run_doctor(settings), "local", "store")
    assert store.ok is False and "store.path" in store.fix


def test_render_lists_each_check_then_each_fix() -> None:
    checks = [
        Check("tenant t", "MDE token", True, "token"),
        Check("sentinel", "outbox", None, "2 upload(s) wait"),
        Check("sensor s", "TLS", False, "not trusted", "Set ca_bundle"),
    ]
    lines = render(checks).splitlines()
    assert lines[0].startswith("ok    tenant t  MDE token")
    assert lines[1].startswith("warn  sentinel  outbox")
    assert lines[2].startswith("FAIL  sensor s  TLS")
    assert lines[-1] == "- sensor s, TLS: Set ca_bundle"
    assert exit_code(checks) == 1
    assert exit_code(checks[:2]) == 0


def test_a_token_for_another_api_is_named_as_the_scope_not_a_permission(
    site: Emulator, tmp_path: Path
) -> None:
    """The MDE API refuses a Threat Protection token with 403, as if a permission were missing;
    the token carries the roles, so the doctor points at the scope instead."""
    settings = doctor_settings(
        site, tmp_path, {"tenants.0.mde_scope": "https://api.security.microsoft.com/.default"}
    )
    checks = run_doctor(settings)
    probe = only(checks, "tenant emulated", "MDE API")
    assert probe.ok is False and "403" in probe.detail
    assert "mde_scope (https://api.security.microsoft.com/.default)" in probe.fix
    assert "https://api.securitycenter.microsoft.com/.default" in probe.fix
    assert "admin consent" not in probe.fix
    assert_no_secret(site, render(checks))
