#!/usr/bin/env bash
# The issue-14 design grid's remaining walk-forwards on a bigger machine (16 cores; the GPU is not
# needed: the networks are small and learn on one CPU thread each). One run of about 8 minutes:
#
#   cp -r /work/shared/data shared/data          # on the machine that launches it: the bar files travel along
#   bash bench/wf_device.sh [CELL ...]            # default: the per-stock cells of bench/wf_grid.py
#
# It trains 15 fold/seed policies at once (evaluation.parallel_trainings: 15, one core each, one left
# for the driver), stops itself before ${WF_MINUTES:-7} minutes so that what finished is kept, and
# copies every finished evaluation's tables (summary.*, selection.json, runs.csv, views/*/summary.*)
# and the grid log to $OUT/designs (default: out/wf_device). Re-running resumes: finished trainings
# and tests are read back from runs/designs. Bring the tables back under runs/designs/ and run
# `python bench/wf_grid.py table` to add them to the comparison.
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${WF_DATA:-shared/data}
OUT=${OUT:-out/wf_device}
MINUTES=${WF_MINUTES:-7}
PY=${PYTHON:-.venv/bin/python}
if [ ! -f "$DATA/NSE_SBIN-EQ_1d.csv.gz" ]; then
  echo "error: no bar files in $DATA; copy /work/shared/data there (or set WF_DATA)" >&2
  exit 2
fi
CELLS=("$@")
if [ ${#CELLS[@]} -eq 0 ]; then
  CELLS=(stocks1d__positional__SBIN-EQ stocks1d__positional__RELIANCE-EQ stocks1d__positional__INFY-EQ
         stocks1d__positional__HDFCBANK-EQ stocks1d__positional__TCS-EQ stocks1d__overlay__SBIN-EQ
         stocks1d__overlay__RELIANCE-EQ stocks1d__overlay__INFY-EQ stocks1d__overlay__HDFCBANK-EQ
         stocks1d__overlay__TCS-EQ)
fi
echo "machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB; cells: ${CELLS[*]}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONWARNINGS=ignore
"$PY" bench/wf_grid.py run "${CELLS[@]}" --parallel 15 --data "$DATA" --out runs/designs --minutes "$MINUTES"
echo "grid exit $? after at most $MINUTES min"
mkdir -p "$OUT/designs"
cp runs/designs/grid.log "$OUT/designs/" 2>/dev/null
for cell in "${CELLS[@]}"; do
  src=runs/designs/$cell
  [ -f "$src/summary.json" ] || continue
  mkdir -p "$OUT/designs/$cell"
  cp "$src"/{summary.csv,summary.json,selection.json,runs.csv,folds.json,walkforward.yaml} "$OUT/designs/$cell/" 2>/dev/null
  for v in "$src"/views/*/; do
    [ -d "$v" ] && mkdir -p "$OUT/designs/$cell/views/$(basename "$v")" && cp "$v"summary.* "$OUT/designs/$cell/views/$(basename "$v")/"
  done
done
ls "$OUT/designs"
