"""The planner, a Storage queue (Azurite) and workers, into Sentinel (the emulated Logs
Ingestion endpoint), with each unit's state in Blob Storage: the rows equal the truth, a
unit fails into the poison queue with its EPF_Runs_CL row, and a unit that runs out of its
time continues where it stopped."""

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from endpoint_forensics.azure.work_queue import UnitFailed, WorkDone, plan_work, work_message
from endpoint_forensics.config import Settings, load_settings
from endpoint_forensics.pipeline.work import WorkItem, work_items
from endpoint_forensics.state import BlobStateStore
from epf_emulator import Emulator, EmulatorSettings
from epf_emulator.common.settings import Fault

pytestmark = pytest.mark.e2e

DEVICES = 60


@pytest.fixture(scope="module")
def tenant() -> Iterator[Emulator]:
    with Emulator(EmulatorSettings(devices=DEVICES, seed=23, iot_sensors=0)) as emu:
        yield emu


def fan_out_settings(emu: Emulator, tmp_path: Path) -> Settings:
    config = tmp_path / "epf.toml"
    emu.write_config(config, iot="none")
    return load_settings(
        config,
        environ={},
        overrides={"store.enabled": False, "state.dir": str(tmp_path / "unused-state")},
    )


def drain(
    queue: Any,
    poison: list[str],
    work: Callable[[str, int], WorkDone],
    *,
    max_dequeue_count: int = 5,
    rounds: int = 200,
) -> list[WorkDone]:
    """What the Functions host does with a queue: each visible message to the worker,
    deleted when it returns; one that raises becomes visible again, and at its last attempt
    goes to the poison queue (host.json maxDequeueCount)."""
    done: list[WorkDone] = []
    for _ in range(rounds):
        messages = list(queue.receive_messages(max_messages=32, visibility_timeout=60))
        if not messages:
            break
        for message in messages:
            try:
                done.append(work(message.content, message.dequeue_count))
            except UnitFailed:
                if message.dequeue_count >= max_dequeue_count:
                    poison.append(message.content)
                    queue.delete_message(message)
                else:
                    queue.update_message(message, visibility_timeout=0)
                continue
            queue.delete_message(message)
    return done


def ingested_by_run(emu: Emulator, table: str, run_ids: set[str]) -> list[dict[str, Any]]:
    return [r for r in emu.ingested_rows(table) if r["RunId"] in run_ids]


def test_planner_queue_workers_deliver_the_truth_to_sentinel(
    tenant: Emulator, tmp_path: Path, container: Any, queue: Any
) -> None:
    settings = fan_out_settings(tenant, tmp_path)
    store = BlobStateStore(container, lease_seconds=15)
    planned = plan_work(settings, queue.send_message, store, now=tenant.now)
    assert planned == work_items(settings)  # a first tick: every unit is due

    def work(text: str, count: int) -> WorkDone:
        return work_message(
            text, settings, store, queue.send_message, dequeue_count=count, now=tenant.now
        )

    done = drain(queue, [], work)
    assert Counter(d.outcome for d in done) == {"ran": len(planned)}
    runs = {d.summary.run_id for d in done if d.summary is not None}
    truth = tenant.stats()["truth"]
    for table, rows in truth.items():
        if table == "EPF_Runs_CL":
            assert len(ingested_by_run(tenant, table, runs)) == len(planned)
        else:
            assert len(ingested_by_run(tenant, table, runs)) == rows, table
    # Each unit's state is in the container, under its own name; no outbox waits.
    names = [b.name for b in container.list_blobs()]
    assert not [n for n in names if "/outbox/sentinel/pending/" in n]
    for item in planned:
        assert any(n.startswith(f"units/{item.key}/checkpoints/") for n in names), item.key
    # The next tick, as of the same time: only what is collected at every run is due again.
    again = plan_work(settings, lambda text: None, store, now=tenant.now)
    assert {i.dataset for i in again} == {i.dataset for i in planned if _interval(settings, i) == 0}


def _interval(settings: Settings, item: WorkItem) -> float:
    return settings.tenants[0].interval_hours_for(item.dataset) or 0.0


