from hypothesis import given, settings
from hypothesis import strategies as st

from endpoint_forensics.http.ratelimit import RateBudget, RateLimit


class FakeTime:
    def __init__(self):
        self.now = 1000.0

    def clock(self):
        return self.now

    def sleep(self, seconds):
        assert seconds > 0
        self.now += seconds


@settings(max_examples=60, deadline=None)
@given(
    per_minute=st.integers(min_value=1, max_value=20),
    per_hour=st.integers(min_value=1, max_value=60),
    gaps=st.lists(st.floats(min_value=0, max_value=30), min_size=1, max_size=120),
)
def test_never_more_calls_than_the_limits_in_any_window(per_minute, per_hour, gaps):
    t = FakeTime()
    budget = RateBudget(RateLimit("x", per_minute, per_hour), clock=t.clock, sleep=t.sleep)
    times = []
    for gap in gaps:
        t.now += gap
        budget.acquire()
        times.append(t.now)
    for i, start in enumerate(times):
        assert sum(1 for x in times[i:] if x < start + 60) <= per_minute
        assert sum(1 for x in times[i:] if x < start + 3600) <= per_hour


def test_it_waits_exactly_until_a_slot_frees():
    t = FakeTime()
    budget = RateBudget(RateLimit("x", 2, 100), clock=t.clock, sleep=t.sleep)
    assert budget.acquire() == 0
    t.now += 10
    assert budget.acquire() == 0
    waited = budget.acquire()  # the first call leaves the window 60 s after it was made
    assert waited == 50
    assert budget.calls_in_window(60) == 2
