"""The state store's two backends (a local folder; Blob Storage through Azurite): one holder
per lease, a lease's record handed to the next holder, pushes that write what changed with
the checkpoints last and never after the lease was lost, and budgets held across workers."""

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from endpoint_forensics.http.ratelimit import RateBudget
from endpoint_forensics.state import BlobStateStore, LeaseLost, LocalStateStore, held_budgets
from endpoint_forensics.state.store import files_in_push_order
from endpoint_forensics.tables.schema import RateLimit

from .conftest import make_dirs

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["folder", "blob"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "folder":
        return LocalStateStore(tmp_path / "store")
    return BlobStateStore(request.getfixturevalue("container"), lease_seconds=15)


def test_a_lease_has_one_holder_and_passes_its_record_on(store: Any) -> None:
    first = store.take("units/tenants/contoso/machines")
    assert first is not None and first.record == b""
    assert store.take("units/tenants/contoso/machines") is None
    other = store.take("units/tenants/contoso/agent_health")  # another unit: free
    assert other is not None
    other.release()
    first.release(b"[1.5]")
    again = store.take("units/tenants/contoso/machines")
    assert again is not None and again.record == b"[1.5]"
    again.release()


def test_push_writes_the_checkpoints_last_and_removes_what_is_gone(
    store: Any, tmp_path: Path
) -> None:
    work = make_dirs(
        tmp_path / "work",
        {
            "checkpoints/sentinel-ab/tenants/contoso.json": b'{"v": 1}',
            "checkpoints/sentinel-ab/history.duckdb": b"history",
            "outbox/sentinel/pending/000001.x/0001.json.gz": b"rows",
            "quarantine/run/contoso.machines.jsonl": b"bad",
        },
    )
    assert files_in_push_order(work) == [
        "outbox/sentinel/pending/000001.x/0001.json.gz",
        "quarantine/run/contoso.machines.jsonl",
        "checkpoints/sentinel-ab/history.duckdb",
        "checkpoints/sentinel-ab/tenants/contoso.json",
    ]
    lease = store.take("units/u")
    store.push("units/u", work, under=lease)
    # The unit delivered its outbox, and its checkpoint moved.
    (work / "outbox/sentinel/pending/000001.x/0001.json.gz").unlink()
    (work / "checkpoints/sentinel-ab/tenants/contoso.json").write_bytes(b'{"v": 2}')
    store.push("units/u", work, under=lease)
    lease.release()
    pulled = tmp_path / "pulled"
    store.pull("units/u", pulled)
    assert sorted(p.relative_to(pulled).as_posix() for p in pulled.rglob("*") if p.is_file()) == [
        "checkpoints/sentinel-ab/history.duckdb",
        "checkpoints/sentinel-ab/tenants/contoso.json",
        "quarantine/run/contoso.machines.jsonl",
    ]
    assert (pulled / "checkpoints/sentinel-ab/tenants/contoso.json").read_bytes() == b'{"v": 2}'
    assert store.read("units/u/checkpoints/sentinel-ab/tenants/contoso.json") == b'{"v": 2}'
    assert store.read("units/u/nothing") is None


def test_a_worker_that_lost_its_lease_pushes_no_checkpoint(container: Any, tmp_path: Path) -> None:
    store = BlobStateStore(container, lease_seconds=15)
    lease = store.take("units/u")
    assert lease is not None
    work = make_dirs(
        tmp_path / "work",
        {
            "outbox/sentinel/pending/1/0001.json.gz": b"rows",
            "checkpoints/sentinel-ab/tenants/contoso.json": b'{"v": 1}',
        },
    )
    # Another worker breaks in once the lease has lapsed (here: broken at once).
    from azure.storage.blob import BlobLeaseClient

    BlobLeaseClient(container.get_blob_client("leases/units/u")).break_lease(lease_break_period=0)
    taker = store.take("units/u")
    assert taker is not None
    with pytest.raises(LeaseLost):
        store.push("units/u", work, under=lease)
    # What is not a checkpoint may go (a unit's outbox is delivered at most once by
    # whoever holds it next); the checkpoint, which says what was delivered, did not.
    assert store.read("units/u/checkpoints/sentinel-ab/tenants/contoso.json") is None
    taker.release()
    lease.release()


def test_a_budgets_calls_count_for_the_next_worker_on_any_machine(store: Any) -> None:
    limit = RateLimit("SoftwareVulnerabilitiesExport", per_minute=5, per_hour=20)
    with held_budgets(store, "tenants/contoso", [limit]) as budgets:
        assert budgets is not None
        for _ in range(3):
            budgets[limit.name].acquire()
        # Meanwhile another worker of the same tenant and endpoint waits.
        with held_budgets(store, "tenants/contoso", [limit]) as other:
            assert other is None
        # Another tenant's budget is its own.
        with held_budgets(store, "tenants/fabrikam", [limit]) as other:
            assert other is not None and other[limit.name].calls_in_window(60) == 0
    with held_budgets(store, "tenants/contoso", [limit]) as budgets:
        assert budgets is not None
        budget = budgets[limit.name]
        assert budget.calls_in_window(60) == 3
        budget.acquire()
        budget.acquire()
        # The sixth call in the minute must wait for the first to leave it.
        waits: list[float] = []
        budget._sleep = lambda s: (waits.append(s), (_ for _ in ()).throw(TimeoutError()))
        with pytest.raises(TimeoutError):
            budget.acquire()
        assert 55 < waits[0] <= 60


def test_a_damaged_budget_record_counts_no_calls(store: Any) -> None:
    limit = RateLimit("machines", per_minute=100, per_hour=1500)
    lease = store.take("budgets/tenants/contoso/machines")
    lease.release(b"not json")
    with held_budgets(store, "tenants/contoso", [limit]) as budgets:
        assert budgets is not None and budgets["machines"].calls_in_window(3600) == 0


def test_a_budget_resumed_from_its_record_keeps_the_times_of_its_calls() -> None:
    limit = RateLimit("x", per_minute=5, per_hour=20)
    calls = [time.time() - 30, time.time() - 90, time.time() - 4000]
    budget = RateBudget.resumed(limit, calls)
    assert budget.calls_in_window(60) == 1 and budget.calls_in_window(3600) == 2
    record = orjson.loads(orjson.dumps(budget.record()))
    assert len(record) == 2 and all(
        abs(a - b) < 0.5 for a, b in zip(sorted(record), sorted(calls[:2]), strict=True)
    )
