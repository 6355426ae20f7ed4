"""One table for several designs of the trading problem, each walk-forward evaluated on the same folds,
and the design the evaluation's rule picks.

Input: evaluation folders (``tradebot evaluate --out DIR``), one per (data set, design), named
``<data set>__<design>`` (``bench/wf_grid.py`` makes them). Per data set the table has one row per
design, its deployable variant (``agent_selected`` or ``agent_ensemble``, whichever scored higher on
the validation windows: ``selection.json``) and one row per baseline, all after full costs on the
same test windows: mean Sharpe over folds, then the stitched out-of-sample record's Sharpe, Sortino,
worst 30-day drawdown, win rate, profit factor, turnover and total return, the deflated Sharpe ratio
and PBO of the evaluation (``agent_selected`` over the seeds), and one verdict line per design
against ``buy_and_hold`` by the evaluation's rule (higher mean Sharpe and mean return over folds,
lower Sharpe in fewer than half the folds).

The winner. Every design's score on a data set is its validation score (``selection.json``: the mean
over folds of its deployable variant's validation-window Sharpe ratio); a design's overall score is
the mean over the data sets it was evaluated on, among those evaluated on all of them. The highest
wins. Test windows play no part in it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tradebot.envs.performance import M, format_metric
from tradebot.rl.walkforward.results import AGENT, AGENT_SELECTED, SCOPE_FOLD, SCOPE_FOLDS, SCOPE_STITCHED
from tradebot.rl.walkforward.verdicts import baseline_verdicts
from tradebot.rl.walkforward.views import SELECTION_FILE, VIEWS_DIR

TARGETS = ((M.SHARPE, ">", 2.0), (M.SORTINO, ">", 3.0), (M.WORST_30D_DRAWDOWN, ">", -0.10),
           (M.WIN_RATE, ">", 0.55), (M.PROFIT_FACTOR, ">", 1.5))  # the users' targets, on the stitched record
COLUMNS = (("mean Sharpe (folds)", SCOPE_FOLDS, M.SHARPE), ("Sharpe", SCOPE_STITCHED, M.SHARPE),
           ("Sortino", SCOPE_STITCHED, M.SORTINO), ("worst 30d DD", SCOPE_STITCHED, M.WORST_30D_DRAWDOWN),
           ("win rate", SCOPE_STITCHED, M.WIN_RATE), ("profit factor", SCOPE_STITCHED, M.PROFIT_FACTOR),
           ("turnover", SCOPE_STITCHED, M.TURNOVER), ("return", SCOPE_STITCHED, M.TOTAL_RETURN))
REFERENCE = "buy_and_hold"


@dataclass(frozen=True)
class Evaluation:
    """One finished evaluation folder, read back."""

    dataset: str
    design: str
    summary: list[dict[str, Any]]
    selection: dict[str, Any]
    dsr: float | None
    pbo: float | None

    @classmethod
    def read(cls, folder: Path, dataset: str, design: str, view: str | None = None) -> "Evaluation":
        where = folder if view is None else folder / VIEWS_DIR / view
        payload = json.loads((where / "summary.json").read_text())
        selection = json.loads((folder / SELECTION_FILE).read_text())
        return cls(dataset, design, payload["summary"], selection,
                   (payload.get("deflated_sharpe") or {}).get("dsr"), (payload.get("pbo") or {}).get("pbo"))

    @property
    def variant(self) -> str:
        return self.selection["variant"]

    def value(self, strategy: str, scope: str, key: str) -> float:
        for row in self.summary:
            if row["strategy"] == strategy and row["scope"] == scope:
                v = row[f"{key}_mean"]
                return math.inf if v is None and key == M.PROFIT_FACTOR else (math.nan if v is None else float(v))
        return math.nan

    def per_fold(self, strategy: str) -> list[dict[str, float]]:
        rows = sorted((r for r in self.summary if r["strategy"] == strategy and r["scope"] == SCOPE_FOLD),
                      key=lambda r: r["fold"])
        return [{M.SHARPE: float(r["sharpe_mean"]), M.TOTAL_RETURN: float(r["total_return_mean"])} for r in rows]

    def strategies(self) -> list[str]:
        return list(dict.fromkeys(r["strategy"] for r in self.summary))

    def verdict(self, strategy: str, label: str) -> str:
        v = baseline_verdicts({AGENT: self.per_fold(strategy), REFERENCE: self.per_fold(REFERENCE)}, [REFERENCE])[0]
        return v.line.replace("agent ", f"{label} ", 1)

    def targets(self, strategy: str) -> str:
        parts = []
        for key, _, bound in TARGETS:
            value = self.value(strategy, SCOPE_STITCHED, key)
            met = value > bound
            parts.append(f"{key} {format_metric(key, value)} {'met' if met else 'NOT met'}")
        return "; ".join(parts)


def _row(label: str, ev: Evaluation, strategy: str, stats: bool) -> str:
    cells = [format_metric(key, ev.value(strategy, scope, key)) for _, scope, key in COLUMNS]
    dsr = f"{ev.dsr:.3f}" if stats and ev.dsr is not None else ""
    pbo = f"{ev.pbo:.2f}" if stats and ev.pbo is not None else ""
    return f"| {label} | " + " | ".join(cells) + f" | {dsr} | {pbo} |"


def dataset_table(evals: list[Evaluation], title: str) -> list[str]:
    """The markdown table of one data set (designs, then the baselines of the first design's folder)."""
    head = "| strategy | " + " | ".join(c for c, _, _ in COLUMNS) + " | DSR | PBO |"
    lines = [f"**{title}**", "", head, "|" + "---|" * (len(COLUMNS) + 3)]
    verdicts = []
    for ev in evals:
        label = f"{ev.design} ({ev.variant})"
        lines.append(_row(label, ev, ev.variant, True))
        lines.append(_row(f"{ev.design} (seed mean)", ev, AGENT, False))
        verdicts.append(ev.verdict(ev.variant, label))
    base = evals[0]
    skip = {AGENT, AGENT_SELECTED, "agent_ensemble"}
    for strategy in base.strategies():
        if strategy not in skip:
            lines.append(_row(strategy, base, strategy, False))
    lines += ["", "```", *verdicts, "```", ""]
    return lines


def pick_winner(evals: Mapping[tuple[str, str], Evaluation]) -> tuple[str | None, dict[str, float]]:
    """``(winner, {design: overall validation score})`` by the rule in the module docstring."""
    datasets = sorted({d for d, _ in evals})
    scores: dict[str, float] = {}
    for design in sorted({g for _, g in evals}):
        per = [evals[(d, design)].selection["score"] for d in datasets if (d, design) in evals]
        if len(per) == len(datasets):
            scores[design] = float(np.mean(per))
    winner = max(scores, key=scores.get) if scores else None
    return winner, scores


def _folder(roots: Sequence[Path], name: str) -> Path | None:
    """The first of ``roots`` holding the finished evaluation ``name``."""
    return next((r / name for r in roots if (r / name / "summary.json").is_file()), None)


def design_report(roots: Path | Sequence[Path], names: Mapping[str, Any]) -> str:
    """Markdown: a table per data set (and per stock for the stock designs), the winner and its targets.
    ``names``: the evaluation folders (``<data set>__<design>[__<symbol>]``) to read, each from the first of
    ``roots`` that holds it (a run's output folder first, then the tables kept in the repository)."""
    roots = [roots] if isinstance(roots, Path) else list(roots)
    evals: dict[tuple[str, str], Evaluation] = {}
    folders: dict[tuple[str, str], Path] = {}
    per_stock: dict[str, list[Evaluation]] = {}
    for name in names:
        folder = _folder(roots, name)
        if folder is None:
            continue
        parts = name.split("__")
        if len(parts) == 2:
            evals[(parts[0], parts[1])] = Evaluation.read(folder, parts[0], parts[1])
            folders[(parts[0], parts[1])] = folder
        else:
            per_stock.setdefault(parts[2], []).append(Evaluation.read(folder, parts[0], parts[1]))
    out: list[str] = []
    for dataset in sorted({d for d, _ in evals}):
        rows = [ev for (d, _), ev in sorted(evals.items()) if d == dataset]
        out += dataset_table(rows, f"{dataset}" + (" (pooled: equal-weight portfolio of the five stocks)"
                                                   if dataset.startswith("stocks") else ""))
    for symbol in sorted(per_stock):  # the pooled policy on one stock (its views), then the stock's own policies
        tables: dict[str, list[Evaluation]] = {}
        for (dataset, design), folder in sorted(folders.items()):
            view = next((v.name for v in sorted((folder / VIEWS_DIR).glob(f"*_{symbol}"))), None)
            if view is not None:
                tables.setdefault(dataset, []).append(
                    Evaluation.read(folder, dataset, f"{design} (pooled policy)", view))
        for e in sorted(per_stock[symbol], key=lambda e: e.design):
            tables.setdefault(e.dataset, []).append(
                Evaluation(e.dataset, f"{e.design} (own policy)", e.summary, e.selection, e.dsr, e.pbo))
        for dataset, rows in sorted(tables.items()):
            out += dataset_table(rows, f"{dataset}: {symbol}")
    winner, scores = pick_winner(evals)
    out.append("Validation scores per data set (mean over folds of the deployable variant's validation-window "
               "Sharpe): " + "; ".join(f"{d} {g} {ev.selection['score']:.2f}" for (d, g), ev in sorted(evals.items())))
    out.append("")
    out.append("Validation scores (mean over data sets of each design's validation-window Sharpe): "
               + ", ".join(f"{d} {s:.2f}" for d, s in sorted(scores.items(), key=lambda kv: -kv[1])))
    if winner is not None:
        out.append(f"Winner by the rule: **{winner}**.")
        for (dataset, design), ev in sorted(evals.items()):
            if design == winner:
                out.append(f"- {dataset} ({ev.variant}, stitched test record): {ev.targets(ev.variant)}")
    return "\n".join(out) + "\n"
