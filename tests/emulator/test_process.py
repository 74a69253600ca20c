"""``EmulatorProcess``: the emulator served from a child process answers as the emulator does."""

from __future__ import annotations

import socket
import ssl

import httpx
import pytest

from epf_emulator import EmulatorError, EmulatorProcess, EmulatorSettings


def test_the_child_serves_the_tenant_and_answers_calls_and_properties() -> None:
    settings = EmulatorSettings(devices=12, seed=5, iot_sensors=0)
    with EmulatorProcess(settings) as emu:
        base_url = emu.get("base_url")
        ca = ssl.create_default_context(cafile=emu.get("ca_path"))
        before = emu.get("now")
        emu.call("advance", 24)
        assert (emu.get("now") - before).total_seconds() == 24 * 3600
        # The child's server answers over HTTPS with the CA it issued.
        stats = httpx.get(f"{base_url}/_emulator/stats", verify=ca).json()
        assert stats["truth"] == emu.call("stats")["truth"]
        assert stats["truth"]["EPF_Devices_CL"] == 12
    with pytest.raises(httpx.ConnectError):  # stopped with the block
        httpx.get(f"{base_url}/_emulator/stats", verify=ca, timeout=5)


def test_a_failing_call_raises_with_the_childs_error_and_the_child_goes_on() -> None:
    with EmulatorProcess(EmulatorSettings(devices=3, seed=1, iot_sensors=0)) as emu:
        with pytest.raises(EmulatorError, match="ValueError"):
            emu.call("advance", -1)
        with pytest.raises(EmulatorError, match="AttributeError"):
            emu.get("no_such_fact")
        assert emu.call("stats")["truth"]["EPF_Devices_CL"] == 3
    emu.stop()  # a second stop is harmless
    with pytest.raises(EmulatorError, match="not running"):
        emu.call("stats")


def test_a_child_that_cannot_start_fails_the_start_with_its_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(EmulatorError, match="Error"):
            EmulatorProcess(EmulatorSettings(devices=1, iot_sensors=0, port=port)).start()
