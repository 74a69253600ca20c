"""Settings and the ``--faults`` syntax."""

from __future__ import annotations

import subprocess
import sys

import pytest

import epf_emulator as emulator
from epf_emulator import EmulatorSettings, Fault, parse_faults


def test_parse_faults_reads_every_part() -> None:
    faults = parse_faults("429@/api/machines*2,500@/v1.0/security/runHuntingQuery+1, 503@/api*3+4")
    assert faults == (
        Fault(path="/api/machines", status=429, times=2, after=0),
        Fault(path="/v1.0/security/runHuntingQuery", status=500, times=1, after=1),
        Fault(path="/api", status=503, times=3, after=4),
    )
    assert faults[0].effective_retry_after == 1  # a 429 always says when to come back
    assert faults[1].effective_retry_after is None


def test_a_fault_with_a_body() -> None:
    assert parse_faults("200@/api/deviceavinfo=*2") == (
        Fault(path="/api/deviceavinfo", status=200, body="*2"),
    )  # everything after '=' is the body
    assert parse_faults("200@/api/deviceavinfo*2=") == (
        Fault(path="/api/deviceavinfo", status=200, times=2, body=""),
    )
    assert parse_faults("503@/api/x+1={}") == (
        Fault(path="/api/x", status=503, after=1, body="{}"),
    )
    assert Fault("/api", 200, body="").body == ""
    with pytest.raises(ValueError, match="200-599"):
        Fault("/api", 100, body="")
    with pytest.raises(ValueError, match="400-599"):
        Fault("/api", 200)


@pytest.mark.parametrize("spec", ["", "   "])
def test_an_empty_spec_means_no_faults(spec: str) -> None:
    assert parse_faults(spec) == ()


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("429", "STATUS@PATH"),
        ("429@api/machines", "STATUS@PATH"),
        ("abc@/api", "STATUS@PATH"),
        ("429@/api*x", "STATUS@PATH"),
        ("429@/api+", "STATUS@PATH"),
        ("200@/api", "400-599"),
        ("429@/api*0", "at least 1"),
        ("429@/api,,500@/api", "empty fault"),
        ("429@/api+1*2", "STATUS@PATH"),
    ],
)
def test_parse_faults_rejects_bad_input_with_a_clear_message(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=r"^bad fault|^empty fault") as info:
        parse_faults(spec)
    assert fragment in str(info.value)


def test_fault_validation() -> None:
    with pytest.raises(ValueError, match="start with '/'"):
        Fault(path="api", status=500)
    with pytest.raises(ValueError, match="after"):
        Fault(path="/api", status=500, after=-1)
    assert Fault(path="/api", status=503, retry_after=7).effective_retry_after == 7


def test_settings_defaults_and_validation() -> None:
    settings = EmulatorSettings()
    assert (settings.devices, settings.seed, settings.host, settings.port) == (
        2000,
        1,
        "127.0.0.1",
        0,
    )
    assert settings.token_lifetime_seconds == 3599 and settings.hunting_row_limit == 100_000
    assert settings.rate_limits == {} and settings.faults == () and settings.state_dir is None
    with pytest.raises(ValueError, match="unknown rate limit"):
        EmulatorSettings(rate_limits={"nope": (1, 1.0)})
    with pytest.raises(ValueError, match="devices"):
        EmulatorSettings(devices=-1)
    with pytest.raises(ValueError, match="hunting_row_limit"):
        EmulatorSettings(hunting_row_limit=0)
    assert settings.vulnerabilities_per_device == 30
    assert settings.export_part_rows == 100_000 and settings.sas_valid_seconds is None
    with pytest.raises(ValueError, match="export_part_rows"):
        EmulatorSettings(export_part_rows=0)
    with pytest.raises(ValueError, match="sas_valid_seconds"):
        EmulatorSettings(sas_valid_seconds=0)
    with pytest.raises(ValueError, match="vulnerabilities_per_device"):
        EmulatorSettings(vulnerabilities_per_device=-1)


def test_public_api_is_exact_and_light_to_import() -> None:
    assert sorted(emulator.__all__) == [
        "CHAOS_KINDS",
        "Chaos",
        "Emulator",
        "EmulatorError",
        "EmulatorProcess",
        "EmulatorSettings",
        "Fault",
        "parse_faults",
    ]
    code = (
        "import sys, epf_emulator; "
        "print(','.join(m for m in ('uvicorn', 'starlette', 'duckdb', 'pyarrow') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr
