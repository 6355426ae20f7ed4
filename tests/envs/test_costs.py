"""NSE cost model: hand-computed charges per product and side, schedules, validation."""

from __future__ import annotations

import datetime as dt

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from tradebot.envs.costs import CHARGE_NAMES, PRODUCTS, cost_vector, load_cost_table, order_charges
from tradebot.envs.engine import order_cost
from tradebot.envs.engine_config import EngineConfig
from tradebot.core.errors import UserInputError


def _check(charges: dict, expected: dict) -> None:
    for key, value in expected.items():
        assert charges[key] == pytest.approx(value, abs=1e-9), key
    assert charges["total"] == pytest.approx(sum(charges[k] for k in CHARGE_NAMES[:-1]), abs=1e-9)


def test_costs_equity_intraday_buy_100k_hand_computed():
    # Rs 1,00,000 bought intraday (1000 x 100):
    #   brokerage min(20, 0.03% x 1,00,000 = 30) = 20
    #   STT: 0 on the buy side
    #   exchange 0.00297% x 1,00,000 = 2.97; IPFT 10/crore = 0.10; SEBI 10/crore = 0.10
    #   stamp 0.003% x 1,00,000 = 3.00
    #   GST 18% x (20 + 2.97 + 0.10 + 0.10) = 0.18 x 23.17 = 4.1706
    #   total 20 + 2.97 + 0.1 + 0.1 + 3 + 4.1706 = 30.3406
    c = order_charges("equity_intraday", 1000.0, 100, "buy")
    _check(c, {"brokerage": 20.0, "stt": 0.0, "exchange": 2.97, "ipft": 0.1, "sebi": 0.1, "stamp_duty": 3.0,
               "dp": 0.0, "gst": 4.1706, "total": 30.3406})


def test_costs_equity_intraday_sell_100k_hand_computed():
    # STT 0.025% x 1,00,000 = 25 on the sell side; no stamp duty.
    # total 20 + 25 + 2.97 + 0.1 + 0.1 + 4.1706 = 52.3406
    c = order_charges("equity_intraday", 1000.0, 100, "sell")
    _check(c, {"brokerage": 20.0, "stt": 25.0, "stamp_duty": 0.0, "gst": 4.1706, "total": 52.3406})


def test_costs_equity_intraday_small_order_pays_percentage_brokerage():
    # Rs 5,000 (500 x 10): brokerage min(20, 0.03% x 5000 = 1.5) = 1.5
    # exchange 0.1485, IPFT 0.005, SEBI 0.005, stamp 0.003% x 5000 = 0.15
    # GST 0.18 x (1.5 + 0.1485 + 0.005 + 0.005) = 0.18 x 1.6585 = 0.29853
    # total 1.5 + 0.1485 + 0.005 + 0.005 + 0.15 + 0.29853 = 2.10703
    c = order_charges("equity_intraday", 500.0, 10, "buy")
    _check(c, {"brokerage": 1.5, "exchange": 0.1485, "stamp_duty": 0.15, "gst": 0.29853, "total": 2.10703})


def test_costs_equity_delivery_buy_hand_computed():
    # Rs 1,00,000 delivery buy: brokerage min(20, 0.3% x 1,00,000 = 300) = 20
    # STT 0.1% = 100 (both sides); exchange 2.97; IPFT 0.1; SEBI 0.1; stamp 0.015% = 15
    # GST 0.18 x 23.17 = 4.1706; total 20 + 100 + 2.97 + 0.2 + 15 + 4.1706 = 142.3406
    c = order_charges("equity_delivery", 1000.0, 100, "buy")
    _check(c, {"brokerage": 20.0, "stt": 100.0, "stamp_duty": 15.0, "dp": 0.0, "gst": 4.1706, "total": 142.3406})


def test_costs_equity_delivery_sell_includes_dp_charge():
    # Sell: STT 100, no stamp, DP charge 12.5 (GST applies to it):
    # GST 0.18 x (20 + 2.97 + 0.1 + 0.1 + 12.5) = 0.18 x 35.67 = 6.4206
    # total 20 + 100 + 2.97 + 0.2 + 12.5 + 6.4206 = 142.0906
    c = order_charges("equity_delivery", 1000.0, 100, "sell")
    _check(c, {"stt": 100.0, "stamp_duty": 0.0, "dp": 12.5, "gst": 6.4206, "total": 142.0906})


