"""The Sentinel sink's encoding: uploads under the service's limits, every row stamped."""

import gzip
from datetime import UTC, datetime
from pathlib import Path

import orjson

from endpoint_forensics.contracts import Batch
from endpoint_forensics.sinks.outbox import Outbox
from endpoint_forensics.sinks.sentinel_writer import (
    MAX_BODY_BYTES,
    MAX_FIELD_BYTES,
    SentinelWriter,
    encode_rows,
)
from endpoint_forensics.tables import DEVICES

STAMP = {
    "TimeGenerated": datetime(2026, 11, 28, 1, 2, 3, tzinfo=UTC),
    "RunId": "run-1",
    "DefenderTenantId": "t1",
}


def device(i: int, **extra: object) -> dict[str, object]:
    return {"DeviceId": f"d{i:06d}", "DeviceName": f"host-{i}", "MachineTags": ["a", "b"], **extra}


def test_a_record_is_the_stream_shape_with_its_stamp() -> None:
    (record,) = encode_rows(DEVICES, Batch(DEVICES, rows=[device(1, Unknown="x")]), STAMP)
    decoded = orjson.loads(record)
    assert decoded["TimeGenerated"] == "2026-11-28T01:02:03+00:00"
    assert decoded["RunId"] == "run-1" and decoded["DeviceId"] == "d000001"
    assert decoded["MachineTags"] == ["a", "b"]  # dynamic as a value, not as JSON text
    assert "Unknown" not in decoded  # not a column of the stream


def test_values_over_64_kb_are_truncated_with_a_marker() -> None:
    long_name = "é" * 40_000  # 80,000 bytes
    (record,) = encode_rows(DEVICES, Batch(DEVICES, rows=[device(1, DeviceName=long_name)]), STAMP)
    name = orjson.loads(record)["DeviceName"]
    assert len(name.encode()) <= MAX_FIELD_BYTES
    assert name.endswith("[truncated by epf: 80000 bytes]")
    big = {"k": "v" * 70_000}
    (record,) = encode_rows(DEVICES, Batch(DEVICES, rows=[device(2, VmMetadata=big)]), STAMP)
    vm = orjson.loads(record)["VmMetadata"]
    assert vm["epf_truncated"] is True and len(orjson.dumps(vm)) <= MAX_FIELD_BYTES


