"""Training throughput: env steps per second while PPO-LSTM trains, RLlib (our pipeline) against
sb3-contrib RecurrentPPO on the same env, in the same run.

How to run:
    .venv/bin/python bench/train.py                                  # 5 timed iterations of 2,000 steps
    .venv/bin/python bench/train.py --iterations 2 --runners 0x1,0x4 --sb3-envs 1
    RAY_TMPDIR=/tmp/$USER-ray .venv/bin/python bench/train.py        # keep Ray's files out of /tmp/ray

What is measured. Both sides train PPO with an LSTM on ``tradebot/Trading-v0`` over the NIFTY 50
5-minute sample's training dates (Jan-Apr 2021: the demo's env config, 375-bar window episodes, the
full default feature set), for the same number of env steps, on the CPU:

* RLlib: the real ``tradebot.rl.train.build_algo_config`` (new API stack, MeanStdFilter connector,
  ``DefaultModelConfig(use_lstm=True)``: MLP [64] -> LSTM 64 -> heads, ``max_seq_len`` 20),
  for each ``RxE`` in ``--runners``: R remote env runners (0: sampling in the driver), E envs
  per runner (vectorised, one batched forward pass per step). One warm-up iteration, then
  ``--iterations`` timed ones. **steps/s** = the change in RLlib's own lifetime counter
  ``num_env_steps_sampled_lifetime`` over the timed iterations / their wall time (sampling plus
  learning: the training loop's throughput). **sampling steps/s** = steps / the wall time PPO's
  ``training_step`` spent in ``synchronous_parallel_sample`` (wrapped with a timer here; RLlib's own
  ``env_runner_sampling_timer`` is an exponential average dominated by the warm-up iteration).
* sb3-contrib ``RecurrentPPO("MlpLstmPolicy")`` on ``gymnasium.make("tradebot/Trading-v0", ...)``
  (through SB3's ``DummyVecEnv`` with ``--sb3-envs`` copies, and ``VecNormalize`` on observations
  only, like RLlib's MeanStdFilter): one LSTM of 64 shared by policy and value
  (``shared_lstm=True``, ``enable_critic_lstm=False``), heads ``[64]``, ``n_steps`` = the RLlib
  batch / envs (rounded), the same minibatch size, epochs, learning rate, gamma, GAE lambda, clip, entropy
  and value coefficients; ``device="cpu"``. One warm-up rollout + update, then the same number of
  env steps as RLlib's timed iterations. steps/s = steps / wall time of ``learn``; sampling
  steps/s = steps / the time between SB3's rollout start and end callbacks.
* **steps/CPU-s** (both): steps / the CPU seconds this process and all its descendants (Ray's
  driver, raylet, env runners) used over the timed part. Wall-clock rates are what a quiet
  machine gives; on a shared one they swing with the other jobs, and this column swings less (it
  hides the gain from parallel env runners, though).

The networks are comparable, not identical (RLlib puts an MLP before its LSTM, SB3 puts it after;
SB3 backpropagates through whole rollout sequences, RLlib through ``max_seq_len`` windows).
Torch runs ``--torch-threads`` intra-op threads in the driver for both (default 1: with two, on 2
cores shared with other jobs, the learning-regression test's iterations were up to 20x slower;
Ray's env runners use one thread anyway). Figures swing with machine load: compare rows from the
same run only.

Results to expect (three runs of ``--iterations 2`` or 3 on 2 cores shared with other jobs, load
average 7-10, 2026-11-28; rough, ranges over the runs; to be rerun on a quiet machine):

  setting                     steps/s (wall)    steps/CPU-s
  RLlib 0 runners x 1 env        210 - 470        300 - 640
  RLlib 1 runner  x 1 env        210 - 290        360 - 540
  RLlib 0 x 4                    510 - 690        930 - 1,330
  RLlib 1 x 4                    640 - 1,100    1,090 - 1,430
  RLlib 2 x 8                          505            1,360
  RLlib 0 x 16                 990 - 1,570    1,890 - 2,000
  RLlib 0 x 32                       1,740            3,040
  RLlib 0 x 64               2,100 - 2,940    2,870 - 4,020
  RecurrentPPO 1 env             160 - 220        390 - 450
  RecurrentPPO 4 envs            310 - 490        730 - 760
  RecurrentPPO 16 envs       1,480 - 3,930    2,650 - 6,450
  RecurrentPPO 64 envs       3,870 - 5,120    6,900 - 9,600

The goal "RLlib at least 2x RecurrentPPO" is NOT met. Like for like in one process RLlib is
about 1-3x faster with 1 env (SB3's update over whole, padded rollout sequences is slow, while
RLlib's learner takes under 10 % of its iteration there) and 1.3-1.7x with 4, but RecurrentPPO is faster from 16
envs on (RLlib 0.4-0.8x) and best against best (64 envs each) RLlib reaches about 0.55x. RLlib's
sampling is bound by its per-step framework overhead (a profile of 2,000 steps with 1 env: the
env-to-module and module-to-env connector pipelines with a timer per connector per step, metrics
pushes, ``nn.Module.train()/eval()`` toggles and tree mapping, about 2 ms a step; the env itself
takes 2 us). Remote env runners do not help on 2 cores (PPO samples and learns in turn); more
envs per runner is what helps.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULT_DATA = "data/sample/NSE_NIFTY50-INDEX_5m.csv.gz"
RLLIB, SB3 = "rllib", "sb3"


def _tree_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of this process and every process below it (Ray's included)."""
    import psutil

    out = {}
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            out[proc.pid] = t.user + t.system
        except psutil.Error:  # gone meanwhile
            pass
    return out


