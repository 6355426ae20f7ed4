"""``tradebot retrain``: champion / challenger retraining with MLflow aliases, and one-command rollback.

Exit codes: 0 done (promoted or kept, as printed); 2 bad input (one ``error:`` line naming the file,
key or model and the fix).
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("retrain", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML file with a 'retrain:' section (see experiments/retrain.yaml)")
@click.option("--rollback", "rollback_model", default=None, metavar="MODEL",
              help="instead of retraining: move MODEL's @champion back to @previous")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI",
              help="MLflow tracking store (default: sqlite:///mlflow.db in the working directory)")
def retrain(config_path: Path | None, rollback_model: str | None, tracking_uri: str | None) -> None:
    """Train challengers on the newest data and promote one to @champion only if it proves better.

    \b
    Challengers (from scratch, and fine-tuned from the champion's weights) train on the newest
    sessions of the data with the champion's own training config; champion and challengers are then
    backtested on the same latest held-back sessions, with the same engine and costs. The best
    challenger becomes models:/MODEL@champion only if it beats the champion by the configured margin
    and passes the risk checks; the old champion stays as @previous. Live runs and `tradebot serve`
    load models:/MODEL@champion when they start, and never switch models mid-run.

    \b
    Examples:
      tradebot retrain --config experiments/retrain.yaml
      tradebot retrain --rollback tradebot-ppo-lstm-demo      # @champion back to @previous
    """
    from tradebot.core.errors import UserInputError
    from tradebot.rl.retrain import load_retrain_config, rollback, run_retrain, use_tracking

    if (config_path is None) == (rollback_model is None):
        raise UserInputError("give --config FILE to retrain, or --rollback MODEL to roll back (one of them)")
    if rollback_model is not None:
        use_tracking(tracking_uri)
        now, previous = rollback(rollback_model)
        click.echo(f"{rollback_model}: @champion is version {now} again; @previous is version {previous}")
        return
    cfg = load_retrain_config(config_path)
    result = run_retrain(cfg, tracking_uri, on_step=lambda message: click.echo(f"- {message}"))
    for name, (start, end) in result.windows.items():
        click.echo(f"{name:<10} {start} .. {end} (end excluded)")
    metric = cfg.promotion.metric
    for cand in ([result.champion] if result.champion else []) + result.challengers:
        risk = "passes the risk checks" if cand.passes_risk else "fails: " + "; ".join(cand.risk_notes)
        click.echo(f"{cand.name:<10} version {cand.version}: {metric} {cand.metrics.get(metric, float('nan')):.3f}, "
                   f"return {cand.metrics.get('total_return', float('nan')):.2%}, "
                   f"trades {int(cand.metrics.get('trades', 0))}; {risk}")
    verdict = (f"promoted version {result.promoted.version} to @champion" if result.promoted
               else "kept the champion")
    click.echo(f"{verdict}: {result.reason}")
    click.echo(f"MLflow run {result.parent_run_id} (experiment {cfg.mlflow_experiment})")
