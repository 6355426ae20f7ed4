"""Paper and live runs as ``tradebot live`` starts them: the config, the policy (a baseline's schedule, or a
model through Ray Serve), monitoring, the loop, and at the end the run's files and the parity check.

```python
outcome = run_paper_replay(Path("data/sample/NSE_NIFTY50-INDEX_5m.csv.gz"), journal=Path("out/paper/journal.db"),
                           out_dir=Path("out/paper"), start="2021-06-01")
outcome = run_on_fyers(["NSE:SBIN-EQ"], journal=Path("out/fy/journal.db"), model="models:/tradebot-ppo-lstm-demo/1",
                       out_dir=Path("out/fy"))
if outcome.parity_failed: ...
```

Both return a ``RunOutcome``: the loop's summary, the folders that got the run's files, and the parity
check (replays). ``notify(line)`` hears what is worth telling while the run goes (the metrics address,
how to stop it, that it stopped).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tradebot.core.errors import UserInputError
from tradebot.live.loop import LoopSummary, TradingLoop
from tradebot.live.ports import to_ist
from tradebot.live.prometheus import LiveMetrics
from tradebot.live.run_report import PARITY_FILE, Parity

REPORT_FILES = ("metrics.json", "equity.csv", "trades.csv", "report.html")


def _quiet(line: str) -> None:
    """The default ``notify``: tell nobody."""


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended: the loop's summary, its journal, the folders that got the run's files (``files``
    in each), the parity check (replays with ``parity=True``), and whether Ctrl-C stopped it."""

    summary: LoopSummary
    journal: Path
    folders: tuple[Path, ...] = ()
    parity: Parity | None = None
    interrupted: bool = False

    @property
    def files(self) -> tuple[str, ...]:
        return REPORT_FILES + ((PARITY_FILE,) if self.parity is not None else ())

    @property
    def parity_failed(self) -> bool:
        """The run traded unlike its backtest before the risk engine changed any outcome."""
        return self.parity is not None and not self.parity.consistent


class Monitoring:
    """JSON logs on stderr (``log_json``), and the run's metrics, served on 127.0.0.1:PORT when a port is given."""

    def __init__(self, log_json: bool, metrics_port: int | None, notify: Callable[[str], None] = _quiet):
        from tradebot.live.logs import configure_json_logging
        from tradebot.live.prometheus import serve_metrics

        if log_json:
            configure_json_logging()
        self.metrics = LiveMetrics()
        self.server = serve_metrics(self.metrics, metrics_port) if metrics_port is not None else None
        if self.server is not None:
            notify(f"metrics: http://127.0.0.1:{self.server.server_port}/metrics")

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()


def attach_drift(loop: TradingLoop, model: str, config, notify: Callable[[str], None] = _quiet) -> None:
    """Give ``loop`` the drift monitors of ``model`` (the version the policy server loaded): its saved
    reference, or one rebuilt from its training config; without either, the run goes on unmonitored."""
    from tradebot.core.errors import UserInputError
    from tradebot.live.drift_watch import DriftWatch
    from tradebot.rl.drift.offline import model_reference
    from tradebot.rl.policy import resolve_model_alias

    served = (getattr(loop.policy, "info", None) or {}).get("model_version")  # what the policy server loaded
    version = str(served or resolve_model_alias(model))
    try:
        reference, origin = model_reference(version)
    except UserInputError as err:
        notify(f"drift monitors off: {err}")
        return
    loop.drift = DriftWatch(reference, config, loop.symbols)
    notify(f"drift monitors on (reference {origin}); ALARM -> {config.on_alarm}, WARN -> {config.on_warn}")


