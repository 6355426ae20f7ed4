"""The trading-day service (``tradebot service``): one process for every NSE trading day, its state, uptime,
probes, metrics and notifications. See ``service.py`` for the phases of a day."""

from tradebot.live.service.clock import SharedClock, WallClock
from tradebot.live.service.notify import Notifier
from tradebot.live.service.service import TradingDayService, service_status
from tradebot.live.service.service_config import ServiceConfig
from tradebot.live.service.state import Phase, ServiceState, uptime_report

__all__ = ["Notifier", "Phase", "ServiceConfig", "ServiceState", "SharedClock", "TradingDayService", "WallClock",
           "service_status", "uptime_report"]
