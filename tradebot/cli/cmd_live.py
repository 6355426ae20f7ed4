"""``tradebot live``: paper and live runs (a replayed bar file or the Fyers feed), and the operator's controls.

\b
  tradebot live --paper --replay DATA [--speed N|max] [--model URI | --strategy NAME] [--start DATE] --out DIR
  tradebot live --paper --feed fyers --symbols NSE:SBIN-EQ[,...] --model URI --out DIR
  tradebot live --broker fyers --live --risk-config risk.yaml --i-understand-real-money --symbols ... --model URI --out DIR
  tradebot live status --journal J.db [--json]
  tradebot live halt --journal J.db [--reason TEXT] [--reduce-only]
  tradebot live resume --journal J.db [--reason TEXT]

A run writes its journal to ``DIR/journal.db`` (``--journal`` elsewhere); running it again
with the same journal resumes where it stopped. ``halt`` / ``resume`` write a command into the
journal; the running loop (another process) applies it at its next bar or heartbeat. Exit codes: 0
success; 1 the run's trades differ from the backtest of the same bars before the risk engine
changed any outcome (a parity failure, listed in DIR/parity.json); 2 bad input (one ``error:`` line naming the file or key and the fix).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from tradebot.cli.base import TradebotGroup
from tradebot.core.errors import UserInputError

_JOURNAL_HELP = "the run's journal (SQLite); a paper or live run creates it, the other commands need it to exist"
_OUT_FILES = "metrics.json, equity.csv, trades.csv, report.html, parity.json"


def _speed(value: str | None) -> float | None:
    if value is None or value.strip().lower() in ("max", "inf", ""):
        return None
    try:
        speed = float(value)
    except ValueError:
        raise UserInputError(f"--speed {value!r}: give market seconds per wall second (e.g. 100) or 'max'") from None
    if not speed > 0:
        raise UserInputError(f"--speed {value!r}: must be above 0 (or 'max')")
    return speed


@click.group("live", cls=TradebotGroup, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--paper", is_flag=True, help="paper trading: fills by the paper broker (the backtester's engine)")
@click.option("--live", "live_mode", is_flag=True,
              help="real orders (with --broker fyers, --risk-config and --i-understand-real-money)")
@click.option("--replay", "data", type=click.Path(path_type=Path), default=None,
              help="the feed: replay this bar file as a live feed (CSV/Parquet, e.g. data/sample/...5m.csv.gz)")
@click.option("--feed", type=click.Choice(["replay", "fyers"]), default=None,
              help="where bars come from: a replayed file (--replay) or the Fyers data socket (tradebot fyers login)")
@click.option("--broker", type=click.Choice(["paper", "fyers"]), default="paper", show_default=True,
              help="who fills orders: the paper broker, or Fyers (real orders; needs --live)")
@click.option("--symbols", default=None, help="with --feed fyers: comma-separated Fyers symbols, e.g. NSE:SBIN-EQ,NSE:TCS-EQ")
@click.option("--timeframe", default="5m", show_default=True, help="with --feed fyers: the bar size the policy trades")
@click.option("--clock", type=click.Choice(["wall", "exchange"]), default="wall", show_default=True,
              help="with --feed fyers: time from this machine, or from the ticks' exchange times (for the "
              "simulator's replays of past days)")
@click.option("--until", default=None, help="with --feed fyers: end the run once the feed's clock reaches this "
              "IST time (HH:MM, e.g. 15:30); default: run until Ctrl-C")
@click.option("--risk-config", type=click.Path(path_type=Path), default=None,
              help="with --live: YAML with a `risk:` section, required for real orders")
@click.option("--i-understand-real-money", "real_money", is_flag=True,
              help="with --live: confirm that orders go to the broker with real money")
@click.option("--speed", default="max", show_default=True,
              help="market seconds per wall second (e.g. 100), or 'max' for as fast as possible")
@click.option("--model", default=None, help="act with this trained policy through Ray Serve (checkpoint folder or "
              "MLflow model URI, e.g. models:/tradebot-ppo-lstm-demo/1); features from its saved training config")
@click.option("--serve-url", default=None, help="with --model: a running `tradebot serve` (e.g. http://127.0.0.1:8000) "
              "called over HTTP; default: Serve started in this process, called through a handle")
@click.option("--strategy", default="sma_crossover", show_default=True,
              help="without --model: the baseline whose actions are the policy (see `tradebot backtest --help`)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of seeded baselines (random)")
@click.option("--start", default=None, help="replay from this date (IST); earlier bars only warm the features up")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"folder for the run: journal.db and, at the end, {_OUT_FILES}")
@click.option("--journal", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="the run's journal (default: OUT/journal.db); an existing one is resumed")
@click.option("--paper-state", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="the paper broker's own state (default: JOURNAL.paper.db)")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="YAML with a `live:` section (engine, risk, loop, features)")
@click.option("--symbol", default=None, help="symbol of the replayed file when its name does not say (e.g. NSE:SBIN-EQ)")
@click.option("--parity/--no-parity", default=True, show_default=True,
              help="at the end, backtest the same bars with the same policy and compare the trades")
@click.option("--metrics-port", type=int, default=None, help="serve Prometheus /metrics on 127.0.0.1:PORT")
@click.option("--log-json/--no-log-json", default=True, show_default=True, help="JSON log lines on stderr")
@click.pass_context
def live(ctx: click.Context, paper: bool, live_mode: bool, data: Path | None, feed: str | None, broker: str,
         symbols: str | None, timeframe: str, clock: str, until: str | None, risk_config: Path | None,
         real_money: bool, speed: str,
         model: str | None, serve_url: str | None, strategy: str, seed: int, start: str | None, out_dir: Path | None,
         journal: Path | None, paper_state: Path | None, config_path: Path | None, symbol: str | None, parity: bool,
         metrics_port: int | None, log_json: bool) -> None:
    """Paper (and, through Fyers, live) trading: feed -> features -> policy -> risk engine -> broker.

    \b
    Examples:
      tradebot live --paper --replay data/sample/NSE_NIFTY50-INDEX_5m.csv.gz --start 2021-06-01 --out out/paper
      tradebot live --paper --replay data/sample/NSE_NIFTY50-INDEX_5m.csv.gz --model models:/tradebot-ppo-lstm-demo/1 \\
          --start 2021-06-01 --speed 100 --out out/paper-model
      tradebot live status --journal out/paper/journal.db
    """
    if ctx.invoked_subcommand is not None:
        return
    feed = feed or ("replay" if data is not None else None)
    if not (paper or live_mode):
        if feed is None:
            click.echo(ctx.get_help())
            return
        raise UserInputError("say --paper (paper fills) or --live (real orders through --broker fyers)")
    if paper and live_mode:
        raise UserInputError("choose --paper or --live, not both")
    if feed is None:
        raise UserInputError(f"--{'paper' if paper else 'live'} needs a feed: --replay DATA (a bar file replayed as a "
                             "live feed) or --feed fyers --symbols ...")
    if out_dir is None and journal is None:
        raise UserInputError(f"give --out DIR (the journal and, at the end, {_OUT_FILES} go there)")
    if serve_url and not model:
        raise click.UsageError("--serve-url needs --model (the model the server serves)")
    journal = journal or out_dir / "journal.db"
    if feed == "replay":
        if live_mode or broker != "paper":
            raise UserInputError("a replayed file trades on paper only: drop --live / --broker fyers")
        if data is None:
            raise UserInputError("--feed replay needs --replay DATA")
        from tradebot.live.launch import run_paper_replay

        outcome = run_paper_replay(data, journal=journal, out_dir=out_dir, speed=_speed(speed), model=model,
                                   serve_url=serve_url, strategy=strategy, seed=seed, start=start,
                                   paper_state=paper_state, config_path=config_path, symbol=symbol, parity=parity,
                                   metrics_port=metrics_port, log_json=log_json, notify=_notify)
        _echo_outcome(outcome)
        if outcome.parity_failed:
            raise SystemExit(1)
        return
    if data is not None:
        raise UserInputError("--replay and --feed fyers are two different feeds: give one")
    if live_mode and broker != "fyers":
        raise UserInputError("--live sends real orders to a broker: add --broker fyers")
    if paper and broker != "paper":
        raise UserInputError("--paper fills on the paper broker: drop --broker fyers (or say --live for real orders)")
    if live_mode and (risk_config is None or not real_money):
        from tradebot.live.adapters.fyers.loops import LIVE_FLAGS

        raise UserInputError(f"real orders need an explicit risk config and your confirmation: {LIVE_FLAGS} "
                             "(try --paper --feed fyers first: the same data, paper fills)")
    if not model:
        raise UserInputError("a live feed needs a trained policy: --model URI (baseline schedules replay files only)")
    names = [s.strip() for s in (symbols or "").split(",") if s.strip()]
    if not names:
        raise UserInputError("--feed fyers needs --symbols, e.g. --symbols NSE:SBIN-EQ,NSE:NIFTY50-INDEX")
    from tradebot.live.launch import run_on_fyers

    outcome = run_on_fyers(names, journal=journal, model=model, live_mode=live_mode, timeframe=timeframe,
                           exchange_clock=clock == "exchange", until_minute=_hhmm(until), risk_config=risk_config,
                           real_money=real_money, serve_url=serve_url, out_dir=out_dir, paper_state=paper_state,
                           config_path=config_path, metrics_port=metrics_port, log_json=log_json, notify=_notify)
    _echo_outcome(outcome)


def _echo_outcome(outcome) -> None:
    """The run's summary, its journal, the files written and the parity check's verdict."""
    summary = outcome.summary
    click.echo(f"{summary.bars:,} bar(s), {summary.decisions:,} decision(s), {summary.orders:,} order(s), "
               f"{summary.fills:,} fill(s); equity {summary.equity:,.2f}; risk state {summary.risk_state}"
               + (f"; finished {summary.resumed_bars} half-done bar(s) after a restart" if summary.resumed_bars else ""))
    click.echo(f"journal: {outcome.journal}")
    for folder in outcome.folders:
        click.echo(f"wrote {folder}/" + ", ".join(outcome.files))
    if outcome.parity is not None:
        click.echo(outcome.parity.summary())


def _hhmm(value: str | None) -> int | None:
    """Minutes after midnight of an ``HH:MM`` time."""
    if value is None:
        return None
    parts = value.split(":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or int(parts[0]) > 23 or int(parts[1]) > 59:
        raise UserInputError(f"--until {value!r}: give an IST time as HH:MM, e.g. 15:30")
    return int(parts[0]) * 60 + int(parts[1])


def _notify(line: str) -> None:
    click.echo(line, err=True)


@live.command("status")
@click.option("--journal", type=click.Path(dir_okay=False, path_type=Path), required=True, help=_JOURNAL_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(journal: Path, as_json: bool) -> None:
    """Risk state, positions, equity, orders and the latest risk events of a run."""
    from tradebot.live.journal import journal_status

    st = journal_status(journal)
    if as_json:
        click.echo(json.dumps(st, indent=2, default=str))
        return
    click.echo(f"run {st['run']}  risk state {st['risk_state']}  ({st['journal']})")
    for name, c in st["conditions"].items():
        click.echo(f"  {c['state']:<8} {c['reason']}")
    for c in st["pending_commands"]:
        click.echo(f"  pending command #{c['id']}: {c['command']} {c['reason']}".rstrip())
    if st["last_bar"]:
        click.echo(f"last bar: {st['last_bar']['symbol']} {st['last_bar']['time']}")
    if st["equity"]:
        e = st["equity"]
        dd = e["drawdown"] if e["drawdown"] is not None and math.isfinite(e["drawdown"]) else 0.0
        click.echo(f"equity {e['equity']:,.2f}  day P&L {e['day_pnl']:+,.2f}  drawdown {dd:.2%}")
    click.echo("positions: " + (", ".join(f"{p['symbol']} {p['qty']:+g} @ {p['avg_price']:.2f} (stop {p['stop']:.2f})"
                                           for p in st["positions"]) or "none"))
    click.echo("orders: " + (", ".join(f"{k} {v}" for k, v in sorted(st["orders"].items())) or "none")
               + f"; fills {st['fills']}; decisions {st['decisions']}")
    for symbol, monitors in st.get("drift", {}).items():
        click.echo(f"drift {symbol}: " + ", ".join(f"{name} {m['state']} ({m['value']:.3g})"
                                                  for name, m in monitors.items()))
    for e in st["risk_events"]:
        click.echo(f"  {e['time']} {e['kind']:<12} {e['symbol']:<18} {e['reason']}")


@live.command("halt")
@click.option("--journal", type=click.Path(dir_okay=False, path_type=Path), required=True, help=_JOURNAL_HELP)
@click.option("--reason", default="", help="recorded with the halt")
@click.option("--reduce-only", is_flag=True, help="only stop new entries (REDUCING); keep positions and exits")
def halt(journal: Path, reason: str, reduce_only: bool) -> None:
    """Halt trading: flatten every position and send no new orders (REDUCING with --reduce-only)."""
    from tradebot.live.journal import request_control

    command = "reduce" if reduce_only else "halt"
    cid = request_control(journal, command, reason)
    click.echo(f"{command} requested (#{cid}); the loop applies it at its next bar or heartbeat")


@live.command("resume")
@click.option("--journal", type=click.Path(dir_okay=False, path_type=Path), required=True, help=_JOURNAL_HELP)
@click.option("--reason", default="", help="recorded with the resume")
def resume(journal: Path, reason: str) -> None:
    """Lift a manual halt/reduce and the drawdown kill switch (a daily-loss halt lasts the trading day)."""
    from tradebot.live.journal import request_control

    cid = request_control(journal, "resume", reason)
    click.echo(f"resume requested (#{cid}); the loop applies it at its next bar or heartbeat")