def stop_feed_at(loop: TradingLoop, minute: int) -> threading.Event:
    """Close the loop's feed once market data has arrived and the feed's clock reads ``minute`` (minutes
    after midnight, IST) or later; set the returned event to stop watching."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            if getattr(loop.feed, "ticks", 1) == 0:  # an exchange clock reads wall time until the first print
                continue
            now = to_ist(loop.feed.clock.now_ns())
            if now.hour * 60 + now.minute >= minute:
                loop.feed.close()
                return

    threading.Thread(target=watch, name="live-until", daemon=True).start()
    return done


# ------------------------------------------------------------------------------ a replayed file

def run_paper_replay(data: Path, *, journal: Path, out_dir: Path | None = None, speed: float | None = None,
                     model: str | None = None, serve_url: str | None = None, strategy: str = "sma_crossover",
                     seed: int = 0, start: str | None = None, paper_state: Path | None = None,
                     config_path: Path | None = None, symbol: str | None = None, parity: bool = True,
                     metrics_port: int | None = None, log_json: bool = True,
                     notify: Callable[[str], None] = _quiet) -> RunOutcome:
    """A paper run replaying the bar file ``data`` (resumed when ``journal`` exists); with ``out_dir`` its
    files, and with ``parity`` the check against a backtest of the same bars with the same policy."""
    from tradebot.features.bars import load_bars
    from tradebot.live.runner import LiveConfig, build_replay_loop

    from tradebot.live.risk import describe_limits

    config = LiveConfig.from_yaml(config_path)
    bars = load_bars(data, symbol=symbol)
    if not bars.symbol:
        raise UserInputError(f"{data}: no symbol; pass --symbol (e.g. NSE:SBIN-EQ) or name the file "
                             "like NSE_SBIN-EQ_5m.csv.gz")
    check_journal_free(journal)
    notify(f"risk limits in force: {describe_limits(config.risk)}")
    journal.parent.mkdir(parents=True, exist_ok=True)
    policy, stop_serve = None, None
    if model:
        from tradebot.serving.policy_client import model_features, serve_policy

        config = config.model_copy(update={"features": model_features(model)})
        policy, stop_serve = serve_policy(model, serve_url)
    monitoring = Monitoring(log_json, metrics_port, notify)
    try:
        loop = build_replay_loop(bars, journal=journal, paper_state=paper_state, strategy=strategy, seed=seed,
                                 config=config, start=start, speed=speed, metrics=monitoring.metrics, policy=policy)
        try:
            if model:
                from tradebot.serving.policy_client import check_obs_dim

                check_obs_dim(policy, loop, model)
                attach_drift(loop, model, config.drift, notify)
            summary = loop.run()
            if out_dir is None:
                return RunOutcome(summary, journal)
            check = _write_replay_report(out_dir, loop, bars, config, start=start, strategy=strategy, seed=seed,
                                         model=model, data=data, parity=parity)
            return RunOutcome(summary, journal, (out_dir,), check)
        finally:
            loop.journal.close()
    finally:
        monitoring.close()
        if stop_serve is not None:
            stop_serve()


def _write_replay_report(out_dir: Path, loop: TradingLoop, bars: Any, config: Any, *, start: str | None,
                         strategy: str, seed: int, model: str | None, data: Path, parity: bool) -> Parity | None:
    from tradebot.live.run_report import write_run_report
    from tradebot.live.runner import reference_backtest

    backtest, reference = (reference_backtest(bars, config=config, start=start, strategy=strategy, seed=seed,
                                              model=model) if parity else (None, ""))
    journal = loop.journal
    info = {"mode": "paper", "feed": f"replay {data}", "policy": f"model {model}" if model else f"strategy {strategy}",
            "seed": seed, "start": start, "journal": journal.path, "name": journal.run,
            "engine": config.engine.model_dump(mode="json"), "risk": config.risk.model_dump(mode="json")}
    _, check = write_run_report(out_dir, journal, bars.symbol, config.engine, info, backtest=backtest,
                                reference=reference)
    return check


# ------------------------------------------------------------------------------ the Fyers feed

def preflight_fyers(symbols: Sequence[str], *, journal: Path, live_mode: bool, risk_config: Path | None,
                    real_money: bool, config_path: Path | None) -> tuple[Any, Any]:
    """Every input of a run on Fyers checked before anything starts or connects (no model loaded, no Ray,
    no socket): the symbols, the config, the risk file (live: only a ``risk:`` section that sets the money
    limits, and not a second set of limits in --config), the journal (not in use by another loop), the
    token (present, 0600, not expired). Returns ``(config, risk)``: the config with the limits in force."""
    from tradebot.core.config import read_yaml
    from tradebot.features.bars import validate_symbol
    from tradebot.live.adapters.fyers.auth import load_token
    from tradebot.live.adapters.fyers.loops import LIVE_FLAGS
    from tradebot.live.risk import load_risk_file
    from tradebot.live.runner import LiveConfig

    for name in symbols:
        validate_symbol(name)
    config = LiveConfig.from_yaml(config_path)
    if live_mode:
        if risk_config is None or not real_money:
            raise UserInputError(f"real orders need an explicit risk config and your confirmation: {LIVE_FLAGS}")
        risk = load_risk_file(risk_config)
        if config_path is not None:
            live = (read_yaml(config_path) or {}).get("live") or {}
            if isinstance(live, dict) and "risk" in live:
                raise UserInputError(f"{config_path}: sets risk limits (live.risk) and --risk-config {risk_config} "
                                     "sets them too: keep the limits in one place (the --risk-config file)")
        config = config.model_copy(update={"risk": risk})
    check_journal_free(journal)
    load_token()
    return config, config.risk


def check_journal_free(journal: Path) -> None:
    """Refuse (``UserInputError``) a journal another loop is running on, before anything is loaded."""
    from tradebot.live.journal import Journal

    if journal.exists():
        j = Journal(journal, create=False)
        try:
            j.lock_run()
        finally:
            j.close()


def run_fyers_loop(loop: TradingLoop, *, until_minute: int | None = None,
                   notify: Callable[[str], None] = _quiet) -> tuple[LoopSummary, bool]:
    """Run a loop on a live feed until the feed ends, the feed's clock reads ``until_minute`` (IST), Ctrl-C or
    SIGTERM; whatever ends it (an error included), the broker is disconnected and the feed closed, so the
    process can exit at once. Returns ``(summary, interrupted)``."""
    import signal

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop) if threading.current_thread() is threading.main_thread() else None
    watcher = stop_feed_at(loop, until_minute) if until_minute is not None else None
    interrupted = finished = False
    try:
        summary = loop.run()  # finish() at the feed's end: cancels what is working, disconnects
        finished = True
    except KeyboardInterrupt:
        summary, interrupted = loop.summary(), True
        notify("stopped")
    finally:
        if watcher is not None:
            watcher.set()
        loop.feed.close()  # the SDK's socket threads
        if not finished:
            try:
                loop.shutdown()  # journal what the broker said last, then disconnect
            except Exception as err:  # the broker may be what failed: disconnect anyway
                loop.broker.disconnect()
                loop.recorder.log(40, "shutdown_failed", reason=f"{type(err).__name__}: {err}")
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return summary, interrupted


def run_on_fyers(symbols: Sequence[str], *, journal: Path, model: str, live_mode: bool = False,
                 timeframe: str = "5m", exchange_clock: bool = False, until_minute: int | None = None,
                 risk_config: Path | None = None, real_money: bool = False, serve_url: str | None = None,
                 out_dir: Path | None = None, paper_state: Path | None = None, config_path: Path | None = None,
                 metrics_port: int | None = None, log_json: bool = True,
                 notify: Callable[[str], None] = _quiet) -> RunOutcome:
    """A run on the Fyers data socket with ``model`` through Ray Serve: paper fills, or real orders
    (``live_mode``, with ``risk_config`` and ``real_money``); until the feed ends, the feed's clock reads
    ``until_minute`` (IST), or Ctrl-C / SIGTERM. Every input is checked first (``preflight_fyers``). With
    ``out_dir`` the run's files (a folder per symbol when several)."""
    from tradebot.live.adapters.fyers.data import TickClock
    from tradebot.live.adapters.fyers.loops import build_fyers_live_loop, build_fyers_paper_loop
    from tradebot.live.risk import describe_limits
    from tradebot.serving.policy_client import check_obs_dim, model_features, serve_policy

    config, risk = preflight_fyers(symbols, journal=journal, live_mode=live_mode, risk_config=risk_config,
                                   real_money=real_money, config_path=config_path)
    notify(f"risk limits in force: {describe_limits(risk)}")
    config = config.model_copy(update={"features": model_features(model)})
    journal.parent.mkdir(parents=True, exist_ok=True)
    monitoring = Monitoring(log_json, metrics_port, notify)
    policy, stop_serve = serve_policy(model, serve_url)
    try:
        common = dict(journal=journal, policy=policy, config=config, timeframe=timeframe,
                      clock=TickClock() if exchange_clock else None, metrics=monitoring.metrics)
        if live_mode:
            loop = build_fyers_live_loop(symbols, risk_config=risk, i_understand_real_money=real_money, **common)
        else:
            loop = build_fyers_paper_loop(symbols, paper_state=paper_state, **common)
        try:
            check_obs_dim(policy, loop, model)
            attach_drift(loop, model, config.drift, notify)
            notify(f"{'LIVE (real orders)' if live_mode else 'paper'} run on the Fyers feed: "
                   f"{', '.join(symbols)} {timeframe}; Ctrl-C stops it")
            summary, interrupted = run_fyers_loop(loop, until_minute=until_minute, notify=notify)
            folders: tuple[Path, ...] = ()
            if out_dir is not None and summary.bars:
                folders = write_fyers_reports(out_dir, loop.journal, symbols, config, policy=f"model {model}",
                                              live_mode=live_mode, risk=loop.risk.config)
            return RunOutcome(summary, journal, folders, interrupted=interrupted)
        finally:
            loop.journal.close()
    finally:
        monitoring.close()
        stop_serve()


