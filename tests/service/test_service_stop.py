"""The service's stop: a SIGTERM while the session's loop runs in its thread waits for that loop to end.

Python 3.12's ``Thread.join`` interrupted by a KeyboardInterrupt marks the joined thread stopped while it
still runs (``is_alive()`` then reads False): the service used to close the journal under the running loop
and the process died of a segmentation fault in SQLite. It now waits on an event the loop's thread sets.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from tradebot.live.service.service import _wait_through_signals


def _interrupt_in(seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    return timer


def test_the_stop_waits_for_the_loops_thread_through_further_signals():
    done = threading.Event()
    worker = threading.Thread(target=lambda: (time.sleep(1.0), done.set()), daemon=True)
    worker.start()
    timers = [_interrupt_in(0.2), _interrupt_in(0.5)]  # a second SIGTERM / Ctrl-C while stopping
    t0 = time.monotonic()
    try:
        _wait_through_signals(done, 5.0)
    finally:
        for t in timers:
            t.cancel()
    assert done.is_set() and 0.9 <= time.monotonic() - t0 < 5.0


def test_the_stop_gives_up_after_its_grace():
    done = threading.Event()
    t0 = time.monotonic()
    _wait_through_signals(done, 0.3)
    assert not done.is_set() and time.monotonic() - t0 < 2.0
