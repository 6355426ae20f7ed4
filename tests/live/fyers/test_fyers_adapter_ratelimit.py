"""The process-wide request pacer: no window is ever exceeded (property), it blocks rather than refuses,
and it is safe across threads."""

from __future__ import annotations

import threading

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tradebot.live.adapters.fyers.ratelimit import RateLimiter, RateLimits, shared_limiter
from tradebot.core.errors import UserInputError


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.t

    def sleep(self, s: float) -> None:
        with self.lock:
            self.t += s

    def advance(self, s: float) -> None:
        self.sleep(s)


def _max_in_window(times: list[float], span: float) -> int:
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - span:
            j += 1
        best = max(best, i - j + 1)
    return best


@settings(max_examples=60, deadline=None)
@given(per_s=st.integers(1, 10), per_min=st.integers(1, 200), per_day=st.integers(1, 400),
       min_gap=st.sampled_from([0.0, 0.05, 0.125]),
       steps=st.lists(st.tuples(st.integers(1, 12), st.floats(0.0, 5.0)), min_size=1, max_size=40))
@example(per_s=1, per_min=3, per_day=5, min_gap=0.0,  # found by hypothesis: a float-rounded window edge
         steps=[(1, 0.0), (1, 0.0), (1, 0.0), (1, 1.0), (1, 0.0)])
def test_no_window_is_ever_exceeded(per_s, per_min, per_day, min_gap, steps) -> None:
    clock = FakeClock()
    lim = RateLimiter(RateLimits(per_second=per_s, per_minute=per_min, per_day=per_day, min_interval_s=min_gap),
                      clock=clock, sleep=clock.sleep)
    granted: list[float] = []
    for burst, pause in steps:
        for _ in range(burst):
            lim.acquire()
            granted.append(clock())
        clock.advance(pause)
    assert granted == sorted(granted)
    assert _max_in_window(granted, 1.0) <= per_s
    assert _max_in_window(granted, 60.0) <= per_min
    assert _max_in_window(granted, 86_400.0) <= per_day
    if min_gap:
        assert all(b - a >= min_gap - 1e-9 for a, b in zip(granted, granted[1:]))


def test_blocks_until_the_window_frees_and_reports_the_wait() -> None:
    clock = FakeClock()
    lim = RateLimiter(RateLimits(per_second=8, per_minute=180), clock=clock, sleep=clock.sleep)
    for _ in range(8):
        assert lim.acquire() == 0.0
    waited = lim.acquire()
    assert 0.99 < waited < 1.01
    assert lim.recent(1.0) <= 8


def test_timeout_gives_up_instead_of_waiting_long() -> None:
    clock = FakeClock()
    lim = RateLimiter(RateLimits(per_second=1, per_minute=1), clock=clock, sleep=clock.sleep)
    lim.acquire()
    with pytest.raises(TimeoutError):
        lim.acquire(timeout=5.0)


def test_thread_safe_under_contention() -> None:
    clock = FakeClock()
    lim = RateLimiter(RateLimits(per_second=5, per_minute=50), clock=clock, sleep=clock.sleep)
    granted: list[float] = []
    glock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            lim.acquire()
            with glock:
                granted.append(clock())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 40 and lim.granted == 40
    # each grant was checked against the windows under the lock at its own clock reading
    assert _max_in_window(sorted(granted), 60.0) <= 50


def test_limits_are_validated_against_fyers_caps() -> None:
    with pytest.raises(UserInputError, match="per_second=11"):
        RateLimits(per_second=11)
    assert shared_limiter() is shared_limiter()


_PACED = r'''
import sys, time
from tradebot.live.adapters.fyers.ratelimit import RateLimiter, RateLimits
limiter = RateLimiter(RateLimits(per_second=5, per_minute=200), budget_file=sys.argv[1])
times = []
for _ in range(int(sys.argv[2])):
    limiter.acquire()
    times.append(time.time())
print(" ".join(f"{t:.6f}" for t in times))
'''


def test_two_processes_on_one_budget_file_share_the_limits(tmp_path) -> None:
    """Defect 14: the REST limiter was per process, so two processes on one account could send twice the
    allowed rate. Two processes on one budget file: together never more than 5 calls in any second."""
    import subprocess
    import sys

    budget = tmp_path / "ratelimit-APP.json"
    procs = [subprocess.Popen([sys.executable, "-c", _PACED, str(budget), "12"], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    times = sorted(float(t) for p in procs for t in p.communicate(timeout=60)[0].split())
    assert len(times) == 24
    worst = max(sum(1 for u in times if t <= u < t + 0.95) for t in times)  # (a margin for the time stamps)
    assert worst <= 5, worst
    assert times[-1] - times[0] >= 3.5  # 24 calls at 5/s take more than 4 windows
