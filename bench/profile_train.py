"""Where a training iteration's time goes: ``tradebot train`` sampled by py-spy, summed by stage.

How to run:
    .venv/bin/python bench/profile_train.py                                   # experiments/intraday_nifty5m.yaml, 8 iterations
    .venv/bin/python bench/profile_train.py --config experiments/intraday_nifty5m.yaml --iterations 4 --keep /tmp/prof.raw
    .venv/bin/python bench/profile_train.py --from-raw /tmp/prof.raw          # summarise an earlier recording

What it does. It copies the config with ``run.iterations`` set to ``--iterations`` (and the output
folder and MLflow store in a temporary folder), runs ``tradebot train --config COPY`` as a user
would, under ``py-spy record`` (100 samples/s, Python stacks of the driver and of every child
process), and then sums the samples of the training loop (``tradebot.rl.train.train_loop``: Ray
start-up, imports and registration are left out) by stage:

* sampling (``EnvRunner.sample``), split into the env step, the observation filter (RLlib's
  ``MeanStdFilter`` connector, or the batched runner's pass of it), the RLModule forward pass, the
  env-to-module and module-to-env connector pipelines, episode bookkeeping (``SingleAgentEpisode``
  appends, cuts, numpy conversion, callbacks) and the rest;
* learning (``LearnerGroup.update``), split into the learner connector pipeline (GAE with its value
  pass, sequence padding, the rest), the loss forward pass, backward, the optimiser step and the rest;
* validation, checkpoints, MLflow logging, weight sync and RLlib's metrics.

Shares are of the training loop's samples (wall time in the driver; with remote env runners,
their own samples are listed apart). The top self-time functions follow. Figures move with
machine load; compare runs made back to back.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOOP = "train_loop (rl/train.py"

# (stage, sub-stage, function-name patterns found in the stack; first match wins, innermost first)
STAGES: list[tuple[str, str, tuple[str, ...]]] = [
    ("validation", "", ("validate_policy (",)),
    ("checkpoint", "", ("_save_checkpoint (", "_prune_checkpoints (")),
    ("mlflow", "", ("_log_mlflow_metrics (",)),
    ("learning", "learner connectors: GAE (value pass)", ("GeneralAdvantageEstimation",)),
    ("learning", "learner connectors: sequence padding", ("AddTimeDimToBatchAndZeroPad",)),
    ("learning", "learner connectors: other", ("LearnerConnectorPipeline.__call__",)),
    ("learning", "loss forward", ("compute_loss_for_module", "compute_losses", "forward_train")),
    ("learning", "backward", ("compute_gradients",)),
    ("learning", "optimizer step", ("apply_gradients", "postprocess_gradients")),
    ("learning", "other", ("LearnerGroup.update", "Learner.update")),
    ("sampling", "env step", ("_try_env_step", "BatchedTradingEnv.step", "TradingEnv.step")),
    ("sampling", "env reset", ("_try_env_reset", "BatchedTradingEnv.reset")),
    ("sampling", "action sampling", ("TorchCategorical", "Categorical.")),
    ("sampling", "observation filter (MeanStdFilter)", ("MeanStdFilter.__call__", "_Filter.__call__")),
    ("sampling", "RLModule forward", ("forward_exploration", "forward_inference", "_forward_exploration")),
    ("sampling", "env-to-module connectors", ("EnvToModulePipeline.__call__", "env_to_module")),
    ("sampling", "module-to-env connectors", ("ModuleToEnvPipeline.__call__", "module_to_env")),
    ("sampling", "episode bookkeeping", ("SingleAgentEpisode.", "_make_on_episode_callback", "_new_episode",
                                         "InfiniteLookbackBuffer", "_cut_episodes")),
    ("sampling", "other", ("EnvRunner.sample", "EnvRunner._sample", "synchronous_parallel_sample")),
    ("weight sync", "", ("sync_weights", "EnvRunnerGroup.sync")),
    ("metrics", "", ("MetricsLogger", "metrics_logger", "Stats.")),
]


def _stage_of(frames: list[str]) -> tuple[str, str]:
    for stage, sub, patterns in STAGES:
        for frame in reversed(frames):
            if any(p in frame for p in patterns):
                return stage, sub
    return "other", ""


def _short(frame: str) -> str:
    name, _, where = frame.partition(" (")
    path = where.rstrip(")")
    for marker in ("site-packages/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


def summarise(raw: Path, top: int = 15) -> str:
    """The stage table and the top self-time functions of a py-spy ``--format raw`` recording."""
    stages: Counter[tuple[str, str]] = Counter()
    self_time: Counter[str] = Counter()
    loop_total = other_processes = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if not any(LOOP in f for f in frames):
            if any("EnvRunner.sample" in f for f in frames):  # a remote env runner's process
                other_processes += n
            continue
        loop_total += n
        stages[_stage_of(frames)] += n
        self_time[_short(frames[-1]).split(":")[0] + ")"] += n
    if loop_total == 0:
        return "no samples inside the training loop (is this a recording of `tradebot train`?)"
    lines = [f"training loop: {loop_total} samples (100/s: {loop_total / 100:.1f} s)"]
    by_stage: Counter[str] = Counter()
    for (stage, _), n in stages.items():
        by_stage[stage] += n
    for stage, n in by_stage.most_common():
        lines.append(f"  {stage:28s} {100 * n / loop_total:5.1f} %")
        for (s, sub), m in sorted(stages.items(), key=lambda kv: -kv[1]):
            if s == stage and sub:
                lines.append(f"      {sub:24s} {100 * m / loop_total:5.1f} %")
    if other_processes:
        lines.append(f"  (remote env runners: {other_processes} samples, not in the shares above)")
    lines.append(f"top {top} functions by own time (share of the training loop):")
    for name, n in self_time.most_common(top):
        lines.append(f"  {100 * n / loop_total:5.1f} %  {name}")
    return "\n".join(lines)


def record(config: Path, iterations: int, raw: Path) -> None:
    import yaml

    data = yaml.safe_load(config.read_text())
    tmp = Path(tempfile.mkdtemp(prefix="tradebot-profile-"))
    run = data.setdefault("run", {})
    run["iterations"] = iterations
    run["output_dir"] = str(tmp / "out")
    if "data" in data and "path" in data["data"]:
        data["data"]["path"] = str((ROOT / data["data"]["path"]).resolve())
    copy = tmp / "train.yaml"
    copy.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
           "RAY_TMPDIR": os.environ.get("RAY_TMPDIR", str(tmp / "ray"))}
    tradebot = Path(sys.executable).parent / "tradebot"
    pyspy = Path(sys.executable).parent / "py-spy"
    cmd = [str(pyspy), "record", "--format", "raw", "--rate", "100", "--subprocesses", "-o", str(raw), "--",
           str(tradebot), "train", "--config", str(copy)]
    print("running:", " ".join(cmd), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    if done.returncode != 0 or not raw.is_file():
        raise SystemExit(f"error: py-spy or tradebot train failed (exit {done.returncode}); py-spy needs permission "
                         "to read the child's memory (root, or CAP_SYS_PTRACE in a container)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__[__doc__.index("How to run"):])
    ap.add_argument("--config", type=Path, default=ROOT / "experiments/intraday_nifty5m.yaml",
                    help="training YAML (default: %(default)s)")
    ap.add_argument("--iterations", type=int, default=8, help="training iterations to run (default: %(default)s)")
    ap.add_argument("--keep", type=Path, default=None, help="write the py-spy recording here (default: a temp file)")
    ap.add_argument("--from-raw", type=Path, default=None, help="only summarise this earlier recording")
    ap.add_argument("--top", type=int, default=15, help="functions to list (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.from_raw is not None:
        raw = args.from_raw
    else:
        raw = args.keep or Path(tempfile.mkdtemp(prefix="tradebot-profile-")) / "profile.raw"
        record(args.config, args.iterations, raw)
    print(summarise(raw, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
