"""Walk-forward evaluation: train on rolling folds, test out of sample, compare with every baseline.

How to run
----------
``tradebot evaluate --config experiments/walkforward.yaml [--out DIR] [--address ray://...]`` or
``run_walkforward(load_walkforward_config(path))``. Re-running the same command resumes (finished
fold/seed trainings and tests are loaded from disk). Training runs torch on one thread per process
(``tradebot.rl.train.torch_threads``; ``OMP_NUM_THREADS`` overrides it): the networks are small,
and torch's default thread pool, contending with other processes, made a PPO iteration about 15
times slower on a shared 2-core machine. ``evaluation.parallel_trainings`` trains several
fold/seed policies at once as Ray tasks, over a cluster's nodes with ``--address``.

The parts
---------
* ``evaluation_config``: the YAML config (``WalkForwardConfig``).
* ``folds``: the fold rule (train / purge / validation / purge / test windows of IST sessions).
* ``fold_runner``: ``run_walkforward``; per fold and seed, training (``tradebot.rl.train``) and
  the out-of-sample test; resumption.
* ``parallel_training``: the fold/seed trainings as Ray tasks, several at a time.
* ``out_of_sample``: the policy and every baseline backtested on a fold's test window.
* ``stitching``: test windows chained into one out-of-sample record.
* ``summary``: per fold / over folds / stitched mean and spread of every metric.
* ``verdicts``: agent against each baseline in one plain line; deflated Sharpe ratio and PBO.
* ``html_report``: ``report.html``. ``mlflow_runs``: the parent run and a nested run per fold.

What it reports
---------------
* ``summary.csv`` / ``summary.json``: per fold and overall, mean and spread (std, ddof 1) of every
  metric (``tradebot.envs.performance.M``) for ``agent`` (its seeds aggregated), ``agent_selected`` (per fold,
  the seed with the best validation score: chosen without looking at the test) and each baseline;
  scope ``fold`` (one test window), ``folds`` (mean and spread over folds of the per-fold values)
  and ``stitched`` (metrics of the out-of-sample equity chained across test windows).
* ``runs.csv``: one row per fold and seed (validation score, iterations, test metrics).
* ``report.html``: per-fold Sharpe ratio and return of the agent against every baseline and the
  stitched out-of-sample equity (plotly, self-contained).
* The verdict per baseline ("beats" only with a higher mean Sharpe ratio and a higher mean return
  over the folds and a lower Sharpe ratio in fewer than half of them), the deflated Sharpe ratio of
  ``agent_selected`` (trials = seeds x ``configs_tried``) and the PBO over the seeds (CSCV), both
  on session (daily) returns of the stitched record (``tradebot.rl.overfitting``).
* MLflow: a parent run for the evaluation, a nested run per fold (test dates, fold metrics), and
  under each fold the training run of every seed (made by ``train``, tagged with its parent and
  given the ``test_*`` metrics); the summary, runs table, config and plot are artifacts of the parent.
"""

from tradebot.rl.walkforward.evaluation_config import WalkForwardConfig, load_walkforward_config
from tradebot.rl.walkforward.fold_runner import run_walkforward
from tradebot.rl.walkforward.results import EvaluationEvent, EvaluationResult

__all__ = ["EvaluationEvent", "EvaluationResult", "WalkForwardConfig", "load_walkforward_config", "run_walkforward"]
