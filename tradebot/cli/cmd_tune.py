"""``tradebot tune``: Ray Tune (ASHA) search over PPO-LSTM hyper-parameters, every trial in MLflow.

Exit codes: 0 searched and registered the best trial; 1 no trial produced a validation score;
2 bad input (one ``error:`` line naming the file or key).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.{digits}g}"
    return str(value)


@click.command("tune")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True,
              help="search YAML (sections train, search, scheduler, resources, tune), e.g. experiments/tune.yaml")
@click.option("--samples", type=int, default=None, help="trials to draw (default: tune.num_samples)")
@click.option("--output", "--storage-path", "output", default=None,
              help="Tune storage (default: tune.output_dir): a folder, or on a cluster a URI every node "
                   "can write (s3://bucket/prefix); the search goes to OUTPUT/<name>/")
@click.option("--address", default=None, envvar="RAY_ADDRESS", show_envvar=True,
              help="Ray cluster to run the trials on: auto (on a cluster node), HOST:6379 or ray://HOST:10001 "
                   "(default: start a private local Ray instance)")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI", show_envvar=True,
              help="MLflow tracking server or store, e.g. http://HOST:5000 (default: sqlite:///mlflow.db here)")
def tune(config_path: Path, samples: int | None, output: str | None, address: str | None,
         tracking_uri: str | None) -> None:
    """Search PPO-LSTM hyper-parameters with Ray Tune's ASHA scheduler.

    Every trial is `tradebot train` on the base config with the searched values, scored on the
    validation dates; every trial is an MLflow run (child of one run per search), and the best
    trial's best checkpoint is registered as a new version of tune.registered_model.
    MLflow goes to --tracking-uri / MLFLOW_TRACKING_URI, or sqlite:///mlflow.db in the working directory.
    """
    from tradebot.rl.tune import TrialUpdate, base_train_config, check_search_space, load_tune_config, tune_search

    cfg = load_tune_config(config_path)
    check_search_space(cfg, base_train_config(cfg, config_path), config_path)  # bad keys: one line, nothing started
    for name in ("ray", "ray.rllib", "ray.tune", "ray.train", "mlflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    total = cfg.trial_count(samples)
    console = Console(stderr=True, highlight=False)
    progress = Progress(TextColumn("[bold]tune"), BarColumn(), MofNCompleteColumn(), TextColumn("trials"),
                        TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=console)
    with progress:
        task = progress.add_task("tune", total=total, status="starting Ray")

        def on_update(u: TrialUpdate) -> None:
            state = "ended" if u.finished else f"iteration {u.iteration}/{cfg.tune.iterations}"
            status = f"{u.trial_id}: {state}  best {cfg.tune.metric} {_fmt(u.best_score)}"
            progress.update(task, completed=u.trials_finished, status=status)

        result = tune_search(cfg, config_path=config_path, address=address, num_samples=samples,
                             output_dir=output, tracking_uri=tracking_uri, on_update=on_update)
        progress.update(task, completed=len(result.trials), status="done")

    table = Table(title=f"{result.name}: {len(result.trials)} trials, ranked by {result.metric} at each "
                        "trial's best checkpoint", header_style="bold")
    keys = list(cfg.search)
    headers = [key.split(".", 1)[1] for key in keys]  # ppo.lr -> lr, env.reward.name -> reward.name
    for col in ("trial", *headers, "iterations", result.metric, "best validation_return", "status"):
        table.add_column(col, justify="left" if col in ("trial", "status") else "right")
    ranked = sorted(result.trials, key=lambda s: -math.inf if s.score is None else s.score, reverse=True)
    for s in ranked:
        mark = " *" if s.trial_id == result.best_trial_id else ""
        status = s.status if s.error is None else f"{s.status}: {s.error[:60]}"
        table.add_row(s.trial_id + mark, *(_fmt(s.params.get(k)) for k in keys), str(s.iterations),
                      _fmt(s.score), _fmt(s.best_validation_return), status)
    console_out = Console(highlight=False)
    if not console_out.is_terminal:  # files and pipes: wide enough that the table does not wrap
        console_out = Console(highlight=False, width=max(console_out.width, 200))
    console_out.print(table)
    click.echo(f"best:       {result.best_trial_id}  {result.metric} {_fmt(result.best_score)}")
    click.echo(f"policy:     {result.model_uri}  (checkpoint {result.best_checkpoint})")
    click.echo(f"mlflow:     experiment {result.mlflow_experiment}, search run {result.parent_run_id}, "
               f"best trial run {result.best_run_id}")
    click.echo(f"tune files: {result.storage_dir}")
