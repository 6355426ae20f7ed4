"""The live ports: immutable commands and events, and the two interfaces everything else plugs into.

* ``DataFeed``: an iterator of ``Bar`` / ``Tick`` / ``Heartbeat`` events with a ``Clock``.
* ``ExecutionClient``: the one broker port. Every broker lives in ``live/adapters/<broker>/`` and is
  the only code that imports its SDK; ``tradebot.live.paper.PaperBroker`` implements the same port.

Commands and events are frozen dataclasses. Times are integers, nanoseconds since the Unix epoch
(UTC), as pandas stores them (``to_ist(ns)`` shows one in IST); prices are rupees; quantities are
units (shares, or index units for NIFTY).

ExecutionClient hooks (the last two optional):

===================================  =====================================================================
hook                                 contract
===================================  =====================================================================
``connect()`` / ``disconnect()``     open / close the connection; ``connect`` raises ``FatalError`` when
                                     it cannot trade at all (e.g. re-authentication needed)
``submit(order) -> OrderUpdate``     send one order. Idempotent on ``order.client_order_id``: a known id
                                     returns its current status and never creates a second order.
                                     Retrying a temporary failure (transport, rate limit) is the
                                     adapter's own job, bounded, looking the id up before each resend.
                                     Raises ``RejectedError`` (refused: record it, do not retry),
                                     ``OrderNotSent`` (a ``RetryableError``: the adapter's retries gave up
                                     and the order certainly never reached the broker), any other
                                     ``RetryableError`` (the order may have reached the broker: its
                                     outcome is UNKNOWN until the caller finds it by id with
                                     ``order_status``; never resent), ``FatalError`` (halt)
``cancel(client_order_id)``          cancel one working order; returns its ``OrderUpdate``
``cancel_all(symbol=None)``          cancel every working order (of one symbol); returns the updates
``order_status(client_order_id)``    the broker's ``OrderUpdate`` for that id (its order book and trade
                                     book, asked now), or None when it does not have it
``order_status_reports()``           the latest ``OrderUpdate`` of every order of this run
``fill_reports(since_ns=None)``      every ``Fill`` (at or after ``since_ns``)
``position_reports()``               one ``PositionReport`` per symbol with a non-zero position
``account_report()``                 an ``AccountReport`` (equity marked at the last price the broker knows)
``poll_events()``                    the ``OrderUpdate`` / ``Fill`` events since the last poll
``restore_requests(requests)``       optional (default: nothing): the journal's ``OrderRequest``s, handed
                                     over before ``connect`` on start, so that a broker that keeps no
                                     state of its own (Fyers) knows the brackets and intents of the
                                     orders it reports after a restart
``on_bar(bar, atr)``                 optional (default: nothing): every closed bar, before the loop decides
                                     on it. A simulated venue (the paper broker) fills the working orders
                                     with it; a real broker has the exchange for that and ignores it
``resync()``                         optional (default: nothing): re-read orders, fills and positions
                                     from the broker itself (not from pushed events); what changed comes
                                     out of the next ``poll_events``. The loop calls it at a fixed
                                     interval and then compares the broker's positions with the journal
``account_id``                       attribute (default None): names the account across runs, so that a
                                     new journal on the same account keeps the day's loss budget and
                                     the drawdown peak (``tradebot.live.ledger``)
===================================  =====================================================================

The loop reconciles from the ``*_reports`` hooks on start (before trading) and consumes
``poll_events`` while running; events that are lost in a crash are recovered from the reports, so
every consumer of events is idempotent (fills by ``fill_id``, orders by ``client_order_id``). The loop
reads ``position_reports`` and ``account_report`` at every bar: an adapter answers them from the state
its order/position socket keeps, not with a REST call each time (those count against the API limits).
"""

from __future__ import annotations

import abc
import hashlib
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from tradebot.core.errors import RetryableError
from tradebot.core.nse_time import IST

NS_PER_SECOND = 1_000_000_000


def to_ist(ns: int) -> pd.Timestamp:
    """An epoch-nanosecond time as an IST ``pd.Timestamp``."""
    return pd.Timestamp(int(ns), tz="UTC").tz_convert(IST)


def to_ns(value: Any) -> int:
    """A tz-aware timestamp (or ISO text with an offset) as epoch nanoseconds."""
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no time zone (e.g. 2021-01-01T09:15:00+05:30)")
    return int(ts.as_unit("ns").value)


# ----------------------------------------------------------------------------------- enums

class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class OrderStatus(StrEnum):
    PENDING_SUBMIT = "PENDING_SUBMIT"  # journaled, not yet acknowledged by the broker
    ACCEPTED = "ACCEPTED"  # working at the broker
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"  # never reached the broker and is no longer valid (e.g. its bar has passed)
    UNKNOWN = "UNKNOWN"  # sent, but no answer: it may be at the broker; found by id, or the engine halts

    @property
    def terminal(self) -> bool:
        return self in (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED)


