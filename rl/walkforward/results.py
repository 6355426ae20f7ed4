"""What a walk-forward evaluation produces: its records, progress events, strategy names and files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tradebot.rl.walkforward.folds import Fold
from tradebot.rl.walkforward.stitching import WindowRecord

if TYPE_CHECKING:
    from tradebot.rl.overfitting import DeflatedSharpe, PBOResult
    from tradebot.rl.walkforward.verdicts import Verdict

AGENT = "agent"  # the trained policies, seeds aggregated
AGENT_SELECTED = "agent_selected"  # per fold, the seed with the best validation score
SCOPE_FOLD, SCOPE_FOLDS, SCOPE_STITCHED = "fold", "folds", "stitched"

# Files in the output folder.
STATE_FILE = "evaluation.json"  # MLflow run ids, so a re-run resumes the same runs
WALKFORWARD_CONFIG_FILE = "walkforward.yaml"
FOLDS_FILE = "folds.json"
SUMMARY_CSV, SUMMARY_JSON, RUNS_CSV, REPORT_HTML = "summary.csv", "summary.json", "runs.csv", "report.html"
STITCHED_CSV = "stitched_equity.csv"
TEST_DIR = "test"  # under each fold/seed folder
VALIDATION_DIR = "validation"  # the same policy backtested on the fold's validation window


@dataclass
class SeedRun:
    """One fold/seed: training outcome and test result."""

    fold: int
    seed: int
    output_dir: Path
    checkpoint: str
    iterations: int
    stopped_early: bool
    best_validation_return: float | None
    mlflow_run_id: str
    model_uri: str
    metrics: dict[str, float]
    record: WindowRecord
    reused_training: bool
    reused_test: bool
    selected: bool = False


@dataclass(frozen=True)
class EvaluationEvent:
    """Progress: ``stage`` is one of fold, baselines, train, iteration, test, done (a fold/seed finished), summary."""

    stage: str
    fold: int | None = None
    folds: int = 0
    seed: int | None = None
    message: str = ""
    iteration: int | None = None
    iterations: int | None = None


@dataclass
class EvaluationResult:
    output_dir: Path
    folds: list[Fold]
    runs: list[SeedRun]
    baselines: dict[int, dict[str, Any]]  # fold -> name -> Metrics
    summary: pd.DataFrame
    verdicts: list[Verdict]
    deflated_sharpe: DeflatedSharpe | None
    pbo: PBOResult | None
    parent_run_id: str
    stitched: dict[str, pd.Series] = field(default_factory=dict)  # strategy (and agent_seed_S) -> out-of-sample equity
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def reused_trainings(self) -> int:
        return sum(r.reused_training for r in self.runs)
