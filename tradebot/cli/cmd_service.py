"""``tradebot service``: one long-running process for every NSE trading day (pre-open token check, warm-up,
session, square-off, report), its status, and its soak.

\b
  tradebot service --config experiments/service.yaml
  tradebot service status --config experiments/service.yaml      (or --state DIR) [--json]
  tradebot service soak --days 5 --out out/service-soak

The service answers ``/healthz``, ``/readyz`` and ``/metrics`` on 127.0.0.1 (``service.port``). SIGTERM or
Ctrl-C stops it gracefully (no new entries, journal flushed). Exit codes: 0 stopped; 1 the soak found a
breach; 2 bad input (one ``error:`` line naming the file or key and the fix).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from tradebot.cli.base import TradebotGroup
from tradebot.core.errors import UserInputError


@click.group("service", cls=TradebotGroup, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML with a `service:` section (and a `live:` one for the loop), e.g. experiments/service.yaml")
@click.option("--log-json/--no-log-json", default=True, show_default=True, help="JSON log lines on stderr")
@click.pass_context
def service(ctx: click.Context, config_path: Path | None, log_json: bool) -> None:
    """Run every trading day unattended: token check, warm-up, session, square-off, report; sleeps through
    weekends and NSE holidays; restarts where it stopped after a crash."""
    if ctx.invoked_subcommand is not None:
        return
    if config_path is None:
        click.echo(ctx.get_help())
        return
    from tradebot.live.service.service import run_service

    raise SystemExit(run_service(config_path, log_json=log_json))


@service.command("status", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="the service's config (its state_dir is read)")
@click.option("--state", "state_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="or the service's state_dir itself")
@click.option("--json", "as_json", is_flag=True, help="the whole status as JSON")
def status(config_path: Path | None, state_dir: Path | None, as_json: bool) -> None:
    """Each day's phase, uptime in market hours per day and per month, process starts and restarts."""
    from tradebot.live.service.service import service_status
    from tradebot.live.service.service_config import ServiceConfig

    if (config_path is None) == (state_dir is None):
        raise UserInputError("give --config FILE or --state DIR (one of them)")
    if state_dir is None:
        state_dir = ServiceConfig.from_yaml(config_path).state
    report = service_status(state_dir)
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    up = report["uptime"]
    click.echo(f"{report['state_dir']}: {up['starts']} process starts, {up['restarts']} restarts after a crash")
    for d in report["days"]:
        extra = f" ({d['why']})" if d.get("why") else ""
        click.echo(f"  {d['day']}  {d['phase']:<10} bars {d.get('bars', '-')}, orders {d.get('orders', '-')}, "
                   f"fills {d.get('fills', '-')}{extra}")
    click.echo("uptime in market hours (09:15-15:30 IST of trading days):")
    for d in up["days"]:
        down = ", ".join(f"{a}-{b}" for a, b in d["down"][:4]) + (" ..." if len(d["down"]) > 4 else "")
        click.echo(f"  {d['day']}  {d['uptime']:8.3%}  down {d['down_s']:.0f} s of {d['market_s']:.0f} s, "
                   f"{d['starts_in_market_hours']} start(s) in market hours" + (f"; down {down} IST" if down else ""))
    for m in up["months"]:
        click.echo(f"  {m['month']}     {m['uptime']:8.3%}  (month)")
    for a in report["alerts"][-5:]:
        click.echo(f"  alert {a.get('severity')}: {a.get('text')}")


@service.command("soak", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--days", type=int, default=5, show_default=True,
              help="trading days to run (from Wed 2024-03-20: a weekend and Holi, 25 March, come in the first 5)")
@click.option("--speed", type=float, default=1200.0, show_default=True,
              help="market seconds per wall second while the service runs (restarts run at real speed)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="a new folder: the simulator's market, the service's state and logs, soak.json")
@click.option("--seed", type=int, default=1, show_default=True, help="seed of the market and the policy")
@click.option("--mode", type=click.Choice(["live", "paper"]), default="live", show_default=True,
              help="live: orders to the simulator (checked against its books); paper: the service's paper account")
def soak(days: int, speed: float, out_dir: Path, seed: int, mode: str) -> None:
    """The service over simulated days against the Fyers simulator: a SIGKILL in each phase, an overnight
    token expiry with its login alert, then every day's report, the journals and uptime checked."""
    from tradebot.live.service.soak import run_service_soak

    if days < 1:
        raise UserInputError(f"--days {days}: at least 1")
    if not speed > 0:
        raise UserInputError(f"--speed {speed:g}: must be above 0")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserInputError(f"{out_dir}: not empty; give a new folder")
    report = run_service_soak(days=days, speed=speed, out=out_dir, seed=seed, mode=mode,
                              say=lambda line: click.echo(line, err=True))
    click.echo(f"{report['trading_days']} trading days ({report['first_day']} to {report['last_day']}), "
               f"{report['kills']} SIGKILLs ({', '.join(report['killed_in'])}), {report['restarts']} restarts, "
               f"{report['logins']} login(s) after a login alert; wall {report['wall_s']:.0f} s")
    for d in report["uptime"]["days"]:
        click.echo(f"  {d['day']}  uptime {d['uptime']:.3%}")
    for b in report["breaches"]:
        click.echo(f"  BREACH {b}")
    click.echo(f"wrote {out_dir / 'soak.json'}")
    if report["breaches"]:
        raise SystemExit(1)
