"""``tradebot train``: PPO-LSTM on RLlib, tracked in MLflow; re-running the same command resumes.

Exit codes: 0 trained (or already complete); 2 bad input (one ``error:`` line naming the file or key).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


@click.command("train")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True,
              help="training YAML (sections data, env, ppo, model, run), e.g. experiments/demo.yaml")
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="output folder (default: run.output_dir); re-running with it resumes from its latest checkpoint")
@click.option("--address", default=None, envvar="RAY_ADDRESS", show_envvar=True,
              help="Ray cluster to run on: auto (on a cluster node), HOST:6379 or ray://HOST:10001 "
                   "(default: start a private local Ray instance)")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI", show_envvar=True,
              help="MLflow tracking server or store, e.g. http://HOST:5000 (default: sqlite:///mlflow.db here)")
def train(config_path: Path, output: Path | None, address: str | None, tracking_uri: str | None) -> None:
    """Train a PPO-LSTM policy, checkpoint it, log it to MLflow and register the final policy.

    A config with a moe section (experiments/moe.yaml) builds a mixture of experts instead: the regime
    detector, one expert per regime, the gates, and the registered mixture (tradebot.rl.moe.training).

    MLflow goes to --tracking-uri / MLFLOW_TRACKING_URI, or sqlite:///mlflow.db in the working directory.
    On a cluster, run.num_env_runners env runners (run.num_cpus_per_env_runner CPUs each) and the
    learner (run.num_gpus_per_learner) are placed by Ray; checkpoints stay in the output folder here.
    """
    from tradebot.rl.train_config import load_train_config
    from tradebot.rl.metric_names import EPISODE_RETURN_MEAN, ENV_STEPS_PER_S
    from tradebot.rl.moe.training import is_moe_file, load_moe_config
    from tradebot.rl.train import IterationReport, train as run_training

    if is_moe_file(config_path):
        _train_mixture(load_moe_config(config_path), output, address, tracking_uri)
        return
    cfg = load_train_config(config_path)
    for name in ("ray", "ray.rllib", "ray.tune", "mlflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    console = Console(stderr=True, highlight=False)
    out = output or Path(cfg.run.output_dir)
    progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), TextColumn("{task.fields[status]}"), console=console)
    with progress:
        task = progress.add_task("train", total=cfg.run.iterations, status="starting Ray and the env")

        def on_iteration(report: IterationReport) -> None:
            m = report.metrics
            status = (f"return {_fmt(m.get(EPISODE_RETURN_MEAN))}  val {_fmt(report.validation_return)}  "
                      f"best {_fmt(report.best_validation_return)}  {_fmt(m.get(ENV_STEPS_PER_S), 0)} steps/s")
            progress.update(task, completed=report.iteration, status=status)

        result = run_training(cfg, output_dir=out, address=address, tracking_uri=tracking_uri,
                              on_iteration=on_iteration)
        progress.update(task, completed=result.iterations if not result.stopped_early else cfg.run.iterations)
    if result.already_complete:
        click.echo(f"{out}: already complete ({result.iterations} iterations); nothing to do")
    elif result.stopped_early:
        click.echo(f"stopped early at iteration {result.iterations}: no validation improvement for "
                   f"{cfg.run.patience} validations")
    click.echo(f"policy:     {result.model_uri}  (checkpoint {result.final_checkpoint})")
    click.echo(f"validation: best return {_fmt(result.best_validation_return)}")
    click.echo(f"mlflow run: {result.mlflow_run_id}")


def _train_mixture(cfg, output: Path | None, address: str | None, tracking_uri: str | None) -> None:
    """``tradebot train`` of a mixture of experts: one progress bar per training, a line per stage."""
    from tradebot.rl.moe.training import MoEEvent, train_mixture
    from tradebot.rl.train import IterationReport

    for name in ("ray", "ray.rllib", "ray.tune", "mlflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    console = Console(stderr=True, highlight=False)
    out = output or Path(cfg.run.output_dir)
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=console)
    tasks: list = []

    def on_event(event: MoEEvent) -> None:
        progress.console.print(f"{event.stage}: {event.message}")
        if event.stage in ("expert", "gate") and event.message.startswith("training"):
            total = int(event.message.split("(")[-1].split()[0])
            tasks.append(progress.add_task(event.message.split(" (")[0].replace("training ", ""), total=total,
                                           status=""))

    def on_iteration(report: IterationReport) -> None:
        if tasks:
            progress.update(tasks[-1], completed=report.iteration, status=f"val {_fmt(report.validation_return)}")

    with progress:
        result = train_mixture(cfg, output_dir=out, address=address, tracking_uri=tracking_uri, on_event=on_event,
                               on_iteration=on_iteration)
    if result.already_complete:
        click.echo(f"{out}: mixture already built; nothing to do")
    click.echo(f"mixture:    {result.model_uri}  (folder {result.final_checkpoint})")
    click.echo(f"mlflow run: {result.mlflow_run_id} (experts and gate nested under it)")
