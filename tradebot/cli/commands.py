"""Registers every command group on the ``tradebot`` CLI."""

from __future__ import annotations

import importlib

from tradebot.cli import main

# module path -> attribute holding a click command or group
_COMMANDS = [
    ("tradebot.cli.cmd_data", "data"),
    ("tradebot.cli.cmd_features", "features"),
    ("tradebot.cli.cmd_backtest", "backtest"),
    ("tradebot.cli.cmd_train", "train"),
    ("tradebot.cli.cmd_live", "live"),
    ("tradebot.cli.cmd_tune", "tune"),
    ("tradebot.cli.cmd_evaluate", "evaluate"),
    ("tradebot.cli.cmd_serve", "serve"),
    ("tradebot.cli.cmd_fyers", "fyers"),
    ("tradebot.cli.cmd_chaos", "chaos"),
    ("tradebot.cli.cmd_drift", "drift"),
    ("tradebot.cli.cmd_retrain", "retrain"),
    ("tradebot.cli.cmd_service", "service"),
    ("tradebot.cli.cmd_notify", "notify"),
]

for module_name, attr in _COMMANDS:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:  # a command module not written yet
        if err.name != module_name:
            raise
        continue
    main.add_command(getattr(module, attr))
