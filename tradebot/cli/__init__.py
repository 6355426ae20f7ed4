"""The ``tradebot`` command line. Every command has --help; user errors print one line and exit 2."""

from __future__ import annotations

import os
import sys

import click

from tradebot.cli.base import TradebotGroup

os.environ.setdefault("PYTHONWARNINGS", "ignore")


@click.group(cls=TradebotGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tradebot")
def main() -> None:
    """Reinforcement-learning trading for NSE through Fyers: data, features, backtests, training, live."""


def _load_commands() -> None:
    # Each package contributes its command group; imported lazily so `tradebot --help` stays fast.
    from tradebot.cli import commands  # noqa: F401


_load_commands()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
