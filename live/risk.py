"""The risk engine: every order the policy wants passes through it; it may resize, veto, flatten or halt.

States (NautilusTrader's): ``ACTIVE`` (entries and exits), ``REDUCING`` (exits only: stale data, a
manual ``reduce``), ``HALTED`` (no orders except the risk engine's own flattening: manual ``halt``,
daily loss limit until the next session, drawdown kill switch until ``resume``, a fatal broker error).
The state is the most severe of the active conditions; every change, veto, resize and override is a
``RiskEvent`` with its reason (the loop journals them).

Entries (``BUY_LONG`` / ``SELL_SHORT``) are sized with the fill engine's own rules
(``tradebot.envs.engine.position_size``: ``risk_per_trade`` of equity lost at a stop ``stop_atr_mult`` ATR away, or
``fixed_qty``), at the decision bar's equity and ATR, then cut by, in order: ``max_position`` units,
``max_notional`` at the decision price, and the loss budget (below). Every entry carries a stop-loss
and a take-profit (``stop_atr_mult`` / ``take_profit_atr_mult`` x ATR from the fill) when the engine
config has stops; an engine with ``stop_loss: false`` (a positional design that the backtests run
without stops) trades without brackets, as it was evaluated, and its entries are sized as if each could
lose ``unprotected_loss`` of its notional (below). The engine's margin caps (leverage, its own ``max_notional``) are applied by the
engine at the fill price, as in the backtester.

Loss budget. With E0 the equity at the start of the session (marked at the previous session's last
close), E the equity now, peak the highest equity marked at a bar close:
``budget = min(max_daily_loss x E0 - (E0 - E), E - (1 - max_drawdown) x peak) - open risk of other
symbols``. An entry is sized so that its loss *if its stop fills at the stop price* -- the distance to
the stop plus the engine's slippage there plus both orders' costs, estimated at the decision close --
is at most the budget; no budget, no entry. (An entry decided at a session's last bar fills in the next
session; its E0 is then the equity now.)

Guarantees (one symbol, fills by the engine, as the paper broker does them; the tests check each):

1. Position: |position| <= ``max_position`` at all times, and an entry's notional at its decision
   price is <= ``max_notional``. One working order per symbol; no pyramiding, no reversal in one order.
2. Order rate: in every window of 1 s at most ``orders_per_second`` orders (submits and cancels),
   in every window of 60 s at most ``orders_per_minute``, on the loop's clock. An order the limit
   refuses is vetoed (a flatten is retried at the next event).
3. Daily loss: at every bar close, ``E0 - E <= max_daily_loss x E0 + G``, where G is the one-bar gap
   risk of the most recent entry of the session: ``qty x [(b + 2c)(1 + b)|O_e - C_d| +
   (1 + b)(1 + c) max(0, side x (stop - O_x)) + (1 + c) s max(0, ATR_x - ATR_d)]``. O_e is the open its
   entry filled at and C_d the close it was decided at; O_x the open of the bar whose open went through
   the stop (0 when the stop filled inside a bar or the trade ended otherwise); ATR_d the ATR at the
   decision and ATR_x the one the exit was slipped with; b the slippage in bps, s in ATRs
   (``slippage_bps``, ``slippage_atr``), c the proportional costs per rupee traded. Earlier trades
   of the session do not add up: each entry only gets what is left of the budget. Once E0 - E reaches
   the limit the engine is HALTED for the rest of the session: no entry, and the position is flattened
   by an order that fills at the next bar's open (or is closed by its stop before). This covers
   products that are flat at the session end (intraday, and futures unless carried): a position
   carried overnight starts the new session with the risk to its stop budgeted on the day it opened.
4. Drawdown: entries are sized so that hitting their stop leaves E >= (1 - max_drawdown) x the peak at
   the decision (up to the same G); at the first bar close with E <= (1 - max_drawdown) x peak the kill
   switch flattens (next open) and halts until a manual ``resume``.
5. With an engine that has stops: every entry has a finite stop and take-profit; a position found
   without a stop, or whose stop was breached while it is still open (a broker that did not enforce
   it), is flattened. Without stops (``stop_loss: false``), 3 and 4 hold with the stop replaced by a
   move of ``unprotected_loss`` x the entry's fill price: a larger move of the position between two
   bar closes (a gap, a crash) can take the loss past the limits, by at most the excess move; the
   limits are then enforced at that bar close (flatten at the next open, halt).
6. Square-off and trading window (intraday bars): no entry whose fill (the decision bar's end) falls
   outside [``entry_start``, ``entry_end``); positions are flattened by an order decided at the first bar
   ending at or after ``square_off`` (it fills at that time), for products that do not carry overnight.
7. Stale data: no entry decided on a bar that ended more than ``stale_entry_s`` ago; when the next bar
   is ``stale_entry_s`` overdue the state is REDUCING, when ``stale_flatten_s`` overdue the position is
   flattened. Only inside a session that has already delivered a bar (a missing first bar of the day
   cannot be told from a holiday).
8. A position found above ``max_position`` (whatever put it there: an order the broker got twice, a
   manual trade) is flattened and the engine HALTS until ``resume`` (``check_positions``).
9. An order decided before a crash and sent after the restart (a half-done bar) is judged again
   first (``recheck``): an entry is sent only while ACTIVE, flat and on fresh data; an exit only while
   it still closes the position as it is.

``resume`` clears the manual state, the kill switch, a fatal halt and the halts of rule 8, of an order
whose outcome stayed unknown and of a position mismatch with the broker; not the daily-loss halt.
"""

