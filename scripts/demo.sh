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

# The default design (experiments/demo.yaml, the walk-forward winner of docs/results.md) names its data, its
# training and validation dates and its engine; the months after validation are held back as the test.
read -r DEMO_DATA HOLD_START HOLD_END PAPER_START < <(python - <<'EOF'
import yaml, pandas as pd
d = yaml.safe_load(open("experiments/demo.yaml"))["data"]
start = pd.Timestamp(d["validation"]["end"])
daily = "_1d." in d["path"]
end = start + pd.DateOffset(months=6 if daily else 1)
paper = end - (pd.DateOffset(months=2) if daily else pd.DateOffset(days=10))
print(d["path"], start.date(), end.date(), paper.date())
EOF
)
python -c 'import yaml; e = yaml.safe_load(open("experiments/demo.yaml"))["env"].get("engine", {}); print(yaml.safe_dump({"live": {"engine": e}}))' > "$OUT/live.yaml"
mkdir -p "$OUT/replay"; REPLAY="$OUT/replay/$(basename "$DEMO_DATA" .gz)"  # the file name says the symbol

echo; echo "== 6. train the default design (experiments/demo.yaml) and register the best checkpoint in MLflow"
echo "   (a re-run finds the run complete and does nothing; an interrupted one resumes from its last checkpoint)"
tradebot train --config experiments/demo.yaml --output "$TRAIN"
MODEL=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["model_uri"])' "$TRAIN/state.json")

echo; echo "== 7. the registered policy beside every baseline on $HOLD_START .. $HOLD_END, held back from training and validation"
tradebot backtest --data "$DEMO_DATA" --policy "$MODEL" --compare --start "$HOLD_START" --end "$HOLD_END" --out "$OUT/policy_test"

echo; echo "== 8. a paper run: $PAPER_START .. $HOLD_END replayed as a live feed under the policy's engine, the policy"
echo "   served by Ray Serve, orders through the risk engine to the paper broker; then the run's report and its parity with a backtest"
rm -rf "$OUT/paper"
python -c 'import sys; from tradebot.features.bars import load_bars; f = load_bars(sys.argv[1]).between(None, sys.argv[2]).frame.reset_index(); f["timestamp"] = [t.isoformat() for t in f["timestamp"]]; f.to_csv(sys.argv[3], index=False)' \
  "$DEMO_DATA" "$HOLD_END" "$REPLAY"
tradebot live --paper --replay "$REPLAY" --model "$MODEL" --config "$OUT/live.yaml" --start "$PAPER_START" --speed max \
  --out "$OUT/paper" --no-log-json
tradebot live status --journal "$OUT/paper/journal.db"

TRACKING=${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}
EXPERIMENT=$(python -c 'import yaml; print(yaml.safe_load(open("experiments/demo.yaml"))["run"]["mlflow_experiment"])')
echo
echo "Done. Look at:"
echo "  $OUT/policy_test/report.html     (the trained policy on its held-back months: equity, drawdown, trades, metrics)"
echo "  $OUT/paper/report.html           (the paper run through Serve; parity.json: its trades vs a backtest)"
echo "  $OUT/policy_test/compare.csv     (the policy and every baseline on the same months, after costs)"
echo "  $OUT/sma_crossover/report.html   (one baseline over January-June in detail)"
echo "  $OUT/compare/compare.csv          (baseline table, January-June)"
echo "  $OUT/features.parquet             (feature matrix)"
echo "  $TRAIN                    (checkpoints, state.json, config.yaml)"
echo "  MLflow: mlflow ui --backend-store-uri $TRACKING   (from $(pwd))"
echo "          experiment '$EXPERIMENT' (params, per-iteration metrics, checkpoint), model $MODEL"
