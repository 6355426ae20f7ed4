"""One trading day's work, built from the same pieces as ``tradebot live --feed fyers``: the token check, the
loop (Fyers data socket, paper broker or Fyers orders, the policy), and the day's report files.

```python
status = check_token(config)                                   # the profile call: TokenStatus(ok, seconds_left, reason)
session = build_session(config, live, day, clock, metrics)     # warm-up: history, features, policy, reconcile
summary, interrupted = run_fyers_loop(session.loop, until_minute=...)    # tradebot.live.launch, as `tradebot live`
folders = write_day_report(config, live, day, policy_name)     # days/DAY/report/: the run's files
```

Files per day: ``STATE_DIR/days/YYYY-MM-DD/journal.db`` (a journal per day) and ``report/``; the account
is one for every day: ``STATE_DIR/account/`` holds the paper broker's state (paper mode) and the account
ledger (the day's starting equity and the drawdown peak carried from journal to journal), and
``history.json`` (one row per reported day).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tradebot.core.files import write_json_atomic
from tradebot.live.journal import Journal
from tradebot.live.loop import TradingLoop
from tradebot.live.ports import ExecutionClient, Fill, OrderStatus, OrderUpdate
from tradebot.live.prometheus import LiveMetrics
from tradebot.live.runner import LiveConfig
from tradebot.live.service.service_config import ServiceConfig

NS = 1_000_000_000
IST_OFFSET_NS = 19_800 * NS


def day_dir(config: ServiceConfig, day: dt.date) -> Path:
    return config.state / "days" / day.isoformat()


def journal_path(config: ServiceConfig, day: dt.date) -> Path:
    return day_dir(config, day) / "journal.db"


def account_dir(config: ServiceConfig) -> Path:
    return config.state / "account"


@dataclass(frozen=True)
class TokenStatus:
    ok: bool
    seconds_left: float
    reason: str = ""


def check_token(config: ServiceConfig, now_s: float | None = None) -> TokenStatus:
    """The Fyers token: present, 0600, not past its expiry, and accepted by the server (``get_profile``):
    a token that decodes fine can be dead there. Never raises for a refused token (``ok`` False, why)."""
    from tradebot.core.errors import FatalError, RetryableError, UserInputError
    from tradebot.live.adapters.fyers.auth import load_token, verify_token
    from tradebot.live.adapters.fyers.rest import Endpoints

    try:
        token = load_token(config.token_file, allow_expired=True)
    except (FatalError, UserInputError) as err:
        return TokenStatus(False, 0.0, str(err))
    left = token.seconds_left(now_s)
    try:
        verify_token(token, endpoints=Endpoints.resolve(token.api_base), log_path=_log_dir(config))
    except RetryableError as err:
        return TokenStatus(False, left, f"the profile check got no answer ({err}); retrying")
    except FatalError as err:
        return TokenStatus(False, left, str(err))
    return TokenStatus(True, left)


def _log_dir(config: ServiceConfig) -> Path:
    return Path(config.fyers_log_dir).expanduser() if config.fyers_log_dir else config.state / "logs"


class WatchedPolicy:
    """The policy as the loop calls it, remembering whether its last answer came (readiness: policy answering)."""

    def __init__(self, policy: Callable[[str, Any], Any]):
        self.policy = policy
        self.last_ok: bool | None = None
        self.last_error = ""
        self.last_latency_s = math.nan

    def __call__(self, symbol: str, obs: Any) -> Any:
        t0 = time.monotonic()
        try:
            out = self.policy(symbol, obs)
        except Exception as err:
            self.last_ok, self.last_error = False, f"{type(err).__name__}: {err}"[:200]
            raise
        self.last_ok, self.last_error, self.last_latency_s = True, "", time.monotonic() - t0
        return out

    def __getattr__(self, name: str) -> Any:  # reset, info, version, obs_dim, close
        return getattr(self.policy, name)


class DayBooks(ExecutionClient):
    """The paper broker seen as a broker's day books: its order and fill reports are the IST day's only (as
    Fyers' orderbook and tradebook are), so a new day's journal on the same paper account reconciles with
    that day's orders, not with every order the account ever had. Everything else is the paper broker's."""

    def __init__(self, inner: ExecutionClient, day: dt.date):
        self.inner = inner
        self.day_start_ns = (day - dt.date(1970, 1, 1)).days * 86_400 * NS - IST_OFFSET_NS
        self.name, self.account_id = inner.name, inner.account_id
        self.idempotent_submit = inner.idempotent_submit

    def _today(self, ts: int) -> bool:
        return ts >= self.day_start_ns

    def connect(self) -> None:
        self.inner.connect()

    def disconnect(self) -> None:
        self.inner.disconnect()

    def submit(self, order: Any) -> OrderUpdate:
        return self.inner.submit(order)

    def cancel(self, client_order_id: str) -> OrderUpdate:
        return self.inner.cancel(client_order_id)

    def cancel_all(self, symbol: str | None = None) -> list[OrderUpdate]:
        return self.inner.cancel_all(symbol)

    def order_status(self, client_order_id: str) -> OrderUpdate | None:
        return self.inner.order_status(client_order_id)

    def order_status_reports(self) -> list[OrderUpdate]:
        return [u for u in self.inner.order_status_reports() if self._today(u.ts)]

    def fill_reports(self, since_ns: int | None = None) -> list[Fill]:
        return [f for f in self.inner.fill_reports(since_ns) if self._today(f.ts)]

    def position_reports(self) -> list[Any]:
        return self.inner.position_reports()

    def account_report(self) -> Any:
        return self.inner.account_report()

    def poll_events(self) -> list[OrderUpdate | Fill]:
        return self.inner.poll_events()

    def restore_requests(self, requests: Any) -> None:
        self.inner.restore_requests(requests)

    def on_bar(self, bar: Any, atr: float) -> None:
        self.inner.on_bar(bar, atr)

    def resync(self) -> None:
        self.inner.resync()


@dataclass
class Session:
    """A warmed-up day: the loop (started: reconciled, features rebuilt) and how to stop its policy."""

    loop: TradingLoop
    policy: WatchedPolicy
    stop_policy: Callable[[], None]
    policy_name: str


def make_policy(config: ServiceConfig, model_version: str | None) -> tuple[Any, Callable[[], None], str]:
    """``(policy, stop, name)``: the pinned model version through Ray Serve (or a running server), or the
    configured policy server."""
    from tradebot.serving.policy_client import HttpPolicy, serve_policy

    src = config.policy
    if src.url:
        policy = HttpPolicy(src.url, timeout_s=src.timeout_s)
        return policy, policy.close, f"server {src.url}"
    model = model_version or src.model
    policy, stop = serve_policy(model, src.serve_url)
    return policy, stop, f"model {model}"


def build_session(config: ServiceConfig, live: LiveConfig, day: dt.date, clock: Any, metrics: LiveMetrics,
                  model_version: str | None = None, feed_heartbeat_s: float = 1.0) -> Session:
    """Warm-up: the token, the Fyers REST and data socket on ``clock``, ``warmup_days`` of history through the
    feature pipeline, the policy (probed once), the day's journal, then ``loop.start()`` (reconciliation)."""
    from tradebot.live.adapters.fyers.auth import load_token
    from tradebot.live.adapters.fyers.data import FyersDataFeed, default_socket_factory
    from tradebot.live.adapters.fyers.loops import build_fyers_live_loop, build_fyers_paper_loop
    from tradebot.live.adapters.fyers.rest import Endpoints, FyersRest, make_model
    from tradebot.serving.policy_client import check_obs_dim, model_features

    token = load_token(config.token_file)
    ep = Endpoints.resolve(token.api_base)
    logs = _log_dir(config)
    logs.mkdir(parents=True, exist_ok=True)
    rest = FyersRest(make_model(token.app_id, token.secret(), endpoints=ep, log_path=logs))
    feed = FyersDataFeed(default_socket_factory(token, endpoints=ep, log_path=logs), timeframe=config.timeframe,
                         rest=rest, clock=clock, heartbeat_s=feed_heartbeat_s)
    raw, stop_policy, name = make_policy(config, model_version)
    loop: TradingLoop | None = None
    try:
        if config.policy.model:
            live = live.model_copy(update={"features": model_features(model_version or config.policy.model)})
        policy = WatchedPolicy(raw)
        journal = journal_path(config, day)
        journal.parent.mkdir(parents=True, exist_ok=True)
        account = account_dir(config)
        account.mkdir(parents=True, exist_ok=True)
        common = dict(journal=journal, policy=policy, config=live, timeframe=config.timeframe, token=token,
                      endpoints=ep, rest=rest, feed=feed, warmup_days=config.warmup_days, log_path=logs,
                      metrics=metrics)
        if config.mode == "live":
            loop = build_fyers_live_loop(config.symbols, risk_config=Path(config.risk_config),
                                         i_understand_real_money=config.i_understand_real_money,
                                         ledger_path=account / "ledger.json", **common)
        else:
            loop = build_fyers_paper_loop(config.symbols, paper_state=account / "paper.db", **common)
            loop.broker = DayBooks(loop.broker, day)
        if config.policy.model:  # as `tradebot live --model`: the observation size, then the drift monitors
            from tradebot.live.launch import attach_drift

            check_obs_dim(raw, loop, model_version or config.policy.model)
            attach_drift(loop, model_version or config.policy.model, live.drift)
        probe_policy(policy, loop)
        loop.start()
        return Session(loop, policy, stop_policy, name)
    except BaseException:
        feed.close()
        if loop is not None:  # a retried warm-up opens the journal again: release this one (and its lock)
            with contextlib.suppress(Exception):
                loop.broker.disconnect()
            loop.journal.close()
        stop_policy()
        raise


def probe_policy(policy: WatchedPolicy, loop: TradingLoop) -> None:
    """One decision on an empty observation of the loop's size, then the policy's state reset: the policy
    answers before the session starts (a readiness check)."""
    from tradebot.envs.trading_env import N_POSITION_FEATURES

    symbol, src = next(iter(loop.features.items()))
    policy(symbol, np.zeros(len(src.feature_names) + N_POSITION_FEATURES, dtype=np.float32))
    reset = getattr(policy.policy, "reset", None)
    if reset is not None:
        reset(symbol)


def write_day_report(config: ServiceConfig, live: LiveConfig, day: dt.date, policy_name: str,
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The day's files (``days/DAY/report``: as ``tradebot live --feed fyers`` writes them, from the day's
    journal), ``days/DAY/summary.json`` and the account's ``history.json`` row; returns the summary."""
    from tradebot.live.launch import REPORT_FILES, write_fyers_reports
    from tradebot.live.risk import load_risk_file

    path = journal_path(config, day)
    risk = load_risk_file(config.risk_config) if config.mode == "live" else live.risk
    summary: dict[str, Any] = {"day": day.isoformat(), "mode": config.mode, "policy": policy_name,
                               "symbols": list(config.symbols), "journal": str(path), **(extra or {})}
    if not path.exists():
        summary.update(traded=False, folders=[], files=[])
    else:
        journal = Journal(path, create=False)
        try:
            folders = write_fyers_reports(day_dir(config, day) / "report", journal, config.symbols, live,
                                          policy=policy_name, live_mode=config.mode == "live", risk=risk)
            equity = journal.equity()
            status = journal.status()
            positions = {s: p.qty for s, p in journal.positions().items() if p.qty}
            orders = journal.orders()
            bars = {s: len(journal.bars(s, done=True)) for s in config.symbols}
        finally:
            journal.close()
        summary.update(traded=bool(folders), folders=[str(f) for f in folders], files=list(REPORT_FILES),
                       bars=bars, orders=len(orders),
                       open_orders=sum(1 for o in orders if not OrderStatus(o["status"]).terminal),
                       fills=int(status.get("fills", 0) or 0), risk_state=status.get("risk_state"),
                       positions_at_end=positions, flat=not positions)
        if len(equity):
            first, last = float(equity["equity"].iloc[0]), float(equity["equity"].iloc[-1])
            day_start = first - float(equity["day_pnl"].iloc[0])  # the account's equity when the day began
            summary.update(equity_start=first, day_start_equity=day_start, equity_end=last, day_pnl=last - day_start)
    write_json_atomic(day_dir(config, day) / "summary.json", _plain(summary))
    history_file = account_dir(config) / "history.json"
    history = json.loads(history_file.read_text()) if history_file.exists() else []
    history = [h for h in history if h.get("day") != day.isoformat()] + [
        {k: summary.get(k) for k in ("day", "day_start_equity", "equity_end", "day_pnl", "orders", "fills", "flat")}]
    write_json_atomic(history_file, _plain(sorted(history, key=lambda h: h["day"])))
    return summary


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return _plain(value.item())
    return value


def day_summary_text(summary: dict[str, Any]) -> str:
    """The day's summary as one message."""
    if not summary.get("traded"):
        return f"{summary['day']}: no session traded ({summary.get('why', 'no bars')})"
    pnl = summary.get("day_pnl")
    return (f"{summary['day']} {summary['mode']}: {sum(summary.get('bars', {}).values())} bars, P&L {pnl:+,.2f} (equity {summary.get('equity_end', math.nan):,.2f}), "
            f"{summary.get('orders', 0)} orders, {summary.get('fills', 0)} fills, risk {summary.get('risk_state')}, "
            f"{'flat' if summary.get('flat') else 'NOT FLAT: ' + str(summary.get('positions_at_end'))}"
            if pnl is not None else f"{summary['day']}: {sum(summary.get('bars', {}).values())} bars, no equity recorded")


__all__ = ["DayBooks", "Session", "TokenStatus", "WatchedPolicy", "account_dir", "build_session", "check_token",
           "day_dir", "day_summary_text", "journal_path", "make_policy", "probe_policy", "write_day_report"]
