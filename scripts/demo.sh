#!/usr/bin/env bash
# The main job end to end on the bundled sample data (run by `make demo`, which installs first).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONWARNINGS=ignore
SAMPLE=data/sample/NSE_NIFTY50-INDEX_5m.csv.gz
OUT=${DEMO_OUT:-out/demo}
STORE="$OUT/store"
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

echo
echo "Done. Look at:"
echo "  $OUT/sma_crossover/report.html   (equity, drawdown, trades on price, monthly returns, metrics)"
echo "  $OUT/compare/compare.csv          (baseline table)"
echo "  $OUT/features.parquet             (feature matrix)"