def test_a_unit_that_keeps_failing_goes_to_the_poison_queue_and_says_so(
    tmp_path: Path, container: Any, queue: Any
) -> None:
    faults = (Fault("/api/recommendations", 403, times=1000),)
    with Emulator(EmulatorSettings(devices=20, seed=5, iot_sensors=0, faults=faults)) as emu:
        settings = fan_out_settings(emu, tmp_path)
        store = BlobStateStore(container, lease_seconds=15)
        item = WorkItem("tenant", settings.tenants[0].name, "recommendations")
        queue.send_message(item.message())
        poison: list[str] = []

        def work(text: str, count: int) -> WorkDone:
            return work_message(
                text,
                settings,
                store,
                queue.send_message,
                dequeue_count=count,
                max_dequeue_count=3,
                now=emu.now,
            )

        assert drain(queue, poison, work, max_dequeue_count=3) == []
        assert poison == [item.message()]
        rows = [
            r
            for r in emu.ingested_rows("EPF_Runs_CL")
            if r["Dataset"] == "recommendations" and "poison queue" in (r.get("Reason") or "")
        ]
        assert len(rows) == 1 and rows[0]["Outcome"] == "Failed"
        assert "failed 3 times" in rows[0]["Reason"]


def test_a_message_for_nothing_configured_is_dropped_not_retried(
    tenant: Emulator, tmp_path: Path, container: Any, queue: Any
) -> None:
    settings = fan_out_settings(tenant, tmp_path)
    store = BlobStateStore(container, lease_seconds=15)
    for text in (
        "not json",
        '{"kind": "tenant"}',
        WorkItem("tenant", "nobody", "machines").message(),
    ):
        done = work_message(text, settings, store, queue.send_message, now=tenant.now)
        assert done.outcome == "bad message" and done.item is None


def test_a_unit_another_worker_holds_is_left_to_it(
    tenant: Emulator, tmp_path: Path, container: Any, queue: Any
) -> None:
    settings = fan_out_settings(tenant, tmp_path)
    store = BlobStateStore(container, lease_seconds=15)
    item = WorkItem("tenant", settings.tenants[0].name, "machines")
    held = store.take(f"units/{item.key}")
    try:
        done = work_message(item.message(), settings, store, queue.send_message, now=tenant.now)
    finally:
        held.release()
    assert done.outcome == "held elsewhere"
    # A unit whose endpoint budget another unit of its tenant spends waits for it.
    budget = store.take(f"budgets/tenants/{item.source}/machines")
    try:
        done = work_message(item.message(), settings, store, queue.send_message, now=tenant.now)
    finally:
        budget.release()
    assert done.outcome == "waiting for a budget"
    assert [m.content for m in queue.peek_messages()] == []  # not visible for a while
    assert queue.get_queue_properties().approximate_message_count == 1


def test_store_enabled_is_refused_with_the_key(
    tenant: Emulator, tmp_path: Path, queue: Any
) -> None:
    from endpoint_forensics.errors import ConfigError

    config = tmp_path / "epf.toml"
    tenant.write_config(config, iot="none")
    settings = load_settings(config, environ={}, overrides={"state.dir": str(tmp_path / "s")})
    with pytest.raises(ConfigError, match=r"store\.enabled"):
        plan_work(settings, queue.send_message, None)  # type: ignore[arg-type]


def test_the_function_app_plans_and_works_through_its_two_functions(
    tenant: Emulator,
    tmp_path: Path,
    azurite: Any,
    container: Any,
    queue: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import base64

    from azure.functions.queue import QueueMessage  # what the host hands the trigger

    from ..azure.test_functions import load_function_app

    config = tmp_path / "epf.toml"
    tenant.write_config(config, iot="none")
    settings = {
        "EPF_CONFIG": str(config),
        "EPF_WORK_QUEUE": queue.queue_name,
        "EPF_STATE_URL": f"{azurite.blob_url}/{container.container_name}",
        "EPF_STORAGE_CONNECTION": azurite.connection_string,
        "REQUESTS_CA_BUNDLE": str(azurite.ca_bundle),  # Azurite's test CA
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    functions = {f.get_function_name(): f for f in load_function_app().app.get_functions()}
    assert sorted(functions) == ["epf_plan", "epf_work"]
    trigger = functions["epf_work"].get_trigger()
    assert trigger.queue_name == "%EPF_WORK_QUEUE%"
    assert trigger.connection == "AzureWebJobsStorage"
    # The emulated tenant's clock is not this machine's: the planner's "now" is the wall
    # clock, so every unit is due (nothing collected yet), as on a first deployment.
    functions["epf_plan"].get_user_function()(None)
    messages = list(queue.receive_messages(max_messages=32))
    planned = len(work_items(load_settings(config, environ={})))
    assert len(messages) == planned
    # Base64, as the queue trigger reads its messages by default.
    bodies = [base64.b64decode(m.content) for m in messages]
    machines = next(b for b in bodies if b'"machines"' in b)
    functions["epf_work"].get_user_function()(QueueMessage(body=machines, dequeue_count=1))
    stored = [b.name for b in container.list_blobs()]
    assert any(n.startswith("units/tenants/") and "/machines/checkpoints/" in n for n in stored)
