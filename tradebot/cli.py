"""The ``tradebot`` command line. Every command has --help; user errors print one line and exit 2."""

from __future__ import annotations

import os
import sys

import click

from tradebot.errors import TradebotError, UserInputError

os.environ.setdefault("PYTHONWARNINGS", "ignore")


class TradebotGroup(click.Group):
    """A click group that turns our typed errors into one clear line and an exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserInputError as err:
            click.echo(f"error: {err}", err=True)
            ctx.exit(err.exit_code)
        except TradebotError as err:
            click.echo(f"error: {err}", err=True)
            ctx.exit(1)


@click.group(cls=TradebotGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tradebot")
def main() -> None:
    """Reinforcement-learning trading for NSE through Fyers: data, features, backtests, training, live."""


def register(group: click.Group) -> None:
    main.add_command(group)


def _load_commands() -> None:
    # Each package contributes its command group; imported lazily so `tradebot --help` stays fast.
    from tradebot import commands  # noqa: F401


_load_commands()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
