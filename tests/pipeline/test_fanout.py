"""Every sink's share of a step at once: all of them run, at the same time, and a failure of one
rolls every sink's unit back only once the others are done with it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from endpoint_forensics.pipeline.fanout import SinkFanout


class _Sink:
    def __init__(self, name: str, log: list[str], *, fail_on_commit: bool = False) -> None:
        self.name, self.log, self.fail_on_commit = name, log, fail_on_commit
        self.threads: set[str] = set()

    @contextmanager
    def open(self) -> Iterator[_Sink]:
        self.log.append(f"{self.name} begin")
        try:
            yield self
            if self.fail_on_commit:
                raise OSError(f"{self.name}: disk full")
            self.log.append(f"{self.name} commit")
        except BaseException:
            self.log.append(f"{self.name} rollback")
            raise

    def write(self, batch: int) -> None:
        self.threads.add(threading.current_thread().name)
        self.log.append(f"{self.name} wrote {batch}")


def test_each_runs_every_sink_at_once_and_waits_for_all() -> None:
    both_inside = threading.Barrier(2, timeout=5)  # passes only if the two calls overlap
    done: list[str] = []
    fanout = SinkFanout()
    try:
        fanout.each(["a", "b"], lambda name: (both_inside.wait(), done.append(name)))
    finally:
        fanout.close()
    assert sorted(done) == ["a", "b"]


def test_the_first_failure_in_sink_order_is_raised_once_every_sink_is_done() -> None:
    finished: list[str] = []

    def step(name: str) -> None:
        if name == "slow":
            threading.Event().wait(0.2)
            finished.append(name)
            raise ValueError("slow failed")
        raise KeyError(name)

    fanout = SinkFanout()
    try:
        with pytest.raises(KeyError):
            fanout.each(["fast", "slow"], step)
    finally:
        fanout.close()
    assert finished == ["slow"]  # waited for, though the first had failed at once


def test_units_commit_together_and_each_sink_keeps_its_own_thread_per_step() -> None:
    log: list[str] = []
    sinks = [_Sink("workspace", log), _Sink("sentinel", log)]
    fanout = SinkFanout()
    try:
        with fanout.open_all([s.open() for s in sinks]) as writers:
            for batch in (1, 2):
                fanout.each(writers, lambda w, b=batch: w.write(b))
    finally:
        fanout.close()
    for sink in sinks:
        mine = [line for line in log if line.startswith(sink.name)]
        assert mine == [f"{sink.name} {s}" for s in ("begin", "wrote 1", "wrote 2", "commit")]
    assert sinks[0].threads == {threading.current_thread().name}
    assert len(sinks[1].threads) == 1 and sinks[1].threads != sinks[0].threads


def test_a_failure_in_the_block_rolls_every_unit_back_and_is_what_is_raised() -> None:
    log: list[str] = []
    sinks = [_Sink("workspace", log), _Sink("sentinel", log)]
    fanout = SinkFanout()
    try:
        with pytest.raises(RuntimeError, match="source broke"):
            with fanout.open_all([s.open() for s in sinks]):
                raise RuntimeError("source broke")
    finally:
        fanout.close()
    assert sorted(log) == sorted(
        ["workspace begin", "sentinel begin", "workspace rollback", "sentinel rollback"]
    )


def test_a_commit_that_fails_is_raised_and_the_other_sink_still_commits() -> None:
    """The sinks are independent: each holds its own checkpoint with the unit, and the next run
    delivers the unit again only to the one that lacks it."""
    log: list[str] = []
    sinks = [_Sink("workspace", log), _Sink("sentinel", log, fail_on_commit=True)]
    fanout = SinkFanout()
    try:
        with pytest.raises(OSError, match="sentinel: disk full"):
            with fanout.open_all([s.open() for s in sinks]) as writers:
                fanout.each(writers, lambda w: w.write(1))
    finally:
        fanout.close()
    assert "workspace commit" in log and "sentinel rollback" in log
