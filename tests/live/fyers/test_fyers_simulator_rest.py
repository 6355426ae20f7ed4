"""The simulator's REST API driven by the real fyers_apiv3 SDK (auth, account, history, quotes, orders)."""

from __future__ import annotations

import base64
import json
import time
import urllib.parse

import pytest
import requests

pytestmark = pytest.mark.timeout(60)

NIFTY = "NSE:NIFTY50-INDEX"
IST_0912 = 1615520700  # 2021-03-12 09:15 IST, the first bar of the sample's last session


def _jwt_payload(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "==="))


def _order(**kw):
    body = {"symbol": NIFTY, "qty": 50, "type": 2, "side": 1, "productType": "INTRADAY", "limitPrice": 0,
            "stopPrice": 0, "validity": "DAY", "disclosedQty": 0, "offlineOrder": False}
    body.update(kw)
    return body


def test_auth_code_flow_with_session_model_gives_a_working_token(fyers_sdk):
    session = fyers_sdk.fyersModel.SessionModel(client_id="MYAPP-100", secret_key="s3cret",
                                                redirect_uri="http://127.0.0.1:9/cb", response_type="code",
                                                grant_type="authorization_code", state="xyz")
    url = session.generate_authcode()
    assert url.startswith(fyers_sdk.sim.rest_api_url + "/generate-authcode?")
    login = requests.get(url, allow_redirects=False, timeout=5)
    assert login.status_code == 302
    redirect = urllib.parse.urlparse(login.headers["Location"])
    params = urllib.parse.parse_qs(redirect.query)
    assert redirect.path == "/cb" and params["state"] == ["xyz"] and params["s"] == ["ok"]
    session.set_token(params["auth_code"][0])
    reply = session.generate_token()
    assert reply["s"] == "ok" and reply["code"] == 200
    payload = _jwt_payload(reply["access_token"])
    assert payload["exp"] > time.time() + 3000 and payload["hsm_key"]
    model = fyers_sdk.fyersModel.FyersModel(client_id="MYAPP-100", token=reply["access_token"],
                                            log_path=fyers_sdk.log_path)
    assert model.get_profile()["data"]["fy_id"]


def test_validate_authcode_errors(fyers_sdk):
    url = fyers_sdk.sim.rest_api_url + "/validate-authcode"
    assert requests.post(url, json={"grant_type": "x", "appIdHash": "h", "code": "c"}).json()["code"] == -441
    assert requests.post(url, json={"grant_type": "authorization_code", "code": "c"}).json()["code"] == -371
    assert requests.post(url, json={"grant_type": "authorization_code", "appIdHash": "h"}).json()["code"] == -374


def test_secret_is_checked_when_configured(fyers_sample_bars, tmp_path):
    from fyers_apiv3 import fyersModel

    from tradebot.live.adapters.fyers.simulator import FyersSimulator, sdk_patch

    with FyersSimulator(data=[fyers_sample_bars], app_id="MYAPP-100", secret="right") as sim, \
            sdk_patch.pointed_at(sim):
        for secret, expected in (("wrong", -371), ("right", 200)):
            session = fyersModel.SessionModel(client_id="MYAPP-100", secret_key=secret, redirect_uri="http://x/",
                                              response_type="code", grant_type="authorization_code")
            session.set_token("anycode")
            assert session.generate_token()["code"] == expected


def test_account_routes(fyers_sdk):
    model = fyers_sdk.model
    profile = model.get_profile()
    assert profile["s"] == "ok" and {"name", "fy_id", "email_id", "pan"} <= set(profile["data"])
    funds = model.funds()["fund_limit"]
    assert [f["id"] for f in funds] == list(range(1, 11))
    assert funds[0]["title"] == "Total Balance" and funds[9]["title"] == "Available Balance"
    assert funds[9]["equityAmount"] == 1_000_000.0
    assert model.holdings()["holdings"] == []
    assert model.positions()["netPositions"] == [] and model.tradebook()["tradeBook"] == []
    assert model.orderbook()["orderBook"] == []


