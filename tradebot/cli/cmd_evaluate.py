"""``tradebot evaluate``: walk-forward evaluation of PPO-LSTM against every baseline; re-running resumes.

Exit codes: 0 evaluated (whatever the verdict); 2 bad input (one ``error:`` line naming the file or key).
"""

from __future__ import annotations

import logging
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

_HELP = """Walk-forward evaluation: train on rolling folds, test out of sample, compare with every baseline.

\b
For each fold (train / purge / validation / purge / test windows of IST sessions, see the config)
and each seed, a policy is trained with `tradebot train`'s trainer (early stopping and the best
checkpoint on the validation window), then tested on the test window only, through the same fill
engine and costs as every baseline. Prints per fold and overall mean ± std of the metrics, a
verdict per baseline, the deflated Sharpe ratio and the probability of backtest overfitting.

\b
Writes to --out (default: evaluation.output_dir):
  summary.csv, summary.json   per fold / over folds / stitched, agent and baselines
  runs.csv                    one row per fold and seed
  report.html                 per-fold Sharpe and return, stitched out-of-sample equity
  fold_NN/seed_S/             training output (checkpoints) and test/ (equity, trades, metrics)

Re-running the same command resumes: finished folds are loaded from their checkpoints.
MLflow goes to MLFLOW_TRACKING_URI, or sqlite:///mlflow.db in the working directory: one parent
run, a nested run per fold, and the training runs under their fold.

\b
Example:
  tradebot evaluate --config experiments/walkforward_smoke.yaml --out runs/wf_smoke
"""


def _stdout() -> Console:
    console = Console(highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console = Console(highlight=False, soft_wrap=False, width=max(console.width, 170))
    return console


@click.command("evaluate", help=_HELP, short_help="Walk-forward evaluation against every baseline.",
               context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True,
              help="walk-forward YAML (sections data, folds, evaluation, training), e.g. experiments/walkforward.yaml")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="output folder (default: evaluation.output_dir); re-running with it resumes")
@click.option("--address", default=None, envvar="RAY_ADDRESS", show_envvar=True,
              help="Ray cluster address (default: start a private local Ray instance)")
def evaluate(config_path: Path, out_dir: Path | None, address: str | None) -> None:
    from tradebot.envs.performance import METRIC_LABELS
    from tradebot.rl.walkforward import EvaluationEvent, load_walkforward_config, run_walkforward
    from tradebot.rl.walkforward.results import SCOPE_FOLD, SCOPE_FOLDS, SCOPE_STITCHED
    from tradebot.rl.walkforward.summary import KEY_COLUMNS, summary_rows
    from tradebot.rl.walkforward.verdicts import overfitting_lines

    cfg = load_walkforward_config(config_path)
    for name in ("ray", "ray.rllib", "ray.tune", "mlflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    seeds = len(cfg.evaluation.seeds)
    progress = Progress(TextColumn("[bold]evaluate"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[status]}"), console=Console(stderr=True))
    with progress:
        task = progress.add_task("evaluate", total=None, status="loading data")

        def on_event(event: EvaluationEvent) -> None:
            if event.stage == "fold" and progress.tasks[0].total is None:
                progress.update(task, total=event.folds * seeds)
            where = f"fold {event.fold}" + (f" seed {event.seed}" if event.seed is not None else "")
            if event.stage == "iteration":
                status = f"{where}: iteration {event.iteration}/{event.iterations} {event.message}"
            else:
                status = f"{where}: {event.message}" if event.fold is not None else event.message
            progress.update(task, status=status, advance=1 if event.stage == "done" else 0)

        result = run_walkforward(cfg, output_dir=out_dir, address=address, on_event=on_event)
        progress.update(task, completed=len(result.runs), status="done")

    console = _stdout()
    for scope, title in ((SCOPE_FOLD, "Per test window (agent: mean ± std over seeds)"),
                         (SCOPE_FOLDS, "Over folds (mean ± std of the per-fold values)"),
                         (SCOPE_STITCHED, "Stitched out-of-sample record (agent: mean ± std over seeds)")):
        table = Table(title=f"{title}, after costs", header_style="bold")
        table.add_column("window")
        table.add_column("strategy")
        for key in KEY_COLUMNS:
            table.add_column(METRIC_LABELS[key], justify="right")
        previous = None
        for where, strategy, cells in summary_rows(result.summary, scope):
            table.add_row(where if where != previous else "", strategy, *cells)
            previous = where
        console.print(table)
    for v in result.verdicts:
        console.print(v.line, style=None if v.beats else "bold", markup=False)
    for line in overfitting_lines(result):
        console.print(line, markup=False)
    if result.reused_trainings:
        console.print(f"resumed: {result.reused_trainings} of {len(result.runs)} fold/seed trainings loaded "
                      "from checkpoints")
    console.print(f"wrote {result.output_dir}/summary.csv, summary.json, runs.csv, report.html")
    console.print(f"mlflow parent run: {result.parent_run_id}")
