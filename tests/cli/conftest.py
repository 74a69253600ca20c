import pytest

from epf_emulator import Emulator, EmulatorSettings


@pytest.fixture(scope="module")
def small_cli_tenant():
    with Emulator(EmulatorSettings(devices=40, seed=4)) as emu:
        yield emu
