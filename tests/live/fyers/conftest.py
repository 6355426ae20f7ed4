"""Fixtures for tests that drive the Fyers simulator with the real ``fyers_apiv3`` SDK.

* ``fyers_sim``: a started ``FyersSimulator`` on a free 127.0.0.1 port, the NIFTY 1-minute sample, step
  mode (the clock moves only with ``fyers_sim.advance``), tokens valid for an hour; stopped after.
* ``fyers_sdk``: the SDK pointed at ``fyers_sim`` (``sdk_patch.pointed_at``) with a token; a namespace with
  ``sim``, ``app_id``, ``token``, ``access_token`` ("APPID:TOKEN", what the sockets take), ``log_path``
  (a tmp folder; pass it to every SDK constructor), ``model`` (a sync ``FyersModel``), and the SDK modules
  ``fyersModel``, ``data_ws``, ``order_ws``. Patches are undone and SDK sockets closed after the
  test, which then checks that no SDK socket thread is left running.
"""

from __future__ import annotations

import threading
import time
import types

import pytest

from tradebot.live.adapters.fyers.simulator import DEFAULT_DATA, FyersSimulator

APP_ID = "SIMAPP-100"


@pytest.fixture(scope="session")
def fyers_sample_bars():
    """The NIFTY 1-minute sample, loaded once per session."""
    from tradebot.features.bars import load_bars

    return load_bars(DEFAULT_DATA)


@pytest.fixture
def fyers_sim(fyers_sample_bars):
    with FyersSimulator(data=[fyers_sample_bars], token_ttl_s=3600) as sim:
        yield sim


@pytest.fixture
def fyers_sdk(fyers_sim, tmp_path):
    from fyers_apiv3 import fyersModel
    from fyers_apiv3.FyersWebsocket import data_ws, order_ws

    from tradebot.live.adapters.fyers.simulator import sdk_patch

    log_path = str(tmp_path) + "/"
    token = fyers_sim.login(APP_ID)
    with sdk_patch.pointed_at(fyers_sim):
        model = fyersModel.FyersModel(client_id=APP_ID, token=token, log_path=log_path, is_async=False)
        yield types.SimpleNamespace(sim=fyers_sim, app_id=APP_ID, token=token, access_token=f"{APP_ID}:{token}",
                                    log_path=log_path, model=model, fyersModel=fyersModel, data_ws=data_ws,
                                    order_ws=order_ws)
    deadline = time.monotonic() + 5
    while _sdk_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _sdk_threads(), f"SDK threads still running after the test: {_sdk_threads()}"


_SDK_TARGETS = ("run_forever", "__ping", "__process_message_queue", "infinite_loop")


def _sdk_threads() -> list[str]:
    """Non-daemon threads of the SDK's sockets (they would keep the test process alive)."""
    return [t.name for t in threading.enumerate()
            if t.is_alive() and not t.daemon and any(target in t.name for target in _SDK_TARGETS)]