def test_uploads_stay_under_1_mb_and_each_has_its_own_batch_id(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    staged = outbox.stage("t1/run-1/machines/page-1", DEVICES.name)
    writer = SentinelWriter(DEVICES, staged)
    rows = [device(i, OSPlatform="Windows11" * 20) for i in range(12_000)]
    writer.write(Batch(DEVICES, rows=rows), STAMP)
    writer.seal()
    staged.commit()
    uploads = list(outbox.pending())
    assert len(uploads) > 1
    seen_rows = 0
    batch_ids = set()
    for upload in uploads:
        body = gzip.decompress(upload.path.read_bytes())
        assert len(body) <= MAX_BODY_BYTES
        records = orjson.loads(body)
        assert len(records) == upload.rows
        ids = {r["BatchId"] for r in records}
        assert len(ids) == 1
        batch_ids |= ids
        seen_rows += len(records)
    assert seen_rows == 12_000 and len(batch_ids) == len(uploads)
    assert outbox.has("t1/run-1/machines/page-1")


def test_a_unit_is_delivered_once_it_is_in_the_outbox_and_after_it_is_sent(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    staged = outbox.stage("u1", DEVICES.name)
    staged.add(gzip.compress(b"[]"), 0)
    assert not outbox.has("u1")  # staged is not delivered: a crash here loses nothing
    staged.commit()
    reopened = Outbox(tmp_path)  # a new run
    assert reopened.has("u1")
    (item,) = reopened.pending()
    reopened.acknowledged(item)
    assert reopened.has("u1") and Outbox(tmp_path).has("u1")  # remembered in sent.log
    assert list(Outbox(tmp_path).pending()) == []


def test_the_outbox_counts_the_bytes_waiting_as_uploads_come_and_go(tmp_path: Path) -> None:
    def on_disk() -> int:
        return sum(f.stat().st_size for f in (tmp_path / "pending").rglob("*.json.gz"))

    outbox = Outbox(tmp_path)
    for unit in ("t/run-1/machines/1", "t/run-1/machines/2", "t/run-2/machines/1"):
        staged = outbox.stage(unit, DEVICES.name)
        for n in range(3):
            staged.add(gzip.compress(orjson.dumps([{"n": i} for i in range(50 * (n + 1))])), 1)
        staged.commit()
    assert outbox.pending_bytes == on_disk() > 0
    first, second, third, *_ = outbox.pending()
    outbox.acknowledged(first)
    outbox.acknowledged(first)  # a second acknowledgement of the same upload counts once
    outbox.reject(second, "HTTP 400")
    outbox.replace(third, [(gzip.compress(b"[1]"), 1), (gzip.compress(b"[2]"), 1)])
    assert outbox.pending_bytes == on_disk()
    assert outbox.discard("t/run-2/", DEVICES.name) == 3
    assert outbox.pending_bytes == on_disk() > 0
    assert Outbox(tmp_path).pending_bytes == on_disk()  # a new run counts what is left
    staged = outbox.stage("t/run-3/machines/1", DEVICES.name)
    staged.add(gzip.compress(b"[]"), 0)
    assert outbox.pending_bytes == on_disk()  # staged is not waiting yet


def test_a_held_unit_waits_for_its_snapshot_and_a_new_run_keeps_it_held(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    snapshot = {"scope": "tenants/t", "dataset": "machines", "run_id": "run-1"}
    for page in (1, 2):
        staged = outbox.stage(f"t/run-1/machines/{page}", DEVICES.name, held=snapshot)
        staged.add(gzip.compress(b"[{}]"), 1)
        assert staged.commit() == []  # nothing for the sender yet
    other = outbox.stage("t/run-1/av_health/1", DEVICES.name)
    other.add(gzip.compress(b"[{}]"), 1)
    other.commit()
    # A new run (after a kill) sees the held units, and sends only the other one.
    reopened = Outbox(tmp_path)
    assert [u for u, _ in reopened.held_units()] == ["t/run-1/machines/1", "t/run-1/machines/2"]
    assert [p.unit for p in reopened.pending()] == ["t/run-1/av_health/1"]
    assert reopened.held_bytes() > 0 and reopened.has("t/run-1/machines/1")
    # Cut short: discarded unsent. Complete: released, in order.
    assert reopened.discard("t/run-1/machines/2", DEVICES.name) == 1
    released = reopened.release("t/run-1/machines/")
    assert [p.unit for p in released] == ["t/run-1/machines/1"]
    assert reopened.held_units() == [] and reopened.held_bytes() == 0
    # Oldest first: the released unit keeps its place before the later one.
    assert [p.unit for p in Outbox(tmp_path).pending()] == [
        "t/run-1/machines/1",
        "t/run-1/av_health/1",
    ]


def test_an_arrow_batch_encodes_to_the_bytes_its_rows_do() -> None:
    """Arrow batches are encoded column by column (times spelt by Arrow, values measured only
    where one may be over the limit): the bytes must be those of its rows as dicts (as it was
    encoded before: ``to_pylist``, a datetime object a time)."""
    from endpoint_forensics.sinks.rows import to_arrow

    times = [
        datetime(2026, 11, 28, 1, 2, 3, tzinfo=UTC),
        datetime(2026, 11, 28, 1, 2, 3, 450_000, tzinfo=UTC),
        datetime(2026, 11, 28, 1, 2, 3, 7, tzinfo=UTC),
        None,
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    ]
    rows = [
        device(i, FirstSeen=t, LastSeen=times[0], DeviceName=name, VmMetadata=vm)
        for i, (t, name, vm) in enumerate(
            zip(
                times,
                ["host", "é" * 40_000, None, "", "x" * 70_000, "ok"],
                [None, {"k": "v" * 70_000}, {"n": 1e15}, [], {"a": None}, {"k": "é"}],
                strict=True,
            )
        )
    ]
    for some in (rows, rows[:4], [rows[0], rows[2]]):
        arrow = to_arrow(DEVICES, some, stamped=set())
        assert list(encode_rows(DEVICES, Batch(DEVICES, arrow=arrow), STAMP)) == list(
            encode_rows(DEVICES, Batch(DEVICES, rows=arrow.to_pylist()), STAMP)
        )
