"""``tradebot live``: paper sessions over a bar file, and the operator's controls of a running loop.

\b
  tradebot live run DATA --journal J.db [--strategy NAME] [--config live.yaml] [--start DATE] [--speed X]
  tradebot live status --journal J.db [--json]
  tradebot live halt --journal J.db [--reason TEXT] [--reduce-only]
  tradebot live resume --journal J.db [--reason TEXT]

``halt`` / ``resume`` write a command into the journal; the running loop (another process) applies it at
its next bar or heartbeat. Exit codes: 0 success; 2 bad input (one ``error:`` line naming the file or
key and the fix).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from tradebot.clibase import TradebotGroup

_JOURNAL_HELP = "the session's journal (SQLite); `live run` creates it, the other commands need it to exist"


@click.group("live", cls=TradebotGroup, context_settings={"help_option_names": ["-h", "--help"]})
def live() -> None:
    """Paper trading through the live loop (feed -> features -> policy -> risk engine -> broker)."""


@live.command("run")
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--journal", type=click.Path(dir_okay=False, path_type=Path), required=True, help=_JOURNAL_HELP)
@click.option("--paper-state", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="the paper broker's own state (default: JOURNAL.paper.db)")
@click.option("--strategy", default="sma_crossover", show_default=True,
              help="baseline whose actions are the policy (see `tradebot backtest --help`)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of seeded baselines (random)")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="YAML with a `live:` section (engine, risk, loop, features)")
@click.option("--symbol", default=None, help="symbol of DATA when its file name does not say (e.g. NSE:SBIN-EQ)")
@click.option("--start", default=None, help="replay from this date (IST); earlier bars only warm the features up")
@click.option("--speed", type=float, default=None,
              help="market seconds per wall second (e.g. 60); default: as fast as possible")
@click.option("--metrics-port", type=int, default=None, help="serve Prometheus /metrics on 127.0.0.1:PORT")
@click.option("--log-json/--no-log-json", default=True, show_default=True, help="JSON log lines on stderr")
@click.option("--model", default=None, help="act with this trained policy through Ray Serve (checkpoint folder or "
              "MLflow model URI) instead of --strategy; features from the model's saved training config")
@click.option("--serve-url", default=None, help="with --model: a running `tradebot serve` (e.g. http://127.0.0.1:8000) "
              "called over HTTP; default: Serve started in this process, called through a handle")
def run(data: Path, journal: Path, paper_state: Path | None, strategy: str, seed: int, config_path: Path | None,
        symbol: str | None, start: str | None, speed: float | None, metrics_port: int | None, log_json: bool,
        model: str | None, serve_url: str | None) -> None:
    """Replay DATA as a live feed through the paper broker; re-running with the same journal resumes.

    \b
    Example:
      tradebot live run data/sample/NSE_NIFTY50-INDEX_5m.csv.gz --journal out/paper.db --start 2021-02-01
    """
    from live.logs import configure_json_logging
    from live.metrics import LiveMetrics, serve_metrics
    from live.session import LiveConfig, build_replay_loop

    config = LiveConfig.from_yaml(config_path)
    if serve_url and not model:
        raise click.UsageError("--serve-url needs --model (the model the server serves)")
    policy, stop_serve = None, None
    if model:
        from serving.client import model_features, serve_policy

        config = config.model_copy(update={"features": model_features(model)})
        policy, stop_serve = serve_policy(model, serve_url)
    if log_json:
        configure_json_logging()
    metrics = LiveMetrics()
    server = serve_metrics(metrics, metrics_port) if metrics_port is not None else None
    if server is not None:
        click.echo(f"metrics: http://127.0.0.1:{server.server_port}/metrics", err=True)
    try:
        loop = build_replay_loop(data, journal=journal, paper_state=paper_state, strategy=strategy, seed=seed,
                                 config=config, start=start, speed=speed, symbol=symbol, metrics=metrics,
                                 policy=policy)
        try:
            if model:
                from serving.client import check_obs_dim

                check_obs_dim(policy, loop, model)
            summary = loop.run()
        finally:
            loop.journal.close()
    finally:
        if server is not None:
            server.shutdown()
        if stop_serve is not None:
            stop_serve()
    click.echo(f"{summary.bars:,} bar(s), {summary.decisions:,} decision(s), {summary.orders:,} order(s), "
               f"{summary.fills:,} fill(s); equity {summary.equity:,.2f}; risk state {summary.risk_state}"
               + (f"; finished {summary.resumed_bars} half-done bar(s) after a restart" if summary.resumed_bars else ""))
    click.echo(f"journal: {journal}")


@live.command("status")
@click.option("--journal", type=click.Path(dir_okay=False, path_type=Path), required=True, help=_JOURNAL_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(journal: Path, as_json: bool) -> None:
    """Risk state, positions, equity, orders and the latest risk events of a session."""
    from live.journal import journal_status

    st = journal_status(journal)
    if as_json:
        click.echo(json.dumps(st, indent=2, default=str))
        return
    click.echo(f"session {st['session']}  risk state {st['risk_state']}  ({st['journal']})")
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
    for e in st["risk_events"]:
        click.echo(f"  {e['time']} {e['kind']:<12} {e['symbol']:<18} {e['reason']}")


@live.command("halt")
@click.option("--journal", type=click.Path(dir_okay=False, path_type=Path), required=True, help=_JOURNAL_HELP)
@click.option("--reason", default="", help="recorded with the halt")
@click.option("--reduce-only", is_flag=True, help="only stop new entries (REDUCING); keep positions and exits")
def halt(journal: Path, reason: str, reduce_only: bool) -> None:
    """Halt trading: flatten every position and send no new orders (REDUCING with --reduce-only)."""
    from live.journal import request_control

    command = "reduce" if reduce_only else "halt"
    cid = request_control(journal, command, reason)
    click.echo(f"{command} requested (#{cid}); the loop applies it at its next bar or heartbeat")


@live.command("resume")
@click.option("--journal", type=click.Path(dir_okay=False, path_type=Path), required=True, help=_JOURNAL_HELP)
@click.option("--reason", default="", help="recorded with the resume")
def resume(journal: Path, reason: str) -> None:
    """Lift a manual halt/reduce and the drawdown kill switch (a daily-loss halt lasts the session)."""
    from live.journal import request_control

    cid = request_control(journal, "resume", reason)
    click.echo(f"resume requested (#{cid}); the loop applies it at its next bar or heartbeat")