from __future__ import annotations

import difflib
import math
import re
from collections import deque
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator, model_validator

from tradebot.envs.engine import Action, EngineConfig
from tradebot.envs.fill_rules import FillRules
from tradebot.core.nse_calendar import is_trading_day_ns
from tradebot.core.nse_time import (
    SESSION_CLOSE_MINUTE,
    SESSION_OPEN_MINUTE,
    bar_ns,
    hhmm_minute,
    is_intraday,
    ist_day,
    ist_minute,
    session_bounds_ns,
)
from tradebot.live.ports import (
    NS_PER_SECOND,
    Bar,
    Intent,
    OrderRequest,
    PositionReport,
    RiskDecision,
    RiskEvent,
    RiskState,
    Side,
    Verdict,
    client_order_id,
    decision_event_key,
)
from tradebot.core.config import FrozenConfig, parse_config, read_yaml
from tradebot.core.errors import UserInputError

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
ENTRIES = (int(Action.BUY_LONG), int(Action.SELL_SHORT))
EXITS = (int(Action.CLOSE_LONG), int(Action.CLOSE_SHORT))
STATE_FORMAT = "tradebot.live.risk/1"
RESUMABLE = ("manual", "kill_switch", "fatal", "position_mismatch")  # conditions a `resume` clears
RESUMABLE_PREFIXES = ("position_limit:", "unresolved:")


def _action_name(action: int) -> str:
    return Action(int(action)).name if int(action) in set(map(int, Action)) else str(action)


