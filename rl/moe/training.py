"""Build a mixture of experts: ``tradebot train --config experiments/moe.yaml``.

A ``MoEConfig`` is a ``TrainConfig`` (data, env, ppo, model, run: the experts' settings) plus a ``moe``
section. ``train_mixture`` then, resuming whatever already finished:

1. fits the regime detector (``tradebot.features.regimes``, a Gaussian HMM's filtered probabilities) on
   the training dates of ``data.path`` only, and saves it (``detector.json``); with ``data.extra_paths`` the
   same detector runs on each instrument's own bars;
2. trains one PPO-LSTM expert per regime (``experts/<regime>/``) on every training bar with
   **regime-weighted rewards** (``env.regime_weight``: a decision's reward times
   ``floor + (1 - floor) x p_regime``). Why rewards and not regime-sampled episodes: an expert's
   positions and LSTM state must live through regime changes (it acts in the mixture on every bar),
   episodes stay contiguous, and every bar still teaches it the market's dynamics; it is only paid
   mostly where its regime rules;
3. fits the supervised gate (``tradebot.rl.moe.gates``) on the training bars' market features and the
   detector's hindsight regimes, and, when ``moe.rl_gate.iterations`` > 0, trains the rl gate (a
   PPO-LSTM over the frozen experts with a switching cost, ``tradebot.rl.moe.gate_env``; ``gate/``);
4. writes one mixture per gate (``mixtures/equal``, ``mixtures/supervised``, ``mixtures/rl``), scores
   each on the validation dates, and registers the one named by ``moe.gate`` as one MLflow model
   version (``run.registered_model``) whose tags name its experts' and gate's runs. The experts and the
   rl gate are nested MLflow runs under the mixture's parent run (experts registered as
   ``<run.registered_model>-experts``, the gate as ``<run.registered_model>-gates``).

``Policy.load`` loads the registered mixture like any model (``tradebot.rl.moe.mixture``).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from tradebot.core.config import FrozenConfig, load_config
from tradebot.core.errors import UserInputError
from tradebot.core.files import write_text_atomic
from tradebot.features.regimes import REGIMES
from tradebot.rl.train_config import CONFIG_FILE, TrainConfig

log = logging.getLogger(__name__)

GATE_ENV = "tradebot.rl.moe.gate_env:tradebot/Gate-v0"
STATE_FILE = "moe_state.json"
DETECTOR_FILE = "detector.json"
MIXTURES_DIR = "mixtures"


class RLGateSection(FrozenConfig):
    """The rl gate's training (its network and PPO settings are the experts' ``model`` and ``ppo``)."""

    iterations: int = Field(10, ge=0, description="PPO iterations of the rl gate; 0: no rl gate")
    switching_cost: float = Field(2e-4, ge=0, description="reward paid each time the gate picks another expert "
                                  "(log-return units; the engine's own costs are charged besides)")


class MoESection(FrozenConfig):
    """The mixture: which experts, how they are paid, which gate is registered."""

    experts: list[Literal["trend", "mean_reversion", "high_vol"]] = Field(
        default_factory=lambda: list(REGIMES), min_length=2, description="one expert per regime")
    reward_floor: float = Field(0.1, ge=0, le=1, description="an expert's reward weight where its regime has "
                                "probability 0 (1: no specialisation)")
    detector_halflife: float = Field(20.0, gt=1, description="bars: half-life of the detector's EW statistics")
    expert_iterations: int | None = Field(None, ge=1, description="PPO iterations per expert; null: run.iterations")
    gate: Literal["supervised", "rl", "equal"] = Field("supervised", description="the registered mixture's gate")
    rl_gate: RLGateSection = Field(default_factory=RLGateSection)

    @model_validator(mode="after")
    def _distinct(self) -> "MoESection":
        if len(set(self.experts)) != len(self.experts):
            raise ValueError("moe.experts lists a regime twice")
        if self.gate == "rl" and self.rl_gate.iterations == 0:
            raise ValueError("moe.gate is rl but moe.rl_gate.iterations is 0; train the rl gate or register another")
        return self


class MoEConfig(TrainConfig):
    """``TrainConfig`` plus the ``moe`` section (YAML: experiments/moe.yaml)."""

    moe: MoESection = Field(default_factory=MoESection)

    def base(self) -> TrainConfig:
        """The experts' shared ``TrainConfig`` (without the moe section)."""
        return TrainConfig(**{k: getattr(self, k) for k in ("data", "env", "ppo", "model", "run")})


