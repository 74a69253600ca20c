"""The summary table of the fuzz tests: cases given to each parser, time, outcome."""

from __future__ import annotations

import pytest

from . import support

_OUTCOMES: dict[str, str] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or report.outcome != "passed":
        _OUTCOMES[report.nodeid] = report.outcome


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not support.CASES or not support.FUZZING:
        return
    write = terminalreporter.write_line
    write("")
    write(f"{'parser':<44} {'cases':>7} {'seconds':>8}  outcome")
    for parser, cases in sorted(support.CASES.items()):
        seconds = support.ENDED[parser] - support.STARTED[parser]
        outcome = _OUTCOMES.get(support.TESTS.get(parser, ""), "?")
        write(f"{parser:<44} {cases:>7} {seconds:>8.1f}  {outcome}")