def test_bad_tokens_are_401_with_fyers_codes(fyers_sdk):
    model = fyers_sdk.fyersModel.FyersModel(client_id=fyers_sdk.app_id, token="a.b.c", log_path=fyers_sdk.log_path)
    assert model.get_profile() == {"s": "error", "code": -16, "message": "Could not authenticate the user"}
    reply = requests.get(fyers_sdk.sim.rest_api_url + "/funds", headers={"Authorization": "APP:notatoken"})
    assert reply.status_code == 401 and reply.json()["code"] == -15


def test_token_past_its_exp_is_refused(fyers_sample_bars, tmp_path):
    from tradebot.live.adapters.fyers.simulator import FyersSimulator

    with FyersSimulator(data=[fyers_sample_bars], token_ttl_s=0.5) as sim:
        token = sim.login("A-100")
        headers = {"Authorization": f"A-100:{token}"}
        assert requests.get(sim.rest_api_url + "/profile", headers=headers).status_code == 200
        time.sleep(1.6)
        reply = requests.get(sim.rest_api_url + "/profile", headers=headers)
        assert reply.status_code == 401 and reply.json()["code"] == -8


def test_history_matches_the_bar_file_and_hides_the_future(fyers_sdk, fyers_sample_bars):
    model, sim = fyers_sdk.model, fyers_sdk.sim
    req = {"symbol": NIFTY, "resolution": "1", "date_format": "1", "range_from": "2021-03-10",
           "range_to": "2021-03-12", "cont_flag": "1"}
    candles = model.history(req)["candles"]
    frame = fyers_sample_bars.frame.loc["2021-03-10"]
    assert len(candles) == len(frame) == 375
    first = frame.iloc[0]
    assert candles[0] == [int(frame.index[0].timestamp()), first.open, first.high, first.low, first.close, 0]
    sim.advance(4 * 5 + 2)  # five bars of the 12th and two ticks of the sixth
    candles = model.history(req)["candles"]
    assert len(candles) == 375 + 6
    bar = fyers_sample_bars.frame.loc["2021-03-12"].iloc[5]
    second = bar.low if bar.close >= bar.open else bar.high  # open, then the nearer extreme
    assert candles[-1] == [IST_0912 + 5 * 60, bar.open, max(bar.open, second), min(bar.open, second), second, 0]
    five = model.history({**req, "resolution": "5", "range_from": "2021-03-12"})["candles"]
    day = fyers_sample_bars.frame.loc["2021-03-12"].iloc[:5]
    assert five[0] == [IST_0912, day.open.iloc[0], day.high.max(), day.low.min(), day.close.iloc[-1], 0]
    daily = model.history({**req, "resolution": "D", "range_from": "2021-03-01"})["candles"]
    assert len(daily) == 9 and daily[0][0] == int(fyers_sample_bars.frame.index[0].normalize().timestamp())


def test_history_limits_and_errors(fyers_sdk):
    model = fyers_sdk.model
    base = {"symbol": NIFTY, "resolution": "1", "date_format": "0", "cont_flag": "1"}
    too_long = model.history({**base, "range_from": 1600000000, "range_to": 1600000000 + 101 * 86400})
    assert too_long["s"] == "error" and too_long["code"] == -50 and "100 days" in too_long["message"]
    ok_daily = model.history({**base, "resolution": "D", "range_from": 1600000000,
                              "range_to": 1600000000 + 366 * 86400})
    assert ok_daily["s"] in ("ok", "no_data")
    assert model.history({**base, "resolution": "D", "range_from": 1600000000,
                          "range_to": 1600000000 + 367 * 86400})["code"] == -50
    assert model.history({**base, "symbol": "NSE:NOPE-EQ", "range_from": 1, "range_to": 2})["code"] == -300
    assert model.history({**base, "resolution": "7", "range_from": 1, "range_to": 2})["code"] == -50
    empty = model.history({**base, "range_from": 1600000000, "range_to": 1600000000 + 86400})
    assert empty == {"s": "no_data", "code": 200, "message": "", "candles": []}


