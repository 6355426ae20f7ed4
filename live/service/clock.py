"""The service's clock: real time, or a soak's accelerated clock shared through a file.

```python
clock = WallClock()                                   # production
clock = SharedClock(Path("soak/clock.json"))          # a soak: market time = anchor + (wall - wall anchor) * speed
clock.now_ns(); clock.sleep(5.0, stop)                # waits 5 market seconds (stop: a threading.Event)
clock.idle_until(ns, stop)                            # nothing to do until ns: a shared clock jumps there
```

Every part of a run reads one clock: the service's phases, the data feed's bar closing, the paper broker,
the risk engine and the soak's simulator (which its harness advances to the same time). A shared clock's
file holds ``{"market_ns", "wall_ns", "speed", "seq"}``; writers (the service's jumps, the harness's speed
changes) take a lock file, so a restarted service reads the time where its predecessor left it. After a
jump, a ``SharedClock(acks=True)`` waits (at most ``ACK_TIMEOUT_S``) for ``clock.json.ack`` to reach the
jump's ``seq``: the harness does what happens overnight (books reset, tokens expire) before time goes on.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from tradebot.core.files import write_json_atomic

NS = 1_000_000_000
ACK_TIMEOUT_S = 10.0


class ServiceClock(Protocol):
    def now_ns(self) -> int: ...

    def sleep(self, seconds: float, stop: threading.Event) -> bool: ...

    def idle_until(self, ns: int, stop: threading.Event) -> bool: ...


class WallClock:
    """Real time; ``sleep`` and ``idle_until`` return early (False) when ``stop`` is set."""

    def now_ns(self) -> int:
        return time.time_ns()

    def sleep(self, seconds: float, stop: threading.Event) -> bool:
        return not stop.wait(max(0.0, seconds))

    def idle_until(self, ns: int, stop: threading.Event) -> bool:
        while True:
            left = (ns - self.now_ns()) / NS
            if left <= 0:
                return True
            if stop.wait(min(left, 60.0)):
                return False


class SharedClock:
    """An accelerated clock in a file (see the module docstring)."""

    def __init__(self, path: str | Path, *, acks: bool = False, wall: Callable[[], int] = time.time_ns):
        self.path = Path(path)
        self.acks = acks
        self._wall = wall
        self._cached: tuple[float, dict[str, Any]] | None = None

    @classmethod
    def create(cls, path: str | Path, market_ns: int, speed: float, **kw: Any) -> "SharedClock":
        clock = cls(path, **kw)
        clock._write({"market_ns": int(market_ns), "wall_ns": clock._wall(), "speed": float(speed), "seq": 0})
        return clock

    def _read(self) -> dict[str, Any]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: no shared clock (the soak harness creates it)") from None
        if self._cached is None or self._cached[0] != mtime:
            self._cached = (mtime, json.loads(self.path.read_text()))
        return self._cached[1]

    def _write(self, data: dict[str, Any]) -> None:
        write_json_atomic(self.path, data, indent=None)
        self._cached = None

    def _update(self, change: Callable[[dict[str, Any], int], dict[str, Any]]) -> dict[str, Any]:
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._cached = None
            data = self._read()
            wall = self._wall()
            now = self._at(data, wall)
            new = change(data, now)
            new = {**new, "wall_ns": wall}
            self._write(new)
            return new
        finally:
            os.close(fd)

    @staticmethod
    def _at(data: dict[str, Any], wall: int) -> int:
        return int(data["market_ns"] + (wall - data["wall_ns"]) * float(data["speed"]))

    def now_ns(self) -> int:
        return self._at(self._read(), self._wall())

    @property
    def speed(self) -> float:
        return float(self._read()["speed"])

    def set_speed(self, speed: float) -> None:
        """From now on, ``speed`` market seconds per wall second (the time so far is kept)."""
        self._update(lambda d, now: {**d, "market_ns": now, "speed": float(speed)})

    def jump_to(self, ns: int) -> bool:
        """Move the time forward to ``ns`` (never back); with ``acks``, wait for the harness to acknowledge."""
        data = self._update(lambda d, now: {**d, "market_ns": max(now, int(ns)),
                                            "seq": int(d.get("seq", 0)) + (ns > now)})
        if self.acks:
            self.wait_ack(int(data["seq"]))
        return True

    @property
    def seq(self) -> int:
        return int(self._read().get("seq", 0))

    def acked(self) -> int:
        try:
            return int(Path(f"{self.path}.ack").read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def ack(self, seq: int) -> None:
        Path(f"{self.path}.ack").write_text(str(int(seq)))

    def wait_ack(self, seq: int, timeout_s: float = ACK_TIMEOUT_S) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.acked() >= seq:
                return True
            time.sleep(0.01)
        return False

    def sleep(self, seconds: float, stop: threading.Event) -> bool:
        return self.idle_until(self.now_ns() + int(seconds * NS), stop, jump=False)

    def idle_until(self, ns: int, stop: threading.Event, jump: bool = True) -> bool:
        while True:
            now = self.now_ns()
            if now >= ns:
                return True
            if jump:
                self.jump_to(ns)
                return not stop.is_set()
            speed = self.speed
            wait = (ns - now) / NS / speed if speed > 0 else 0.05
            if stop.wait(min(max(wait, 0.001), 0.05)):
                return False


def make_clock(kind: str, path: str | Path | None = None) -> WallClock | SharedClock:
    if kind == "wall":
        return WallClock()
    if path is None:
        raise ValueError("a shared clock needs its file")
    return SharedClock(path, acks=True)


__all__ = ["ServiceClock", "SharedClock", "WallClock", "make_clock"]