def _cpu_since(start: dict[int, float]) -> float:
    end = _tree_cpu()
    return sum(v - start.get(pid, 0.0) for pid, v in end.items())


@dataclass(frozen=True)
class Row:
    library: str  # RLLIB or SB3
    runners: int  # remote env runners (RLlib; 0 = sampling in the driver; always 0 for SB3)
    envs: int  # envs per runner / vectorised env copies
    steps: int
    seconds: float
    sampling_seconds: float
    build_seconds: float
    cpu_seconds: float

    @property
    def name(self) -> str:
        if self.library == RLLIB:
            return f"RLlib PPO-LSTM, {self.runners} env runner(s) x {self.envs} env(s)"
        return f"sb3-contrib RecurrentPPO MlpLstmPolicy, {self.envs} env(s)"

    @property
    def cpu_rate(self) -> float:
        return self.steps / self.cpu_seconds if self.cpu_seconds > 0 else float("nan")

    @property
    def rate(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else float("nan")

    @property
    def sampling_rate(self) -> float:
        return self.steps / self.sampling_seconds if self.sampling_seconds > 0 else float("nan")


def _train_config(args: argparse.Namespace):
    from tradebot.rl.train_config import TrainConfig
    from tradebot.core.config import parse_config

    return parse_config(TrainConfig, {
        "data": {"path": args.data, "train": {"start": args.start, "end": args.end}, "validation": None},
        "env": {"episode": {"mode": "window", "length": args.episode_length}},
        "ppo": {"lr": 3e-4, "gamma": 0.99, "gae_lambda": 0.95, "entropy_coeff": 0.01, "clip_param": 0.2,
                "vf_loss_coeff": 0.5, "train_batch_size": args.batch, "minibatch_size": args.minibatch,
                "num_epochs": args.epochs},
        "model": {"lstm_cell_size": args.lstm, "max_seq_len": args.max_seq_len, "fcnet_hiddens": [args.lstm]},
        "run": {"seed": args.seed, "num_env_runners": 0},
    }, "bench/train.py")


def _parse_runners(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        r, _, e = item.strip().lower().partition("x")
        if not r.isdigit() or not e.isdigit() or int(e) < 1:
            raise SystemExit(f"error: --runners item {item!r}: use RxE, e.g. 0x1 (R runners >= 0, E envs >= 1)")
        out.append((int(r), int(e)))
    return out


def bench_rllib(args: argparse.Namespace, runners: int, envs: int) -> Row:
    """Warm-up iteration, then ``args.iterations`` timed ones, counted by RLlib itself."""
    import ray
    from ray.rllib.algorithms.ppo import ppo as ppo_module
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME
    from ray.tune.registry import register_env

    from tradebot.rl.train import RLLIB_ENV_NAME, build_algo_config, make_env

    cfg = _train_config(args)
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"num_env_runners": runners})})
    ray.init(address="local", num_cpus=runners + 1, include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False)
    algo = None
    sample = ppo_module.synchronous_parallel_sample
    sampling = [0.0]

    def timed_sample(*a, **kw):
        t = time.perf_counter()
        try:
            return sample(*a, **kw)
        finally:
            sampling[0] += time.perf_counter() - t

    ppo_module.synchronous_parallel_sample = timed_sample
    try:
        register_env(RLLIB_ENV_NAME, make_env)
        t0 = time.perf_counter()
        config = build_algo_config(cfg).env_runners(num_envs_per_env_runner=envs)
        algo = config.build_algo()
        build = time.perf_counter() - t0
        result = algo.train()  # warm-up: compiles, allocates, fills the connector pipelines
        before = int(result[NUM_ENV_STEPS_SAMPLED_LIFETIME])
        sampling[0] = 0.0
        cpu0 = _tree_cpu()
        t0 = time.perf_counter()
        for _ in range(args.iterations):
            result = algo.train()
        seconds = time.perf_counter() - t0
        cpu = _cpu_since(cpu0)
        steps = int(result[NUM_ENV_STEPS_SAMPLED_LIFETIME]) - before
    finally:
        ppo_module.synchronous_parallel_sample = sample
        if algo is not None:
            algo.stop()
        ray.shutdown()
    return Row(RLLIB, runners, envs, steps, seconds, sampling[0], build, cpu)


