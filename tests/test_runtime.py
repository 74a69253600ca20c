"""A sync keeps pandas out (runtime.pandas_unseen): pyarrow imports it, when installed, at its
first conversion of Python values, only to tell whether they are pandas objects; that import
cost every sync memory and time. Each case runs in a fresh interpreter, where pandas was not
imported yet."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from epf_emulator import Emulator, EmulatorSettings

pytest.importorskip("pandas")  # the notebook extra: without it there is nothing to keep out


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_pyarrow_converts_without_pandas_inside_and_finds_it_again_after() -> None:
    result = _python(
        """
        import sys
        import pyarrow as pa
        from endpoint_forensics.runtime import pandas_unseen

        with pandas_unseen():
            with pandas_unseen():  # nested: the outer one still holds
                pass
            pa.array([1, None], type=pa.int32())
            print("inside", "pandas" in sys.modules)
        frame = pa.table({"a": [1, 2]}).to_pandas()
        print("after", "pandas" in sys.modules, len(frame))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["inside", "False", "after", "True", "2"]


def test_a_process_that_has_pandas_keeps_it() -> None:
    result = _python(
        """
        import pandas, pyarrow as pa
        from endpoint_forensics.runtime import pandas_unseen

        with pandas_unseen():
            print(len(pa.array(pandas.Series([1, 2]))))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2"]


def test_epf_sync_never_imports_pandas(tmp_path: Path) -> None:
    with Emulator(EmulatorSettings(devices=30, seed=5, iot_sensors=0)) as emu:
        config = tmp_path / "epf.toml"
        emu.write_config(config, iot="none", sentinel=False)
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "endpoint_forensics", "sync",
             "--config", str(config), "--db", str(tmp_path / "ws.duckdb"),
             "--now", emu.now.isoformat()],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    assert "pyarrow.compute" in imported or "pyarrow" in imported  # the rows went through Arrow
    # An import refused is listed too (as "pandas", with no time): pandas itself is a package
    # of hundreds of modules, none of which may load.
    assert not [name for name in imported if name.startswith("pandas.")]
