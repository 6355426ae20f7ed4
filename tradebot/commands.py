"""Registers every command group on the ``tradebot`` CLI."""

from __future__ import annotations

import importlib

from tradebot.cli import main

# module path -> attribute holding a click command or group
_COMMANDS = [
    ("tradebot.cmd_data", "data"),
    ("tradebot.cmd_features", "features"),
    ("tradebot.cmd_backtest", "backtest"),
    ("tradebot.cmd_train", "train"),
    ("tradebot.cmd_live", "live"),
    ("tradebot.cmd_tune", "tune"),
    ("tradebot.cmd_evaluate", "evaluate"),
    ("tradebot.cmd_serve", "serve"),
    ("tradebot.cmd_fyers", "fyers"),
]

for module_name, attr in _COMMANDS:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:  # a command module not written yet
        if err.name != module_name:
            raise
        continue
    main.add_command(getattr(module, attr))