class OrderNotSent(RetryableError):
    """A submit failed in a way that proves the broker never got the order (refused connection, rate
    limit): it may be decided again. Any other ``RetryableError`` from ``submit`` leaves the order UNKNOWN."""


class Intent(StrEnum):
    """Why an order exists; part of its deterministic client order id."""

    ENTRY = "entry"
    EXIT = "exit"  # the policy closes its position
    FLATTEN = "flatten"  # the risk engine closes a position (halt, square-off, stale data, ...)


class RiskState(StrEnum):
    """NautilusTrader's trading states: ACTIVE (all orders), REDUCING (only orders that reduce a
    position), HALTED (no new orders except the risk engine's own flattening)."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"

    @property
    def severity(self) -> int:
        return {"ACTIVE": 0, "REDUCING": 1, "HALTED": 2}[self.value]


class Verdict(StrEnum):
    ACCEPT = "accept"  # the policy's order as proposed (sized by the engine's rules)
    RESIZE = "resize"  # the entry, made smaller by a risk limit
    VETO = "veto"  # the policy's order refused
    OVERRIDE = "override"  # the risk engine replaced the policy's action (flatten)
    HOLD = "hold"  # nothing to do


# ------------------------------------------------------------------------------ market data

@dataclass(frozen=True, slots=True)
class Bar:
    """A closed OHLCV bar, labelled by its start (``ts``); ``end`` is exclusive.

    ``last_of_session``: no later bar of this session will come (the engine closes intraday positions
    at its close); ``final``: the feed ends after this bar (a replay's last bar: positions are closed at
    its close, as the backtester does at the end of its data).
    """

    symbol: str
    ts: int
    end: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    timeframe: str
    last_of_session: bool = False
    final: bool = False


@dataclass(frozen=True, slots=True)
class Tick:
    """One trade (or quote) print: ``volume`` is the quantity of this print, not the day's total."""

    symbol: str
    ts: int
    price: float
    volume: float = 0.0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Time passed without market data (the feed's clock now reads ``ts``)."""

    ts: int


FeedEvent = Bar | Tick | Heartbeat


# -------------------------------------------------------------------------- commands, events

def client_order_id(run: str, symbol: str, bar_ts: int, intent: Intent | str, attempt: int = 0) -> str:
    """The deterministic client order id of the order ``intent`` decided at bar ``bar_ts`` in the run ``run``.

    The same (run, symbol, bar, intent, attempt) always gives the same id, so an order that is decided
    again after a crash carries the id it had, and the broker (and the journal's unique key) can
    refuse to create it twice. ``attempt`` numbers the retries of an order that was refused (a flatten
    between bars); 0 is the first. 20 characters, ``[0-9A-Z]`` (fits broker order tags).
    """
    key = f"{run}|{symbol}|{int(bar_ts)}|{Intent(intent).value}" + (f"|{int(attempt)}" if attempt else "")
    digest = hashlib.sha256(key.encode()).hexdigest()
    return "TB" + digest[:18].upper()


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A market order. ``stop_loss`` / ``take_profit`` are price *distances* from the fill (a
    bracket, as Fyers' BO orders take them); ``reduce_only`` orders may only shrink a position."""

    client_order_id: str
    symbol: str
    side: Side
    qty: float
    intent: Intent
    bar_ts: int  # the bar at whose close the order was decided
    created_ns: int
    order_type: str = "MARKET"
    product: str = "equity_intraday"
    reduce_only: bool = False
    stop_loss: float | None = None
    take_profit: float | None = None
    reference_price: float = math.nan  # the decision bar's close: what limits and sizing were judged at
    atr: float = math.nan
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: (v.value if isinstance(v, StrEnum) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "OrderRequest":
        d = dict(data)
        d["side"] = Side(d["side"])
        d["intent"] = Intent(d["intent"])
        return cls(**d)


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """The status of one order as the broker reports it."""

    client_order_id: str
    symbol: str
    status: OrderStatus
    ts: int
    filled_qty: float = 0.0
    avg_price: float = math.nan
    reason: str = ""
    broker_order_id: str | None = None


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution. ``position_id`` is the client order id of the entry that opened the position
    (entry and exit fills of one trade share it); ``kind`` is ``entry`` or the exit reason
    (``signal``, ``stop``, ``take_profit``, ``square_off``, ``end_of_data``)."""

    fill_id: str
    client_order_id: str
    position_id: str
    symbol: str
    side: Side
    qty: float
    price: float
    costs: float
    ts: int  # start of the bar in which it executed
    kind: str
    stop_price: float = math.nan  # entry fills: the attached stop and take-profit prices
    take_profit_price: float = math.nan
    realized_pnl: float = math.nan  # exit fills: the trade's P&L net of both orders' costs
    costs_estimated: bool = False  # the broker reported no charges: ``costs`` is the engine's cost schedule


@dataclass(frozen=True, slots=True)
class PositionReport:
    symbol: str
    qty: float  # signed: + long, - short
    avg_price: float
    stop_price: float = math.nan
    take_profit_price: float = math.nan
    opened_ts: int = 0  # start of the bar whose open filled the entry
    position_id: str = ""

    @property
    def side(self) -> int:
        return (self.qty > 0) - (self.qty < 0)


@dataclass(frozen=True, slots=True)
class AccountReport:
    ts: int
    equity: float  # cash + positions marked at the last price the broker knows
    cash: float
    realized_pnl: float = 0.0
    costs: float = 0.0
    day_start_equity: float = math.nan  # the broker's own figure for the session's start, when it has one


@dataclass(frozen=True, slots=True)
class RiskDecision:
    """The risk engine's verdict on one decision: what the policy proposed, what goes out, and why."""

    symbol: str
    bar_ts: int
    proposed: int  # tradebot.envs.engine.Action
    final: int  # the action the order implements (HOLD when no order)
    verdict: Verdict
    reasons: tuple[str, ...]
    state: RiskState
    order: OrderRequest | None = None
    loss_budget: float = math.nan  # entries: the rupees the entry may lose at its stop
    code: str = ""  # a stable name for the veto / resize / override reason (metrics labels)


# Veto codes of actions the fill engine would ignore as well (an exit with no position, an entry on top
# of one): recorded, but they change nothing.
NO_OP_VETO_CODES = ("no_position", "position_open")


def decision_event_key(verdict: "Verdict | str", symbol: str, bar_ts: int) -> str:
    """The key of the risk event that records a veto, resize or override decided at bar ``bar_ts``."""
    return f"{Verdict(verdict).value}:{symbol}:{int(bar_ts)}"


@dataclass(frozen=True, slots=True)
class RiskEvent:
    """A risk veto, override, state change or reconciliation finding, recorded with its reason."""

    ts: int
    kind: str
    reason: str
    state: RiskState
    symbol: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    key: str = ""  # de-duplication key: the same event recorded twice (after a crash) is kept once


# ---------------------------------------------------------------------------------- clocks

@runtime_checkable
class Clock(Protocol):
    def now_ns(self) -> int: ...


class WallClock:
    """Real time."""

    def now_ns(self) -> int:
        return time.time_ns()


class SimClock:
    """A clock that only moves when told (replays, tests)."""

    def __init__(self, start_ns: int = 0):
        self._now = int(start_ns)

    def now_ns(self) -> int:
        return self._now

    def set(self, ns: int) -> None:
        self._now = max(self._now, int(ns))


# --------------------------------------------------------------------------------- the ports

class DataFeed(abc.ABC):
    """An iterator of ``FeedEvent``s for the subscribed symbols, with the clock they run on."""

    clock: Clock

    @abc.abstractmethod
    def subscribe(self, symbols: Sequence[str], after: Mapping[str, int] | None = None) -> None:
        """Choose the symbols; ``after[symbol]``: skip bars starting at or before that time (resume)."""

    @abc.abstractmethod
    def __iter__(self) -> Iterator[FeedEvent]: ...

    def close(self) -> None:
        """Stop producing events (iteration ends)."""


class ExecutionClient(abc.ABC):
    """The one broker port; see the module docstring for each hook's contract."""

    name: str = "broker"
    account_id: str | None = None
    idempotent_submit: bool = False  # the broker itself refuses a second order with a known client order id

    @abc.abstractmethod
    def connect(self) -> None: ...

    @abc.abstractmethod
    def disconnect(self) -> None: ...

    @abc.abstractmethod
    def submit(self, order: OrderRequest) -> OrderUpdate: ...

    @abc.abstractmethod
    def cancel(self, client_order_id: str) -> OrderUpdate: ...

    @abc.abstractmethod
    def cancel_all(self, symbol: str | None = None) -> list[OrderUpdate]: ...

    @abc.abstractmethod
    def order_status(self, client_order_id: str) -> OrderUpdate | None: ...

    @abc.abstractmethod
    def order_status_reports(self) -> list[OrderUpdate]: ...

    @abc.abstractmethod
    def fill_reports(self, since_ns: int | None = None) -> list[Fill]: ...

    @abc.abstractmethod
    def position_reports(self) -> list[PositionReport]: ...

    @abc.abstractmethod
    def account_report(self) -> AccountReport: ...

    @abc.abstractmethod
    def poll_events(self) -> list[OrderUpdate | Fill]: ...

    def restore_requests(self, requests: Sequence[OrderRequest]) -> None:
        """The journal's order requests, before ``connect`` (optional; see the module docstring)."""

    def on_bar(self, bar: Bar, atr: float) -> None:
        """A closed bar and its ATR (optional): a simulated venue fills with it; a real broker ignores it."""

    def resync(self) -> None:
        """Re-read orders, fills and positions from the broker itself (optional; see the module docstring)."""


@runtime_checkable
class PolicyFn(Protocol):
    """The policy the loop calls once per closed bar: ``policy(symbol, obs)`` returns an
    ``tradebot.envs.engine.Action`` (or ``(action, probabilities)``, as ``tradebot.rl.policy.Policy.act`` does)."""

    def __call__(self, symbol: str, obs: np.ndarray) -> Any: ...
