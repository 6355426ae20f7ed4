"""Injected faults of HTTP routes (errors, rate limits, delays, lost replies, a token that dies during the
call), each for the next N matching calls, and the simulator's standing faults (order-book lag,
refused socket handshakes, stalled ticks).

A fault matches a request when its ``route`` is None (every REST and data route, not the sockets) or
the request path equals, starts with or ends with it (``"/orders/sync"``, ``"/data/history"``,
``"/api/v3"``, ``"/hsm/v1-5/prod"`` for the socket handshake), and its ``method`` (if given) is the
request's. The simulator's own ``/_sim`` routes are never faulted. Thread-safe: tests inject from
their own thread while the server reads from its event loop.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

HTTP_KINDS = ("http_error", "rate_limit", "delay", "lose_reply", "expire_tokens")
# lose_reply: the request is carried out (an order is committed), then the connection is closed without
#   an answer (the client sees a dropped connection: it cannot tell whether the order exists)
# expire_tokens: every token dies just as this request arrives (401 / -16 for it and all after)
SOCKET_PATHS = ("/hsm/", "/trade/")


@dataclass
class HttpFault:
    kind: str  # http_error | rate_limit | delay
    count: int | None = 1  # None: until cleared
    route: str | None = None
    method: str | None = None
    status: int = 503  # http_error
    body: str = "html"  # http_error: "html" (a gateway error page) or "json" ({"s":"error","code":-96,...})
    retry_after: float = 1.0  # rate_limit: seconds in Retry-After (rounded up) and X-Retry-After-Ms
    seconds: float = 1.0  # delay

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        if self.route is None:
            return not path.startswith(SOCKET_PATHS)
        return path == self.route or path.startswith(self.route) or path.endswith(self.route)


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._http: list[HttpFault] = []
        self.stalled = False
        self.book_lag_s = 0.0  # the orderbook and tradebook leave out orders placed (trades made) this recently
        self.refused: set[str] = set()  # socket kinds ("data", "order") whose handshakes are refused (503)

    def add(self, fault: HttpFault) -> None:
        if fault.kind not in HTTP_KINDS:
            raise ValueError(f"unknown HTTP fault kind {fault.kind!r} (one of {', '.join(HTTP_KINDS)})")
        if fault.count is not None and fault.count <= 0:
            raise ValueError("count must be positive (or None for 'until cleared')")
        with self._lock:
            self._http.append(fault)

    def take(self, method: str, path: str) -> tuple[float, HttpFault | None, HttpFault | None]:
        """The delay to apply, the error fault and the after-the-handler fault (``lose_reply``) for this
        request, if any; spends their counts."""
        delay, error, after = 0.0, None, None
        with self._lock:
            for fault in list(self._http):
                if not fault.matches(method, path):
                    continue
                if fault.kind == "delay":
                    delay += fault.seconds
                elif fault.kind == "lose_reply":
                    if after is not None:
                        continue
                    after = fault
                elif error is None:
                    error = fault
                else:
                    continue
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self._http.remove(fault)
        return delay, error, after

    def clear(self) -> None:
        with self._lock:
            self._http.clear()
            self.stalled = False
            self.book_lag_s = 0.0
            self.refused.clear()

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {"http": [asdict(f) for f in self._http], "ticks_stalled": self.stalled,
                    "book_lag_s": self.book_lag_s, "refused_sockets": sorted(self.refused)}