def test_quotes_depth_market_status(fyers_sdk):
    model = fyers_sdk.model
    fyers_sdk.sim.advance(1)
    quotes = model.quotes({"symbols": f"{NIFTY},NSE:NOPE-EQ"})
    assert quotes["s"] == "ok"
    nifty, bad = quotes["d"]
    assert nifty["n"] == NIFTY and nifty["v"]["lp"] == 15327.65 and nifty["v"]["prev_close_price"] == 15168.15
    assert bad["s"] == "error"
    assert model.depth({"symbol": NIFTY, "ohlcv_flag": 1})["code"] == -300
    status = model.market_status()["marketStatus"]
    assert {"exchange", "segment", "market_type", "status"} <= set(status[0]) and status[0]["status"] == "OPEN"


def test_market_order_lifecycle_with_tag_positions_tradebook_funds(fyers_sdk):
    model, sim = fyers_sdk.model, fyers_sdk.sim
    placed = model.place_order(_order(orderTag="entry1"))
    assert placed["s"] == "ok" and placed["code"] == 1101 and placed["id"] in placed["message"]
    book = model.orderbook({"order_tag": "1:entry1"})["orderBook"]
    assert len(book) == 1 and book[0]["status"] == 6 and book[0]["orderTag"] == "1:entry1"
    sim.advance(1)  # the next tick: the open of 2021-03-12 09:15
    order = model.orderbook({"id": placed["id"]})["orderBook"][0]
    assert order["status"] == 2 and order["tradedPrice"] == 15327.65 and order["filledQty"] == 50
    trades = model.tradebook()["tradeBook"]
    assert trades[0]["orderNumber"] == placed["id"] and trades[0]["orderTag"] == "1:entry1"
    sim.advance(1)  # 15336.30
    pos = model.positions()
    row = pos["netPositions"][0]
    assert row["id"] == f"{NIFTY}-INTRADAY" and row["netQty"] == 50 and row["avgPrice"] == 15327.65
    assert row["unrealized_profit"] == pytest.approx((15336.30 - 15327.65) * 50)
    model.place_order(_order(side=-1))
    sim.advance(1)  # 15291.40
    row = model.positions()["netPositions"][0]
    assert row["netQty"] == 0 and row["realized_profit"] == pytest.approx((15291.40 - 15327.65) * 50)
    funds = {f["id"]: f["equityAmount"] for f in model.funds()["fund_limit"]}
    assert funds[4] == pytest.approx(row["realized_profit"]) and funds[10] == pytest.approx(1e6 + funds[4])


def test_limit_modify_cancel(fyers_sdk):
    model, sim = fyers_sdk.model, fyers_sdk.sim
    placed = model.place_order(_order(type=1, limitPrice=15000.0))
    sim.advance(4)
    assert model.orderbook({"id": placed["id"]})["orderBook"][0]["status"] == 6
    modified = model.modify_order({"id": placed["id"], "type": 1, "limitPrice": 15300.0, "qty": 75})
    assert modified["code"] == 1102
    sim.advance(8)  # the 09:16 bar trades down to 15306.95, the 09:17 bar lower
    order = model.orderbook({"id": placed["id"]})["orderBook"][0]
    assert order["qty"] == 75 and order["status"] == (2 if order["filledQty"] else 6)
    second = model.place_order(_order(type=1, limitPrice=14000.0))
    cancelled = model.cancel_order({"id": second["id"]})
    assert cancelled["code"] == 1103
    assert model.orderbook({"id": second["id"]})["orderBook"][0]["status"] == 1
    again = model.cancel_order({"id": second["id"]})
    assert again["s"] == "error"
    assert model.cancel_order({"id": "999"})["code"] == -51


