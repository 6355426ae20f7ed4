"""``tradebot fyers``: log in to Fyers, and its offline simulator for rehearsals.

\b
  tradebot fyers login [--auth-code CODE | --redirect-url URL] [--api-base http://127.0.0.1:8765]
  tradebot fyers simulate [--port N] [--data FILE ...] [--speed X] [--token-ttl S] [--host 127.0.0.1]

Exit codes: 0 success; 2 bad input (one ``error:`` line naming the file or flag and the fix).
"""

from __future__ import annotations

from pathlib import Path

import click

from tradebot.cli.base import TradebotGroup
from tradebot.core.errors import UserInputError


@click.group("fyers", cls=TradebotGroup, context_settings={"help_option_names": ["-h", "--help"]})
def fyers() -> None:
    """Fyers broker: offline simulator, login."""


@fyers.command("login")
@click.option("--auth-code", default=None, help="the auth_code Fyers gave (else asked for)")
@click.option("--redirect-url", default=None, help="the whole address Fyers redirected to after the login")
@click.option("--api-base", default=None, envvar="TRADEBOT_FYERS_API_BASE",
              help="rehearse against a simulator, e.g. http://127.0.0.1:8765 (env TRADEBOT_FYERS_API_BASE)")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="where to store the token (default: $TRADEBOT_FYERS_TOKEN_FILE, else "
                   "~/.config/tradebot/fyers_token.json), mode 600")
@click.option("--app-id", default=None, help="app id (default: env FYERS_APP_ID); the secret only from FYERS_SECRET_KEY")
@click.option("--redirect-uri", default=None, help="the app's redirect URI (default: env FYERS_REDIRECT_URI)")
def login(auth_code: str | None, redirect_url: str | None, api_base: str | None, token_file: Path | None,
          app_id: str | None, redirect_uri: str | None) -> None:
    """Log in to Fyers (daily): print the login URL, take the redirect URL or auth code, store the token.

    \b
    Example:
      FYERS_APP_ID=XXXXXXXXXX-100 FYERS_SECRET_KEY=... tradebot fyers login
    """
    from tradebot.live.adapters.fyers.auth import AuthSettings, complete_login, login_url

    if auth_code and redirect_url:
        raise UserInputError("give --auth-code or --redirect-url, not both")
    settings = AuthSettings.from_env(app_id=app_id, redirect_uri=redirect_uri, api_base=api_base)
    where = f" (simulator at {settings.api_base})" if settings.api_base else ""
    click.echo(f"1. Open this URL in a browser and log in to Fyers{where}:")
    click.echo(f"   {login_url(settings)}")
    click.echo(f"2. Fyers redirects to {settings.redirect_uri}?...auth_code=...; copy that whole address.")
    given = auth_code or redirect_url or click.prompt("Paste the redirect URL (or the auth_code)", type=str)
    done = complete_login(settings, given, token_file)
    click.echo(f"Logged in as {done.account}; token saved to {done.token_file} (mode 600), valid until "
               f"{_local_time(done.expires_at)}. Fyers tokens last one day: log in again tomorrow.")


def _local_time(epoch: int) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(epoch)) if epoch else "unknown"


@fyers.command("simulate")
@click.option("--port", type=int, default=8765, show_default=True, help="TCP port (0: any free port)")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind")
@click.option("--data", "data", multiple=True, type=click.Path(path_type=Path),
              help="bar file to replay (repeatable, one symbol each, named like NSE_SBIN-EQ_1m.csv.gz); "
                   "default: the NIFTY 1-minute sample")
@click.option("--speed", type=float, default=60.0, show_default=True,
              help="market seconds per wall second; 0: step mode (advance with POST /_sim/advance)")
@click.option("--start", default="last_session", show_default=True,
              help="replay from this time (IST, e.g. 2021-03-10T09:15), 'first' or 'last_session'")
@click.option("--token-ttl", type=float, default=None, help="token lifetime in seconds (default: until 06:00 IST)")
@click.option("--slippage-bps", type=float, default=0.0, show_default=True, help="market-order slippage")
@click.option("--rate-limits/--no-rate-limits", default=False, show_default=True,
              help="enforce 10 requests/s and 10 orders/s (HTTP 429 with Retry-After)")
def simulate(port: int, host: str, data: tuple[Path, ...], speed: float, start: str, token_ttl: float | None,
             slippage_bps: float, rate_limits: bool) -> None:
    """Serve a local Fyers API v3 (REST, data socket, order socket) over replayed bar files until Ctrl-C.

    \b
    Example:
      tradebot fyers simulate --data data/sample/NSE_SBIN-EQ_1d.csv.gz --speed 600
    """
    from tradebot.live.adapters.fyers.simulator import DEFAULT_DATA, FyersSimulator

    if not 0 <= port <= 65535:
        raise UserInputError(f"--port {port}: give a TCP port between 1 and 65535 (0 for any free port)")
    if speed < 0:
        raise UserInputError(f"--speed {speed}: give market seconds per wall second (> 0), or 0 for step mode")
    if token_ttl is not None and token_ttl <= 0:
        raise UserInputError(f"--token-ttl {token_ttl}: give a positive number of seconds")
    files = list(data) or [DEFAULT_DATA]
    for path in files:
        if not path.is_file():
            raise UserInputError(f"{path}: no such bar file (give --data with a CSV, CSV.gz or Parquet bar file)")
    try:
        sim = FyersSimulator(data=files, host=host, port=port, speed=speed or None, token_ttl_s=token_ttl,
                             start=start, slippage_bps=slippage_bps, enforce_rate_limits=rate_limits)
    except (ValueError, TypeError) as err:
        raise UserInputError(str(err)) from err
    try:
        sim.start()
    except OSError as err:
        raise UserInputError(f"--host {host} --port {port}: cannot listen there ({err.strerror or err})") from err
    symbols = ", ".join(i.symbol for i in sim.market.instruments())
    click.echo(f"Fyers simulator on {sim.base_url}  ({symbols}; "
               f"{'step mode' if not speed else f'speed {speed:g}x'})")
    click.echo(f"  REST API        {sim.rest_api_url}")
    click.echo(f"  data API        {sim.data_api_url}")
    click.echo(f"  data socket     {sim.data_ws_url}")
    click.echo(f"  order socket    {sim.order_ws_url}")
    click.echo(f"  controls        {sim.base_url}/_sim/state, /_sim/faults, /_sim/advance, /_sim/login")
    click.echo("Log in through the normal auth-code flow (any app id, secret and redirect URI are accepted),")
    click.echo(f"or get a token with: curl -X POST {sim.base_url}/_sim/login")
    click.echo("Point the SDK at it in Python:")
    click.echo("  from tradebot.live.adapters.fyers.simulator import sdk_patch")
    click.echo(f"  sdk_patch.point_sdk_at({sim.port})")
    click.echo("Ctrl-C stops it.", err=False)
    try:
        sim.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
