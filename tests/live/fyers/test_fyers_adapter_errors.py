"""Error translation at the adapter edge: for every adapter method, SDK answer -> our error -> SDK calls made.

One table (freqtrade's ``test_*_retries`` idea): each row is a recorded Fyers answer for the method's
SDK call; the expected outcome is our error class (or success) and how many times the SDK call was made
(1 = no retry). Sleeps are recorded, not slept.
"""

from __future__ import annotations

import math

import pytest

from tradebot.live.adapters.fyers import fakes
from tradebot.live.adapters.fyers.client import FyersExecutionClient
from tradebot.live.adapters.fyers.data import fetch_history
from tradebot.live.adapters.fyers.error_translation import (
    FyersRejected,
    FyersRetryable,
    HttpInfo,
    ReauthRequired,
    RetryPolicy,
    check,
    retry,
    retry_after_from,
)
from tradebot.live.adapters.fyers.ratelimit import RateLimiter, RateLimits
from tradebot.live.adapters.fyers.rest import FyersRest
from tradebot.live.ports import Intent, OrderNotSent, OrderRequest, Side
from tradebot.core.errors import FatalError, RejectedError, RetryableError, UserInputError

RETRIES = 2  # the policy used below: at most 2 retries -> at most 3 calls


def _order(coid: str = "TB0123456789ABCDEF01") -> OrderRequest:
    return OrderRequest(client_order_id=coid, symbol="NSE:SBIN-EQ", side=Side.BUY, qty=10, intent=Intent.ENTRY,
                        bar_ts=0, created_ns=0, stop_loss=5.0, take_profit=10.0)


def _client(model: fakes.FakeFyersModel, sleeps: list[float]) -> FyersExecutionClient:
    limiter = RateLimiter(RateLimits(per_second=10, per_minute=200, per_day=100_000), clock=lambda: 0.0,
                          sleep=lambda s: None)
    limiter._wait_needed = lambda now: 0.0  # type: ignore[method-assign]  # pacing is tested elsewhere
    rest = FyersRest(model, limiter=limiter, retry_policy=RetryPolicy(retries=RETRIES, backoff_s=0.1),
                     sleep=sleeps.append, http_info=model.http)
    return FyersExecutionClient(rest, submit_retry=RetryPolicy(retries=RETRIES, backoff_s=0.1), sleep=sleeps.append,
                                order_socket=False)


def _connected(model, sleeps) -> FyersExecutionClient:
    c = _client(model, sleeps)
    c.connect()
    return c


def _with_order(model, sleeps) -> FyersExecutionClient:
    c = _connected(model, sleeps)
    c.submit(_order())
    return c


COID = "TB0123456789ABCDEF01"

# method -> (the SDK method it calls, set-up (runs on successes), the call under test)
METHODS = {
    "connect": ("get_profile", _client, lambda c: c.connect()),
    "submit": ("place_order", _connected, lambda c: c.submit(_order())),
    "cancel": ("cancel_order", _with_order, lambda c: c.cancel(COID)),
    "modify": ("modify_order", _with_order, lambda c: c.modify(COID, qty=5)),
    "order_status": ("orderbook", _connected, lambda c: c.order_status(COID)),
    "order_status_reports": ("orderbook", _connected, lambda c: c.order_status_reports()),
    "refresh": ("tradebook", _connected, lambda c: c.refresh()),
    "account_report": ("funds", _connected, lambda c: (setattr(c, "_funds_dirty", True),
                                                        setattr(c, "funds_refresh_s", 0.0), c._read_funds())),
    "fetch_history": ("history", _client, lambda c: fetch_history(c.rest, "NSE:SBIN-EQ", "1d", "2024-01-01",
                                                                  "2024-01-31")),
}

OK_ANSWER = {"get_profile": fakes.PROFILE_OK, "place_order": fakes.PLACE_OK, "cancel_order": fakes.CANCEL_OK,
             "modify_order": fakes.MODIFY_OK, "orderbook": fakes.ORDERBOOK_EMPTY, "tradebook": fakes.TRADEBOOK_EMPTY,
             "history": fakes.HISTORY_OK, "funds": fakes.FUNDS_OK}
# case -> (answers for the SDK call (the last repeats), expected error (None = success), SDK calls made)
CASES = {
    "token_expired_-8": ([fakes.TOKEN_EXPIRED], ReauthRequired, 1),
    "token_invalid_-16": ([fakes.TOKEN_INVALID], ReauthRequired, 1),
    "http_401_code_-17": ([({"s": "error", "code": -17, "message": "token invalid or expired"}, HttpInfo(401))],
                          ReauthRequired, 1),
    "rate_limited_always": ([fakes.RATE_LIMITED], RetryableError, RETRIES + 1),
    "rate_limited_then_ok": ([fakes.RATE_LIMITED, "ok"], None, 2),
    "bad_gateway_then_ok": ([fakes.BAD_GATEWAY, "ok"], None, 2),
    "server_error_always": ([fakes.BAD_GATEWAY], RetryableError, RETRIES + 1),
    "network_-99_then_ok": ([fakes.NETWORK, "ok"], None, 2),
    "timeout_then_ok": ([fakes.TIMEOUT, "ok"], None, 2),
    "timeout_always": ([fakes.TIMEOUT], RetryableError, RETRIES + 1),
    "rejected_-50": ([fakes.REJECTED_TICK], RejectedError, 1),
    "rejected_rms_-99": ([fakes.REJECTED_RMS], RejectedError, 1),
}
# how a refusal surfaces per method: at connect the session is unusable; in a history fetch it is the input
REJECTION_AS = {"connect": ReauthRequired, "fetch_history": UserInputError}


