"""``PaperBroker``: an ``ExecutionClient`` that fills through the backtester's fill engine.

Each symbol is one engine account (``tradebot.envs.account.EngineAccount``, ``initial_cash`` of the
engine config). When the loop hands it a closed bar (``on_bar(bar, atr)``), the broker runs
``tradebot.envs.engine.step_bar`` once for that bar (``EngineAccount.step``) with the working order
turned into the engine's action, exactly as ``run_backtest`` runs it with the action decided at the
previous bar: same fill prices, slippage, costs, stop-loss / take-profit, square-off and session-end
rules, same numbers. Nothing
about fills is computed here; this module only translates orders to actions and the engine's state
changes back to fills and order updates.

Order semantics (those of the engine):

* an entry (not ``reduce_only``) is a market order for ``qty`` that fills at the next bar's open; the
  engine caps it by its margin rules at the fill price (leverage, ``max_notional``) and attaches the
  stop and take-profit at ``stop_loss`` / ``take_profit`` price distances from the fill (its own
  ATR multiples when the order's distances equal them). It is accepted only when the symbol is flat;
* an exit (``reduce_only``) closes the whole position at the next bar's open; if the position's stop
  or take-profit already closed it at that open, the exit is cancelled;
* one working order per symbol; partial closes and pyramiding are refused (``RejectedError``).

Sized like this, an entry decided at bar t with the engine's risk sizing (``tradebot.live.risk.RiskEngine``
does that, at bar t's equity and ATR) gets exactly the quantity ``run_backtest`` gives it, so a paper
session replaying a bar file with an action sequence makes the trades ``run_backtest`` makes.

The broker keeps its own state (accounts, orders, fills) in SQLite (``path``; WAL mode), one
transaction per submit and per bar, like a venue that outlives the trading process; bars already
processed are ignored, so replaying a bar after a crash is harmless. ``submit`` is idempotent on
the client order id and counts every call (``submit_counts``), so a test can show no order was sent
twice. Optionally it enforces a broker's order-rate limits (``rate_limits=(per_second, per_minute)``,
Fyers: 10 and 200) by raising ``RetryableError``, as the real API answers.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tradebot.envs.account import EngineAccount, refused_entry_reason
from tradebot.envs.engine import EXIT_REASON_NAMES, Action, ExitReason
from tradebot.envs.engine_config import EngineConfig
from tradebot.envs.fill_rules import FillRules
from tradebot.envs.market_data import market_row, row_atr
from tradebot.live.ports import (
    NS_PER_SECOND,
    OrderNotSent,
    AccountReport,
    Bar,
    Clock,
    ExecutionClient,
    Fill,
    OrderRequest,
    OrderStatus,
    OrderUpdate,
    PositionReport,
    Side,
    WallClock,
)
from tradebot.core.errors import RejectedError, RetryableError, UserInputError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    symbol TEXT PRIMARY KEY, state BLOB NOT NULL, prev_row BLOB, bar_index INTEGER NOT NULL,
    last_ts INTEGER NOT NULL, position_id TEXT NOT NULL, opened_ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT PRIMARY KEY, symbol TEXT NOT NULL, request TEXT NOT NULL, status TEXT NOT NULL,
    filled_qty REAL NOT NULL, avg_price REAL, reason TEXT NOT NULL, submit_calls INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS fills (fill_id TEXT PRIMARY KEY, ts INTEGER NOT NULL, data TEXT NOT NULL);
"""

_EXIT_KIND = {int(r): EXIT_REASON_NAMES[int(r)] for r in ExitReason}
_EXIT_SUFFIX = {int(ExitReason.STOP): "SL", int(ExitReason.TAKE_PROFIT): "TP", int(ExitReason.SQUARE_OFF): "SQ",
                int(ExitReason.END_OF_DATA): "EOD"}


@dataclass
class _Account:
    engine: EngineAccount
    prev_row: np.ndarray | None
    bar_index: int  # bars processed
    last_ts: int
    position_id: str  # client order id of the entry that opened the open position ("" when flat)
    opened_ts: int


