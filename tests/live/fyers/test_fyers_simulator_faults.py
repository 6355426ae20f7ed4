"""Injected faults as the real SDK sees them, through the Python API and the /_sim HTTP control routes."""

from __future__ import annotations

import time

import pytest
import requests

pytestmark = pytest.mark.timeout(60)


def test_5xx_html_reaches_the_sdk_as_its_bad_request_dict(fyers_sdk):
    fyers_sdk.sim.inject("http_error", status=502, count=2, route="/profile")
    first = dict(fyers_sdk.model.get_profile())
    assert first["s"] == "error" and first["code"] == 502 and first["message"] == "Bad request"
    assert fyers_sdk.model.funds()["s"] == "ok"  # another route is untouched
    assert fyers_sdk.model.get_profile()["code"] == 502
    assert fyers_sdk.model.get_profile()["s"] == "ok"  # the count is spent


def test_5xx_json_body_is_returned_as_is(fyers_sdk):
    fyers_sdk.sim.inject("http_error", status=503, body="json", route="/orders/sync", method="POST")
    reply = fyers_sdk.model.place_order({"symbol": "NSE:NIFTY50-INDEX", "qty": 1, "type": 2, "side": 1,
                                         "productType": "INTRADAY"})
    assert reply["s"] == "error" and reply["code"] == -96
    assert fyers_sdk.sim.orders() == []


def test_429_has_retry_after_headers(fyers_sdk):
    fyers_sdk.sim.inject("rate_limit", retry_after=1.5, count=1)
    reply = requests.get(fyers_sdk.sim.rest_api_url + "/profile",
                         headers={"Authorization": fyers_sdk.access_token}, timeout=5)
    assert reply.status_code == 429
    assert reply.headers["Retry-After"] == "2" and reply.headers["X-Retry-After-Ms"] == "1500"
    assert reply.json() == {"s": "error", "code": -429, "message": "request limit reached"}
    fyers_sdk.sim.inject("rate_limit", count=1)
    assert fyers_sdk.model.funds()["code"] == -429
    assert fyers_sdk.model.funds()["s"] == "ok"


def test_expired_tokens_are_401_minus_16_and_a_new_login_works(fyers_sdk):
    assert fyers_sdk.sim.inject("expire_tokens") >= 1
    assert fyers_sdk.model.get_profile() == {"s": "error", "code": -16, "message": "Could not authenticate the user"}
    assert fyers_sdk.model.history({"symbol": "NSE:NIFTY50-INDEX", "resolution": "1", "date_format": "0",
                                    "range_from": 1, "range_to": 2})["code"] == -16
    fresh = fyers_sdk.fyersModel.FyersModel(client_id=fyers_sdk.app_id, token=fyers_sdk.sim.login(fyers_sdk.app_id),
                                            log_path=fyers_sdk.log_path)
    assert fresh.get_profile()["s"] == "ok"


def test_slow_responses(fyers_sdk):
    fyers_sdk.sim.inject("delay", seconds=0.6, count=1, route="/funds")
    start = time.monotonic()
    assert fyers_sdk.model.funds()["s"] == "ok"
    assert time.monotonic() - start >= 0.6
    with pytest.raises(requests.Timeout):
        fyers_sdk.sim.inject("delay", seconds=1.0, count=1)
        requests.get(fyers_sdk.sim.rest_api_url + "/profile", headers={"Authorization": fyers_sdk.access_token},
                     timeout=0.3)


def test_faults_until_cleared(fyers_sdk):
    fyers_sdk.sim.inject("http_error", status=500, count=None, route="/api/v3")
    assert [fyers_sdk.model.funds()["code"] for _ in range(3)] == [500, 500, 500]
    assert fyers_sdk.model.market_status()["s"] == "ok"  # /data is another route
    fyers_sdk.sim.clear_faults()
    assert fyers_sdk.model.funds()["s"] == "ok"


def test_http_control_routes(fyers_sdk):
    base = fyers_sdk.sim.base_url
    assert requests.post(base + "/_sim/faults", json={"kind": "http_error", "status": 504}).json()["ok"]
    assert fyers_sdk.model.funds()["code"] == 504
    assert requests.post(base + "/_sim/faults", json={"kind": "nope"}).status_code == 400
    assert requests.post(base + "/_sim/faults", json={"kind": "delay", "bogus": 1}).status_code == 400
    token = requests.post(base + "/_sim/login", json={"app_id": "X-100"}).json()["access_token"]
    assert requests.get(fyers_sdk.sim.rest_api_url + "/profile", headers={"Authorization": f"X-100:{token}"}).ok
    fyers_sdk.model.place_order({"symbol": "NSE:NIFTY50-INDEX", "qty": 5, "type": 2, "side": -1,
                                 "productType": "INTRADAY"})
    moved = requests.post(base + "/_sim/advance", json={"ticks": 2}).json()
    assert moved["ticks"] == 2 and moved["market"]["now_ist"] == "2021-03-12T09:15:15+05:30"
    state = requests.get(base + "/_sim/state").json()
    assert state["orders"][0]["status"] == 2 and state["positions"]["netPositions"][0]["netQty"] == -5
    assert state["connections"] == {"data": 0, "order": 0}
    to = requests.post(base + "/_sim/advance", json={"to": "2021-03-12T09:20:00+05:30"}).json()
    assert to["market"]["now_ist"] == "2021-03-12T09:20:00+05:30"
    assert requests.post(base + "/_sim/reset").json()["ok"] and fyers_sdk.sim.orders() == []


def test_enforced_rate_limits(fyers_sample_bars):
    from tradebot.live.adapters.fyers.simulator import FyersSimulator

    with FyersSimulator(data=[fyers_sample_bars], enforce_rate_limits=True) as sim:
        headers = {"Authorization": f"A-100:{sim.login('A-100')}"}
        codes = [requests.get(sim.rest_api_url + "/funds", headers=headers).status_code for _ in range(15)]
        assert codes[:10] == [200] * 10 and 429 in codes[10:]