def write_fyers_reports(out_dir: Path, journal: Any, symbols: Sequence[str], config: Any, *, policy: str,
                        live_mode: bool, risk: Any) -> tuple[Path, ...]:
    """The run's files of a run on the Fyers feed from its ``journal``: ``out_dir`` for one symbol, a folder
    per symbol (each with the account's equity) for several; symbols without a finished bar get none."""
    from tradebot.live.run_report import write_run_report

    info = {"mode": "live" if live_mode else "paper", "feed": "fyers", "policy": policy,
            "symbols": list(symbols), "journal": journal.path, "name": journal.run,
            "engine": config.engine.model_dump(mode="json"), "risk": risk.model_dump(mode="json")}
    if len(symbols) > 1:  # one account: each symbol's folder has its trades and the account's equity
        info["equity"] = f"the account's, over all of {', '.join(symbols)}"
    folders = []
    for name in symbols:
        if not journal.bars(name, done=True):
            continue
        folder = out_dir if len(symbols) == 1 else out_dir / name.replace(":", "_")
        write_run_report(folder, journal, name, config.engine, info)
        folders.append(folder)
    return tuple(folders)


__all__ = ["Monitoring", "REPORT_FILES", "RunOutcome", "preflight_fyers", "run_fyers_loop", "run_on_fyers",
           "run_paper_replay", "stop_feed_at", "write_fyers_reports"]
