"""Sources collected at once: their waits on their services overlap, their work with the
sinks never does, and an interrupted run stops every source before its next unit."""

from __future__ import annotations

import threading

import pytest

from endpoint_forensics.pipeline.turns import RunStopped, SinkTurn, run_each


def test_waits_overlap_and_turns_at_the_sinks_never_do() -> None:
    turn = SinkTurn()
    all_waiting = threading.Barrier(3, timeout=5)  # passes only if the three waits overlap
    holding: list[int] = []
    most_at_once = [0]
    lock = threading.Lock()

    def source(n: int) -> None:
        for _ in range(3):
            with turn:
                with lock:
                    holding.append(n)
                    most_at_once[0] = max(most_at_once[0], len(holding))
                threading.Event().wait(0.01)  # a unit's work with the sinks
                with lock:
                    holding.remove(n)
                with turn.waiting():
                    pass
            with turn, turn.waiting():
                all_waiting.wait()

    run_each([0, 1, 2], source, turn)
    assert most_at_once[0] == 1 and not holding


def test_a_failing_source_stops_the_others_before_their_next_unit() -> None:
    turn = SinkTurn()
    units: dict[str, int] = {"slow": 0}
    slow_started = threading.Event()

    def source(name: str) -> None:
        if name == "fails":
            slow_started.wait(5)
            raise ValueError("refused")
        with turn:
            slow_started.set()
            for _ in range(1000):
                with turn.waiting():
                    threading.Event().wait(0.005)
                units["slow"] += 1

    with pytest.raises(ValueError, match="refused"):
        run_each(["fails", "slow"], source, turn)
    assert slow_started.is_set() and units["slow"] < 100  # stopped at its next unit, not its end


def test_an_interrupted_first_source_stops_the_others_and_is_raised_again() -> None:
    turn = SinkTurn()
    stopped: list[str] = []
    started = threading.Barrier(2, timeout=5)

    def source(name: str) -> None:
        if name == "main":
            started.wait()
            raise KeyboardInterrupt
        try:
            with turn:
                started.wait()
                while True:
                    with turn.waiting():
                        threading.Event().wait(0.005)
        except RunStopped:
            stopped.append(name)
            raise

    with pytest.raises(KeyboardInterrupt):
        run_each(["main", "worker"], source, turn)
    assert stopped == ["worker"]


def test_a_turn_not_taken_back_is_not_given_away() -> None:
    """A Ctrl-C while taking the turn back must not release another source's turn."""
    turn = SinkTurn()
    turn.__exit__(None, None, None)  # not held by this thread: nothing to release
    with turn:
        other = threading.Thread(target=lambda: turn.__exit__(None, None, None))
        other.start()
        other.join()
        assert not turn._lock.acquire(blocking=False)  # still this thread's
