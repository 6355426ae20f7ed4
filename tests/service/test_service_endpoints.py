"""The probes on 127.0.0.1: /healthz (alive), /readyz (token, feed, policy), /metrics (the service's and the loop's)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from tradebot.live.prometheus import LiveMetrics
from tradebot.live.service.service_metrics import ServiceHealth, ServiceMetrics, serve_endpoints
from tradebot.live.service.session import WatchedPolicy


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture
def endpoints():
    metrics, health = ServiceMetrics(LiveMetrics()), ServiceHealth(alive_within_s=0.5)
    server = serve_endpoints(metrics, health)
    assert server.server_address[0] == "127.0.0.1"
    yield metrics, health, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_healthz_fails_when_the_heartbeat_stops(endpoints):
    _, health, base = endpoints
    health.beat()
    assert _get(base + "/healthz") == (200, "ok\n")
    time.sleep(0.6)
    assert _get(base + "/healthz") == (503, "stalled\n")
    assert _get(base + "/nope")[0] == 404


def test_readyz_names_the_failing_check_and_metrics_show_each_check(endpoints):
    metrics, health, base = endpoints
    assert _get(base + "/readyz")[0] == 200  # between sessions nothing applies: ready
    health.set("token", True)
    health.set("feed", False, "no bar for 900s")
    health.set("policy", True)
    code, body = _get(base + "/readyz")
    assert code == 503
    assert json.loads(body)["checks"] == {"token": True, "feed": False, "policy": True}
    assert json.loads(body)["reasons"] == {"feed": "no bar for 900s"}
    metrics.live.staleness.labels("NSE:SBIN-EQ").set(900.0)
    _, text = _get(base + "/metrics")
    assert 'tradebot_service_ready_check{check="feed"} 0.0' in text and "tradebot_service_ready 0.0" in text
    assert 'tradebot_live_data_staleness_seconds{symbol="NSE:SBIN-EQ"} 900.0' in text
    health.set("feed", True)
    assert _get(base + "/readyz")[0] == 200


def test_a_watched_policy_remembers_whether_it_answered():
    calls = []

    def flaky(symbol, obs):
        calls.append(symbol)
        if len(calls) == 2:
            raise TimeoutError("no answer in 5 s")
        return 0, np.ones(5) / 5

    policy = WatchedPolicy(flaky)
    assert policy.last_ok is None
    policy("NSE:SBIN-EQ", np.zeros(3))
    assert policy.last_ok is True
    with pytest.raises(TimeoutError):
        policy("NSE:SBIN-EQ", np.zeros(3))
    assert policy.last_ok is False and "no answer" in policy.last_error
    policy("NSE:SBIN-EQ", np.zeros(3))
    assert policy.last_ok is True and policy.last_error == ""
