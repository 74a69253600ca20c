"""The Azure Functions entry point, run locally against the emulator: the timer function of
deploy/functions/function_app.py and ``run_collection``, delivering to Sentinel with the
function app's managed identity while the MDE side keeps the app registration's secret."""

from __future__ import annotations

import importlib.util
import logging
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from azure.functions.timer import TimerRequest  # the concrete one; func.TimerRequest is the ABC

from endpoint_forensics.azure.functions import run_collection
from endpoint_forensics.pipeline.runlog import RunSummary
from epf_emulator import Emulator, EmulatorSettings

from ..cli.test_run_lock import hold_run_lock, release_run_lock
from ..history_modes import EVERY_ROW_TOML

pytestmark = pytest.mark.e2e

FUNCTION_APP = Path(__file__).parents[2] / "deploy" / "functions" / "function_app.py"
DATASETS = '["machines", "agent_health", "av_health"]'
_APP_CREDENTIAL_KEYS = ("tenant_id", "client_id", "client_secret", "authority_host")


@pytest.fixture(scope="module")
def tenant() -> Iterator[Emulator]:
    with Emulator(EmulatorSettings(devices=40, seed=23, iot_sensors=0)) as emu:
        yield emu


@pytest.fixture
def functions_env(
    tenant: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """A Functions deployment: Sentinel only, by managed identity; the app settings it reads."""
    config = tmp_path / "site" / "epf.toml"
    config.parent.mkdir()
    write_functions_config(tenant, config)
    # What the host sets for a function app with a managed identity.
    monkeypatch.setenv("IDENTITY_ENDPOINT", tenant.managed_identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", tenant.managed_identity_header)
    # The endpoint speaks HTTPS with the test CA; azure-identity's transport (requests) trusts it
    # through REQUESTS_CA_BUNDLE (it takes no CA from the collector's config for this flow).
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tenant.ca_path))
    return {
        "EPF_CONFIG": str(config),
        "EPF_STATE_DIR": str(tmp_path / "data" / "epf"),
        "EPF_TENANTS__0__DATASETS": DATASETS,
    }


def write_functions_config(emu: Emulator, path: Path) -> None:
    """The emulator's config with ``store.enabled = false`` and, in ``[sentinel]``, the managed
    identity instead of the app credential."""
    emu.write_config(path, iot="none")
    head, sentinel = path.read_text(encoding="utf-8").split("[sentinel]\n")
    kept = [line for line in sentinel.splitlines() if not line.startswith(_APP_CREDENTIAL_KEYS)]
    sentinel_block = "\n".join(["[sentinel]", "managed_identity = true", *kept]) + "\n"
    # Every row in every run: the subject here is delivery, not change-only history.
    text = "[store]\nenabled = false\n" + head + sentinel_block + EVERY_ROW_TOML
    path.write_text(text, encoding="utf-8")


