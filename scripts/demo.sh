#!/usr/bin/env bash
# The main job end to end on the bundled sample data (run by `make demo`, which installs first).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONWARNINGS=ignore
SAMPLE=data/sample/NSE_NIFTY50-INDEX_5m.csv.gz
OUT=${DEMO_OUT:-out/demo}
STORE="$OUT/store"
TRAIN="$OUT/train"
mkdir -p "$OUT"

echo "== 1. data quality of the sample"
tradebot data check "$SAMPLE" data/sample/NSE_NIFTY50-INDEX_1m.csv.gz || [ $? -eq 1 ]   # exit 1 = problems found (known short sessions)

echo; echo "== 2. import into the canonical store (1m resampled to 15m as well)"
tradebot data import "$SAMPLE" --symbol NSE:NIFTY50-INDEX --store "$STORE"
tradebot data import data/sample/NSE_NIFTY50-INDEX_1m.csv.gz --symbol NSE:NIFTY50-INDEX --timeframe 15m --store "$STORE"
tradebot data list --store "$STORE"

echo; echo "== 3. feature matrix"
tradebot features build "$SAMPLE" --out "$OUT/features.parquet" --config experiments/features.yaml

echo; echo "== 4. every baseline on the same bars, after NSE costs and slippage"
tradebot backtest --data "$SAMPLE" --compare --out "$OUT/compare"

echo; echo "== 5. one baseline in detail"
tradebot backtest --data "$SAMPLE" --strategy sma_crossover --out "$OUT/sma_crossover"

echo; echo "== 6. train the PPO-LSTM (Jan-Apr 2021, validated on May) and register the best checkpoint in MLflow"
echo "   (a re-run finds the run complete and does nothing; an interrupted one resumes from its last checkpoint)"
tradebot train --config experiments/demo.yaml --output "$TRAIN"
MODEL=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["model_uri"])' "$TRAIN/state.json")

echo; echo "== 7. the registered policy beside every baseline on June 2021, held back from training and validation"
tradebot backtest --data "$SAMPLE" --policy "$MODEL" --compare --start 2021-06-01 --end 2021-07-01 --out "$OUT/policy_june"

echo; echo "== 8. a paper run: the last week of June replayed as a live feed, the policy served by Ray Serve,"
echo "   orders through the risk engine to the paper broker; then the run's report and its parity with a backtest"
rm -rf "$OUT/paper"
tradebot live --paper --replay "$SAMPLE" --model "$MODEL" --start 2021-06-21 --speed max --out "$OUT/paper" --no-log-json
tradebot live status --journal "$OUT/paper/journal.db"

TRACKING=${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}
EXPERIMENT=$(python -c 'import yaml; print(yaml.safe_load(open("experiments/demo.yaml"))["run"]["mlflow_experiment"])')
echo
echo "Done. Look at:"
echo "  $OUT/policy_june/report.html     (the trained policy on June 2021: equity, drawdown, trades on price, metrics)"
echo "  $OUT/paper/report.html           (the paper run through Serve; parity.json: its trades vs a backtest)"
echo "  $OUT/policy_june/compare.csv     (the policy and every baseline on June 2021, after costs)"
echo "  $OUT/sma_crossover/report.html   (one baseline over January-June in detail)"
echo "  $OUT/compare/compare.csv          (baseline table, January-June)"
echo "  $OUT/features.parquet             (feature matrix)"
echo "  $TRAIN                    (checkpoints, state.json, config.yaml)"
echo "  MLflow: mlflow ui --backend-store-uri $TRACKING   (from $(pwd))"
echo "          experiment '$EXPERIMENT' (params, per-iteration metrics, checkpoint), model $MODEL"
