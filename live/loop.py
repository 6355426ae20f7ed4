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

1. the symbol's feature source takes it (features and the raw ATR); a bar it already has (the warm-up
   history reaches past it: a restart's backfill) is dropped;
2. the execution client gets it (``on_bar``: the paper broker fills the orders decided at the previous
   bar through the engine; a real broker ignores it), and its news is read (events, positions, account);
3. in one journal transaction: the bar; the broker's news (idempotently); the risk engine's update
   (session roll-over, daily loss, drawdown, data freshness, positions above the cap) and any manual
   command from the journal (``tradebot live halt``);
4. the policy's action, outside any transaction (a slow policy never blocks ``tradebot live halt``):
   it is called with the observation the env would give at this bar, and not during the feature
   warm-up (HOLD); a policy failing for ``policy_down_s`` makes the state REDUCING;
5. in a second transaction: the risk engine's decision (accept, resize, veto, or override with a
   flatten) and its order, written ahead as ``PENDING_SUBMIT``;
6. the order is sent once (``OrderManager.submit_once``);
7. in a last transaction: the broker's answer, positions, equity, the risk state, a feature-stream
   checkpoint every ``checkpoint_every`` bars, and the bar marked done.

No transaction is open while the policy or the broker is called.

``Heartbeat`` events (time passing without data) close bars on the timer, check data freshness,
apply manual commands, look up orders whose outcome is unknown, compare the broker's positions (read
afresh, ``ExecutionClient.resync``) with the journal's fills every ``position_check_s`` (a difference
halts), and flatten when the risk engine says so (a refused flatten is tried again under a new id,
with a doubling back-off).

Start-up (``start``) takes the journal's run lock (a second loop on it is refused), restores the risk
state (a new journal takes the day's start and the peak from the broker and the account ledger),
reconciles the journal with the broker's order, fill and position reports (the broker is
authoritative; every difference is a risk event), rebuilds the feature streams from their
checkpoint plus the journaled bars and checkpoints them, finishes a bar that a crash left
half-processed (re-using its journaled decision and order id, so nothing is sent twice, after the
risk engine judged the order again: ``RiskEngine.recheck``), and only then subscribes to the feed,
resuming after the last journaled bar.