def test_costs_equity_delivery_small_order_brokerage_is_percentage():
    # Rs 2,000: brokerage min(20, 0.3% x 2000 = 6) = 6
    c = order_charges("equity_delivery", 200.0, 10, "buy")
    assert c["brokerage"] == pytest.approx(6.0)


def test_costs_index_futures_one_lot_hand_computed():
    # One NIFTY lot, 75 x 24,000 = Rs 18,00,000.
    # Buy: brokerage min(20, 0.03% = 540) = 20; exchange 0.00173% = 31.14; IPFT 1.8; SEBI 1.8;
    #      stamp 0.002% = 36; GST 0.18 x (20 + 31.14 + 1.8 + 1.8) = 0.18 x 54.74 = 9.8532
    #      total 20 + 31.14 + 3.6 + 36 + 9.8532 = 100.5932
    buy = order_charges("index_futures", 24000.0, 75, "buy")
    _check(buy, {"brokerage": 20.0, "stt": 0.0, "exchange": 31.14, "ipft": 1.8, "sebi": 1.8, "stamp_duty": 36.0,
                 "gst": 9.8532, "total": 100.5932})
    # Sell under the latest schedule (Finance Act 2026, from 2026-04-01): STT 0.05% = 900
    #      total 20 + 900 + 31.14 + 3.6 + 9.8532 = 964.5932
    sell = order_charges("index_futures", 24000.0, 75, "sell")
    _check(sell, {"stt": 900.0, "stamp_duty": 0.0, "total": 964.5932})


def test_costs_index_futures_sell_before_april_2026_uses_oct_2024_stt():
    # Schedule of 2024-10-01: futures STT 0.02% x 18,00,000 = 360; total 20 + 360 + 31.14 + 3.6 + 9.8532
    sell = order_charges("index_futures", 24000.0, 75, "sell", as_of=dt.date(2025, 6, 1))
    _check(sell, {"stt": 360.0, "total": 424.5932})


def test_cost_schedule_before_the_first_one_is_an_error():
    with pytest.raises(UserInputError, match="no cost schedule in force"):
        cost_vector("equity_intraday", as_of=dt.date(2020, 1, 1))


def test_cost_vector_unknown_product_is_an_error():
    with pytest.raises(UserInputError, match="unknown product"):
        cost_vector("options", None)


def test_costs_disabled_engine_config_gives_zero_vector():
    assert not EngineConfig(costs=False).cost_vector().any()
    assert order_cost(EngineConfig(costs=False).cost_vector(), 1000.0, 100.0, True) == 0.0


def test_costs_yaml_documents_sources_for_every_schedule():
    table = load_cost_table()
    assert {s.effective_from for s in table.schedules} == {dt.date(2024, 10, 1), dt.date(2026, 4, 1)}
    for s in table.schedules:
        assert s.sources and set(s.products) == set(PRODUCTS)


def test_costs_file_with_negative_rate_is_rejected(tmp_path):
    data = yaml.safe_load(load_cost_table.__globals__["COSTS_FILE"].read_text())
    data["schedules"][0]["products"]["equity_intraday"]["stt_sell_pct"] = -0.025
    path = tmp_path / "costs.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserInputError, match="stt_sell_pct"):
        cost_vector("equity_intraday", path=path)


def test_costs_file_unknown_key_is_rejected(tmp_path):
    data = yaml.safe_load(load_cost_table.__globals__["COSTS_FILE"].read_text())
    data["schedules"][0]["products"]["equity_intraday"]["stt_sel_pct"] = 0.025
    path = tmp_path / "costs.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserInputError, match="unknown config key"):
        cost_vector("equity_intraday", path=path)


@settings(max_examples=100, deadline=None)
@given(product=st.sampled_from(PRODUCTS), price=st.floats(0.0, 1e6), qty=st.floats(0.0, 1e5), buy=st.booleans())
def test_costs_are_never_negative(product, price, qty, buy):
    v = cost_vector(product)
    total = order_cost(v, price, qty, buy)
    assert total >= 0.0
    if price * qty == 0.0:
        assert total == 0.0
