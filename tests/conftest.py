import os

import pytest

_CLEARED_PREFIXES = ("EPF_", "AZURE_")
_CLEARED_NAMES = {
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing from the developer's shell (EPF_*, AZURE_*, proxies) may steer a test."""
    for name in list(os.environ):
        if name.startswith(_CLEARED_PREFIXES) or name in _CLEARED_NAMES:
            monkeypatch.delenv(name, raising=False)


# Microsoft's KQL parser runs on .NET through pythonnet, whose runtime is known to crash while
# the interpreter finalizes after it (pythonnet/pythonnet#1683, #1977): every test has passed
# and `make test` still fails with a segmentation fault. Once .NET was loaded, the run ends with
# its exit status before finalization; the report is complete by then.
_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    import sys

    if "clr" in sys.modules and _exit_status:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[-1])


@pytest.fixture(scope="session")
def kustology():  # type: ignore[no-untyped-def]
    """Microsoft's KQL parser, loaded once for every test that validates KQL."""
    from endpoint_forensics.analytics.kql_check import load_kustology

    return load_kustology()


@pytest.fixture(scope="session")
def schema(kustology):  # type: ignore[no-untyped-def]
    """The registry's tables and every shipped function, as Microsoft's parser binds them."""
    from endpoint_forensics.analytics.kql_check import kql_schema

    return kql_schema(kustology)


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One small demo workspace for the tests that read answers from it (analytics, web)."""
    from endpoint_forensics.demo import run_demo

    db = tmp_path_factory.mktemp("demo") / "demo.duckdb"
    # Six days: the incident device turns tamper protection off three days before the
    # incident, so the first syncs see it on, the later ones off.
    result = run_demo(devices=150, seed=9, db=db, days=6)
    # The demo's own failure (a sensor's token deleted before the last day) and no other.
    assert result.unexpected_errors == [] and result.staged_sources == {"sensor-2"}
    return db
