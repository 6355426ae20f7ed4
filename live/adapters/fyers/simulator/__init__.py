"""A local Fyers API v3 simulator: REST, the binary data socket and the order socket over replayed bars.

It is a server, for rehearsing the Fyers adapter with the real ``fyers_apiv3`` SDK on 127.0.0.1; it
never imports the SDK (``sdk_patch`` does, to point the SDK at it). Shapes, field names and codes follow
``docs/fyers-api-v3.md`` (the shared copy).

How to run it::

    tradebot fyers simulate --data data/sample/NSE_NIFTY50-INDEX_1m.csv.gz --speed 60 --port 8765

    with FyersSimulator(data=["data/sample/NSE_SBIN-EQ_1d.csv.gz"], token_ttl_s=3600) as sim:
        token = sim.login()                # or the auth-code flow through SessionModel
        with sdk_patch.pointed_at(sim):    # tradebot.live.adapters.fyers.simulator.sdk_patch
            model = fyersModel.FyersModel(client_id="SIMAPP-100", token=token, log_path=tmp)
            model.place_order({...})
        sim.advance(4)                     # step mode: four ticks = one bar

Python API (``FyersSimulator``)
===============================

``FyersSimulator(data=None, host="127.0.0.1", port=0, speed=None, token_ttl_s=None, start="last_session",
slippage_bps=0.0, initial_funds=1_000_000.0, history_sees_future=False, app_id=None, secret=None,
tradable_indices=True, enforce_rate_limits=False)``

* ``data``: bar files (paths), ``tradebot.features.bars.Bars``, or ``(symbol, path-or-Bars)`` pairs; default the
  bundled NIFTY 1-minute sample. Symbols in Fyers form (from the file name ``NSE_SBIN-EQ_1m.csv.gz``).
* ``speed``: None = step mode (``advance``); X = X market seconds per wall second.
* ``start``: "last_session" (the last day of the data), "first", or a time (ISO text/epoch); earlier bars
  are the past (history, previous close).
* ``token_ttl_s``: token lifetime; None = until the next 06:00 IST, as Fyers does.
* ``app_id`` + ``secret``: when both are set, ``validate-authcode`` checks ``appIdHash``.
* ``history_sees_future``: history answers the whole file, not only bars started by the clock.
* ``tradable_indices``: accept orders on ``-INDEX`` symbols (real Fyers refuses them; the samples are NIFTY).
* ``enforce_rate_limits``: 10 requests/s overall and 10 orders/s → HTTP 429 with ``Retry-After``.

Methods: ``start()``/``stop()`` (or ``with``), ``serve_forever()``, ``login(app_id) -> token``,
``advance(ticks=1, to=None) -> int``, ``inject(kind, **params)``, ``clear_faults()``, ``orders()``,
``trades()``, ``positions()``, ``funds()``, ``state()``, ``now()``, ``ltp(symbol)``, ``reset()``,
``connections()``. Attributes: ``port``, ``base_url``, ``rest_api_url`` (``http://127.0.0.1:PORT/api/v3``),
``data_api_url``, ``symbol_token_url``, ``index_mapping_url``, ``data_ws_url``, ``order_ws_url``.

HTTP control routes (for tests in another process): ``GET /_sim/state``, ``POST /_sim/faults`` with
``{"kind": ..., **params}`` (the kinds of ``inject``), ``DELETE /_sim/faults``, ``POST /_sim/advance``
``{"ticks": n}`` or ``{"to": iso}``, ``POST /_sim/reset``, ``POST /_sim/login`` ``{"app_id": ...}``.

What it serves
==============

* REST ``/api/v3``: ``GET generate-authcode`` (auto-approves: 302 to
  ``redirect_uri?s=ok&code=200&auth_code=..&state=..``), ``POST validate-authcode``, ``GET profile|funds|holdings|positions|tradebook|orders``, ``POST|PATCH|DELETE
  orders/sync``, ``DELETE orders/{id}/sync``, ``POST|PATCH|DELETE multi-order/sync``, ``DELETE positions``
  (exit), ``POST logout``. Auth header ``APPID:TOKEN``; a refused token is HTTP 401 with -16 (unknown,
  revoked, after ``expire_tokens``), -8 (past ``exp``) or -15 (not a token).
* Data ``/data``: ``history`` (limits: 100 days per request for minute resolutions, 366 for D/1W/1M:
  -50 beyond; an empty answer is ``{"s":"no_data","candles":[]}``), ``quotes`` (GET and POST), ``depth``,
  ``marketStatus``, ``POST symbol-token``; ``GET /sym_details/index_hsm_mapping.json``.
* WS ``/hsm/v1-5/prod`` (binary, ``hsm.py``) and ``/trade/v3`` (JSON; ``authorization`` header, else 403).

Known deviations from Fyers: no 2FA page; one account; whole-quantity fills from four ticks per bar
(see ``market`` and ``orders``); a made-up book (bid/ask one tick from the last price); no charges in
P&L; CO/BO/MTF, GTT, smart orders, option chains, TBT and alerts are not served; sockets already open
keep streaming after ``expire_tokens``; history cannot be finer than the data's bars.

The SDK 3.2.0 TP/SL overlay (``stopLoss`` / ``takeProfit`` on an order, ``legType`` 1 points or 2 percent)
is modelled as the adapter assumes Fyers runs it: the entry's fill attaches a stop and a target to the
position; the first print at or through either closes the whole position at that print with a system
order (``orderTag`` ``2:Untagged``, ``parentId`` the entry); closing or flipping the position drops them.
How real Fyers executes the overlay is not documented: check it on a small order.
"""

from tradebot.live.adapters.fyers.simulator.faults import HttpFault
from tradebot.live.adapters.fyers.simulator.market import TICKS_PER_BAR
from tradebot.live.adapters.fyers.simulator.sim import DEFAULT_DATA, FyersSimulator

__all__ = ["FyersSimulator", "HttpFault", "DEFAULT_DATA", "TICKS_PER_BAR"]