# submit never resends an order that may have reached Fyers (defect 1: one decided order became 12 broker
# orders): after a timeout, a dropped connection or a 5xx it looks the id up (order book, trade book) and,
# not finding it, raises RetryableError (the loop keeps it UNKNOWN); only a 429 proves nothing was sent
SUBMIT_CASES = {
    "rate_limited_always": ([fakes.RATE_LIMITED], OrderNotSent, RETRIES + 1),
    "bad_gateway_then_ok": ([fakes.BAD_GATEWAY, "ok"], RetryableError, 1),
    "server_error_always": ([fakes.BAD_GATEWAY], RetryableError, 1),
    "network_-99_then_ok": ([fakes.NETWORK, "ok"], RetryableError, 1),
    "timeout_then_ok": ([fakes.TIMEOUT, "ok"], RetryableError, 1),
    "timeout_always": ([fakes.TIMEOUT], RetryableError, 1),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("method", list(METHODS))
def test_adapter_method_translates_sdk_answer_and_retries_bounded(method: str, case: str) -> None:
    sdk_call, setup, act = METHODS[method]
    answers, expected, calls = SUBMIT_CASES[case] if method == "submit" and case in SUBMIT_CASES else CASES[case]
    model = fakes.FakeFyersModel()
    sleeps: list[float] = []
    client = setup(model, sleeps)
    model.script(sdk_call, *[(OK_ANSWER[sdk_call], fakes.OK) if a == "ok" else a for a in answers])
    model.calls.clear()
    err_class = REJECTION_AS.get(method, RejectedError) if expected is RejectedError else expected
    if err_class is None:
        act(client)
    else:
        with pytest.raises(err_class) as info:
            act(client)
        if expected is ReauthRequired:
            assert isinstance(info.value, FatalError)
        if err_class is RejectedError:
            assert isinstance(info.value, FyersRejected) and info.value.code in (-50, -99)
    assert model.count(sdk_call) == calls, model.calls
    if case.startswith("rate_limited"):
        assert 2.0 in sleeps  # Retry-After honoured
    if expected in (ReauthRequired, RejectedError):
        assert sleeps == []  # never retried, never waited
    if method == "submit" and expected is RetryableError:
        assert not isinstance(info.value, OrderNotSent)  # it may be at Fyers: UNKNOWN for the loop
        assert model.count("orderbook") == 3 and model.count("tradebook") == 3  # looked up, never resent
    if method == "submit" and expected is OrderNotSent:
        assert model.count("orderbook") == 0  # a 429 proves it was not sent: resent (bounded) without a look-up


def test_submit_after_timeout_finds_the_order_instead_of_sending_it_again() -> None:
    model = fakes.FakeFyersModel()
    sleeps: list[float] = []
    c = _connected(model, sleeps)
    model.calls.clear()
    model.script("place_order", fakes.TIMEOUT)
    model.script("orderbook", {"s": "ok", "code": 200, "orderBook": [fakes.order_item("TB0123456789ABCDEF01")]})
    u = c.submit(_order())
    assert model.count("place_order") == 1 and c.send_counts == {"TB0123456789ABCDEF01": 1}
    assert u.broker_order_id == "23080400000001" and u.status.value == "ACCEPTED"
    assert c.submit(_order()).client_order_id == "TB0123456789ABCDEF01"  # known id: answered locally
    assert model.count("place_order") == 1


def test_submit_code_201_is_looked_up() -> None:
    model = fakes.FakeFyersModel()
    c = _connected(model, [])
    model.calls.clear()
    model.script("place_order", {"s": "ok", "code": 201, "message": "request sent, not acknowledged"})
    model.script("orderbook", {"s": "ok", "code": 200, "orderBook": [fakes.order_item("TB0123456789ABCDEF01")]})
    assert c.submit(_order()).broker_order_id == "23080400000001"
    assert model.count("orderbook") == 1


def test_check_copies_the_sdks_shared_error_dict() -> None:
    shared = {"s": "error", "code": -99, "message": "Bad request"}
    with pytest.raises(FyersRetryable):
        check(shared, "funds", HttpInfo(error="connection"))
    ok = {"s": "ok", "code": 200, "data": {}}
    out = check(ok, "funds", HttpInfo(status=200))
    assert out == ok and out is not ok


def test_retry_after_headers() -> None:
    assert retry_after_from({"Retry-After": "3"}) == 3.0
    assert retry_after_from({"X-Retry-After-Ms": "1500", "Retry-After": "9"}) == 1.5
    assert retry_after_from({}) is None


def test_retry_never_retries_fatal_or_rejected() -> None:
    for err in (ReauthRequired("x"), FyersRejected("y"), FatalError("z")):
        n = {"calls": 0}

        def fn(e=err):
            n["calls"] += 1
            raise e
        with pytest.raises(type(err)):
            retry(fn, RetryPolicy(retries=5), sleep=lambda s: None)
        assert n["calls"] == 1


def test_retry_backoff_doubles_and_is_capped() -> None:
    sleeps: list[float] = []

    def fn():
        raise FyersRetryable("down")
    with pytest.raises(FyersRetryable):
        retry(fn, RetryPolicy(retries=5, backoff_s=1.0, max_sleep_s=4.0), sleep=sleeps.append)
    assert sleeps == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert math.isclose(RetryPolicy(max_retry_after_s=5).delay(0, FyersRetryable("x", retry_after=100)), 5.0)