A policy that needs the bar it decides on (a replayed schedule) reads ``current_bar()``. The
policy's own recurrent state is not journaled: after a restart it starts afresh. A policy that
explains its decisions (``policy.explain(symbol)``: a mixture of experts, in-process through
``tradebot.live.policies.ModelPolicy`` or served through ``tradebot.serving.policy_client``) has the
gate of each decision (weights per expert, the chosen expert) journaled with it and exported to
Prometheus (``LiveMetrics.observe_gate``).
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
from tradebot.core.errors import FatalError, RetryableError, UserInputError
from tradebot.core.nse_time import ist_day
from tradebot.envs.engine import Action, EngineConfig
from tradebot.live.bar_builder import BarBuilder
from tradebot.live.drift_watch import STATE_KEY as DRIFT_STATE
from tradebot.live.drift_watch import DriftWatch
from tradebot.live.journal import Journal
from tradebot.live.ledger import AccountLedger
from tradebot.live.logs import get_logger
from tradebot.live.observations import FeatureSource, Observations
from tradebot.live.orders import OrderManager
from tradebot.live.ports import (
    NS_PER_SECOND,
    AccountReport,
    Bar,
    DataFeed,
    ExecutionClient,
    Fill,
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
from tradebot.live.reconcile import recover_fills
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
    unknown_poll_s: float = Field(2.0, gt=0, description="an order whose outcome is unknown is looked up this often")
    unknown_halt_s: float = Field(30.0, gt=0, description="halt when such an order is still not found after this")
    unknown_expire_s: float = Field(600.0, gt=0, description="...and expire it as never received after this")
    flatten_backoff_s: float = Field(1.0, gt=0, description="first wait before a refused flatten is tried again "
                                     "(doubling, at most 60 s)")
    position_check_s: float = Field(60.0, gt=0, description="compare the broker's positions (read afresh) with the "
                                    "journal's fills this often; a difference halts")
    policy_down_s: float = Field(60.0, gt=0, description="a policy failing this long makes the state REDUCING")


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
                 on_stage: Callable[[str, str, int], None] | None = None, ledger: AccountLedger | None = None,
                 drift: DriftWatch | None = None):
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
        self.ledger = ledger
        self.drift = drift  # the model's drift monitors (None: a baseline's schedule, or none configured)
        self.model_version = (self.config.model_version or getattr(policy, "version", None)
                              or getattr(policy, "source", None) or type(policy).__name__)
        self.recorder = Recorder(journal, self.metrics, self.log, self.config.run)
        c = self.config
        self.orders = OrderManager(broker, journal, self.risk, self.recorder, feed.clock, on_stage,
                                   poll_s=c.unknown_poll_s, halt_s=c.unknown_halt_s, expire_s=c.unknown_expire_s)
        self.observations = Observations(engine, self.symbols)
        self._positions: dict[str, PositionReport] = {}
        self._account: AccountReport | None = None
        self._last_done: dict[str, int] = {}
        self._since_ckpt: dict[str, int] = {s: 0 for s in self.symbols}
        self._control_applied = 0
        self._journaled_positions: dict[str, PositionReport] | None = None
        self._journaled_control = -1
        self._started = False
        self._counts = {"bars": 0, "decisions": 0, "resumed": 0, "skipped": 0}
        self._last_state = RiskState.ACTIVE
        self._policy_down_since: int | None = None
        self._baseline: dict[str, float] = {}  # broker position - journaled fills, per symbol, at start
        self._checked_at: int | None = None

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

    def _read_broker(self) -> tuple[list[OrderUpdate | Fill], list[PositionReport], AccountReport]:
        """The broker's news: events since the last poll, positions, the account (calls the broker: never
        inside a journal transaction)."""
        return self.broker.poll_events(), self.broker.position_reports(), self.broker.account_report()

    def _apply_news(self, news: tuple[list[OrderUpdate | Fill], list[PositionReport], AccountReport], now: int) -> None:
        events, positions, account = news
        if self.drift is not None:
            self._trades_to_drift(events, now)
        self.orders.apply_events(events, now)
        self._positions = {p.symbol: p for p in positions}
        self._account = account

    def _trades_to_drift(self, events: list[OrderUpdate | Fill], now: int) -> None:
        """Closed trades (exit fills: their net P&L, over what the position cost to enter) to the drift
        monitors; inside the caller's transaction."""
        for ev in events:
            if isinstance(ev, Fill) and ev.kind != "entry" and math.isfinite(ev.realized_pnl):
                held = self._positions.get(ev.symbol)
                price = held.avg_price if held is not None and held.qty != 0.0 else ev.price
                self.recorder.risk(self.drift.on_trade(ev.symbol, ev.ts, ev.realized_pnl, abs(ev.qty) * price, now,
                                                       self.risk))

    def _sync_broker(self, now: int | None = None) -> None:
        """Journal the broker's news (read first, then written in one transaction)."""
        news = self._read_broker()
        with self.journal.transaction():
            self._apply_news(news, self._now() if now is None else now)

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
        """Lock the journal, connect, restore, reconcile with the broker, rebuild features, finish a half-done bar."""
        if self._started:
            return
        j = self.journal
        j.bind_run(self.config.run)
        j.check_setup(timeframe=self.timeframe, symbols=",".join(self.symbols))
        j.lock_run()  # one loop per journal
        # a broker without state of its own (Fyers) learns the brackets of the orders it will report
        self.broker.restore_requests(j.order_requests())
        self.broker.connect()
        saved = j.load_state("risk")
        if saved is not None:
            self.risk.load_state_dict(saved)
        else:
            self._start_risk()
        self._control_applied = int(j.get_meta("control_applied") or 0)
        if self.drift is not None and (saved_drift := j.load_state(DRIFT_STATE)) is not None:
            self.drift.load_state_dict(saved_drift)
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
        with j.transaction():  # a restart rebuilds the streams from here, not from a newer warm-up history
            for sym, src in self.features.items():
                j.save_state(f"features:{sym}", src.state_dict())
        self.orders.load()
        self._started = True
        self._apply_pending_controls()  # a halt requested while the loop was down applies before trading
        # subscribed first (a replay's clock then reads where the run stopped; a live feed queues meanwhile)
        self.feed.subscribe(self.symbols, after={s: t for s in self.symbols
                                                 if (t := j.last_bar_ts(s)) is not None})
        for bar in j.undone_bars():  # a bar a crash left half-processed
            self._counts["resumed"] += 1
            self.process_bar(bar, resumed=True)
        acct = self._account or self.broker.account_report()
        self.recorder.log(logging.INFO, "ready", symbols=list(self.symbols), equity=acct.equity,
                          risk_state=self.risk.state.value,
                          positions={p.symbol: p.qty for p in self._positions.values()},
                          model_version=self.model_version, limits=self.risk.config.model_dump(mode="json"))

    def _start_risk(self) -> None:
        """A new journal: the account's equity, the session's start (the broker's figure, else the ledger's
        of today) and the peak (the ledger's) -- not a fresh budget because the journal is new."""
        acct = self.broker.account_report()
        day = ist_day(self._now())
        known = self.ledger.read(self.broker.account_id) if self.ledger is not None else None
        day_start = acct.day_start_equity
        if not math.isfinite(day_start) and known is not None and known["day"] == day:
            day_start = known["day_start_equity"]
        peak = known["peak_equity"] if known is not None else math.nan
        self.risk.start(acct.equity, day=day if math.isfinite(day_start) else None, day_start_equity=day_start,
                        peak_equity=peak)

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
        # events that came while the reports were read may not be in them: applied (idempotently), not dropped
        news = self._read_broker()
        with j.transaction():
            self._apply_news(news, now)
        net = j.net_fills()
        self._baseline = {s: self._positions[s].qty if s in self._positions else 0.0 for s in
                          set(self._positions) | set(net)}
        self._baseline = {s: q - net.get(s, 0.0) for s, q in self._baseline.items()}
        self._checked_at = now
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
            self.journal.save_state("risk", self.risk.state_dict())
            self.journal.set_meta("control_applied", str(self._control_applied))
        self._after_state_change(now)

    def _after_state_change(self, now: int) -> None:
        """Publish the risk state; while it is not ACTIVE, cancel working entries (no new exposure;
        one the rate limit defers is cancelled at the next event). Calls the broker: outside transactions."""
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
        if src.last_ts is not None and bar.ts <= src.last_ts:
            self._skip_bar(bar, resumed)
            return
        t0 = time.perf_counter()
        j = self.journal
        now = self._now()
        self._stage("bar_received", sym, bar.ts)
        row = src.update(bar)
        atr = src.atr
        self.observations.add_bar(sym, bar.ts)
        self.broker.on_bar(bar, atr)
        self._stage("broker_processed", sym, bar.ts)
        news = self._read_broker()
        with j.transaction():  # the bar, the broker's news and the risk update: one commit
            j.record_bar(bar, now)
            self._apply_news(news, now)
            events = self.risk.on_bar_close(sym, bar, self._account.equity, atr, now)
            events += self._apply_controls(now) + self.risk.check_positions(self._positions, now)
            self.recorder.risk(events)
            existing = j.decision(sym, bar.ts) if resumed else None
        self._after_state_change(now)
        self.recorder.risk(self.orders.resolve_unknown(now))
        position = self._positions.get(sym)
        order: OrderRequest | None = None
        if existing is None:
            obs = self.observations.at(sym, row, bar, atr, position)
            proposed, gate = self._act(sym, obs, bar, now) if src.ready else (int(Action.HOLD), None)  # no transaction
            if self.drift is not None and src.ready:  # before the risk decision: an ALARM already binds this bar
                with j.transaction():
                    self.recorder.risk(self.drift.on_decision(sym, bar.ts, row, proposed, now, self.risk))
                    j.save_state(DRIFT_STATE, self.drift.state_dict())
                self._after_state_change(now)
                self.metrics.observe_drift(sym, self.drift.monitors[sym].snapshot())
            with j.transaction():
                decision, devents = self.risk.evaluate(sym, bar, proposed, position=position,
                                                       working=self.orders.working(sym), equity=self._account.equity,
                                                       atr=atr, now=now, run=self.config.run,
                                                       positions=self._positions)
                j.record_decision(decision, decided_ns=now, model_version=self.model_version,
                                  features_hash=hashlib.blake2b(obs.tobytes(), digest_size=8).hexdigest(), gate=gate)
                self.recorder.risk(devents)
                order, proposed_a, final_a = decision.order, decision.proposed, decision.final
                if order is not None:
                    self.orders.track(order, unsent=True)
            self._counts["decisions"] += 1
            if gate is not None:
                self.metrics.observe_gate(sym, gate)
            self.recorder.log(logging.DEBUG, "decision", symbol=sym, bar=bar.ts, proposed=Action(proposed_a).name,
                              final=Action(final_a).name, verdict=decision.verdict.value, reasons=list(decision.reasons),
                              **({"expert": gate["expert"]} if gate is not None else {}))
        else:  # decided before a crash: the same decision, the same order id, judged again before it goes out
            proposed_a, final_a = int(existing["action"]), int(existing["final_action"])
            order = self._resumed_order(existing["client_order_id"], bar, position, now)
        self._stage("decided", sym, bar.ts)
        self.metrics.actions.labels(sym, "policy", Action(proposed_a).name).inc()
        self.metrics.actions.labels(sym, "final", Action(final_a).name).inc()
        answered: OrderUpdate | None = None
        if order is not None:
            answered = self._send(order, now)
            self.metrics.bar_to_order.observe(time.perf_counter() - t0)
        news = self._read_broker()
        with j.transaction():
            if answered is not None:
                self.orders.apply(answered)
            self._apply_news(news, now)
            self._finish_bar(bar, now)
        self._stage("bar_done", sym, bar.ts)

    def _resumed_order(self, coid: str | None, bar: Bar, position: PositionReport | None,
                       now: int) -> OrderRequest | None:
        """A half-done bar's order: None when it ended meanwhile (reconciliation found it filled, cancelled),
        or when the risk engine refuses it now (expired, with the reason)."""
        j = self.journal
        row = j.order(coid) if coid else None
        if row is None or OrderStatus(row["status"]).terminal:
            return None
        order = j.order_request(coid)
        fresh = row["submit_attempts"] == 0 or getattr(self.broker, "idempotent_submit", False)
        if order is not None and row["status"] == OrderStatus.PENDING_SUBMIT.value and fresh:
            why = self.risk.recheck(order, bar, position, now)
            if why is not None:
                with j.transaction():
                    j.expire_order(coid, f"resumed after a restart, not sent: {why}", now)
                    self.recorder.risk([RiskEvent(ts=now, kind="veto", reason=f"resumed order {coid} not sent: {why}",
                                                  state=self.risk.state, symbol=bar.symbol,
                                                  details={"code": "resumed"}, key=f"resumed:{coid}")])
                return None
        if order is not None:
            self.orders.track(order, unsent=False)
        return order

    def _skip_bar(self, bar: Bar, resumed: bool) -> None:
        """A bar the symbol's features already have (the warm-up history reaches past it): nothing can be
        decided on it. A half-done one is closed (an order it left unsent expires); a feed's is dropped."""
        self._counts["skipped"] += 1
        self.recorder.log(logging.WARNING, "bar_skipped", symbol=bar.symbol, bar=bar.ts, resumed=resumed,
                          features_at=self.features[bar.symbol].last_ts)
        if not resumed:
            return
        now = self._now()
        j = self.journal
        with j.transaction():
            d = j.decision(bar.symbol, bar.ts)
            coid = d["client_order_id"] if d else None
            row = j.order(coid) if coid else None
            if row is not None and row["status"] == OrderStatus.PENDING_SUBMIT.value and row["submit_attempts"] == 0:
                j.expire_order(coid, "resumed after a restart, not sent: the features moved past its bar", now)
            j.mark_bar_done(bar.symbol, bar.ts)
        self._last_done[bar.symbol] = bar.ts

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
        if self.ledger is not None:
            self.ledger.write(self.broker.account_id, day=self.risk.day, day_start_equity=e0, peak_equity=peak)
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

    def _act(self, symbol: str, obs: np.ndarray, bar: Bar, now: int) -> tuple[int, dict[str, Any] | None]:
        """The policy's action for ``symbol`` (HOLD when it fails) and the gate of that decision (a policy
        with ``explain``: a mixture of experts; ``{"expert", "weights"}``), else None."""
        token = _CURRENT_BAR.set(bar)
        t0 = time.perf_counter()
        try:
            out = self.policy(symbol, obs)
        except Exception as err:  # a policy failure must not stop the loop that guards the positions
            self.log.error("policy failed", exc_info=True, extra={"event": "policy_error", "fields": {"symbol": symbol}})
            self.recorder.risk([RiskEvent(ts=self._now(), kind="policy_error", reason=f"{type(err).__name__}: {err}",
                                          state=self.risk.state, symbol=symbol, key=f"policy_error:{symbol}:{bar.ts}")])
            self._policy_health(now, failed=f"{type(err).__name__}: {err}")
            return int(Action.HOLD), None
        finally:
            self.metrics.inference.observe(time.perf_counter() - t0)
            _CURRENT_BAR.reset(token)
        self._policy_health(now, failed=None)
        action = out[0] if isinstance(out, tuple) else out
        try:
            proposed = int(Action(int(action)))
        except (ValueError, TypeError):
            self.recorder.risk([RiskEvent(ts=self._now(), kind="policy_error", reason=f"policy returned {action!r}, "
                                          "not an action 0..4", state=self.risk.state, symbol=symbol,
                                          key=f"policy_error:{symbol}:{bar.ts}")])
            return int(Action.HOLD), None
        return proposed, self._gate(symbol)

    def _gate(self, symbol: str) -> dict[str, Any] | None:
        """The gate of the policy's last decision for ``symbol`` (``policy.explain``), as a plain dict."""
        explain = getattr(self.policy, "explain", None)
        gate = explain(symbol) if callable(explain) else None
        if gate is None:
            return None
        return gate.as_dict() if hasattr(gate, "as_dict") else dict(gate)

    def _policy_health(self, now: int, failed: str | None) -> None:
        """A policy failing for ``policy_down_s`` makes the state REDUCING (exits only) until it answers again."""
        if failed is None:
            self._policy_down_since = None
            events = self.risk.set_condition("policy_down", None, "the policy answers again", now, kind="policy_down")
        else:
            since = self._policy_down_since = self._policy_down_since if self._policy_down_since is not None else now
            down = (now - since) / NS_PER_SECOND
            if down < self.config.policy_down_s:
                return
            events = self.risk.set_condition("policy_down", RiskState.REDUCING, f"the policy has failed for {down:.0f}s "
                                             f"(last: {failed}): exits only", now, kind="policy_down")
        self.recorder.risk(events)

    # ------------------------------------------------------------------ between bars
    def heartbeat(self, now: int) -> None:
        """Timer work: close due bars, freshness, manual commands, unknown orders, the position check, flatten."""
        if not self._started:
            raise RuntimeError("call start() (or run()) before feeding heartbeats")
        for bar in self.builder.on_time(now):
            self.process_bar(bar)
        news = self._read_broker()
        with self.journal.transaction():
            self._apply_news(news, now)
            self.recorder.risk(self.risk.on_heartbeat(now) + self._apply_controls(now)
                               + self.risk.check_positions(self._positions, now))
        self._after_state_change(now)
        self.recorder.risk(self.orders.resolve_unknown(now) + self._check_positions(now))
        for sym in self.symbols:
            overdue = self.risk.overdue_s(sym, now)
            last = self.risk.last_bar_end.get(sym)
            if last is not None:
                self.metrics.staleness.labels(sym).set(max(0.0, (now - last) / NS_PER_SECOND))
            self._flatten_between_bars(sym, overdue, now)
        news = self._read_broker()
        with self.journal.transaction():
            self._apply_news(news, now)
            self.journal.save_state("risk", self.risk.state_dict())
            self.journal.set_meta("control_applied", str(self._control_applied))

    def _flatten_between_bars(self, sym: str, overdue: float | None, now: int) -> None:
        pos = self._positions.get(sym)
        reason = self.risk.flatten_reason(sym, pos, None, now)
        if reason is None or self.orders.working(sym) is not None or not self.risk.limiter.allow(now):
            return
        last_ts = self._last_done.get(sym, 0)
        attempt = self.orders.flatten_attempt(sym, last_ts, now, self.config.flatten_backoff_s)
        if attempt is None:
            return
        order = self.risk.flatten_order(sym, pos, last_ts, reason, now, self.config.run, attempt)
        event = RiskEvent(ts=now, kind=Verdict.OVERRIDE.value, reason=reason, state=self.risk.state, symbol=sym,
                          details={"overdue_s": overdue, "attempt": attempt},
                          key=f"override:{sym}:{last_ts}:hb" + (f"{attempt}" if attempt else ""))
        with self.journal.transaction():
            self.orders.write_ahead(order)
            self.recorder.risk([event])
        answered = self._send(order, now)
        if answered is not None:
            with self.journal.transaction():
                self.orders.apply(answered)

    def _check_positions(self, now: int) -> list[RiskEvent]:
        """Every ``position_check_s``: the broker's positions, read afresh, against the journal's fills (plus
        what the broker held when this process started); a difference halts."""
        if self._checked_at is not None and now - self._checked_at < self.config.position_check_s * NS_PER_SECOND:
            return []
        self._checked_at = now
        try:
            self.broker.resync()
            news = self._read_broker()
        except RetryableError as err:
            self.recorder.log(logging.WARNING, "position_check_failed", reason=str(err))
            return []
        with self.journal.transaction():
            self._apply_news(news, now)
            # fills the broker has and the journal lacks (an event lost in a crash or a race) are recorded now
            missed, found = recover_fills(self.journal.fill_ids(), self.broker.fill_reports(), now=now,
                                          state=self.risk.state)
            for f in missed:
                self.orders.apply_fill(f, now)
            self.recorder.risk(found)
        net = self.journal.net_fills()
        broker = {p.symbol: p.qty for p in self._positions.values()}
        wrong = {s: (broker.get(s, 0.0), net.get(s, 0.0) + self._baseline.get(s, 0.0))
                 for s in set(broker) | set(net) | set(self._baseline)
                 if abs(broker.get(s, 0.0) - net.get(s, 0.0) - self._baseline.get(s, 0.0)) > 1e-9}
        if not wrong:
            return []
        for s, (b, _) in wrong.items():  # one finding per difference
            self._baseline[s] = b - net.get(s, 0.0)
        text = ", ".join(f"{s}: broker {b:+g}, journal {jq:+g}" for s, (b, jq) in sorted(wrong.items()))
        return self.risk.set_condition("position_mismatch", RiskState.HALTED, f"positions differ from the broker's "
                                       f"({text})", now, kind="position_mismatch")

    def finish(self, cancel_working: bool = True) -> None:
        """End of the feed: cancel what is still working (nothing can fill it), save, disconnect."""
        self._apply_pending_controls()
        now = self._now()
        if cancel_working:
            self.orders.close_all(now, "the run ended")
        self.shutdown()

    def shutdown(self) -> None:
        """Journal the broker's last news and the positions, then disconnect (also after an error or Ctrl-C)."""
        now = self._now()
        try:
            self._sync_broker(now)
            with self.journal.transaction():
                self.journal.set_positions(self._positions.values(), now)
                self.journal.save_state("risk", self.risk.state_dict())
            self.recorder.log(logging.INFO, "finished", **self.summary().__dict__)
        finally:
            self.broker.disconnect()

    def summary(self) -> LoopSummary:
        acct = self._account
        return LoopSummary(bars=self._counts["bars"], decisions=self._counts["decisions"], orders=self.orders.orders_sent,
                           fills=self.orders.fills_recorded, equity=acct.equity if acct else math.nan,
                           risk_state=self.risk.state.value, resumed_bars=self._counts["resumed"])