def bench_sb3(args: argparse.Namespace, n_envs: int, steps: int) -> Row:
    """RecurrentPPO on the same env: one warm-up rollout + update, then ``steps`` timed env steps."""
    import gymnasium as gym
    import torch
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    import tradebot.envs as envs  # noqa: F401  (registers tradebot/Trading-v0)
    from tradebot.envs.trading_env import ENV_ID
    from tradebot.features.bars import load_bars

    cfg = _train_config(args)
    bars = load_bars(args.data).between(args.start, args.end)
    env_config = dict(cfg.env)

    def make():
        return gym.make(ENV_ID, data=bars, config=env_config)

    n_steps = max(1, round(args.batch / n_envs))  # per env; the rollout is n_steps x n_envs ~ --batch

    class RolloutTimer(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds = 0.0
            self._t0 = 0.0

        def _on_rollout_start(self) -> None:
            self._t0 = time.perf_counter()

        def _on_rollout_end(self) -> None:
            self.seconds += time.perf_counter() - self._t0

        def _on_step(self) -> bool:
            return True

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    venv = VecNormalize(DummyVecEnv([make for _ in range(n_envs)]), norm_obs=True, norm_reward=False)
    venv.seed(args.seed)
    model = RecurrentPPO(
        "MlpLstmPolicy", venv, n_steps=n_steps, batch_size=min(args.minibatch, n_steps * n_envs), n_epochs=args.epochs,
        learning_rate=3e-4, gamma=0.99, gae_lambda=0.95, clip_range=0.2, ent_coef=0.01, vf_coef=0.5,
        policy_kwargs={"lstm_hidden_size": args.lstm, "n_lstm_layers": 1, "shared_lstm": True,
                       "enable_critic_lstm": False, "net_arch": {"pi": [args.lstm], "vf": [args.lstm]}},
        device="cpu", seed=args.seed, verbose=0)
    build = time.perf_counter() - t0
    model.learn(total_timesteps=n_steps * n_envs)  # warm-up: one rollout and one update
    timer = RolloutTimer()
    before = model.num_timesteps
    cpu0 = _tree_cpu()
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps, reset_num_timesteps=False, callback=timer)
    seconds = time.perf_counter() - t0
    cpu = _cpu_since(cpu0)
    done = model.num_timesteps - before
    venv.close()
    return Row(SB3, 0, n_envs, done, seconds, timer.seconds, build, cpu)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__[__doc__.index("How to run"):])
    ap.add_argument("--data", default=DEFAULT_DATA, help="bar file (default: %(default)s)")
    ap.add_argument("--start", default="2021-01-01", help="first training day (default: %(default)s)")
    ap.add_argument("--end", default="2021-05-01", help="first day excluded (default: %(default)s)")
    ap.add_argument("--iterations", type=int, default=5,
                    help="timed RLlib iterations after the warm-up; RecurrentPPO runs as many env steps "
                         "(default: %(default)s)")
    ap.add_argument("--batch", type=int, default=2000, help="env steps per iteration / rollout (default: %(default)s)")
    ap.add_argument("--minibatch", type=int, default=500, help="SGD minibatch, env steps (default: %(default)s)")
    ap.add_argument("--epochs", type=int, default=4, help="SGD passes per batch (default: %(default)s)")
    ap.add_argument("--lstm", type=int, default=64, help="LSTM size, and the MLP layer's (default: %(default)s)")
    ap.add_argument("--max-seq-len", type=int, default=20, help="RLlib BPTT window (default: %(default)s)")
    ap.add_argument("--episode-length", type=int, default=375, help="steps per window episode (default: %(default)s)")
    ap.add_argument("--runners", default="0x1,1x1,0x4,1x4,0x16,0x64",
                    help="RLlib settings to time, RxE = R remote env runners x E envs each (default: %(default)s)")
    ap.add_argument("--sb3-envs", default="1,4,16,64",
                    help="RecurrentPPO env copies to time, comma-separated (default: %(default)s)")
    ap.add_argument("--skip-sb3", action="store_true", help="time RLlib only")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch intra-op threads in this process, for both libraries (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.iterations < 1 or args.batch < 1 or not 1 <= args.minibatch <= args.batch:
        ap.error("need --iterations >= 1 and 1 <= --minibatch <= --batch")
    runners = _parse_runners(args.runners)
    sb3_envs = [] if args.skip_sb3 else [int(x) for x in args.sb3_envs.split(",") if x.strip()]

    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(max(1, args.torch_threads))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private, short-lived local instance
    os.environ.setdefault("RAY_TMPDIR", os.path.join(tempfile.gettempdir(), f"ray-bench-{os.getuid()}"))
    for name in ("ray", "ray.rllib", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)

    rows: list[Row] = []
    for r, e in runners:
        rows.append(bench_rllib(args, r, e))
        print(f"  done: {rows[-1].name}: {rows[-1].rate:,.0f} steps/s", file=sys.stderr, flush=True)
    steps = args.iterations * args.batch
    for n in sb3_envs:
        rows.append(bench_sb3(args, n, steps))
        print(f"  done: {rows[-1].name}: {rows[-1].rate:,.0f} steps/s", file=sys.stderr, flush=True)

    print(f"PPO-LSTM training throughput on {args.data} {args.start}..{args.end}, cpu count {os.cpu_count()}, "
          f"torch threads {args.torch_threads}, batch {args.batch}, minibatch {args.minibatch}, epochs {args.epochs}, "
          f"LSTM {args.lstm}, "
          f"{args.iterations} timed iterations ({steps:,} env steps) after one warm-up")
    print(f"{'setting':58s} {'steps':>8s} {'seconds':>8s} {'steps/s':>9s} {'sampling steps/s':>17s} "
          f"{'steps/CPU-s':>12s} {'build s':>8s}")
    for row in rows:
        print(f"{row.name:58s} {row.steps:8,d} {row.seconds:8.1f} {row.rate:9,.0f} {row.sampling_rate:17,.0f} "
              f"{row.cpu_rate:12,.0f} {row.build_seconds:8.1f}")
    rl_rows = [r for r in rows if r.library == RLLIB]
    sb_rows = {r.envs: r for r in rows if r.library == SB3}
    if rl_rows and sb_rows:
        for r in rl_rows:
            if r.runners == 0 and r.envs in sb_rows:
                s = sb_rows[r.envs]
                print(f"like for like, {r.envs} env(s) in one process: RLlib / RecurrentPPO = {r.rate / s.rate:.2f}x "
                      f"wall, {r.cpu_rate / s.cpu_rate:.2f}x per CPU-s")
        best_rl = max(rl_rows, key=lambda r: r.rate)
        best_sb = max(sb_rows.values(), key=lambda r: r.rate)
        ratio = best_rl.rate / best_sb.rate
        print(f"best vs best: {best_rl.name} / {best_sb.name} = {ratio:.2f}x wall "
              f"(goal RLlib >= 2x RecurrentPPO: {'met' if ratio >= 2 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