def load_moe_config(path: str | Path) -> MoEConfig:
    return load_config(MoEConfig, path)


def is_moe_file(path: str | Path) -> bool:
    """True when a YAML config has a top-level ``moe`` section."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(doc, dict) and "moe" in doc


@dataclass(frozen=True)
class MoEEvent:
    """Progress of ``train_mixture``: ``stage`` (detector, expert, gate, mixture, registered) and a message."""

    stage: str
    message: str


def train_mixture(cfg: MoEConfig, *, output_dir: str | Path | None = None, address: str | None = None,
                  tracking_uri: str | None = None, on_event: Callable[[MoEEvent], None] | None = None,
                  on_iteration: Callable[[Any], None] | None = None):
    """Build (or finish building) the mixture of ``cfg``; returns a ``tradebot.rl.train.TrainResult`` whose
    ``final_checkpoint`` is the registered mixture's folder and ``mlflow_run_id`` the parent run."""
    import mlflow

    from tradebot.features.bars import load_bars
    from tradebot.features.regimes import RegimeDetector
    from tradebot.rl.train import TrainResult, train
    from tradebot.rl.tracking import PARENT_RUN_TAG, flatten_params, open_experiment

    emit = on_event or (lambda e: None)
    if output_dir is not None:
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"output_dir": str(output_dir)})})
    out = Path(cfg.run.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    state = _read_state(out)
    if state.get("model_uri") and state.get("config") == cfg.model_dump(mode="json"):
        return _result(TrainResult, out, state, resumed=True, already_complete=True)
    if state.get("config") not in (None, cfg.model_dump(mode="json")):
        raise UserInputError(f"{out}: holds a mixture built with another config; use a new run.output_dir")
    state["config"] = cfg.model_dump(mode="json")
    write_text_atomic(out / CONFIG_FILE, cfg.to_yaml())
    experiment = open_experiment(cfg.run.mlflow_experiment, tracking_uri)
    client = experiment.client()
    if not state.get("parent_run"):
        run = client.create_run(experiment.experiment_id, run_name=f"{out.name} (mixture)",
                                tags={"moe.role": "mixture", "output_dir": str(out)})
        state["parent_run"] = run.info.run_id
        for key, value in flatten_params(cfg.model_dump(mode="json")).items():
            client.log_param(run.info.run_id, key, value)
        _write_state(out, state)
    parent = state["parent_run"]

    # 1. the detector, on the training dates only
    bars = load_bars(cfg.data.path, symbol=cfg.data.symbol)
    detector = RegimeDetector.fit(bars, start=cfg.data.train.start, end=cfg.data.train.end,
                                  halflife=cfg.moe.detector_halflife, seed=cfg.run.seed)
    write_text_atomic(out / DETECTOR_FILE, json.dumps(detector.to_dict(), indent=1))
    emit(MoEEvent("detector", f"regime detector fitted on {detector.fitted_on[0]} .. {detector.fitted_on[1]}"))

    base = cfg.base()
    registered = cfg.run.registered_model
    # 2. experts
    expert_dirs: dict[str, Path] = {}
    expert_runs: dict[str, str] = {}
    for j, regime in enumerate(cfg.moe.experts):
        env = {**dict(base.env), "regime_weight": {"regime": regime, "detector": detector.to_dict(),
                                                   "floor": cfg.moe.reward_floor}}
        run = base.run.model_copy(update={"output_dir": str(out / "experts" / regime), "seed": base.run.seed + j,
                                          "registered_model": f"{registered}-experts",
                                          "iterations": cfg.moe.expert_iterations or base.run.iterations})
        expert_cfg = base.model_copy(update={"env": env, "run": run})
        emit(MoEEvent("expert", f"training the {regime} expert ({run.iterations} iterations)"))
        result = train(expert_cfg, address=address, tracking_uri=tracking_uri, on_iteration=on_iteration)
        client.set_tag(result.mlflow_run_id, PARENT_RUN_TAG, parent)
        client.set_tag(result.mlflow_run_id, "moe.role", f"expert:{regime}")
        expert_dirs[regime] = result.final_checkpoint.resolve()
        expert_runs[regime] = result.mlflow_run_id

    # 3. gates
    from tradebot.rl.moe.gates import SupervisedGate

    features, labels = _gate_training_rows(base, detector)
    names = tuple(cfg.moe.experts)
    index = {r: k for k, r in enumerate(names)}
    mapped = np.array([index.get(REGIMES[y], -1) if y >= 0 else -1 for y in labels])
    supervised = SupervisedGate.fit(features, mapped, names, seed=cfg.run.seed)
    shares = {n: float(np.mean(mapped == k)) for k, n in enumerate(names)}
    emit(MoEEvent("gate", f"supervised gate fitted (accuracy {supervised.accuracy:.3f} on the training bars; "
                          f"hindsight regime shares {', '.join(f'{n} {s:.0%}' for n, s in shares.items())})"))
    gate_dir, gate_run = None, None
    if cfg.moe.rl_gate.iterations > 0:
        gate_env = {**dict(base.env), "gate": {"experts": [str(expert_dirs[n]) for n in names],
                                               "switching_cost": cfg.moe.rl_gate.switching_cost}}
        run = base.run.model_copy(update={"output_dir": str(out / "gate"), "env_id": GATE_ENV,
                                          "registered_model": f"{registered}-gates",
                                          "iterations": cfg.moe.rl_gate.iterations})
        model = base.model.model_copy(update={"action_masking": False})
        gate_cfg = base.model_copy(update={"env": gate_env, "run": run, "model": model})
        emit(MoEEvent("gate", f"training the rl gate ({run.iterations} iterations)"))
        result = train(gate_cfg, address=address, tracking_uri=tracking_uri, on_iteration=on_iteration)
        client.set_tag(result.mlflow_run_id, PARENT_RUN_TAG, parent)
        client.set_tag(result.mlflow_run_id, "moe.role", "gate:rl")
        gate_dir, gate_run = result.final_checkpoint.resolve(), result.mlflow_run_id

    # 4. the mixtures, their validation scores, the registered one
    from tradebot.rl.moe.mixture import MixturePolicy
    from tradebot.rl.policy import Policy
    from tradebot.rl.train import validate_policy, validation_env

    experts = {n: Policy.from_checkpoint(expert_dirs[n]) for n in names}
    meta = {"detector": detector.to_dict(), "expert_runs": expert_runs, "gate_run": gate_run,
            "parent_run": parent, "reward_floor": cfg.moe.reward_floor}
    gates = ["equal", "supervised"] + (["rl"] if gate_dir is not None else [])
    scores: dict[str, float] = {}
    val_env, val_start = validation_env(base, base.run.seed)
    try:
        for gate in gates:
            folder = out / MIXTURES_DIR / gate
            if folder.exists():
                shutil.rmtree(folder)
            gate_policy = Policy.from_checkpoint(gate_dir) if gate == "rl" else None
            mixture = MixturePolicy(experts, gate, supervised=supervised if gate == "supervised" else None,
                                    gate_policy=gate_policy, meta={**meta, "gate_name": gate})
            mixture.save(folder, expert_dirs, gate_dir)
            (folder / CONFIG_FILE).write_text(base.to_yaml())  # the experts' env, without regime weights
            if val_env is not None:
                loaded = MixturePolicy.load(folder)
                result = validate_policy(loaded, val_env, val_start, base.run.seed)
                scores[gate] = float(result.get("validation_equity_change", result["validation_return"]))
                emit(MoEEvent("mixture", f"{gate} gate: validation equity change {scores[gate]:+.4f}"))
    finally:
        if val_env is not None:
            val_env.close()

    chosen = out / MIXTURES_DIR / cfg.moe.gate
    with mlflow.start_run(run_id=parent):
        mlflow.log_metrics({f"validation_equity_change_{g}": v for g, v in scores.items()})
        mlflow.set_tags({"moe.gate": cfg.moe.gate, "moe.experts": ",".join(names),
                         **{f"moe.expert_run.{n}": r for n, r in expert_runs.items()},
                         **({"moe.gate_run": gate_run} if gate_run else {}),
                         "moe.supervised_gate_accuracy": f"{supervised.accuracy:.4f}"})
        from tradebot.rl.mlflow_model import log_policy_model

        from tradebot.rl.tracking import save_drift_reference

        mixture = MixturePolicy.load(chosen)
        save_drift_reference(mixture, chosen)  # the live loop's drift monitors travel with the model
        with tempfile.TemporaryDirectory(prefix="tradebot-mixture-") as tmp:
            logged = Path(tmp) / "policy"  # the folder name a registered policy's artifacts have
            shutil.copytree(chosen, logged)
            info = log_policy_model(logged, obs_dim=mixture.obs_dim, num_actions=mixture.num_actions,
                                    registered_model=registered)
        mlflow.set_tags({"registered_model_uri": f"models:/{registered}/{info.registered_model_version}",
                         "final_checkpoint": str(chosen)})
    state.update({"model_uri": f"models:/{registered}/{info.registered_model_version}",
                  "model_version": int(info.registered_model_version), "final_checkpoint": str(chosen),
                  "scores": scores, "expert_runs": expert_runs, "gate_run": gate_run,
                  "iterations": (cfg.moe.expert_iterations or base.run.iterations)})
    _write_state(out, state)
    emit(MoEEvent("registered", f"{cfg.moe.gate}-gated mixture registered as {state['model_uri']}"))
    return _result(TrainResult, out, state, resumed=False)


def mixture_variants(result_dir: str | Path) -> dict[str, Path]:
    """Every mixture folder a ``train_mixture`` output holds, by gate."""
    root = Path(result_dir) / MIXTURES_DIR
    return {p.name: p for p in sorted(root.iterdir()) if (p / "mixture.json").is_file()} if root.is_dir() else {}


def _gate_training_rows(base: TrainConfig, detector) -> tuple[np.ndarray, np.ndarray]:
    """Market features and hindsight regimes (index into ``REGIMES``) of every training bar after the
    feature warm-up, over every instrument the experts train on."""
    from tradebot.rl.moe.gates import hindsight_regimes
    from tradebot.rl.train import make_env, train_env_config

    env_config = train_env_config(base)
    rows, labels = [], []
    for path in [env_config["path"], *env_config["extra_paths"]]:
        one = {**env_config, "path": path, "extra_paths": [], "symbol": env_config["symbol"] if path == env_config["path"]
               else None}
        env = make_env(one).unwrapped
        try:
            feats = env.market_features
            lo = env.warmup
            rows.append(feats[lo:])
            labels.append(hindsight_regimes(detector, env.bars.column("close"), lo, len(feats)))
        finally:
            env.close()
    return np.concatenate(rows), np.concatenate(labels)


def _read_state(out: Path) -> dict[str, Any]:
    path = out / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_state(out: Path, state: dict[str, Any]) -> None:
    write_text_atomic(out / STATE_FILE, json.dumps(state, indent=1))


def _result(result_cls, out: Path, state: dict[str, Any], *, resumed: bool, already_complete: bool = False):
    final = Path(state["final_checkpoint"])
    return result_cls(output_dir=out, iterations=int(state.get("iterations") or 0), stopped_early=False,
                      final_checkpoint=final, last_checkpoint=final, best_validation_return=None,
                      mlflow_run_id=state["parent_run"], model_uri=state["model_uri"],
                      model_version=int(state["model_version"]), resumed=resumed, already_complete=already_complete)


def train_any(cfg: TrainConfig, **kwargs: Any):
    """``train_mixture`` for a ``MoEConfig``, else ``tradebot.rl.train.train``."""
    from tradebot.rl.train import train

    if isinstance(cfg, MoEConfig):
        kwargs.pop("on_event", None)
        return train_mixture(cfg, **kwargs)
    kwargs.pop("on_event", None)
    return train(cfg, **kwargs)
