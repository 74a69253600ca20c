"""The Sentinel outbox's cap: back-pressure on the collection, never a row dropped."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from endpoint_forensics.pipeline import turns
from epf_emulator import Emulator, EmulatorSettings

from .sentinel_support import ingested_since, local_counts, sync
from .test_sentinel import sentinel_settings

pytestmark = pytest.mark.e2e

DATASETS = ["machines", "av_health", "agent_health", "secure_config", "software_inventory"]


@pytest.fixture(scope="module")
def tenant() -> Iterator[Emulator]:
    with Emulator(EmulatorSettings(devices=150, seed=29, iot_sensors=0)) as emu:
        yield emu


def _pending_bytes(state: Path) -> int:
    return sum(f.stat().st_size for f in (state / "outbox" / "sentinel" / "pending").rglob("*.gz"))


def _largest_unit_bytes(state: Path) -> int:
    units = (state / "outbox" / "sentinel" / "pending").iterdir()
    return max(sum(f.stat().st_size for f in unit.glob("*.gz")) for unit in units)


def test_a_full_outbox_that_cannot_drain_stops_the_reading_and_loses_nothing(
    tenant: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One dataset at a time, so that the outbox's size says how far the cap was passed: a
    # snapshot that cannot resume is held whole while under way (it does not count against
    # the cap), and with datasets at once several may be under way.
    monkeypatch.setattr(turns, "SOURCES_AT_ONCE", 1)
    before = dict(tenant.stats()["ingested"])
    with socket.socket() as sock:  # an endpoint that refuses connections
        sock.bind(("127.0.0.1", 0))
        down = sentinel_settings(
            tenant,
            tmp_path,
            **{
                "sentinel.endpoint": f"https://127.0.0.1:{sock.getsockname()[1]}",
                "sentinel.outbox_max_mb": 0.03,  # 30 KB
                "tenants.0.datasets": DATASETS,
            },
        )
        first = sync(down)
    outcomes = [o for o in first.outcomes if o.kind == "tenant"]
    assert [o.dataset for o in outcomes] == DATASETS
    # The first datasets fill the outbox past the cap; from then on the reading stops: the
    # dataset that found it full asked at most for its first unit, the rest ask nothing.
    failed = [o for o in outcomes if o.outcome == "Failed"]
    assert failed and outcomes[0].outcome == "Succeeded"
    assert all(o.outcome in ("Succeeded", "Failed") for o in outcomes)
    for o in failed:
        assert "the Sentinel outbox holds" in o.error and "over its cap of 0.03 MB" in o.error
        assert "cannot reach Sentinel" in o.error and "nothing was dropped" in o.error
    assert sum(1 for o in failed if o.requests) <= 1
    stop = next(i for i, o in enumerate(outcomes) if o.outcome == "Failed")
    assert all(o.outcome == "Failed" for o in outcomes[stop:])
    assert first.exit_code != 0
    # What was collected waits in the outbox, every row of it, which the cap kept small.
    report = first.deliveries["sentinel"]
    # (A dataset under way when the cap was reached keeps the units it delivered: counted.)
    collected = sum(o.rows for o in outcomes)
    assert report.waiting_rows == collected + len(first.outcomes)  # and the run log's rows
    # Past the cap by at most one unit: before the last unit was written, it was under it.
    pending = _pending_bytes(down.state.dir)
    assert 30 * 1024 < pending and pending - _largest_unit_bytes(down.state.dir) < 30 * 1024
    assert ingested_since(tenant, before) == {}

    # The endpoint is back: what waited goes first, the reading goes on as the outbox
    # drains, and every dataset ends delivered, each row once.
    up = sentinel_settings(
        tenant, tmp_path, **{"sentinel.outbox_max_mb": 0.03, "tenants.0.datasets": DATASETS}
    )
    second = sync(up)
    assert second.exit_code == 0, second.errors()
    assert all(o.outcome in ("Succeeded", "Skipped") for o in second.outcomes)
    assert {o.dataset for o in second.outcomes if o.outcome == "Succeeded"} >= set(DATASETS[1:])
    assert ingested_since(tenant, before) == local_counts(up)
    assert _pending_bytes(up.state.dir) == 0