class RiskConfig(FrozenConfig):
    """Risk limits (YAML section ``risk`` of the live config). Money in rupees, times HH:MM IST."""

    max_position: int = Field(5_000, ge=1, description="largest position per symbol, in units")
    max_notional: float = Field(5_000_000.0, gt=0, description="largest entry notional at the decision price")
    max_daily_loss: float = Field(0.02, gt=0, lt=1, description="fraction of the session's starting equity; "
                                  "reached: flatten and halt for the rest of the session")
    max_drawdown: float = Field(0.10, gt=0, lt=1, description="fraction of peak equity; reached: flatten and halt "
                                "until `tradebot live resume` (kill switch)")
    orders_per_second: int = Field(8, ge=1, description="orders (submits + cancels) per second; Fyers allows 10")
    orders_per_minute: int = Field(160, ge=1, description="orders per minute; Fyers allows 200")
    entry_start: str = Field("09:15", description="no entry filling before this time")
    entry_end: str = Field("15:15", description="no entry filling at or after this time")
    square_off: str | None = Field("15:15", description="intraday positions are flattened at this time; "
                                   "null: leave it to the broker / engine square-off")
    stale_entry_s: float = Field(30.0, gt=0, description="no entries on data older than this (seconds)")
    stale_flatten_s: float = Field(180.0, gt=0, description="flatten when the next bar is this many seconds overdue")
    unprotected_loss: float = Field(0.10, gt=0, le=1, description="an engine without stop-losses (stop_loss: false, "
                                    "e.g. a positional CNC design): an entry is sized as if it could lose this "
                                    "fraction of its notional, and an open position's risk is this fraction of its "
                                    "marked value")

    @field_validator("entry_start", "entry_end", "square_off")
    @classmethod
    def _check_time(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not _HHMM.match(v):
            raise ValueError("use HH:MM (IST), e.g. '15:15'")
        if not SESSION_OPEN_MINUTE <= hhmm_minute(v) <= SESSION_CLOSE_MINUTE:
            raise ValueError("must lie inside the NSE session, 09:15 to 15:30")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "RiskConfig":
        if hhmm_minute(self.entry_start) >= hhmm_minute(self.entry_end):
            raise ValueError(f"entry_start {self.entry_start} must be before entry_end {self.entry_end}")
        if self.stale_flatten_s < self.stale_entry_s:
            raise ValueError("stale_flatten_s must be at least stale_entry_s")
        if self.orders_per_minute < self.orders_per_second:
            raise ValueError("orders_per_minute must be at least orders_per_second")
        return self


REQUIRED_LIMITS = ("max_position", "max_notional", "max_daily_loss", "max_drawdown")


def load_risk_file(path: str | Path) -> RiskConfig:
    """The limits for real money (``--risk-config FILE``): a YAML file with one top-level key, ``risk:``,
    that sets at least ``REQUIRED_LIMITS`` itself; anything else (an empty file, ``risks:``, a ``live:``
    section, an unknown limit) is refused with one line naming the file and the fix."""
    path = Path(path)
    data = read_yaml(path, "risk config file")
    if not isinstance(data, dict) or not data:
        raise UserInputError(f"{path}: sets no limits; real orders need a 'risk:' section that sets "
                             f"{', '.join(REQUIRED_LIMITS)}")
    extra = sorted(str(k) for k in data if k != "risk")
    if extra:
        close = difflib.get_close_matches(extra[0], ["risk"], n=1)
        hint = ("did you mean 'risk'?" if close else "a risk file has only a 'risk:' section" +
                ("; the limits of a 'live:' config go in --config" if "live" in extra else ""))
        raise UserInputError(f"{path}: unknown top-level key '{extra[0]}' ({hint})")
    section = data["risk"]
    if not isinstance(section, dict) or not section:
        raise UserInputError(f"{path}: the 'risk:' section sets no limits; set {', '.join(REQUIRED_LIMITS)}")
    missing = [k for k in REQUIRED_LIMITS if k not in section]
    if missing:
        raise UserInputError(f"{path}: real orders need every money limit set explicitly; add "
                             f"{', '.join(missing)} to the 'risk:' section")
    return parse_config(RiskConfig, section, f"{path} [risk]")


def describe_limits(config: RiskConfig) -> str:
    """The limits in force, on one line (printed when a run starts)."""
    c = config
    return (f"max_position {c.max_position:,} units, max_notional {c.max_notional:,.0f}, max_daily_loss "
            f"{c.max_daily_loss:.2%}, max_drawdown {c.max_drawdown:.2%}, orders {c.orders_per_second}/s "
            f"{c.orders_per_minute}/min, entries {c.entry_start}-{c.entry_end}, square-off {c.square_off or 'none'}, "
            f"stale {c.stale_entry_s:g}s / flatten {c.stale_flatten_s:g}s")


class RateLimiter:
    """Sliding-window order-rate limit: at most ``per_second`` in any 1 s and ``per_minute`` in any 60 s."""

    def __init__(self, per_second: int, per_minute: int):
        self.per_second = per_second
        self.per_minute = per_minute
        self._times: deque[int] = deque()
        self._last = -(2**62)

    def _prune(self, now: int) -> int:
        now = max(now, self._last)  # a clock that steps back must not open the window
        while self._times and self._times[0] <= now - 60 * NS_PER_SECOND:
            self._times.popleft()
        return now

    def allow(self, now_ns: int) -> bool:
        now = self._prune(now_ns)
        if len(self._times) >= self.per_minute:
            return False
        recent = 0
        for t in reversed(self._times):
            if t <= now - NS_PER_SECOND:
                break
            recent += 1
        return recent < self.per_second

    def record(self, now_ns: int) -> None:
        now = self._prune(now_ns)
        self._times.append(now)
        self._last = now

    @property
    def times(self) -> list[int]:
        return list(self._times)

    def load(self, times: list[int]) -> None:
        self._times = deque(sorted(int(t) for t in times))
        self._last = self._times[-1] if self._times else -(2**62)


class RiskEngine:
    """Pre-trade checks, sizing and the trading state; see the module docstring for the guarantees."""

    def __init__(self, config: RiskConfig, engine: EngineConfig, timeframe: str):
        if engine.stop_loss and engine.take_profit_atr_mult is None:
            raise UserInputError("the risk engine attaches a stop-loss and a take-profit to every entry of an engine "
                                 "with stops: set engine.take_profit_atr_mult (e.g. 3.0), or engine.stop_loss: false "
                                 "for a design without brackets")
        self.config = config
        self.engine = engine
        self.timeframe = timeframe
        self.intraday = is_intraday(timeframe)
        self._bar_ns = bar_ns(timeframe)
        self._rules = FillRules(engine)
        self.lot = self._rules.lot
        self.limiter = RateLimiter(config.orders_per_second, config.orders_per_minute)
        self.conditions: dict[str, tuple[RiskState, str]] = {}
        self.day: int | None = None
        self.day_start_equity = math.nan
        self.peak_equity = math.nan
        self.last_equity = math.nan
        self.last_bar_end: dict[str, int] = {}
        self.marks: dict[str, tuple[float, float]] = {}  # symbol -> (last close, last ATR)

    # ------------------------------------------------------------------------- state
    @property
    def state(self) -> RiskState:
        return max((s for s, _ in self.conditions.values()), key=lambda s: s.severity, default=RiskState.ACTIVE)

    def why(self) -> str:
        """The active conditions, most severe first."""
        items = sorted(self.conditions.items(), key=lambda kv: -kv[1][0].severity)
        return "; ".join(reason for _, (_, reason) in items) or "no limits reached"

    def _set(self, name: str, state: RiskState | None, reason: str, now: int, symbol: str = "",
             kind: str = "state", tag: int | None = None) -> list[RiskEvent]:
        """Set (or with ``state=None`` clear) one condition; an event when that changes anything.
        ``tag`` (a bar time) makes the event's de-duplication key reproducible across a restart."""
        before = self.state
        old = self.conditions.get(name)
        if state is None:
            if old is None:
                return []
            del self.conditions[name]
        else:
            if old is not None and old[0] == state:
                return []
            self.conditions[name] = (state, reason)
        after = self.state
        if state is None and after == before:
            return []
        return [RiskEvent(ts=now, kind=kind, reason=reason if state is not None else f"cleared: {old[1]}",
                          state=after, symbol=symbol, details={"condition": name, "from": before.value, "to": after.value},
                          key=f"{kind}:{name}:{'set' if state is not None else 'clear'}:{now if tag is None else tag}")]

    def start(self, equity: float, *, day: int | None = None, day_start_equity: float = math.nan,
              peak_equity: float = math.nan) -> None:
        """First start of a journal (no saved state): the account's equity is the day's start and the peak,
        unless what is known of the account says otherwise: ``day_start_equity`` of session ``day`` (the
        broker's figure, or an earlier journal's) and ``peak_equity`` (an earlier journal's)."""
        if math.isnan(self.last_equity):
            equity = float(equity)
            self.last_equity = equity
            self.peak_equity = max(equity, peak_equity) if math.isfinite(peak_equity) else equity
            if day is not None and math.isfinite(day_start_equity):
                self.day, self.day_start_equity = day, float(day_start_equity)
            else:
                self.day_start_equity = equity

    def state_dict(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "conditions": {k: [s.value, r] for k, (s, r) in self.conditions.items()},
                "day": self.day, "day_start_equity": self.day_start_equity, "peak_equity": self.peak_equity,
                "last_equity": self.last_equity, "last_bar_end": dict(self.last_bar_end),
                "marks": {k: list(v) for k, v in self.marks.items()}, "order_times": self.limiter.times}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a risk-engine state (format {state.get('format')!r})")
        self.conditions = {k: (RiskState(s), r) for k, (s, r) in state["conditions"].items()}
        self.day = state["day"]
        self.day_start_equity = float(state["day_start_equity"])
        self.peak_equity = float(state["peak_equity"])
        self.last_equity = float(state["last_equity"])
        self.last_bar_end = {k: int(v) for k, v in state["last_bar_end"].items()}
        self.marks = {k: (float(v[0]), float(v[1])) for k, v in state["marks"].items()}
        self.limiter.load(state["order_times"])

    # ----------------------------------------------------------------------- inputs
    def apply_control(self, command: str, reason: str, now: int) -> list[RiskEvent]:
        """A manual command from the journal: ``halt`` (flatten, no orders), ``reduce`` (exits only),
        ``resume`` (clears the manual state, the kill switch and a fatal halt; not the daily-loss halt)."""
        why = f"manual {command}" + (f": {reason}" if reason else "")
        if command == "halt":
            return self._set("manual", RiskState.HALTED, why, now, kind="control")
        if command == "reduce":
            return self._set("manual", RiskState.REDUCING, why, now, kind="control")
        if command == "resume":
            events: list[RiskEvent] = []
            for name in [n for n in self.conditions if n in RESUMABLE or n.startswith(RESUMABLE_PREFIXES)]:
                events += self._set(name, None, why, now, kind="control")
            return events
        raise UserInputError(f"unknown control command {command!r}; use halt, reduce or resume")

    def on_fatal(self, reason: str, now: int) -> list[RiskEvent]:
        return self._set("fatal", RiskState.HALTED, f"fatal: {reason}", now, kind="fatal")

    def set_condition(self, name: str, state: RiskState | None, reason: str, now: int, *, kind: str,
                      symbol: str = "") -> list[RiskEvent]:
        """Set (``state=None``: clear) a condition the loop finds itself (an order whose outcome stays
        unknown, the policy down, a position mismatch with the broker); the events when that changes anything."""
        return self._set(name, state, reason, now, symbol, kind=kind)

    def check_positions(self, positions: Mapping[str, PositionReport], now: int) -> list[RiskEvent]:
        """Rule 8: HALT when a position is above ``max_position`` (flattened by ``flatten_reason``)."""
        events: list[RiskEvent] = []
        cap = self.config.max_position
        for sym, p in positions.items():
            if abs(p.qty) > cap:
                events += self._set(f"position_limit:{sym}", RiskState.HALTED,
                                    f"position {p.qty:+g} of {sym} is above max_position {cap}: flatten and halt",
                                    now, sym, kind="position_limit")
        return events

    def recheck(self, order: OrderRequest, bar: Bar, position: PositionReport | None, now: int) -> str | None:
        """Rule 9: why ``order``, decided at ``bar`` before a crash, must not be sent now (None: send it)."""
        held = position.qty if position is not None else 0.0
        if order.intent is Intent.ENTRY:
            age = (now - bar.end) / NS_PER_SECOND
            if self.state is not RiskState.ACTIVE:
                return f"risk state {self.state.value}: {self.why()}"
            if held != 0.0:
                return "a position is open"
            if age > self.config.stale_entry_s:
                return f"stale: its bar ended {age:.0f}s ago (> {self.config.stale_entry_s:g}s)"
            return None
        closes = held != 0.0 and (held > 0) == (order.side is Side.SELL) and abs(held) == order.qty
        return None if closes else f"the position it closes is no longer {order.qty:g} units (now {held:+g})"
    def on_bar_close(self, symbol: str, bar: Bar, equity: float, atr: float, now: int) -> list[RiskEvent]:
        """After the broker has processed ``bar``: session roll-over, loss limits, data freshness."""
        events: list[RiskEvent] = []
        day = ist_day(bar.ts)
        if self.day != day:
            if math.isnan(self.last_equity):
                self.start(equity)
            self.day = day
            self.day_start_equity = self.last_equity
            events += self._set("daily_loss", None, "new session", now, kind="daily_loss", tag=bar.ts)
        self.last_equity = float(equity)
        self.peak_equity = max(self.peak_equity, self.last_equity) if not math.isnan(self.peak_equity) else self.last_equity
        self.last_bar_end[symbol] = bar.end
        self.marks[symbol] = (bar.close, atr)
        events += self._set(f"stale:{symbol}", None, "fresh bar", now, symbol=symbol, kind="stale", tag=bar.ts)
        events += self._set(f"stale_flatten:{symbol}", None, "fresh bar", now, symbol=symbol, kind="stale", tag=bar.ts)
        e0 = self.day_start_equity
        limit = self.config.max_daily_loss * e0
        if e0 - equity >= limit and "daily_loss" not in self.conditions:
            events += self._set("daily_loss", RiskState.HALTED,
                                f"daily loss limit: lost {e0 - equity:,.2f} of {e0:,.2f} at the session start "
                                f"(limit {limit:,.2f})", now, symbol, kind="daily_loss", tag=bar.ts)
        floor = (1.0 - self.config.max_drawdown) * self.peak_equity
        if equity <= floor and "kill_switch" not in self.conditions:
            events += self._set("kill_switch", RiskState.HALTED,
                                f"max drawdown kill switch: equity {equity:,.2f} <= {floor:,.2f} "
                                f"({self.config.max_drawdown:.1%} below the peak {self.peak_equity:,.2f})",
                                now, symbol, kind="kill_switch", tag=bar.ts)
        return events

    def on_heartbeat(self, now: int) -> list[RiskEvent]:
        """Data freshness between bars: REDUCING when the next bar is overdue, flatten when very late."""
        events: list[RiskEvent] = []
        for symbol, end in self.last_bar_end.items():
            overdue = self.overdue_s(symbol, now)
            if overdue is None:
                continue
            if overdue > self.config.stale_entry_s:
                events += self._set(f"stale:{symbol}", RiskState.REDUCING,
                                    f"stale data: {symbol}'s next bar is {overdue:.0f}s overdue", now, symbol,
                                    kind="stale")
            if overdue > self.config.stale_flatten_s:
                events += self._set(f"stale_flatten:{symbol}", RiskState.REDUCING,
                                    f"stale data: {symbol}'s next bar is {overdue:.0f}s overdue "
                                    f"(> {self.config.stale_flatten_s:g}s): flatten", now, symbol, kind="stale")
        return events

    def overdue_s(self, symbol: str, now: int) -> float | None:
        """Seconds by which ``symbol``'s next bar is overdue; None when none is expected (session over,
        no bar yet today)."""
        end = self.last_bar_end.get(symbol)
        if end is None or not self.intraday or not is_trading_day_ns(now):
            return None
        day = ist_day(end - 1)
        _, close = session_bounds_ns(day)
        due = end + self._bar_ns
        if ist_day(now) != day or end >= close or due > close:
            return None
        return (now - due) / NS_PER_SECOND

    # -------------------------------------------------------------------- decisions
    def flatten_reason(self, symbol: str, position: PositionReport | None, bar: Bar | None, now: int) -> str | None:
        """Why ``position`` must be closed now (None: it may stay)."""
        if position is None or position.qty == 0.0:
            return None
        if abs(position.qty) > self.config.max_position:
            return f"position {position.qty:+g} is above max_position {self.config.max_position}"
        if self.state is RiskState.HALTED:
            return f"halted: {self.why()}"
        if f"stale_flatten:{symbol}" in self.conditions:
            return self.conditions[f"stale_flatten:{symbol}"][1]
        if self.engine.stop_loss and not math.isfinite(position.stop_price):
            return "position has no stop-loss"
        if bar is not None:
            if (self.intraday and self.config.square_off is not None and self.engine.flat_at_session_end
                    and ist_minute(bar.end) >= hhmm_minute(self.config.square_off)):
                return f"square-off time {self.config.square_off}"
            age = (now - bar.end) / NS_PER_SECOND
            if age > self.config.stale_flatten_s:
                return f"stale data: the bar ended {age:.0f}s ago (> {self.config.stale_flatten_s:g}s)"
            if (position.qty > 0 and bar.low <= position.stop_price) or (position.qty < 0 and bar.high >= position.stop_price):
                return f"stop {position.stop_price:.2f} breached but the position is still open (stop not enforced)"
        return None

    def worst_loss(self, side: int, qty: float, price: float, atr: float) -> float:
        """Rupees lost by an entry of ``qty`` decided at ``price`` if its stop fills at the stop price:
        the engine's entry slippage, stop distance, exit slippage and both orders' costs. Without stops:
        the same with the exit ``unprotected_loss`` of the fill price away."""
        r = self._rules
        fill = r.fill_price(price, side, atr)
        move = r.stop_distance(atr) if self.engine.stop_loss else self.config.unprotected_loss * fill
        stop = fill - side * move
        exit_fill = r.fill_price(stop, -side, atr)
        return (qty * side * (fill - exit_fill) + r.order_cost(fill, qty, side > 0)
                + r.order_cost(exit_fill, qty, side < 0))

    def open_risk(self, position: PositionReport) -> float:
        """What an open position can still lose down to its stop (from its last mark), costs included."""
        close, atr = self.marks.get(position.symbol, (position.avg_price, math.nan))
        q = abs(position.qty)
        side = position.side
        r = self._rules
        if not math.isfinite(position.stop_price):
            if self.engine.stop_loss:
                return q * close  # no stop: all of it (such a position is flattened at once)
            exit_fill = close * (1.0 - side * self.config.unprotected_loss)
            return q * close * self.config.unprotected_loss + r.order_cost(exit_fill, q, side < 0)
        stop = position.stop_price
        exit_fill = r.fill_price(stop, -side, atr if math.isfinite(atr) else 0.0)
        return q * max(0.0, side * (close - exit_fill)) + r.order_cost(exit_fill, q, side < 0)

    def loss_budget(self, symbol: str, equity: float, positions: Mapping[str, PositionReport],
                    next_session: bool = False) -> float:
        """Rupees an entry may lose at its stop. ``next_session``: decided at a session's last bar, it
        fills in the next session, whose starting equity is today's closing equity."""
        e0 = equity if next_session else self.day_start_equity
        day_left = self.config.max_daily_loss * e0 - (e0 - equity)
        dd_left = equity - (1.0 - self.config.max_drawdown) * self.peak_equity
        others = sum(self.open_risk(p) for s, p in positions.items() if s != symbol and p.qty != 0.0)
        return min(day_left, dd_left) - others

    def _floor_lots(self, q: float) -> float:
        return math.floor(q / self.lot) * self.lot if q > 0 else 0.0

    def _budget_qty(self, side: int, price: float, atr: float, budget: float, q_max: float) -> float:
        """The most whole lots (<= q_max) whose worst loss fits in ``budget``."""
        if budget <= 0.0 or q_max < self.lot:
            return 0.0
        if self.worst_loss(side, q_max, price, atr) <= budget:
            return q_max
        lo, hi = 0, int(q_max // self.lot)  # lots: lo fits (0 does), hi does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.worst_loss(side, mid * self.lot, price, atr) <= budget:
                lo = mid
            else:
                hi = mid
        return lo * self.lot

    def evaluate(self, symbol: str, bar: Bar, proposed: int, *, position: PositionReport | None,
                 working: OrderRequest | None, equity: float, atr: float, now: int, run: str,
                 positions: Mapping[str, PositionReport] | None = None) -> tuple[RiskDecision, list[RiskEvent]]:
        """Judge the policy's ``proposed`` action at the close of ``bar``; returns the decision (with
        the order to send, if any) and the events to record."""
        positions = positions or {}
        held = position.qty if position is not None else 0.0
        state = self.state

        def decide(final: int, verdict: Verdict, reasons: list[str], order: OrderRequest | None = None,
                   budget: float = math.nan, code: str = "") -> tuple[RiskDecision, list[RiskEvent]]:
            d = RiskDecision(symbol=symbol, bar_ts=bar.ts, proposed=int(proposed), final=int(final), verdict=verdict,
                             reasons=tuple(reasons), state=self.state, order=order, loss_budget=budget, code=code)
            events = []
            if verdict in (Verdict.VETO, Verdict.RESIZE, Verdict.OVERRIDE):
                events.append(RiskEvent(ts=now, kind=verdict.value, reason="; ".join(reasons), state=self.state,
                                        symbol=symbol, details={"proposed": _action_name(proposed),
                                                                "final": _action_name(final), "code": code},
                                        key=decision_event_key(verdict, symbol, bar.ts)))
            return d, events

        def exit_order(intent: Intent, reason: str) -> OrderRequest:
            return OrderRequest(client_order_id=client_order_id(run, symbol, bar.ts, intent), symbol=symbol,
                                side=Side.SELL if held > 0 else Side.BUY, qty=abs(held), intent=intent, bar_ts=bar.ts,
                                created_ns=now, product=self.engine.product, reduce_only=True,
                                reference_price=bar.close, atr=atr, reason=reason)

        close_action = int(Action.CLOSE_LONG if held > 0 else Action.CLOSE_SHORT)
        must_flatten = self.flatten_reason(symbol, position, bar, now)
        if must_flatten is not None:
            if working is not None:
                return decide(Action.HOLD, Verdict.HOLD, [f"flatten ({must_flatten}) waits: order "
                                                         f"{working.client_order_id} is working"])
            if not self.limiter.allow(now):
                return decide(Action.HOLD, Verdict.VETO, [f"flatten ({must_flatten}) deferred: order rate limit"],
                              code="rate_limit")
            verdict = Verdict.ACCEPT if proposed == close_action else Verdict.OVERRIDE
            return decide(close_action, verdict, [must_flatten], exit_order(Intent.FLATTEN, must_flatten),
                          code="flatten")

        if proposed == Action.HOLD:
            return decide(Action.HOLD, Verdict.HOLD, [])

        if proposed in EXITS:
            want_long = proposed == Action.CLOSE_LONG
            if held == 0.0 or (held > 0) != want_long:
                return decide(Action.HOLD, Verdict.VETO, [f"no {'long' if want_long else 'short'} position to close"],
                              code="no_position")
            if working is not None:
                return decide(Action.HOLD, Verdict.VETO, [f"order {working.client_order_id} is working"],
                              code="order_working")
            if not self.limiter.allow(now):
                return decide(Action.HOLD, Verdict.VETO, ["order rate limit"], code="rate_limit")
            return decide(proposed, Verdict.ACCEPT, [], exit_order(Intent.EXIT, "policy exit"))

        if proposed not in ENTRIES:
            return decide(Action.HOLD, Verdict.VETO, [f"unknown action {proposed}"], code="unknown_action")
        side = 1 if proposed == Action.BUY_LONG else -1
        fill_minute = ist_minute(bar.end)
        age = (now - bar.end) / NS_PER_SECOND
        veto = code = None
        if state is not RiskState.ACTIVE:
            veto, code = f"risk state {state.value}: {self.why()}", "state"
        elif held != 0.0:
            veto, code = "a position is already open", "position_open"
        elif working is not None:
            veto, code = f"order {working.client_order_id} is working", "order_working"
        elif side < 0 and not self.engine.shorts_allowed:
            veto, code = f"short selling is not allowed for {self.engine.product}", "no_shorts"
        elif not (atr > 0.0 and math.isfinite(atr)):
            veto, code = "no ATR yet (sizing and stops need it)", "no_atr"
        elif self.intraday and not (hhmm_minute(self.config.entry_start) <= fill_minute < hhmm_minute(self.config.entry_end)):
            veto, code = f"fill time outside the entry window {self.config.entry_start}-{self.config.entry_end}", "window"
        elif self.intraday and self.engine.square_off_minute is not None and fill_minute >= self.engine.square_off_minute:
            veto, code = f"fill at or after the engine's square-off {self.engine.square_off}", "square_off"
        elif age > self.config.stale_entry_s:
            veto, code = f"stale data: the bar ended {age:.0f}s ago (> {self.config.stale_entry_s:g}s)", "stale"
        elif not self.limiter.allow(now):
            veto, code = "order rate limit", "rate_limit"
        if veto is not None:
            return decide(Action.HOLD, Verdict.VETO, [veto], code=code)

        price = bar.close
        q_engine = self._rules.position_size(equity, atr, self._rules.fill_price(price, side, atr), margin_caps=False)
        caps = (("max_position", self._floor_lots(float(self.config.max_position)), self.config.max_position),
                ("max_notional", self._floor_lots(self.config.max_notional / price), self.config.max_notional))
        q = min(q_engine, *(cap for _, cap, _ in caps))
        reasons = [f"{name} {limit:,.0f}" for name, cap, limit in caps if cap == q < q_engine]
        budget = self.loss_budget(symbol, equity, positions, next_session=bar.last_of_session)
        q_budget = self._budget_qty(side, price, atr, budget, q)
        if q_budget < q:
            reasons = [f"loss budget {budget:,.2f} (daily loss / drawdown limits)"]
            q = q_budget
        if q < self.lot:
            why = reasons[0] if reasons else "the engine's sizing rounds to zero"
            return decide(Action.HOLD, Verdict.VETO, [f"entry sized to zero: {why}"], budget=budget,
                          code="loss_budget" if why.startswith("loss budget") else "size_zero")
        order = OrderRequest(client_order_id=client_order_id(run, symbol, bar.ts, Intent.ENTRY), symbol=symbol,
                             side=Side.BUY if side > 0 else Side.SELL, qty=q, intent=Intent.ENTRY, bar_ts=bar.ts,
                             created_ns=now, product=self.engine.product, reduce_only=False,
                             stop_loss=self._rules.stop_distance(atr) if self.engine.stop_loss else None,
                             take_profit=(self._rules.take_profit_distance(atr)
                                          if self.engine.stop_loss else None),
                             reference_price=price, atr=atr, reason="policy entry")
        if q < q_engine:
            return decide(proposed, Verdict.RESIZE, [f"resized {q_engine:g} -> {q:g}: {r}" for r in reasons],
                          order, budget=budget, code="loss_budget" if reasons and reasons[0].startswith("loss budget")
                          else reasons[0].split(" ")[0] if reasons else "size")
        return decide(proposed, Verdict.ACCEPT, [], order, budget=budget)

    def flatten_order(self, symbol: str, position: PositionReport, bar_ts: int, reason: str, now: int,
                      run: str, attempt: int = 0) -> OrderRequest:
        """A flatten between bars (heartbeat: halt, stale data), keyed on the last bar and the attempt, so
        that each attempt is sent at most once and a refused one is tried again under a new id."""
        return OrderRequest(client_order_id=client_order_id(run, symbol, bar_ts, Intent.FLATTEN, attempt),
                            symbol=symbol,
                            side=Side.SELL if position.qty > 0 else Side.BUY, qty=abs(position.qty),
                            intent=Intent.FLATTEN, bar_ts=bar_ts, created_ns=now, product=self.engine.product,
                            reduce_only=True, reference_price=self.marks.get(symbol, (math.nan,))[0], reason=reason)