def test_limit_and_stop_fill_prices(fyers_sdk, fyers_sample_bars):
    model, sim = fyers_sdk.model, fyers_sdk.sim
    # ticks of 09:15: 15327.65, 15336.30, 15291.40, 15326.90 (falling bar: open, high, low, close)
    marketable = model.place_order(_order(type=1, limitPrice=15400.0))
    resting = model.place_order(_order(type=1, limitPrice=15300.0))
    stop = model.place_order(_order(type=3, side=-1, stopPrice=15168.15 - 0.15))
    stop_up = model.place_order(_order(type=4, side=1, stopPrice=15330.0, limitPrice=15335.0))
    sim.advance(4)
    book = {o["id"]: o for o in model.orderbook()["orderBook"]}
    assert book[marketable["id"]]["tradedPrice"] == 15327.65  # price improvement at its first tick
    assert book[resting["id"]]["tradedPrice"] == 15300.0  # crossed later: its limit
    assert book[stop["id"]]["status"] == 6
    # the stop-limit buy triggers at 15336.30 (above its limit), then rests at 15335 and is hit at 15291.40
    assert book[stop_up["id"]]["status"] == 2 and book[stop_up["id"]]["tradedPrice"] == 15335.0


@pytest.mark.parametrize("change, code", [
    ({"symbol": "NSE:NOPE-EQ"}, -300), ({"qty": 0}, -50), ({"qty": 1.5}, -50), ({"side": 2}, -50),
    ({"type": 9}, -50), ({"productType": "BO"}, -50), ({"productType": "XYZ"}, -50),
    ({"type": 1, "limitPrice": 0}, -50), ({"type": 1, "limitPrice": 15000.03}, -50),
    ({"type": 3, "stopPrice": 0}, -390), ({"type": 3, "stopPrice": 100.0}, -390),
    ({"orderTag": "bad tag!"}, -50), ({"validity": "GTC"}, -50),
])
def test_invalid_orders_are_refused_with_doc_codes(fyers_sdk, change, code):
    reply = fyers_sdk.model.place_order(_order(**change))
    assert reply["s"] == "error" and reply["code"] == code
    assert fyers_sdk.model.orderbook()["orderBook"] == []


def test_margin_rejection_creates_a_rejected_order(fyers_sdk):
    reply = fyers_sdk.model.place_order(_order(qty=5000, productType="CNC"))
    assert reply["s"] == "error" and reply["code"] == -99 and reply["id"]
    order = fyers_sdk.model.orderbook({"id": reply["id"]})["orderBook"][0]
    assert order["status"] == 5 and "RMS" in order["message"]


def test_exit_positions_and_basket_orders(fyers_sdk):
    model, sim = fyers_sdk.model, fyers_sdk.sim
    assert model.exit_positions()["code"] == -352
    basket = model.place_basket_orders([_order(), _order(qty=25, productType="CNC")])
    assert [d["body"]["code"] for d in basket["data"]] == [1101, 1101]
    sim.advance(1)
    assert {p["netQty"] for p in model.positions()["netPositions"]} == {50, 25}
    assert model.exit_positions()["s"] == "ok"
    sim.advance(1)
    assert {p["netQty"] for p in model.positions()["netPositions"]} == {0}
    assert model.holdings()["holdings"] == []


def test_async_model(fyers_sdk):
    import asyncio

    async def run():
        model = fyers_sdk.fyersModel.FyersModel(client_id=fyers_sdk.app_id, token=fyers_sdk.token, is_async=True,
                                                log_path=fyers_sdk.log_path)
        try:
            placed = await model.place_order(_order(qty=1))
            book = await model.orderbook({"id": placed["id"]})
            return (await model.get_profile())["s"], placed["code"], book["orderBook"][0]["status"]
        finally:
            await model.close()

    assert asyncio.run(run()) == ("ok", 1101, 6)
