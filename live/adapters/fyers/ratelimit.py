"""One request pacer for every Fyers REST call of the process.

Fyers counts all endpoints together per app and user: 10 requests/s, 200/min, 100,000/day; more than
3 per-minute breaches in a day block the user for the rest of the day. ``RateLimiter`` keeps sliding
windows of the times it let calls through and blocks (``acquire``) until a call fits every window with
a margin (defaults 8/s, 180/min, 95,000/day; ``min_interval_s`` spaces calls evenly, since bursts under
10/s were reported to draw 429s too). It is thread-safe; the clock and the sleep are injectable, so
tests run on a fake clock. ``shared_limiter()`` is the process-wide instance the adapter uses.

Several processes on one account (a live loop, ``tradebot data fetch``, a paper run on the same login)
share Fyers' budget, so ``RateLimiter(budget_file=PATH)`` keeps the windows in a file under an exclusive
lock instead of in memory: every process that uses the same file (``shared_limiter(app_id=...)``:
``STATE_DIR/ratelimit-APPID.json``) is paced together. The file holds the last ``per_minute`` call times
(wall clock) and the day's count.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tradebot.core.errors import UserInputError

FYERS_LIMITS = (10, 200, 100_000)  # per second, per minute, per day (the API's own limits)


@dataclass(frozen=True)
class RateLimits:
    per_second: int = 8
    per_minute: int = 180
    per_day: int = 95_000
    min_interval_s: float = 0.0

    def __post_init__(self) -> None:
        for name, value, cap in (("per_second", self.per_second, FYERS_LIMITS[0]),
                                 ("per_minute", self.per_minute, FYERS_LIMITS[1]),
                                 ("per_day", self.per_day, FYERS_LIMITS[2])):
            if not 1 <= value <= cap:
                raise UserInputError(f"fyers rate limit {name}={value}: must be between 1 and Fyers' own {cap}")
        if self.min_interval_s < 0:
            raise UserInputError(f"fyers rate limit min_interval_s={self.min_interval_s}: must be >= 0")

    @property
    def windows(self) -> tuple[tuple[float, int], ...]:
        return ((1.0, self.per_second), (60.0, self.per_minute), (86_400.0, self.per_day))


class RateLimiter:
    """Sliding-window pacer; ``acquire()`` blocks until one more call fits, then records it."""

    def __init__(self, limits: RateLimits | None = None, *, clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], None] = time.sleep, budget_file: str | Path | None = None):
        self.limits = limits or RateLimits()
        self.budget_file = Path(budget_file) if budget_file is not None else None
        self._clock = clock or (time.time if self.budget_file is not None else time.monotonic)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._calls: deque[float] = deque()  # times of granted calls, oldest first (<= 1 day of them)
        self._day_count = 0  # a shared budget keeps only the last minute's times, and counts the day
        self.waited_s = 0.0
        self.granted = 0

    def _wait_needed(self, now: float) -> float:
        calls = self._calls
        while calls and calls[0] <= now - 86_400.0:
            calls.popleft()
        wait = 0.0
        n = len(calls)
        for span, limit in self.limits.windows:
            if n >= limit:
                # the call that must leave the window before one more fits: the limit-th most recent
                oldest = calls[n - limit]
                if oldest > now - span:  # (floor: oldest + span - now can round to 0 while still inside)
                    wait = max(wait, oldest + span - now, 1e-6)
        if self.limits.min_interval_s and calls:
            gap = calls[-1] + self.limits.min_interval_s - now
            if gap > 0 or now - calls[-1] < self.limits.min_interval_s:
                wait = max(wait, gap, 1e-6)
        return wait

    def try_acquire(self) -> float:
        """Record a call and return 0.0 if it fits now, else return the seconds to wait (nothing recorded)."""
        with self._lock:
            if self.budget_file is not None:
                return self._try_shared()
            now = self._clock()
            wait = self._wait_needed(now)
            if wait <= 0.0:
                self._calls.append(now)
                self.granted += 1
            return max(0.0, wait)

    def _try_shared(self) -> float:
        """``try_acquire`` on the budget file, under an exclusive lock (every process sharing it waits its turn)."""
        path = self.budget_file
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, 1 << 20, 0)
            try:
                data = json.loads(raw) if raw else {}
            except ValueError:
                data = {}
            now = self._clock()
            day = time.strftime("%Y-%m-%d", time.gmtime(now + 19_800))  # the IST date
            count = int(data.get("day_count", 0)) if data.get("day") == day else 0
            recent = [float(t) for t in data.get("recent", []) if t > now - 60.0]
            self._calls = deque(recent)
            wait = self._wait_needed(now)
            if count >= self.limits.per_day:
                wait = max(wait, 86_400.0 - (now + 19_800) % 86_400.0)
            if wait <= 0.0:
                recent.append(now)
                count += 1
                self.granted += 1
                text = json.dumps({"day": day, "day_count": count, "recent": recent[-self.limits.per_minute:]})
                os.ftruncate(fd, 0)
                os.pwrite(fd, text.encode(), 0)
            return max(0.0, wait)
        finally:
            os.close(fd)

    def acquire(self, timeout: float | None = None) -> float:
        """Block until one more call fits every window, record it; returns the seconds waited.

        With ``timeout``, gives up (``TimeoutError``) rather than wait longer than that in total.
        """
        waited = 0.0
        while True:
            wait = self.try_acquire()
            if wait <= 0.0:
                self.waited_s += waited
                return waited
            if timeout is not None and waited + wait > timeout:
                raise TimeoutError(f"fyers rate limiter: the next call fits in {wait:.1f} s, beyond the "
                                   f"{timeout:.1f} s allowed")
            # a tiny epsilon so float rounding never lands exactly on the window edge again
            self._sleep(wait + 1e-6)
            waited += wait + 1e-6

    def recent(self, span_s: float) -> int:
        """Calls granted in the last ``span_s`` seconds."""
        with self._lock:
            now = self._clock()
            return sum(1 for t in self._calls if t > now - span_s)


_shared: RateLimiter | None = None
_shared_lock = threading.Lock()


_by_app: dict[str, RateLimiter] = {}


def shared_limiter(limits: RateLimits | None = None, app_id: str | None = None) -> RateLimiter:
    """The limiter every Fyers REST call of ``app_id`` goes through: one budget file per app, shared by every
    process of this user (``STATE_DIR/ratelimit-APPID.json``); without ``app_id`` the process-wide in-memory
    one (created on first use; ``limits`` only counts then)."""
    global _shared
    with _shared_lock:
        if app_id:
            if app_id not in _by_app:
                from tradebot.live.adapters.fyers.rest import state_dir

                safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in app_id)
                _by_app[app_id] = RateLimiter(limits, budget_file=state_dir() / f"ratelimit-{safe}.json")
            return _by_app[app_id]
        if _shared is None:
            _shared = RateLimiter(limits)
        return _shared