def load_function_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("epf_function_app", FUNCTION_APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows_by_table(summary: RunSummary) -> dict[str, int]:
    """What the run collected, per table, with its EPF_Runs_CL rows."""
    rows: Counter[str] = Counter()
    for outcome in summary.outcomes:
        rows[outcome.table] += outcome.rows
    rows["EPF_Runs_CL"] += len(summary.outcomes)
    return {table: n for table, n in rows.items() if n}


def ingested_since(emu: Emulator, before: dict[str, int]) -> dict[str, int]:
    now = emu.stats()["ingested"]
    return {t: n - before.get(t, 0) for t, n in now.items() if n - before.get(t, 0)}


def msi_calls(emu: Emulator) -> dict[str, int]:
    return dict(emu.stats()["requests"].get("/msi/token", {}))


def add(*counts: dict[str, int]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for count in counts:
        total.update(count)
    return dict(total)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_function_app_registers_an_hourly_monitored_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EPF_SCHEDULE", raising=False)
    (function,) = load_function_app().app.get_functions()
    trigger = function.get_trigger()
    assert function.get_function_name() == "epf_collect"
    assert trigger.get_binding_name() == "timerTrigger"
    assert trigger.schedule == "0 0 * * * *"
    assert trigger.use_monitor is True and trigger.run_on_startup is False
    monkeypatch.setenv("EPF_SCHEDULE", "0 */15 * * * *")
    (function,) = load_function_app().app.get_functions()
    # The host resolves the app setting; the binding names it.
    assert function.get_trigger().schedule == "%EPF_SCHEDULE%"


def test_a_timer_tick_delivers_the_run_with_the_managed_identity(
    tenant: Emulator,
    functions_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name, value in functions_env.items():
        monkeypatch.setenv(name, value)
    before = dict(tenant.stats()["ingested"])
    msi_before = msi_calls(tenant)
    entra = f"/{tenant.tenant_id}/oauth2/v2.0/token"
    entra_before = tenant.stats()["requests"].get(entra, {}).get("200", 0)
    (function,) = load_function_app().app.get_functions()
    caplog.set_level(logging.INFO, logger="endpoint_forensics")

    result = function.get_user_function()(TimerRequest(past_due=True))

    assert result is None
    truth = tenant.stats()["truth"]
    ingested = ingested_since(tenant, before)
    assert ingested["EPF_Devices_CL"] == truth["EPF_Devices_CL"] == 40
    assert ingested["EPF_AgentHealth_CL"] == truth["EPF_AgentHealth_CL"]
    assert ingested["EPF_Runs_CL"] == 3  # one per dataset
    # Sentinel by the managed identity; MDE by the app's secret (tenants have no other).
    assert msi_calls(tenant).get("200", 0) == msi_before.get("200", 0) + 1
    assert tenant.stats()["requests"][entra]["200"] > entra_before
    # The state lives where EPF_STATE_DIR says; no local store was written.
    state = Path(functions_env["EPF_STATE_DIR"])
    assert (state / "outbox" / "sentinel").is_dir()
    assert not list((state / "outbox" / "sentinel" / "pending").iterdir())
    assert not list(Path(functions_env["EPF_CONFIG"]).parent.glob("*.duckdb"))
    messages = [r.getMessage() for r in caplog.records]
    assert any("past due" in m for m in messages)
    assert sum(m.startswith("epf: tenant emulated ") for m in messages) == 3
    assert any(m.startswith("epf: sentinel: sent ") for m in messages)


def test_an_endpoint_outage_waits_in_the_outbox_until_the_next_tick(
    tenant: Emulator, functions_env: dict[str, str]
) -> None:
    before = dict(tenant.stats()["ingested"])
    first = run_collection(functions_env)
    assert first is not None
    assert first.exit_code == 0, first.errors()
    assert ingested_since(tenant, before) == rows_by_table(first)
    assert first.deliveries["sentinel"].sent_rows == sum(rows_by_table(first).values())

    # The usual EPF_* override points Sentinel at a port nobody listens on.
    down_env = {**functions_env, "EPF_SENTINEL__ENDPOINT": f"https://127.0.0.1:{_closed_port()}"}
    before = dict(tenant.stats()["ingested"])
    second = run_collection(down_env)
    assert second is not None
    assert second.exit_code == 3 and all(o.outcome == "Succeeded" for o in second.outcomes)
    report = second.deliveries["sentinel"]
    assert "cannot reach Sentinel" in report.error
    assert report.waiting_rows == sum(rows_by_table(second).values()) > 0
    assert ingested_since(tenant, before) == {}
    pending = Path(functions_env["EPF_STATE_DIR"]) / "outbox" / "sentinel" / "pending"
    assert list(pending.iterdir())

    third = run_collection(functions_env)
    assert third is not None
    assert third.exit_code == 0, third.errors()
    # What waited, then the new run: each row once.
    assert ingested_since(tenant, before) == add(rows_by_table(second), rows_by_table(third))
    assert third.deliveries["sentinel"].waiting_uploads == 0
    assert not list(pending.iterdir())


def test_a_refused_managed_identity_keeps_the_rows_and_logs_no_secret(
    tenant: Emulator,
    functions_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "a-stale-identity-header")
    caplog.set_level(logging.INFO, logger="endpoint_forensics")
    before = dict(tenant.stats()["ingested"])
    summary = run_collection(functions_env)
    assert summary is not None and summary.exit_code == 3
    report = summary.deliveries["sentinel"]
    assert "could not get a token" in report.error
    assert report.waiting_rows == sum(rows_by_table(summary).values())
    assert ingested_since(tenant, before) == {}
    assert msi_calls(tenant).get("401", 0) >= 1
    assert "a-stale-identity-header" not in caplog.text
    assert tenant.client_secret not in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("epf: sentinel: ") and "wait in the outbox" in m for m in warnings)


def test_a_missing_config_is_one_logged_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="endpoint_forensics")
    summary = run_collection({}, default_config=tmp_path / "absent.toml")
    assert summary is None
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is None
    assert "ConfigError" in record.getMessage() and "absent.toml" in record.getMessage()


def test_a_bad_override_names_the_key_never_the_secret(
    functions_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="endpoint_forensics")
    env = {
        **functions_env,
        "EPF_TENANTS__0__CLIENT_SECRET": "s3cret-in-an-app-setting",
        "EPF_TENANTS__0__MDE_BASE_URL": "http://not-https.example",
    }
    assert run_collection(env) is None
    (record,) = caplog.records
    assert "mde_base_url" in record.getMessage()
    assert "s3cret-in-an-app-setting" not in caplog.text
    assert "\n" not in record.getMessage()


def test_a_timer_tick_while_the_last_one_still_runs_is_skipped_and_changes_nothing(
    tenant: Emulator, functions_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    state = Path(functions_env["EPF_STATE_DIR"])
    caplog.set_level(logging.INFO, logger="endpoint_forensics")
    before = dict(tenant.stats()["ingested"])
    holder = hold_run_lock(state)  # the last tick's invocation, still at work
    try:
        assert run_collection(functions_env) is None
    finally:
        release_run_lock(holder)
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and "RunInProgress" in record.getMessage()
    assert f"process {holder.pid} on" in record.getMessage()
    assert ingested_since(tenant, before) == {}
    assert sorted(p.name for p in state.iterdir()) == ["run.lock"]

    later = run_collection(functions_env)  # the next tick collects what is due
    assert later is not None and later.exit_code == 0, later.errors()
