"""The planner, a Storage queue (Azurite) and workers, into Sentinel (the emulated Logs
Ingestion endpoint), with each unit's state in Blob Storage: the rows equal the truth, a
unit fails into the poison queue with its EPF_Runs_CL row, and a unit that runs out of its
time continues where it stopped."""

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from endpoint_forensics.azure.work_queue import WorkDone, drain_queue, plan_work, work_message
from endpoint_forensics.config import Settings, load_settings
from endpoint_forensics.pipeline.work import WorkItem, work_items
from endpoint_forensics.state import BlobStateStore
from epf_emulator import Emulator, EmulatorSettings
from epf_emulator.common.settings import Fault

from .conftest import another_queue

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

    done = drain_queue(queue, work)
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
    tmp_path: Path, azurite: Any, container: Any, queue: Any
) -> None:
    faults = (Fault("/api/recommendations", 403, times=1000),)
    with Emulator(EmulatorSettings(devices=20, seed=5, iot_sensors=0, faults=faults)) as emu:
        settings = fan_out_settings(emu, tmp_path)
        store = BlobStateStore(container, lease_seconds=15)
        item = WorkItem("tenant", settings.tenants[0].name, "recommendations")
        queue.send_message(item.message())
        poison = another_queue(azurite)

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

        assert drain_queue(queue, work, max_dequeue_count=3, poison=poison) == []
        assert [m.content for m in poison.receive_messages()] == [item.message()]
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


_WORKER = """
import sys
from azure.storage.blob import ContainerClient
from endpoint_forensics.azure.work_queue import work_message
from endpoint_forensics.config import load_settings
from endpoint_forensics.state import BlobStateStore
from datetime import datetime
from pathlib import Path

config, connection, container, ca, message, now = sys.argv[1:]
settings = load_settings(Path(config), environ={}, overrides={"store.enabled": False})
client = ContainerClient.from_connection_string(connection, container, connection_verify=ca)
store = BlobStateStore(client, lease_seconds=15)
work_message(message, settings, store, lambda *a, **k: None, now=datetime.fromisoformat(now))
"""


def test_a_worker_killed_mid_unit_loses_no_row_and_its_rows_are_told_apart(
    tmp_path: Path, azurite: Any, container: Any, queue: Any
) -> None:
    import subprocess
    import sys
    import time

    # The unit's rows reach Sentinel, then its EPF_Runs_CL row is throttled for a minute: the
    # worker is killed while it waits, before it pushed its state.
    from epf_emulator.ingestion.rules import emulated_rules

    runs = next(r for r in emulated_rules(29) if "EPF_Runs_CL" in r.tables)
    stream = f"/dataCollectionRules/{runs.immutable_id}/streams/Custom-EPF_Runs_CL"
    faults = (Fault(stream, 429, times=1, retry_after=60),)
    with Emulator(EmulatorSettings(devices=40, seed=29, iot_sensors=0, faults=faults)) as emu:
        settings = fan_out_settings(emu, tmp_path)
        item = WorkItem("tenant", settings.tenants[0].name, "machines")
        worker = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WORKER,
                str(tmp_path / "epf.toml"),
                azurite.connection_string,
                container.container_name,
                str(azurite.ca_bundle),
                item.message(),
                emu.now.isoformat(),
            ]
        )
        try:
            deadline = time.monotonic() + 60
            while len(emu.ingested_rows("EPF_Devices_CL")) < 40:
                assert worker.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        finally:
            worker.kill()
            worker.wait()
        store = BlobStateStore(container, lease_seconds=15)
        # Nothing of its state was pushed.
        assert not list(container.list_blobs(name_starts_with=f"units/{item.key}/"))
        # The message comes back once its visibility ends; the dead worker's lease lapses.
        deadline = time.monotonic() + 40
        while (done := work_message(item.message(), settings, store, queue.send_message,
                                    now=emu.now)).outcome == "held elsewhere":  # fmt: skip
            assert time.monotonic() < deadline
            time.sleep(1)
        assert done.outcome == "ran" and done.summary is not None
        rows = emu.ingested_rows("EPF_Devices_CL")
        succeeded = {
            r["RunId"] for r in emu.ingested_rows("EPF_Runs_CL") if r["Outcome"] == "Succeeded"
        }
        kept = [r for r in rows if r["RunId"] in succeeded]
        # Nothing lost: the second worker delivered every device. The killed worker's rows
        # arrived too (at least once), and its run, which never said it succeeded, tells them.
        assert len(kept) == 40 and len({r["DeviceId"] for r in kept}) == 40
        assert len(rows) == 80 and succeeded == {done.summary.run_id}


def test_two_workers_on_one_tenant_stay_within_its_budgets(
    tenant: Emulator, tmp_path: Path, container: Any, queue: Any
) -> None:
    import threading

    import orjson

    from endpoint_forensics.tables.datasets import documented_limits

    settings = fan_out_settings(tenant, tmp_path)
    store = BlobStateStore(container, lease_seconds=15)
    before = tenant.stats()["requests"]
    # Two ticks' worth of messages: every unit twice, so the workers meet on each endpoint.
    for _ in range(2):
        for item in work_items(settings):
            queue.send_message(item.message())
    ran: dict[str, list[str]] = {"a": [], "b": []}

    def worker(name: str) -> None:
        while messages := list(queue.receive_messages(max_messages=1, visibility_timeout=60)):
            for message in messages:
                done = work_message(
                    message.content, settings, store, queue.send_message, now=tenant.now
                )
                ran[name].append(done.outcome)
                queue.delete_message(message)

    threads = [threading.Thread(target=worker, args=(n,)) for n in ran]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert all(ran.values()), ran  # both worked
    outcomes = Counter(o for found in ran.values() for o in found)
    assert outcomes["ran"] >= len(work_items(settings)), outcomes
    # The service throttled nothing.
    after = tenant.stats()["requests"]
    throttled = {
        path: n - before.get(path, {}).get("429", 0)
        for path, counts in after.items()
        if (n := counts.get("429", 0)) > before.get(path, {}).get("429", 0)
    }
    assert throttled == {}
    # Each endpoint budget's record holds every call any worker made under it: within its
    # documented limits in every minute and in the hour.
    limits = documented_limits()
    records = [b.name for b in container.list_blobs(name_starts_with="leases/budgets/")]
    counted = 0
    for name in records:
        calls = sorted(orjson.loads(store.read(name) or b"[]"))
        limit = limits[name.rsplit("/", 1)[-1]]
        assert len(calls) <= limit.per_hour, name
        in_a_minute = [sum(1 for t in calls if s <= t < s + 60) for s in calls]
        assert max(in_a_minute, default=0) <= limit.per_minute, name
        counted += len(calls)
    assert counted >= len(work_items(settings))  # every unit's calls are in a record


def test_the_hosts_queue_settings_are_the_workers() -> None:
    """The worker writes its poison row at the host's last try, and an instance runs one unit
    at a time (a large tenant's unit needs most of a 2,048 MB instance)."""
    import json

    from endpoint_forensics.azure.work_queue import MAX_DEQUEUE_COUNT

    host = json.loads((Path(__file__).parents[2] / "deploy/functions/host.json").read_text())
    queues = host["extensions"]["queues"]
    assert queues["maxDequeueCount"] == MAX_DEQUEUE_COUNT
    assert queues["batchSize"] == 1 and queues["newBatchThreshold"] == 0
