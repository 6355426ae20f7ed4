"""The click group class every ``tradebot`` command group uses: typed errors become one line and an exit code."""

from __future__ import annotations

import click

from tradebot.core.errors import TradebotError, UserInputError


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
