"""The live loop: feed -> BarBuilder -> feature source -> policy -> RiskEngine -> OrderManager -> ExecutionClient.

```python
loop = TradingLoop(feed=ReplayFeed(bars), broker=PaperBroker(engine, [symbol], "paper.db", clock=feed.clock),
                   policy=my_policy, journal=Journal("journal.db", run="paper-1"),
                   features={symbol: StreamFeatures(pipeline)}, engine=engine, risk=RiskConfig())
summary = loop.run()            # reconcile, then trade until the feed ends
```

``TradingLoop`` only sequences the stages; each is a part of its own:

* ``tradebot.live.bar_builder.BarBuilder``: ticks to bars, on ticks and on the timer;
* ``tradebot.live.observations``: the per-symbol feature sources and the env's observation;
* the policy, ``policy(symbol, obs)``; ``tradebot.live.risk.RiskEngine``: its verdict and the order;
* ``tradebot.live.orders.OrderManager``: which orders are working, sending each once, cancels, the
  broker's answers and events;
* ``tradebot.live.reconcile``: at start-up, what must change so that the journal agrees with the broker;
* ``tradebot.live.journal.Journal`` (every SQL statement), ``tradebot.live.recorder.Recorder`` (risk
  events, JSON logs), ``tradebot.live.prometheus.LiveMetrics``.

Per closed bar (a ``Bar`` from the feed, or one the ``BarBuilder`` closed from ticks or on its timer):

1. the symbol's feature source takes it (features and the raw ATR);
2. the execution client gets it (``on_bar``: the paper broker fills the orders decided at the previous
   bar through the engine; a real broker ignores it);
3. in one journal transaction: the bar; the broker's fills and order updates (idempotently); the risk
   engine's update (session roll-over, daily loss, drawdown, data freshness) and any manual command
   from the journal (``tradebot live halt``); the policy's action -- it is called with the observation
   the env would give at this bar, and not during the feature warm-up (HOLD) -- the risk engine's
   decision (accept, resize, veto, or override with a flatten) and its order, written ahead as
   ``PENDING_SUBMIT``;
4. the order is sent once (``OrderManager.submit_once``);
5. in a second transaction: the broker's answer, positions, equity, the risk state, a feature-stream
   checkpoint every ``checkpoint_every`` bars, and the bar marked done.

``Heartbeat`` events (time passing without data) close bars on the timer, check data freshness,
apply manual commands and flatten when the risk engine says so.

Start-up (``start``) restores the risk state, reconciles the journal with the broker's order, fill
and position reports (the broker is authoritative; every difference is a risk event), rebuilds the
feature streams from their checkpoint plus the journaled bars, finishes a bar that a crash left
half-processed (re-using its journaled decision and order id, so nothing is sent twice), and only
then subscribes to the feed, resuming after the last journaled bar.

A policy that needs the bar it decides on (a replayed schedule) reads ``current_bar()``. The
policy's own recurrent state is not journaled: after a restart it starts afresh.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from tradebot.core.config import FrozenConfig
from tradebot.core.errors import FatalError, UserInputError
from tradebot.envs.engine import Action, EngineConfig
from tradebot.live.bar_builder import BarBuilder
from tradebot.live.journal import Journal
from tradebot.live.logs import get_logger
from tradebot.live.observations import FeatureSource, Observations
from tradebot.live.orders import OrderManager
from tradebot.live.ports import (
    NS_PER_SECOND,
    AccountReport,
    Bar,
    DataFeed,
    ExecutionClient,
    Heartbeat,
    OrderRequest,
    OrderStatus,
    OrderUpdate,
    PositionReport,
    RiskEvent,
    RiskState,
    Tick,
    Verdict,
)
from tradebot.live.prometheus import LiveMetrics
from tradebot.live.reconcile import BrokerState, JournalState
from tradebot.live.reconcile import reconcile as plan_reconciliation
from tradebot.live.recorder import Recorder
from tradebot.live.risk import RiskConfig, RiskEngine

_CURRENT_BAR: contextvars.ContextVar[Bar | None] = contextvars.ContextVar("tradebot_live_bar", default=None)
STAGES = ("bar_received", "broker_processed", "decided", "submitted", "bar_done")


def current_bar() -> Bar | None:
    """The bar the policy is being asked about (inside a policy call), else None."""
    return _CURRENT_BAR.get()


class LoopConfig(FrozenConfig):
    """Loop settings (YAML section ``loop`` of the live config)."""

    run: str = Field("paper", min_length=1, description="the run's name; client order ids derive from it")
    model_version: str | None = Field(None, description="recorded with every decision (default: the policy's)")
    checkpoint_every: int = Field(75, ge=1, description="bars between feature-stream checkpoints in the journal")
    bar_grace_s: float = Field(2.0, ge=0, description="a tick-built bar closes this long after its end")


@dataclass(frozen=True)
class LoopSummary:
    bars: int
    decisions: int
    orders: int
    fills: int
    equity: float
    risk_state: str
    resumed_bars: int  # half-processed bars finished after a restart


class TradingLoop:
    """See the module docstring. ``on_stage(stage, symbol, bar_ts)`` hears every stage of ``STAGES``."""

    def __init__(self, *, feed: DataFeed, broker: ExecutionClient, policy: Callable[[str, np.ndarray], Any],
                 journal: Journal, features: Mapping[str, FeatureSource], engine: EngineConfig,
                 risk: RiskConfig | None = None, config: LoopConfig | None = None, timeframe: str | None = None,
                 metrics: LiveMetrics | None = None, logger: logging.Logger | None = None,
                 on_stage: Callable[[str, str, int], None] | None = None):
        if not features:
            raise UserInputError("the loop needs at least one symbol (a feature source per symbol)")
        self.feed = feed
        self.policy = policy
        self.journal = journal
        self.features = dict(features)
        self.symbols = tuple(self.features)
        self.engine = engine
        self.config = config or LoopConfig()
        self.timeframe = timeframe or getattr(feed, "timeframe", None)
        if self.timeframe is None:
            raise UserInputError("the loop needs the bar size (timeframe=, e.g. '5m')")
        self.risk = RiskEngine(risk or RiskConfig(), engine, self.timeframe)
        self.builder = BarBuilder(self.timeframe, self.config.bar_grace_s)
        self.metrics = metrics or LiveMetrics()
        self.log = logger or get_logger()
        self.on_stage = on_stage
        self.model_version = (self.config.model_version or getattr(policy, "version", None)
                              or getattr(policy, "source", None) or type(policy).__name__)
        self.recorder = Recorder(journal, self.metrics, self.log, self.config.run)
        self.orders = OrderManager(broker, journal, self.risk, self.recorder, feed.clock, on_stage)
        self.observations = Observations(engine, self.symbols)
        self._positions: dict[str, PositionReport] = {}
        self._account: AccountReport | None = None
        self._last_done: dict[str, int] = {}
        self._since_ckpt: dict[str, int] = {s: 0 for s in self.symbols}
        self._control_applied = 0
        self._journaled_positions: dict[str, PositionReport] | None = None
        self._journaled_control = -1
        self._started = False
        self._counts = {"bars": 0, "decisions": 0, "resumed": 0}
        self._last_state = RiskState.ACTIVE

    @property
    def broker(self) -> ExecutionClient:
        """The execution client (the order manager's); may be replaced before ``start``."""
        return self.orders.broker

    @broker.setter
    def broker(self, broker: ExecutionClient) -> None:
        self.orders.broker = broker

    # ------------------------------------------------------------------------ helpers
    def _now(self) -> int:
        return self.feed.clock.now_ns()

    def _stage(self, stage: str, symbol: str, ts: int) -> None:
        if self.on_stage is not None:
            self.on_stage(stage, symbol, ts)

    def _sync_broker(self) -> None:
        """Journal the broker's new events; refresh positions and the account."""
        self.orders.apply_events(self.broker.poll_events(), self._now())
        self._positions = {p.symbol: p for p in self.broker.position_reports()}
        self._account = self.broker.account_report()

    def _send(self, order: OrderRequest, now: int) -> OrderUpdate | None:
        try:
            return self.orders.submit_once(order, now)
        except FatalError as err:
            self._fatal(str(err))
            raise

    def _fatal(self, reason: str) -> None:
        now = self._now()
        with self.journal.transaction():
            self.recorder.risk(self.risk.on_fatal(reason, now))
            self.journal.save_state("risk", self.risk.state_dict())
        self.metrics.risk_state.state(self.risk.state.value)
        self.recorder.log(logging.CRITICAL, "fatal", reason=reason)

    # ----------------------------------------------------------------------- start-up
    def start(self) -> None:
        """Connect, restore, reconcile with the broker, rebuild features, finish a half-done bar."""
        if self._started:
            return
        j = self.journal
        j.bind_run(self.config.run)
        j.check_setup(timeframe=self.timeframe, symbols=",".join(self.symbols))
        # a broker without state of its own (Fyers) learns the brackets of the orders it will report
        self.broker.restore_requests(j.order_requests())
        self.broker.connect()
        saved = j.load_state("risk")
        if saved is not None:
            self.risk.load_state_dict(saved)
        else:
            self.risk.start(self.broker.account_report().equity)
        self._control_applied = int(j.get_meta("control_applied") or 0)
        self._last_state = self.risk.state
        self.metrics.risk_state.state(self._last_state.value)
        self.reconcile()
        for sym, src in self.features.items():
            ckpt = j.load_state(f"features:{sym}")
            if ckpt is not None:
                src.load_state_dict(ckpt)
            for bar in j.bars(sym, done=True, after_ts=src.last_ts):
                src.update(bar)
            self.observations.restore(sym, (b.ts for b in j.bars(sym, done=True)))
            last = j.last_bar_ts(sym, done_only=True)
            if last is not None:
                self._last_done[sym] = last
            known = max((t for t in (src.last_ts, j.last_bar_ts(sym)) if t is not None), default=None)
            if known is not None:  # ticks of bars the history or the journal already has do not make bars again
                self.builder.mark_closed(sym, known)
        self.orders.load()
        self._started = True
        self._apply_pending_controls()  # a halt requested while the loop was down applies before trading
        for bar in j.undone_bars():  # a bar a crash left half-processed
            self._counts["resumed"] += 1
            self.process_bar(bar, resumed=True)
        self.feed.subscribe(self.symbols, after={s: t for s in self.symbols
                                                 if (t := j.last_bar_ts(s)) is not None})
        acct = self._account or self.broker.account_report()
        self.recorder.log(logging.INFO, "ready", symbols=list(self.symbols), equity=acct.equity,
                          risk_state=self.risk.state.value,
                          positions={p.symbol: p.qty for p in self._positions.values()},
                          model_version=self.model_version)

    def reconcile(self) -> None:
        """Make the journal agree with the broker (orders, fills, positions); record every difference."""
        j = self.journal
        now = self._now()
        broker = BrokerState.read(self.broker)
        plan = plan_reconciliation(JournalState.read(j), broker, now=now, state=self.risk.state)
        with j.transaction():
            self.orders.apply_reconciliation(plan, now)
            self._positions = {p.symbol: p for p in plan.positions}
            j.set_positions(self._positions.values(), now)
            self.recorder.risk(plan.events)
        self.broker.poll_events()  # everything they said is in the reports just read
        self._account = self.broker.account_report()
        self.recorder.log(logging.INFO, "reconciled", orders=len(broker.orders), fills_recovered=len(plan.new_fills),
                          findings=len(plan.events), positions={s: p.qty for s, p in self._positions.items()})

    # -------------------------------------------------------------------- the loop
    def run(self, max_events: int | None = None) -> LoopSummary:
        """Start, then handle feed events until the feed ends (then ``finish``) or ``max_events``."""
        self.start()
        n = 0
        ended = True
        for event in self.feed:
            self.handle(event)
            n += 1
            if max_events is not None and n >= max_events:
                ended = False
                break
        if ended:
            self.finish()
        return self.summary()

    def handle(self, event: Bar | Tick | Heartbeat) -> None:
        if isinstance(event, Bar):
            self.process_bar(event)
        elif isinstance(event, Tick):
            if event.symbol in self.features:
                for bar in self.builder.on_tick(event):
                    self.process_bar(bar)
        elif isinstance(event, Heartbeat):
            self.heartbeat(event.ts)

    def _apply_controls(self, now: int) -> list[RiskEvent]:
        events: list[RiskEvent] = []
        for cid, command, reason in self.journal.controls_after(self._control_applied):
            events += self.risk.apply_control(command, reason, now)
            self._control_applied = cid
            self.recorder.log(logging.WARNING, "control", command=command, reason=reason, id=cid)
        return events

    def _apply_pending_controls(self) -> None:
        now = self._now()
        with self.journal.transaction():
            self.recorder.risk(self._apply_controls(now))
            self._after_state_change(now)
            self.journal.save_state("risk", self.risk.state_dict())
            self.journal.set_meta("control_applied", str(self._control_applied))

    def _after_state_change(self, now: int) -> None:
        """Publish the risk state; while it is not ACTIVE, cancel working entries (no new exposure;
        one the rate limit defers is cancelled at the next event)."""
        state = self.risk.state
        if state is not self._last_state:
            self.metrics.risk_state.state(state.value)
            self._last_state = state
        if state is not RiskState.ACTIVE:
            self.orders.cancel_entries(now, f"risk state {state.value}")

    def process_bar(self, bar: Bar, resumed: bool = False) -> None:
        """One closed bar through the whole chain (``resumed``: a bar a crash left half-done)."""
        if not self._started:
            raise RuntimeError("call start() (or run()) before feeding bars")
        sym = bar.symbol
        src = self.features.get(sym)
        if src is None:
            return
        if bar.ts <= self._last_done.get(sym, -1):
            return  # delivered again: already done
        t0 = time.perf_counter()
        j = self.journal
        now = self._now()
        self._stage("bar_received", sym, bar.ts)
        row = src.update(bar)
        atr = src.atr
        self.observations.add_bar(sym, bar.ts)
        self.broker.on_bar(bar, atr)
        self._stage("broker_processed", sym, bar.ts)
        with j.transaction():  # the bar, the broker's news, the risk update and the decision: one commit
            j.record_bar(bar, now)
            self._sync_broker()
            account = self._account
            events = self.risk.on_bar_close(sym, bar, account.equity, atr, now)
            events += self._apply_controls(now)
            self._after_state_change(now)
            position = self._positions.get(sym)
            existing = j.decision(sym, bar.ts) if resumed else None
            if existing is None:
                obs = self.observations.at(sym, row, bar, atr, position)
                proposed = self._act(sym, obs, bar) if src.ready else int(Action.HOLD)
                decision, devents = self.risk.evaluate(sym, bar, proposed, position=position,
                                                       working=self.orders.working(sym), equity=account.equity,
                                                       atr=atr, now=now, run=self.config.run,
                                                       positions=self._positions)
                j.record_decision(decision, decided_ns=now, model_version=self.model_version,
                                  features_hash=hashlib.blake2b(obs.tobytes(), digest_size=8).hexdigest())
                self.recorder.risk(events + devents)
                order, proposed_a, final_a = decision.order, decision.proposed, decision.final
                self._counts["decisions"] += 1
                self.recorder.log(logging.DEBUG, "decision", symbol=sym, bar=bar.ts, proposed=Action(proposed_a).name,
                                  final=Action(final_a).name, verdict=decision.verdict.value,
                                  reasons=list(decision.reasons))
            else:  # decided before a crash: the same decision, the same order id
                self.recorder.risk(events)
                coid = existing["client_order_id"]
                row = j.order(coid) if coid else None
                # an order that ended meanwhile (reconciliation found it filled / cancelled) is not working
                order = j.order_request(coid) if row is not None and not OrderStatus(row["status"]).terminal else None
                proposed_a, final_a = int(existing["action"]), int(existing["final_action"])
            if order is not None:
                self.orders.track(order, unsent=existing is None)
        self._stage("decided", sym, bar.ts)
        self.metrics.actions.labels(sym, "policy", Action(proposed_a).name).inc()
        self.metrics.actions.labels(sym, "final", Action(final_a).name).inc()
        answered: OrderUpdate | None = None
        if order is not None:
            answered = self._send(order, now)
            self.metrics.bar_to_order.observe(time.perf_counter() - t0)
        with j.transaction():
            if answered is not None:
                self.orders.apply(answered)
            self._sync_broker()
            self._finish_bar(bar, now)
        self._stage("bar_done", sym, bar.ts)

    def _finish_bar(self, bar: Bar, now: int) -> None:
        j = self.journal
        sym = bar.symbol
        acct = self._account
        e0, peak = self.risk.day_start_equity, self.risk.peak_equity
        day_pnl = acct.equity - e0
        drawdown = 1.0 - acct.equity / peak if peak > 0 else 0.0
        self._since_ckpt[sym] += 1
        with j.transaction():
            if self._positions != self._journaled_positions:
                j.set_positions(self._positions.values(), now)
                self._journaled_positions = dict(self._positions)
            j.record_equity(bar.ts, acct, day_pnl, drawdown, self.risk.state.value)
            j.save_state("risk", self.risk.state_dict())
            if self._control_applied != self._journaled_control:
                j.set_meta("control_applied", str(self._control_applied))
                self._journaled_control = self._control_applied
            if self._since_ckpt[sym] >= self.config.checkpoint_every or bar.last_of_session or bar.final:
                j.save_state(f"features:{sym}", self.features[sym].state_dict())
                self._since_ckpt[sym] = 0
            j.mark_bar_done(sym, bar.ts)
        self._last_done[sym] = bar.ts
        self._counts["bars"] += 1
        m = self.metrics
        m.bars.labels(sym).inc()
        m.equity.set(acct.equity)
        m.day_pnl.set(day_pnl)
        m.realized_pnl.set(acct.realized_pnl)
        m.drawdown.set(drawdown)
        for s in self.symbols:
            p = self._positions.get(s)
            m.position.labels(s).set(p.qty if p else 0.0)
        m.staleness.labels(sym).set(max(0.0, (now - bar.end) / NS_PER_SECOND))

    def _act(self, symbol: str, obs: np.ndarray, bar: Bar) -> int:
        token = _CURRENT_BAR.set(bar)
        t0 = time.perf_counter()
        try:
            out = self.policy(symbol, obs)
        except Exception as err:  # a policy failure must not stop the loop that guards the positions
            self.log.error("policy failed", exc_info=True, extra={"event": "policy_error", "fields": {"symbol": symbol}})
            self.recorder.risk([RiskEvent(ts=self._now(), kind="policy_error", reason=f"{type(err).__name__}: {err}",
                                          state=self.risk.state, symbol=symbol, key=f"policy_error:{symbol}:{bar.ts}")])
            return int(Action.HOLD)
        finally:
            self.metrics.inference.observe(time.perf_counter() - t0)
            _CURRENT_BAR.reset(token)
        action = out[0] if isinstance(out, tuple) else out
        try:
            return int(Action(int(action)))
        except (ValueError, TypeError):
            self.recorder.risk([RiskEvent(ts=self._now(), kind="policy_error", reason=f"policy returned {action!r}, "
                                          "not an action 0..4", state=self.risk.state, symbol=symbol,
                                          key=f"policy_error:{symbol}:{bar.ts}")])
            return int(Action.HOLD)

    # ------------------------------------------------------------------ between bars
    def heartbeat(self, now: int) -> None:
        """Timer work: close due bars, freshness, manual commands, flatten when required."""
        if not self._started:
            raise RuntimeError("call start() (or run()) before feeding heartbeats")
        for bar in self.builder.on_time(now):
            self.process_bar(bar)
        events = self.risk.on_heartbeat(now) + self._apply_controls(now)
        self._after_state_change(now)
        for sym in self.symbols:
            overdue = self.risk.overdue_s(sym, now)
            last = self.risk.last_bar_end.get(sym)
            if last is not None:
                self.metrics.staleness.labels(sym).set(max(0.0, (now - last) / NS_PER_SECOND))
            pos = self._positions.get(sym)
            reason = self.risk.flatten_reason(sym, pos, None, now)
            if reason is None or self.orders.working(sym) is not None or not self.risk.limiter.allow(now):
                continue
            last_ts = self._last_done.get(sym, 0)
            order = self.risk.flatten_order(sym, pos, last_ts, reason, now, self.config.run)
            events.append(RiskEvent(ts=now, kind=Verdict.OVERRIDE.value, reason=reason, state=self.risk.state,
                                    symbol=sym, details={"overdue_s": overdue}, key=f"override:{sym}:{last_ts}:hb"))
            with self.journal.transaction():
                self.orders.write_ahead(order)
                self.recorder.risk(events)
            events = []
            answered = self._send(order, now)
            if answered is not None:
                self.orders.apply(answered)
        with self.journal.transaction():
            self.recorder.risk(events)
            self._sync_broker()
            self.journal.save_state("risk", self.risk.state_dict())
            self.journal.set_meta("control_applied", str(self._control_applied))

    def finish(self, cancel_working: bool = True) -> None:
        """End of the feed: cancel what is still working (nothing can fill it), save, disconnect."""
        self._apply_pending_controls()
        now = self._now()
        if cancel_working:
            self.orders.close_all(now, "the run ended")
        self._sync_broker()
        with self.journal.transaction():
            self.journal.set_positions(self._positions.values(), now)
            self.journal.save_state("risk", self.risk.state_dict())
        self.recorder.log(logging.INFO, "finished", **self.summary().__dict__)
        self.broker.disconnect()

    def summary(self) -> LoopSummary:
        acct = self._account
        return LoopSummary(bars=self._counts["bars"], decisions=self._counts["decisions"], orders=self.orders.orders_sent,
                           fills=self.orders.fills_recorded, equity=acct.equity if acct else math.nan,
                           risk_state=self.risk.state.value, resumed_bars=self._counts["resumed"])