@dataclass
class _Order:
    request: OrderRequest
    status: OrderStatus
    filled_qty: float
    avg_price: float
    reason: str
    submit_calls: int
    updated_ns: int

    def update(self) -> OrderUpdate:
        r = self.request
        return OrderUpdate(client_order_id=r.client_order_id, symbol=r.symbol, status=self.status, ts=self.updated_ns,
                           filled_qty=self.filled_qty, avg_price=self.avg_price, reason=self.reason,
                           broker_order_id=f"PAPER-{r.client_order_id}")


def _fill_to_json(f: Fill) -> str:
    return json.dumps({**{k: getattr(f, k) for k in f.__slots__}, "side": f.side.value})


def _fill_from_json(text: str) -> Fill:
    d = json.loads(text)
    d["side"] = Side(d["side"])
    return Fill(**d)


class PaperBroker(ExecutionClient):
    """Paper trading through ``tradebot.envs.engine.step_bar``; see the module docstring."""

    name = "paper"
    idempotent_submit = True  # a known client order id never makes a second order (the venue says so itself)

    def __init__(self, engine: EngineConfig, symbols: Sequence[str], path: str | Path | None = None,
                 clock: Clock | None = None, rate_limits: tuple[int, int] | None = None):
        if not symbols:
            raise UserInputError("the paper broker needs at least one symbol")
        self.config = engine
        self.symbols = tuple(symbols)
        self.path = str(path) if path is not None else ":memory:"
        self.account_id = f"paper:{Path(self.path).resolve()}" if self.path != ":memory:" else None
        self.clock = clock or WallClock()
        self.rate_limits = rate_limits
        self._rules = FillRules(engine)
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._accounts: dict[str, _Account] = {}
        self._orders: dict[str, _Order] = {}
        self._working: dict[str, str] = {}  # symbol -> client order id of its working order
        self._fills: list[Fill] = []
        self._events: list[OrderUpdate | Fill] = []
        self._calls: deque[int] = deque()

    # ---------------------------------------------------------------------- lifecycle
    @property
    def is_connected(self) -> bool:
        return self._db is not None

    def connect(self) -> None:
        with self._lock:
            if self._db is not None:
                return
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            if self.path != ":memory:":
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
            fingerprint = self.config.model_dump_json()
            row = db.execute("SELECT value FROM meta WHERE key='engine'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('engine', ?)", (fingerprint,))
            elif row[0] != fingerprint:
                db.close()
                raise UserInputError(f"{self.path}: paper-broker state made with another engine config; "
                                     "use the same engine settings or a new paper state file")
            self._db = db
            self._load()

    def disconnect(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _load(self) -> None:
        db = self._need()
        self._accounts = {}
        for sym, state, prev, idx, last, pid, opened in db.execute(
                "SELECT symbol, state, prev_row, bar_index, last_ts, position_id, opened_ts FROM accounts"):
            self._accounts[sym] = _Account(EngineAccount.from_bytes(state),
                                           None if prev is None else np.frombuffer(prev, dtype=np.float64).copy(),
                                           int(idx), int(last), pid, int(opened))
        with self._tx():
            for sym in self.symbols:
                if sym not in self._accounts:
                    acct = _Account(EngineAccount.new(self._rules), None, 0, -1, "", 0)
                    self._accounts[sym] = acct
                    self._save_account(sym, acct)
        self._orders = {}
        self._working = {}
        for coid, req, status, fq, avg, reason, calls, upd in db.execute(
                "SELECT client_order_id, request, status, filled_qty, avg_price, reason, submit_calls, updated_ns "
                "FROM orders ORDER BY rowid"):
            o = _Order(OrderRequest.from_dict(json.loads(req)), OrderStatus(status), fq,
                       math.nan if avg is None else avg, reason, int(calls), int(upd))
            self._orders[coid] = o
            if o.status is OrderStatus.ACCEPTED:
                self._working[o.request.symbol] = coid
        self._fills = [_fill_from_json(d) for (d,) in db.execute("SELECT data FROM fills ORDER BY rowid")]

    def _need(self) -> sqlite3.Connection:
        if self._db is None:
            raise RetryableError("paper broker is not connected; call connect() first")
        return self._db

    class _Tx:
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self):
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, exc, tb):
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
            return False

    def _tx(self) -> "_Tx":
        return PaperBroker._Tx(self._need())

    def _save_account(self, symbol: str, a: _Account) -> None:
        self._need().execute(
            "INSERT OR REPLACE INTO accounts VALUES (?, ?, ?, ?, ?, ?, ?)",
            (symbol, a.engine.to_bytes(), None if a.prev_row is None else a.prev_row.tobytes(), a.bar_index, a.last_ts,
             a.position_id, a.opened_ts))

    def _save_order(self, o: _Order) -> None:
        r = o.request
        self._need().execute(
            "INSERT OR REPLACE INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.client_order_id, r.symbol, json.dumps(r.to_dict()), o.status.value, o.filled_qty,
             None if math.isnan(o.avg_price) else o.avg_price, o.reason, o.submit_calls, o.updated_ns))

    # ------------------------------------------------------------------------ orders
    def _rate_check(self) -> None:
        if self.rate_limits is None:
            return
        now = self.clock.now_ns()
        per_s, per_min = self.rate_limits
        while self._calls and self._calls[0] <= now - 60 * NS_PER_SECOND:
            self._calls.popleft()
        last_s = sum(1 for t in self._calls if t > now - NS_PER_SECOND)
        if last_s >= per_s or len(self._calls) >= per_min:
            raise OrderNotSent(f"paper broker: order rate limit ({per_s}/s, {per_min}/min) exceeded",
                               retry_after=1.0)
        self._calls.append(now)

    def submit(self, order: OrderRequest) -> OrderUpdate:
        with self._lock:
            self._need()
            known = self._orders.get(order.client_order_id)
            if known is not None:  # idempotent: never a second order for one id
                known.submit_calls += 1
                with self._tx():
                    self._save_order(known)
                return known.update()
            self._rate_check()
            now = self.clock.now_ns()
            reason = self._refusal(order)
            rec = _Order(order, OrderStatus.REJECTED if reason else OrderStatus.ACCEPTED, 0.0, math.nan,
                         reason or "", 1, now)
            self._orders[order.client_order_id] = rec
            if not reason:
                self._working[order.symbol] = order.client_order_id
            with self._tx():
                self._save_order(rec)
            if reason:
                raise RejectedError(f"paper broker rejected {order.client_order_id} ({order.symbol}): {reason}")
            return rec.update()

    def _refusal(self, order: OrderRequest) -> str | None:
        acct = self._accounts.get(order.symbol)
        if acct is None:
            return f"unknown symbol (this paper broker trades {', '.join(self.symbols)})"
        lot = self._rules.lot
        if not (order.qty > 0 and math.isfinite(order.qty)) or order.qty % lot != 0:
            return f"quantity {order.qty} is not a positive whole number of lots of {lot:g}"
        if order.order_type != "MARKET":
            return f"order type {order.order_type} not supported (market orders only)"
        if order.symbol in self._working:
            return "an order is already working for this symbol (one at a time)"
        held = acct.engine.qty
        if order.reduce_only:
            if held == 0.0 or (held > 0) == (order.side is Side.BUY):
                return "reduce-only order does not reduce the position"
            if order.qty != abs(held):
                return f"exit quantity {order.qty:g} is not the whole position {abs(held):g}"
        else:
            if held != 0.0:
                return "entries are taken only when flat"
            if order.side is Side.SELL and not self._rules.shorts_allowed:
                return "short selling is not allowed for this product"
        return None

    def cancel(self, client_order_id: str) -> OrderUpdate:
        with self._lock:
            self._need()
            o = self._orders.get(client_order_id)
            if o is None:
                raise RejectedError(f"paper broker: unknown order {client_order_id}")
            if o.status is OrderStatus.ACCEPTED:
                self._rate_check()
                o.status, o.reason, o.updated_ns = OrderStatus.CANCELED, "canceled by request", self.clock.now_ns()
                self._working.pop(o.request.symbol, None)
                with self._tx():
                    self._save_order(o)
                self._events.append(o.update())
            return o.update()

    def cancel_all(self, symbol: str | None = None) -> list[OrderUpdate]:
        with self._lock:
            working = [c for s, c in self._working.items() if symbol is None or s == symbol]
            return [self.cancel(c) for c in working]

    # ----------------------------------------------------------------------- reports
    def order_status(self, client_order_id: str) -> OrderUpdate | None:
        with self._lock:
            o = self._orders.get(client_order_id)
            return o.update() if o else None

    def order_status_reports(self) -> list[OrderUpdate]:
        with self._lock:
            return [o.update() for o in self._orders.values()]

    def fill_reports(self, since_ns: int | None = None) -> list[Fill]:
        with self._lock:
            return [f for f in self._fills if since_ns is None or f.ts >= since_ns]

    def position_reports(self) -> list[PositionReport]:
        with self._lock:
            out = []
            for sym, a in self._accounts.items():
                e = a.engine
                if e.qty != 0.0:
                    out.append(PositionReport(symbol=sym, qty=e.qty, avg_price=e.entry_price, stop_price=e.stop_price,
                                              take_profit_price=e.take_profit_price, opened_ts=a.opened_ts,
                                              position_id=a.position_id))
            return out

    def account_report(self) -> AccountReport:
        with self._lock:
            accts = self._accounts.values()
            return AccountReport(ts=max((a.last_ts for a in accts), default=-1),
                                 equity=float(sum(a.engine.equity for a in accts)),
                                 cash=float(sum(a.engine.cash for a in accts)),
                                 realized_pnl=float(sum(a.engine.realized_pnl for a in accts)),
                                 costs=float(sum(a.engine.costs_total for a in accts)))

    def poll_events(self) -> list[OrderUpdate | Fill]:
        with self._lock:
            out, self._events = self._events, []
            return out

    def submit_counts(self) -> dict[str, int]:
        """How many times ``submit`` was called for each client order id (1 = sent once)."""
        with self._lock:
            return {c: o.submit_calls for c, o in self._orders.items()}

    def last_bar_ts(self, symbol: str) -> int:
        """Start of the last bar this broker processed for ``symbol`` (-1: none)."""
        with self._lock:
            return self._accounts[symbol].last_ts

    # -------------------------------------------------------------------- the market
    def on_bar(self, bar: Bar, atr: float) -> None:
        """Run the engine through one closed bar of ``bar.symbol``; ``atr`` is that bar's ATR (it
        sizes, stops and slips the orders decided at this bar, which fill at the next one)."""
        with self._lock:
            self._need()
            acct = self._accounts.get(bar.symbol)
            if acct is None:
                raise UserInputError(f"paper broker got a bar for {bar.symbol}; it trades {', '.join(self.symbols)}")
            if bar.ts <= acct.last_ts:
                return  # already processed (a replay after a restart)
            row = market_row(bar, atr, self.config)
            prev = acct.prev_row
            coid = self._working.get(bar.symbol)
            order = self._orders[coid] if coid is not None and self._orders[coid].request.bar_ts < bar.ts else None
            action, rules = self._action(order, row_atr(prev))
            before = acct.engine.copy()
            acct.engine.step(prev, row, action, rules, final=bar.final)
            fills, updates = self._outcome(acct, before, order, bar, prev, row)
            if order is not None and order.status is not OrderStatus.ACCEPTED:
                self._working.pop(bar.symbol, None)
            # the step numbers bars inside its two-row window; keep the account's own bar numbers
            entered = order is not None and not order.request.reduce_only and order.status is OrderStatus.FILLED
            acct.engine.renumber(acct.bar_index, acct.bar_index if entered else None)
            acct.prev_row = row
            acct.last_ts = bar.ts
            acct.bar_index += 1
            with self._tx():
                self._save_account(bar.symbol, acct)
                if order is not None:
                    self._save_order(order)
                for f in fills:
                    self._need().execute("INSERT OR IGNORE INTO fills VALUES (?, ?, ?)",
                                         (f.fill_id, f.ts, _fill_to_json(f)))
            self._fills.extend(fills)
            self._events.extend(fills)
            self._events.extend(updates)

    def _action(self, order: _Order | None, atr_prev: float) -> tuple[int, FillRules]:
        if order is None:
            return int(Action.HOLD), self._rules
        r = order.request
        if r.reduce_only:
            return int(Action.CLOSE_LONG if r.side is Side.SELL else Action.CLOSE_SHORT), self._rules
        # the order's size and bracket distances; the engine's own ATR multiples when they agree
        rules = self._rules.for_order(r.qty, r.stop_loss, r.take_profit, atr_prev)
        return int(Action.BUY_LONG if r.side is Side.BUY else Action.SELL_SHORT), rules

    def _outcome(self, acct: _Account, before: EngineAccount, order: _Order | None, bar: Bar,
                 prev_row: np.ndarray | None, row: np.ndarray) -> tuple[list[Fill], list[OrderUpdate]]:
        """The engine's state change in this bar as fills and order updates."""
        s = acct.engine
        fills: list[Fill] = []
        updates: list[OrderUpdate] = []
        now = self.clock.now_ns()
        invalid = s.invalid_actions > before.invalid_actions
        entry = order is not None and not order.request.reduce_only
        opened = entry and not invalid
        tr = s.closed_trade
        closed = tr is not None
        if opened:
            coid = order.request.client_order_id
            # flat before this bar: a trade closed in it is this entry's
            qty = tr.qty if closed else abs(s.qty)
            price = tr.entry_price if closed else s.entry_price
            costs = tr.entry_costs if closed else s.entry_costs
            stop = tr.stop_price if closed else s.stop_price
            tp = tr.take_profit_price if closed else s.take_profit_price
            fills.append(Fill(fill_id=f"{coid}:E", client_order_id=coid, position_id=coid, symbol=bar.symbol,
                              side=order.request.side, qty=qty, price=price, costs=costs, ts=bar.ts, kind="entry",
                              stop_price=stop, take_profit_price=tp))
            order.status, order.filled_qty, order.avg_price, order.updated_ns = OrderStatus.FILLED, qty, price, now
            order.reason = "" if qty >= order.request.qty else \
                f"filled {qty:g} of {order.request.qty:g}: capped by the margin rules at the fill price"
            acct.position_id, acct.opened_ts = coid, bar.ts
        elif entry:
            order.status, order.updated_ns = OrderStatus.REJECTED, now
            order.reason = refused_entry_reason(before, prev_row, row, order.request.side is Side.SELL, self._rules)
        if closed:
            reason = int(tr.reason)
            pid = acct.position_id
            by_order = (order is not None and order.request.reduce_only and reason == int(ExitReason.SIGNAL))
            coid = order.request.client_order_id if by_order else f"{pid}:{_EXIT_SUFFIX.get(reason, 'X')}"
            side = Side.SELL if tr.side > 0 else Side.BUY
            fills.append(Fill(fill_id=f"{coid}:X" if by_order else coid, client_order_id=coid, position_id=pid,
                              symbol=bar.symbol, side=side, qty=tr.qty, price=tr.exit_price,
                              costs=tr.exit_costs, ts=bar.ts, kind=_EXIT_KIND[reason],
                              realized_pnl=tr.pnl))
            if by_order:
                order.status, order.filled_qty, order.avg_price = OrderStatus.FILLED, tr.qty, tr.exit_price
                order.updated_ns, order.reason = now, ""
            acct.position_id, acct.opened_ts = "", 0
        if order is not None and order.request.reduce_only and order.status is OrderStatus.ACCEPTED:
            order.updated_ns = now
            if invalid:
                order.status, order.reason = OrderStatus.REJECTED, "no position of that side to close"
            else:
                order.status = OrderStatus.CANCELED
                order.reason = "position already closed by its stop or take-profit at the open"
        if order is not None:
            updates.append(order.update())
        return fills, updates

    def account(self, symbol: str) -> EngineAccount:
        """A copy of the engine account of ``symbol``."""
        with self._lock:
            return self._accounts[symbol].engine.copy()

    def state_vector(self, symbol: str) -> np.ndarray:
        """A copy of the engine account of ``symbol`` as the kernel's state vector."""
        return self.account(symbol).state
