"""``tradebot serve``: the trained policy behind Ray Serve on loopback (blocks until Ctrl-C).

\b
  tradebot serve --model URI [--host 127.0.0.1] [--port 8000]

URI: a checkpoint folder or an MLflow model URI (``models:/name/3``, ``models:/name@alias``, ``runs:/id/policy``).
Endpoints: POST /act, POST /reset, GET /health, GET /metrics (see ``tradebot.serving.app``). Every request
needs ``Authorization: Bearer <token>``: ``TRADEBOT_SERVE_TOKEN``, else a token generated at start and written
to a 0600 file (``~/.config/tradebot/serve_token``). A host other than loopback needs TRADEBOT_SERVE_TOKEN.
Exit codes: 0 after Ctrl-C; 2 bad input (one ``error:`` line), checked before Ray starts.
"""

from __future__ import annotations

import click


@click.command("serve", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", required=True, help="checkpoint folder or MLflow model URI (models:/name/version)")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind (another host than loopback "
              "needs TRADEBOT_SERVE_TOKEN)")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="HTTP port")
@click.option("--stochastic", is_flag=True, help="sample actions instead of taking the argmax")
def serve(model: str, host: str, port: int, stochastic: bool) -> None:
    """Serve the policy MODEL over HTTP (and to DeploymentHandles in the same Ray cluster)."""
    from tradebot.serving.app import TOKEN_ENV, check_bind, check_model, serve_until_stopped

    check_bind(host, None)  # one line and exit 2, before anything loads
    check_model(model)  # one line and exit 2 for a bad path/URI, before Ray starts

    def ready(info: dict) -> None:
        auth = (f"bearer token from {TOKEN_ENV}" if not info.get("token_file")
                else f"bearer token generated into {info['token_file']} (mode 600)")
        click.echo(f"serving {info['model_version']} on http://{host}:{port} (/act /reset /health /metrics; "
                   f"{auth}); Ctrl-C stops", err=True)

    serve_until_stopped(model, host=host, port=port, deterministic=not stochastic, on_ready=ready,
                        on_stopping=lambda: click.echo("stopping", err=True))
