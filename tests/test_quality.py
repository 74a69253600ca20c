"""The code checks (STYLE.md 22) run with the tests, so CI enforces them."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_ruff_lint_is_clean():
    result = run(str(BIN / "ruff"), "check", "src", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_applied():
    result = run(str(BIN / "ruff"), "format", "--check", "src", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_package_passes_mypy_strict():
    result = run(str(BIN / "mypy"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_epf_help_starts_without_test_dependencies():
    # The console script must not import pytest, hypothesis or the emulator (nor its server stack)
    # just to start.
    code = (
        "import sys; from endpoint_forensics import cli; "
        "bad = [m for m in ('pytest', 'hypothesis', 'uvicorn', 'starlette', 'duckdb', 'epf_emulator')"
        " if m in sys.modules]; "
        "print(','.join(bad))"
    )
    result = run(sys.executable, "-c", code)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def test_the_import_contracts_hold():
    # The layers, who imports the emulator, what it imports, no cycles: [tool.importlinter].
    # The checkout's own src/ first, whatever the environment has installed.
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
