"""The mixture-of-experts walk-forward table (docs/results.md, walk-forward 5): the mixtures against the
single agent, its seed ensemble and every baseline, on the same folds and costs, with the deflated Sharpe
ratio and the PBO over the candidate agents.

Reads two finished walk-forwards of the same data, folds and costs:
``--moe`` (``tradebot evaluate --config experiments/moe/<data>.yaml``: the supervised-gated mixture as the
agent, ``moe_rl`` and ``moe_equal`` beside it) and ``--single`` (the single-agent design cell,
``experiments/designs/<data>__positional.yaml``: 5 seeds and their ensemble). The candidates a user could
deploy are the three mixtures, the five single-agent seeds and the seed ensemble: the PBO is computed over
their stitched session returns (CSCV), and each mixture's DSR counts all of them as trials.

How to run:
    .venv/bin/python bench/moe_table.py --moe runs/moe/nifty5m --single runs/designs/nifty5m__positional
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COLUMNS = ("sharpe", "sortino", "worst_30d_drawdown", "win_rate", "profit_factor", "total_return", "trades")


def main() -> None:
    from tradebot.rl.overfitting import deflated_sharpe_ratio, probability_of_backtest_overfitting, sharpe_ratio
    from tradebot.rl.walkforward.verdicts import session_returns

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--moe", type=Path, required=True, help="the mixture walk-forward's output folder")
    ap.add_argument("--single", type=Path, required=True, help="the single-agent walk-forward's output folder")
    ap.add_argument("--cash", type=float, default=2_500_000.0, help="initial cash of both (default 2,500,000)")
    ap.add_argument("--partitions", type=int, default=8, help="CSCV blocks for the PBO (default 8)")
    args = ap.parse_args()

    moe_sum, single_sum = pd.read_csv(args.moe / "summary.csv"), pd.read_csv(args.single / "summary.csv")
    moe_eq = pd.read_csv(args.moe / "stitched_equity.csv", index_col=0, parse_dates=True)
    single_eq = pd.read_csv(args.single / "stitched_equity.csv", index_col=0, parse_dates=True)
    if not moe_eq["buy_and_hold"].equals(single_eq["buy_and_hold"]):
        sys.exit("the two walk-forwards' buy_and_hold records differ: they are not on the same folds and costs")

    rows = {  # name: (summary frame, strategy in it, equity column)
        "mixture, supervised gate (a)": (moe_sum, "agent", "agent_seed_0"),
        "mixture, rl gate (b)": (moe_sum, "moe_rl", "moe_rl"),
        "mixture, equal weights (always-on control)": (moe_sum, "moe_equal", "moe_equal"),
        "single agent (mean of 5 seeds)": (single_sum, "agent", None),
        "single agent, validation-selected seed": (single_sum, "agent_selected", "agent_selected"),
        "single agent, seed ensemble": (single_sum, "agent_ensemble", "agent_ensemble"),
    }
    baselines = [s for s in single_sum["strategy"].unique()
                 if not s.startswith("agent") and not s.startswith("moe_")]
    for b in baselines:
        rows[b] = (single_sum, b, b)

    candidates = {"mixture (a)": moe_eq["agent_seed_0"], "mixture (b)": moe_eq["moe_rl"],
                  "mixture equal": moe_eq["moe_equal"], "seed ensemble": single_eq["agent_ensemble"],
                  **{f"seed {k}": single_eq[f"agent_seed_{k}"] for k in range(5) if f"agent_seed_{k}" in single_eq}}
    daily = pd.DataFrame({name: session_returns(e, args.cash) for name, e in candidates.items()})
    trial_sharpes = [sharpe_ratio(daily[c].to_numpy()) for c in daily]
    t = len(daily)
    pbo = probability_of_backtest_overfitting(daily.to_numpy(), n_partitions=min(args.partitions, t - t % 2))
    dsr = {name: deflated_sharpe_ratio(daily[name].to_numpy(), n_trials=len(candidates),
                                       trial_sharpes=trial_sharpes).dsr
           for name in ("mixture (a)", "mixture (b)", "mixture equal", "seed ensemble")}
    dsr_of = {"mixture, supervised gate (a)": dsr["mixture (a)"], "mixture, rl gate (b)": dsr["mixture (b)"],
              "mixture, equal weights (always-on control)": dsr["mixture equal"],
              "single agent, seed ensemble": dsr["seed ensemble"]}

    print("| strategy | mean Sharpe (folds) | folds worse than buy_and_hold | Sharpe | Sortino | worst 30d DD | "
          "win rate | profit factor | return | trades | DSR |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    bh_folds = _fold_sharpes(single_sum, "buy_and_hold")
    for name, (frame, strategy, _) in rows.items():
        folds = frame[(frame.scope == "folds") & (frame.strategy == strategy)]
        stitched = frame[(frame.scope == "stitched") & (frame.strategy == strategy)]
        if folds.empty or stitched.empty:
            continue
        f, s = folds.iloc[0], stitched.iloc[0]
        worse = int((_fold_sharpes(frame, strategy) < bh_folds).sum()) if strategy != "buy_and_hold" else "-"
        d = dsr_of.get(name)
        print(f"| {name} | {f.sharpe_mean:.2f} | {worse}/{len(bh_folds)} | {s.sharpe_mean:.2f} | "
              f"{s.sortino_mean:.2f} | {s.worst_30d_drawdown_mean * 100:.2f}% | {s.win_rate_mean * 100:.1f}% | "
              f"{s.profit_factor_mean:.2f} | {s.total_return_mean * 100:.2f}% | {s.trades_mean:.0f} | "
              f"{'' if d is None else f'{d:.3f}'} |")
    print()
    print(f"PBO over the {len(candidates)} candidate agents ({', '.join(candidates)}), CSCV on {t} sessions: "
          f"{pbo.pbo:.2f}")
    print("DSR: probability that the true Sharpe ratio beats what the best of these "
          f"{len(candidates)} candidates reaches by luck.")


def _fold_sharpes(frame: pd.DataFrame, strategy: str) -> np.ndarray:
    rows = frame[(frame.scope == "fold") & (frame.strategy == strategy)].sort_values("fold")
    return rows["sharpe_mean"].to_numpy()


if __name__ == "__main__":
    main()
