"""Simulation: the numba fill engine, NSE costs, the backtester and the Gymnasium env.

``import tradebot.envs`` registers ``tradebot/Trading-v0``: ``gymnasium.make("tradebot/Trading-v0", data=PATH)``,
and its vector form ``gymnasium.make_vec("tradebot/Trading-v0", num_envs=N, vectorization_mode="vector_entry_point",
data=PATH)``.
"""

from gymnasium.envs.registration import register, registry

from tradebot.envs.account import ClosedTrade, EngineAccount
from tradebot.envs.backtest import TRADE_COLUMNS, BacktestResult, run_backtest, run_signals
from tradebot.envs.costs import PRODUCTS, cost_vector, order_charges
from tradebot.envs.engine import ACTION_NAMES, EXIT_REASON_NAMES, Action, ExitReason
from tradebot.envs.engine_config import EngineConfig, load_engine_config
from tradebot.envs.fill_rules import FillRules
from tradebot.envs.trading_env import (
    ENV_ID,
    REWARDS,
    BatchedTradingEnv,
    DifferentialSharpe,
    EnvConfig,
    EpisodeConfig,
    NetLogReturn,
    TradingEnv,
    make_reward,
)
from tradebot.envs.window import BacktestWindow

if ENV_ID not in registry:
    # The env enforces reset-before-step itself and passes gymnasium's check_env (tests), so the
    # per-step PassiveEnvChecker / OrderEnforcing wrappers are left off, as gym-trading-env does.
    # ``gymnasium.make_vec(ENV_ID, num_envs=N, vectorization_mode="vector_entry_point", data=...)`` builds
    # the batched env (what training samples from); "sync" builds N single envs, step for step the same.
    register(id=ENV_ID, entry_point="tradebot.envs.trading_env:TradingEnv",
             vector_entry_point="tradebot.envs.trading_env:BatchedTradingEnv", disable_env_checker=True,
             order_enforce=False)

__all__ = [
    "ACTION_NAMES", "EXIT_REASON_NAMES", "ENV_ID", "PRODUCTS", "REWARDS", "TRADE_COLUMNS",
    "Action", "BacktestResult", "BacktestWindow", "BatchedTradingEnv", "ClosedTrade", "DifferentialSharpe",
    "EngineAccount", "EngineConfig", "EnvConfig", "EpisodeConfig", "ExitReason", "FillRules", "NetLogReturn",
    "TradingEnv", "cost_vector", "load_engine_config", "make_reward", "order_charges", "run_backtest",
    "run_signals",
]
