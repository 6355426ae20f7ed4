"""The service's own Prometheus metrics (the loop's are ``tradebot.live.prometheus``), and the HTTP endpoints
a supervisor probes: ``/healthz`` (alive), ``/readyz`` (ready to trade) and ``/metrics`` (both registries).

```python
metrics = ServiceMetrics(LiveMetrics())
server = serve_endpoints(metrics, health, host="127.0.0.1", port=9310)   # health: a ServiceHealth
metrics.phase("trading"); metrics.login_needed.set(1)
server.shutdown()
```

Names are constants; ``deploy/prometheus/alerts.yml`` and ``deploy/grafana/tradebot-live.json`` use them
(a test checks both against ``SERVICE_METRICS``).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from tradebot.live.prometheus import LiveMetrics
from tradebot.live.service.state import Phase

UP = "tradebot_service_up"
PHASE = "tradebot_service_phase"
RESTARTS = "tradebot_service_restarts_total"
LOGIN_NEEDED = "tradebot_service_login_needed"
TOKEN_SECONDS_LEFT = "tradebot_service_token_seconds_left"
READY = "tradebot_service_ready"
READY_CHECK = "tradebot_service_ready_check"
MAX_DRAWDOWN = "tradebot_service_max_drawdown_ratio"
UPTIME_TODAY = "tradebot_service_uptime_today_ratio"
NOTIFY_FAILURES = "tradebot_service_notify_failures"  # counter: _total added by prometheus_client
DAYS_REPORTED = "tradebot_service_days_reported"
SERVICE_METRICS = (UP, PHASE, RESTARTS, LOGIN_NEEDED, TOKEN_SECONDS_LEFT, READY, READY_CHECK, MAX_DRAWDOWN,
                   UPTIME_TODAY, NOTIFY_FAILURES, DAYS_REPORTED)
READY_CHECKS = ("token", "feed", "policy")
PHASES = tuple(p.value for p in Phase) + ("idle",)


class ServiceMetrics:
    """The service's gauges and counters, on a registry of their own, plus the loop's ``LiveMetrics``."""

    def __init__(self, live: LiveMetrics | None = None, registry: CollectorRegistry | None = None):
        self.live = live or LiveMetrics()
        self.registry = r = registry or CollectorRegistry()
        self.up = Gauge(UP, "1 while the service process runs", registry=r)
        self.phase_gauge = Gauge(PHASE, "1 for the phase the trading day is in", ["phase"], registry=r)
        self.restarts = Gauge(RESTARTS, "Process starts after a crash or kill, since the state began", registry=r)
        self.login_needed = Gauge(LOGIN_NEEDED, "1 while the Fyers token is refused and a person must log in",
                                  registry=r)
        self.token_seconds_left = Gauge(TOKEN_SECONDS_LEFT, "Seconds until the Fyers token's expiry (JWT exp)",
                                        registry=r)
        self.ready = Gauge(READY, "1 when token, feed and policy are all fine (readyz answers 200)", registry=r)
        self.ready_check = Gauge(READY_CHECK, "Each readiness check (1 ok, 0 failing)", ["check"], registry=r)
        self.max_drawdown = Gauge(MAX_DRAWDOWN, "The risk engine's kill switch: max drawdown (ratio)", registry=r)
        self.uptime_today = Gauge(UPTIME_TODAY, "Share of today's market hours the service was up", registry=r)
        self.notify_failures = Counter(NOTIFY_FAILURES, "Notifications that could not be delivered", ["channel"],
                                       registry=r)
        self.days_reported = Gauge(DAYS_REPORTED, "Trading days whose report is written", registry=r)
        self.up.set(1)
        self.phase("idle")

    def phase(self, name: str) -> None:
        for p in PHASES:
            self.phase_gauge.labels(p).set(1.0 if p == name else 0.0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry) + generate_latest(self.live.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        v = self.registry.get_sample_value(name, labels or {})
        return v if v is not None else self.live.value(name, labels)


@dataclass
class ServiceHealth:
    """What the probes answer. ``beat()`` from the service's main thread keeps it alive; the checks are set by
    the phases (``None`` = not applicable now, counts as fine)."""

    alive_within_s: float = 60.0
    checks: dict[str, bool | None] = field(default_factory=lambda: {c: None for c in READY_CHECKS})
    reasons: dict[str, str] = field(default_factory=dict)
    phase: str = "idle"
    _beat: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def beat(self) -> None:
        self._beat = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self._beat <= self.alive_within_s

    def set(self, check: str, ok: bool | None, reason: str = "") -> None:
        with self._lock:
            self.checks[check] = ok
            self.reasons[check] = reason

    def ready(self) -> bool:
        with self._lock:
            return all(v is not False for v in self.checks.values())

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {"ready": all(v is not False for v in self.checks.values()), "phase": self.phase,
                    "checks": dict(self.checks), "reasons": {k: v for k, v in self.reasons.items() if v}}


def serve_endpoints(metrics: ServiceMetrics, health: ServiceHealth, host: str = "127.0.0.1",
                    port: int = 0) -> ThreadingHTTPServer:
    """``/healthz``, ``/readyz`` and ``/metrics`` on ``host:port`` (0: a free port; see ``server_port``), in a
    daemon thread; ``shutdown()`` stops it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                ok = health.alive()
                self._send(200 if ok else 503, b"ok\n" if ok else b"stalled\n", "text/plain")
            elif path == "/readyz":
                state = health.describe()
                metrics.ready.set(1.0 if state["ready"] else 0.0)
                self._send(200 if state["ready"] else 503, (json.dumps(state) + "\n").encode(), "application/json")
            elif path == "/metrics":
                metrics.ready.set(1.0 if health.ready() else 0.0)
                for check, ok in health.describe()["checks"].items():
                    metrics.ready_check.labels(check).set(0.0 if ok is False else 1.0)
                self._send(200, metrics.exposition(), CONTENT_TYPE_LATEST)
            else:
                self._send(404, b"not found: try /healthz, /readyz or /metrics\n", "text/plain")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: not logged
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="service-endpoints", daemon=True).start()
    return server


__all__ = ["PHASES", "READY_CHECKS", "SERVICE_METRICS", "ServiceHealth", "ServiceMetrics", "serve_endpoints"]
