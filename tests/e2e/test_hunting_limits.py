"""Advanced hunting against the emulator's limits: row caps, slow queries and timeouts (B.3).

A hunting query must never be sent twice as it was: the emulator counts every run per query
text, so each test checks that every text ran exactly once.
"""

import pytest

from epf_emulator import Emulator, EmulatorSettings, Fault

from .conftest import settings_for, sync

pytestmark = pytest.mark.e2e

GRAPH_PATH = "/v1.0/security/runHuntingQuery"
MDE_PATH = "/api/advancedqueries/run"
# Graph's answer to a query past its CPU or memory limits (OpenAEV issue 284).
PREEMPTED = (
    '{"error": {"code": "BadRequest", "message": "Query execution has exceeded the allowed'
    " limits. The query execution was preempted. This could possibly be due to high CPU and/or"
    " memory resource consumption. Optimize your query by following best practices and try"
    ' again.", "innerError": {"date": "2025-09-11T14:30:57", "request-id":'
    ' "313a644b-80f1-48a9-9a37-2ea95245afb4", "client-request-id": "x"}}}'
)


def hunting_runs(emu):
    """(api, query text) -> the emulator's count of runs and their outcomes."""
    return {(q["api"], q["query"]): q for q in emu.stats()["hunting_queries"]}


def statuses(emu, path):
    return {int(k): v for k, v in emu.stats()["requests"].get(path, {}).items()}


def assert_each_query_ran_once(emu):
    runs = hunting_runs(emu)
    assert runs and all(q["runs"] == 1 for q in runs.values()), [
        (q["query"][-80:], q["runs"]) for q in runs.values() if q["runs"] != 1
    ]
    return runs


def unsplit(runs):
    (root,) = [q for q in runs.values() if "startswith" not in q["query"]]
    return root


@pytest.mark.parametrize("api", ["graph", "mde"])
def test_a_result_cut_short_at_an_unknown_cap_is_split_until_every_device_lands(tmp_path, api):
    # Neither cap is told to the collector: the row count each answer carries shows the cut.
    settings = EmulatorSettings(
        iot_sensors=0, devices=120, seed=3, graph_hunting_row_limit=30, hunting_row_limit=30
    )
    with Emulator(settings) as emu:
        summary = sync(settings_for(emu, tmp_path, datasets=["agent_health"], hunting_api=api))
        assert summary.exit_code == 0, summary.errors()
        assert summary.outcomes[0].rows == emu.stats()["truth"]["EPF_AgentHealth_CL"] > 30
        runs = assert_each_query_ran_once(emu)
        assert unsplit(runs)["outcomes"] == {"truncated": 1}
        assert len(runs) > 1 and {q["api"] for q in runs.values()} == {api}


@pytest.mark.parametrize(
    ("api", "path", "timeout_status"), [("graph", GRAPH_PATH, 504), ("mde", MDE_PATH, 400)]
)
def test_a_slow_query_is_split_not_resent_and_every_device_lands(
    tmp_path, api, path, timeout_status
):
    # ~100 devices at 0.1 s each is past the 5 s limit; a sixteenth of them is well inside.
    settings = EmulatorSettings(
        iot_sensors=0,
        devices=120,
        seed=3,
        hunting_seconds_per_row=0.1,
        hunting_timeout_seconds=5.0,
        graph_hunting_timeout_seconds=5.0,
    )
    with Emulator(settings) as emu:
        summary = sync(settings_for(emu, tmp_path, datasets=["agent_health"], hunting_api=api))
        assert summary.exit_code == 0, summary.errors()
        assert summary.outcomes[0].rows == emu.stats()["truth"]["EPF_AgentHealth_CL"]
        runs = assert_each_query_ran_once(emu)
        assert unsplit(runs)["outcomes"] == {"timed_out": 1}
        assert len(runs) == 17  # the whole fleet, then its 16 prefixes
        assert statuses(emu, path) == {timeout_status: 1, 200: 16}


def test_a_query_that_times_out_even_at_the_narrowest_prefix_fails_the_dataset(tmp_path):
    settings = EmulatorSettings(
        iot_sensors=0,
        devices=40,
        seed=3,
        hunting_delay_seconds=5.0,
        graph_hunting_timeout_seconds=1.0,
    )
    with Emulator(settings) as emu:
        summary = sync(settings_for(emu, tmp_path, datasets=["agent_health"]))
        outcome = summary.outcomes[0]
        assert summary.exit_code == 1
        assert outcome.outcome == "Failed" and outcome.rows == 0
        assert "timed out" in outcome.error and "'000'" in outcome.error
        assert "Run the sync again later" in outcome.error
        runs = assert_each_query_ran_once(emu)
        # Depth first down to three hex digits, then stop: "", "0", "00", "000".
        assert len(runs) == 4 and statuses(emu, GRAPH_PATH) == {504: 4}


def test_the_client_waits_longer_than_the_service_limit(tmp_path):
    # The query takes 2.5 s; the collector's general timeout is 1 s, its hunting one 300 s.
    settings = EmulatorSettings(iot_sensors=0, devices=40, seed=3, hunting_delay_seconds=2.5)
    with Emulator(settings) as emu:
        config = settings_for(emu, tmp_path, datasets=["agent_health"], timeout_seconds=1)
        assert config.tenants[0].hunting_timeout_seconds > 200  # the MDE API's limit
        summary = sync(config)
        assert summary.exit_code == 0, summary.errors()
        assert summary.outcomes[0].rows == emu.stats()["truth"]["EPF_AgentHealth_CL"]
        runs = assert_each_query_ran_once(emu)
        assert len(runs) == 1 and unsplit(runs)["outcomes"] == {"answered": 1}


def test_a_client_read_timeout_splits_the_query_without_resending_it(tmp_path):
    # The service would answer in about 11 s; this client gives up after 5 s. The config
    # refuses so short a wait, so the test forces it past the validation.
    settings = EmulatorSettings(iot_sensors=0, devices=60, seed=3, hunting_seconds_per_row=0.2)
    with Emulator(settings) as emu:
        config = settings_for(emu, tmp_path, datasets=["agent_health"])
        impatient = config.tenants[0].model_copy(update={"hunting_timeout_seconds": 5.0})
        summary = sync(config.model_copy(update={"tenants": (impatient,)}))
        assert summary.exit_code == 0, summary.errors()
        assert summary.outcomes[0].rows == emu.stats()["truth"]["EPF_AgentHealth_CL"]
        runs = assert_each_query_ran_once(emu)
        assert len(runs) == 17


def test_a_preempted_query_is_split(tmp_path):
    faults = (Fault(GRAPH_PATH, 400, body=PREEMPTED),)
    with Emulator(EmulatorSettings(iot_sensors=0, devices=60, seed=3, faults=faults)) as emu:
        summary = sync(settings_for(emu, tmp_path, datasets=["agent_health"]))
        assert summary.exit_code == 0, summary.errors()
        assert summary.outcomes[0].rows == emu.stats()["truth"]["EPF_AgentHealth_CL"]
        assert statuses(emu, GRAPH_PATH) == {400: 1, 200: 16}
        assert_each_query_ran_once(emu)  # the 16 prefixes; the fault answered the first
