"""``tradebot service``'s settings: the YAML section ``service`` (this class) next to a ``live`` section (the
loop's ``LiveConfig``: engine, risk, loop, features, drift) in one file, e.g. ``experiments/service.yaml``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from tradebot.core.config import FrozenConfig, load_config
from tradebot.core.nse_time import hhmm_minute


def _hhmm(value: str) -> str:
    try:
        minute = hhmm_minute(value)
    except (ValueError, AttributeError):
        minute = -1
    if not 0 <= minute < 24 * 60:
        raise ValueError(f"{value!r} is not an HH:MM time (e.g. 08:00)")
    return value


class ScheduleConfig(FrozenConfig):
    """When each phase of a trading day starts (HH:MM IST); the session itself is NSE's 09:15-15:30."""

    pre_open: str = Field("08:00", description="check the Fyers token (profile call); alert when a login is needed")
    warm_up: str = Field("09:00", description="fetch history, warm the features up, start the policy, reconcile")
    square_off: str = Field("15:15", description="from here the day is in its square-off phase (the risk engine "
                            "flattens intraday positions at its own square_off time)")
    stop_after_close_s: float = Field(600.0, ge=0, description="the loop stops once its last bar of the day "
                                      "(ending 15:30) is processed, and this long after 15:30 at the latest")
    token_recheck_s: float = Field(60.0, gt=0, description="while a login is needed, check the token this often")
    token_warn_s: float = Field(3600.0, ge=0, description="alert when the token has less than this left "
                                "during a session")
    alias_check_minutes: float = Field(60.0, gt=0, description="between sessions, resolve the model alias this "
                                       "often (the version changes at the next warm-up, never mid-session)")
    heartbeat_s: float = Field(5.0, gt=0, description="wall seconds between uptime heartbeats")

    @field_validator("pre_open", "warm_up", "square_off")
    @classmethod
    def _times(cls, v: str) -> str:
        return _hhmm(v)

    @model_validator(mode="after")
    def _ordered(self) -> "ScheduleConfig":
        a, b, c = hhmm_minute(self.pre_open), hhmm_minute(self.warm_up), hhmm_minute(self.square_off)
        if not a <= b <= 9 * 60 + 15 <= c <= 15 * 60 + 30:
            raise ValueError(f"need pre_open <= warm_up <= 09:15 <= square_off <= 15:30 "
                             f"(got {self.pre_open}, {self.warm_up}, {self.square_off})")
        return self


class PolicySource(FrozenConfig):
    """Where decisions come from: a registered model served by Ray Serve, or a policy server's URL."""

    model: str | None = Field(None, description="e.g. models:/tradebot-ppo-lstm@champion (resolved at each warm-up)")
    serve_url: str | None = Field(None, description="with model: an already running `tradebot serve` (else one is "
                                  "started per session)")
    url: str | None = Field(None, description="an HTTP policy server answering POST {symbol, obs} (no model)")
    timeout_s: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _one(self) -> "PolicySource":
        if (self.model is None) == (self.url is None):
            raise ValueError("set exactly one of policy.model (a registered model) or policy.url (a policy server)")
        return self


class NotifyConfig(FrozenConfig):
    """Where ``tradebot notify`` and the service send messages. Secrets never live here: the Telegram bot
    token comes from ``$TRADEBOT_TELEGRAM_TOKEN`` or the 0600 file ``telegram_token_file``."""

    webhook_url: str | None = Field(None, description="POSTed JSON {text, kind, severity, day, service}")
    telegram_chat_id: str | None = Field(None, description="the chat the bot writes to")
    telegram_token_file: str | None = Field(None, description="0600 file with the bot token (or the env var)")
    telegram_api: str = Field("https://api.telegram.org", description="the Bot API's base URL")
    timeout_s: float = Field(5.0, gt=0)


class ServiceConfig(FrozenConfig):
    """One trading-day service: what it trades, how, where its state lives, and its endpoints."""

    state_dir: str = Field(..., description="the service's state: service.db, days/DAY/ (journal, report files), "
                           "account/ (paper account, ledger)")
    mode: Literal["paper", "live"] = "paper"
    symbols: list[str] = Field(..., min_length=1)
    timeframe: str = "5m"
    warmup_days: int = Field(30, ge=1, description="days of history the features warm up on")
    policy: PolicySource
    risk_config: str | None = Field(None, description="live: the money limits (a YAML with only a risk: section)")
    i_understand_real_money: bool = Field(False, description="live: confirms real orders")
    token_file: str | None = Field(None, description="the Fyers token file (default $TRADEBOT_FYERS_TOKEN_FILE or "
                                   "~/.config/tradebot/fyers_token.json)")
    fyers_log_dir: str | None = Field(None, description="the SDK's log folder (default STATE_DIR/logs)")
    host: str = Field("127.0.0.1", description="address of /healthz, /readyz and /metrics")
    port: int | None = Field(9310, ge=0, le=65535, description="their port (0: any free one; null: none)")
    feed_fresh_s: float = Field(120.0, gt=0, description="during a session the feed is fresh when the last bar "
                                "ended less than this ago (market seconds past the bar size)")
    schedule: ScheduleConfig = ScheduleConfig()
    notify: NotifyConfig = NotifyConfig()
    clock: Literal["wall", "shared"] = Field("wall", description="shared: a soak's accelerated clock file "
                                             "(STATE_DIR/clock.json; tests only)")

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, v: list[str]) -> list[str]:
        from tradebot.features.bars import validate_symbol

        from tradebot.core.errors import UserInputError

        for s in v:
            try:
                validate_symbol(s)
            except UserInputError as err:
                raise ValueError(str(err)) from None
        return v

    @model_validator(mode="after")
    def _live_needs_limits(self) -> "ServiceConfig":
        if self.mode == "live" and (self.risk_config is None or not self.i_understand_real_money):
            raise ValueError("mode: live needs risk_config (a file with the money limits) and "
                             "i_understand_real_money: true")
        return self

    @property
    def state(self) -> Path:
        return Path(self.state_dir).expanduser()

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ServiceConfig":
        return load_config(cls, path, "service", required=True)


__all__ = ["NotifyConfig", "PolicySource", "ScheduleConfig", "ServiceConfig"]
