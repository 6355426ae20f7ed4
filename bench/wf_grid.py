"""The issue-14 grid: every design of the trading problem, walk-forward on every data set, one table.

How to run:
    .venv/bin/python bench/wf_grid.py write                       # (re)write experiments/designs/*.yaml
    .venv/bin/python bench/wf_grid.py run [NAME ...] [--parallel N] [--data DIR] [--out runs/designs]
    .venv/bin/python bench/wf_grid.py keep [NAME ...] [--out runs/designs]  # copy finished tables to docs/designs
    .venv/bin/python bench/wf_grid.py table [--out runs/designs]  # the markdown table and the winner

``write`` turns the design and data-set definitions below into one walk-forward config per (data
set, design): ``experiments/designs/<data set>__<design>.yaml`` (they are checked in; this script is
how they were made). ``run`` evaluates them one after the other with ``tradebot evaluate`` (each
resumes where it stopped), all in one MLflow store (``<out>/mlflow.db``: the UI's Compare view puts
the designs side by side), and logs each one's wall time to ``<out>/grid.log``; ``--data DIR`` reads
the bar files from DIR instead of /work/shared/data (the device script copies them). Each finished
cell's tables (summary, selection, per-instrument views; a few hundred kB, no models) are copied to
``docs/designs/<cell>/`` (``keep`` does it for cells finished elsewhere), so that the comparison
survives the run folder. ``table`` prints the comparison ``docs/results.md`` shows
(``tradebot.rl.walkforward.design_table``), reading each cell from ``--out`` or else from
``docs/designs``, and the design the evaluation's rule picks (validation windows only).

Budget per design and data set: 6 folds x 5 seeds = 30 policies of 1,003,520 env steps each (49
PPO iterations of 20,480 steps), the seed ensemble, every baseline. Per-stock designs: the pooled
stock designs trained on one stock each.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DESIGNS_DIR = ROOT / "experiments" / "designs"
KEPT_DIR = ROOT / "docs" / "designs"  # each finished cell's tables, checked in
KEPT_FILES = ("summary.csv", "summary.json", "selection.json", "runs.csv", "folds.json", "walkforward.yaml")
SHARED = "/work/shared/data"
STOCKS = ("NSE_SBIN-EQ", "NSE_RELIANCE-EQ", "NSE_INFY-EQ", "NSE_HDFCBANK-EQ", "NSE_TCS-EQ")
SEEDS = [0, 1, 2, 3, 4]

PPO = {"lr": 3.0e-4, "gamma": 0.99, "gae_lambda": 0.95, "entropy_coeff": 0.01, "clip_param": 0.2,
       "vf_loss_coeff": 0.5, "train_batch_size": 20480, "minibatch_size": 2560, "num_epochs": 4}
MODEL = {"lstm_cell_size": 64, "max_seq_len": 20, "fcnet_hiddens": [64], "fcnet_activation": "tanh"}
# select_after (from 2026-12-05 15:30; the cells run before it picked among all seven validations, and
# often picked iteration 7 or 14, a barely trained policy that sat out a falling validation window):
# the registered checkpoint is the best validation from iteration 21 on (21, 28, 35, 42, 49)
RUN = {"iterations": 49, "checkpoint_every": 7, "keep_checkpoints": 2, "validate_every": 7, "patience": None,
       "select_after": 21, "num_env_runners": 0, "num_envs_per_env_runner": 128}

# daily bars: short windows (warm-up about 40 sessions instead of 520 bars)
DAILY_FEATURES = {"returns": {"horizons": [1, 5, 20]}, "trend": {"sma": [10, 20], "ema": [10, 20]},
                  "volatility": {"realised_vol": [10, 20]}, "regime": {"percentile_window": 40},
                  "candles": {"enabled": False}, "normalisation": {"window": 120, "min_periods": 20}}

# engines: MIS intraday (the old default), NRML index futures, CNC delivery
MIS = {}
NRML_INDEX = {"initial_cash": 2_500_000.0, "product": "index_futures", "carry_overnight": True, "lot_size": "catalog",
              "leverage": "catalog", "exposure": 1.0, "stop_loss": False, "take_profit_atr_mult": None}
CNC = {"product": "equity_delivery", "exposure": 1.0, "stop_loss": False, "take_profit_atr_mult": None}

DATASETS = {
    "nifty5m": {"files": ["NSE_NIFTY50-INDEX_5m.csv.gz"], "start": "2021-01-01", "intraday": True,
                "folds": {"unit": "months", "train": 6, "validation": 1, "test": 1, "step": 2, "purge": 2},
                "episode": 375, "engine": NRML_INDEX, "features": None},
    "nifty1d": {"files": ["NSE_NIFTY50-INDEX_1d.csv.gz"], "start": "2021-01-01", "intraday": False,
                "folds": {"unit": "months", "train": 6, "validation": 1, "test": 1, "step": 2, "purge": 1,
                          "anchored": True},
                "episode": 20, "engine": NRML_INDEX, "features": DAILY_FEATURES},
    "stocks1d": {"files": [f"{s}_1d.csv.gz" for s in STOCKS], "start": "2020-10-01", "intraday": False,
                 "folds": {"unit": "months", "train": 18, "validation": 6, "test": 6, "step": 6, "purge": 2,
                           "anchored": True},
                 "episode": 60, "engine": CNC, "features": DAILY_FEATURES},
}


def design_env(design: str, ds: dict) -> dict:
    """The env section of ``design`` on data set ``ds``."""
    intraday = ds["intraday"]
    env: dict = {"episode": {"mode": "window", "length": ds["episode"]}}
    if ds["features"] is not None:
        env["features"] = copy.deepcopy(ds["features"])
    if design == "intraday_masked":  # the old problem (MIS, risk sizing, stops), made cost-aware and masked
        env.update(engine=MIS, decision_interval=3, min_hold_bars=6,
                   reward={"name": "net_log_return", "turnover_penalty": 0.0002})
    elif design == "positional":  # carry overnight (NRML futures / CNC), fully invested when in, masked
        env.update(engine=ds["engine"], decision_interval=3 if intraday else 1, min_hold_bars=6 if intraday else 2,
                   reward={"name": "net_log_return", "turnover_penalty": 0.0002})
    elif design == "positional_dsr":  # the same, rewarded on risk: differential Sharpe with a drawdown penalty
        env.update(engine=ds["engine"], decision_interval=3 if intraday else 1, min_hold_bars=6 if intraday else 2,
                   reward={"name": "differential_sharpe", "eta": 0.01 if intraday else 0.05,
                           "drawdown_penalty": 1.0, "turnover_penalty": 0.0002})
    elif design == "overlay":  # hold plus an RL overlay: judged against holding, so out/short only pays in falls
        env.update(engine=ds["engine"], decision_interval=3 if intraday else 1, min_hold_bars=6 if intraday else 2,
                   reward={"name": "net_log_return", "benchmark": 1.0, "turnover_penalty": 0.0002})
    else:
        raise SystemExit(f"unknown design {design}")
    return env


GRID = {
    "nifty5m": ["intraday_masked", "positional", "positional_dsr", "overlay"],
    "nifty1d": ["positional", "positional_dsr", "overlay"],
    "stocks1d": ["positional", "positional_dsr", "overlay"],
}
PER_STOCK_DESIGNS = ["positional", "overlay"]  # also trained one stock at a time


def configs(data_dir: str = SHARED) -> dict[str, dict]:
    """name -> walk-forward config, for every cell of the grid (and the per-stock runs)."""
    out = {}
    tried = {k: len(v) for k, v in GRID.items()}
    for ds_name, designs in GRID.items():
        ds = DATASETS[ds_name]
        for design in designs:
            files = [f"{data_dir}/{f}" for f in ds["files"]]
            cells = [(f"{ds_name}__{design}", files)]
            if ds_name == "stocks1d" and design in PER_STOCK_DESIGNS:
                cells += [(f"{ds_name}__{design}__{Path(f).name.split('_')[1]}", [f]) for f in files]
            for name, paths in cells:
                out[name] = {
                    "data": {"path": paths[0], "extra_paths": paths[1:], "start": ds["start"], "end": None},
                    "folds": ds["folds"],
                    "evaluation": {"seeds": SEEDS, "baselines": None, "baseline_seed": 0,
                                   "configs_tried": tried[ds_name], "pbo_partitions": 8, "ensemble": True,
                                   "parallel_trainings": 1, "output_dir": f"runs/designs/{name}",
                                   "mlflow_experiment": f"tradebot-designs-{ds_name}",
                                   "registered_model": f"tradebot-{name.replace('__', '-')}"},
                    "training": {"env": design_env(design, ds), "ppo": PPO, "model": MODEL, "run": RUN},
                }
    return out


HEADER = """# Issue 14 design grid: {name} (written by bench/wf_grid.py; edit there and rewrite).
# How to run:   tradebot evaluate --config experiments/designs/{name}.yaml --out runs/designs/{name}
#               (or: .venv/bin/python bench/wf_grid.py run {name})
# Budget:       6 folds x 5 seeds x 1,003,520 env steps (49 iterations of 20,480), the seed ensemble,
#               every baseline; results in docs/results.md (walk-forward 4).
"""


def write() -> None:
    DESIGNS_DIR.mkdir(parents=True, exist_ok=True)
    for name, cfg in configs().items():
        text = HEADER.format(name=name) + yaml.safe_dump(cfg, sort_keys=False)
        (DESIGNS_DIR / f"{name}.yaml").write_text(text)
    print(f"wrote {len(configs())} configs to {DESIGNS_DIR}")


def keep(names: list[str], out: Path) -> list[str]:
    """Copy the tables of the finished cells among ``names`` (all when empty) from ``out`` to docs/designs."""
    kept = []
    for name in names or list(configs()):
        src = out / name
        if not (src / "summary.json").is_file():
            continue
        dst = KEPT_DIR / name
        for folder in [src, *sorted((src / "views").glob("*/"))]:
            target = dst / folder.relative_to(src)
            target.mkdir(parents=True, exist_ok=True)
            for f in KEPT_FILES:
                if (folder / f).is_file():
                    shutil.copy2(folder / f, target / f)
        kept.append(name)
    return kept


def run(names: list[str], parallel: int, data_dir: str, out: Path, minutes: float | None = None) -> None:
    cells = configs(data_dir)
    todo = names or list(cells)
    unknown = [n for n in todo if n not in cells]
    if unknown:
        raise SystemExit(f"unknown config(s) {', '.join(unknown)}; see bench/wf_grid.py write")
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{(out / 'mlflow.db').resolve()}",
           "PYTHONWARNINGS": "ignore"}
    log = out / "grid.log"
    deadline = time.time() + 60 * minutes if minutes is not None else None
    for name in todo:
        cfg = copy.deepcopy(cells[name])
        cfg["evaluation"]["parallel_trainings"] = parallel
        path = out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        t0 = time.time()
        left = None if minutes is None else deadline - t0
        if left is not None and left <= 0:
            break
        proc = subprocess.Popen([str(Path(sys.executable).with_name("tradebot")), "evaluate", "--config", str(path),
                                 "--out", str(out / name)], env=env, cwd=ROOT)
        try:
            rc = proc.wait(timeout=left)
        except subprocess.TimeoutExpired:  # out of time: interrupt it (finished trainings stay on disk)
            proc.send_signal(signal.SIGINT)
            try:
                rc = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
        with log.open("a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {name} rc={rc} wall={time.time() - t0:.0f}s "
                    f"parallel={parallel} load={os.getloadavg()[0]:.2f}\n")
        if rc != 0:
            print(f"{name}: exit {rc} (see above); going on with the next", file=sys.stderr)
        else:
            keep([name], out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["write", "run", "keep", "table"])
    ap.add_argument("names", nargs="*")
    ap.add_argument("--parallel", type=int, default=1, help="trainings at once (evaluation.parallel_trainings)")
    ap.add_argument("--data", default=SHARED, help="folder with the bar files")
    ap.add_argument("--out", default="runs/designs")
    ap.add_argument("--minutes", type=float, default=None, help="stop (interrupting the evaluation) after this long")
    a = ap.parse_args()
    if a.command == "write":
        write()
    elif a.command == "run":
        run(a.names, a.parallel, a.data, Path(a.out), a.minutes)
    elif a.command == "keep":
        print("kept in docs/designs: " + (", ".join(keep(a.names, Path(a.out))) or "nothing (no finished cell)"))
    else:
        from tradebot.rl.walkforward.design_table import design_report

        print(design_report([Path(a.out), KEPT_DIR], {n: c for n, c in configs().items()}))


if __name__ == "__main__":
    main()
