"""Mixture of experts: regime-weighted expert rewards, the gates, the rl gate's env, and a whole
mixture built by ``train_mixture`` (real Ray, real MLflow) and loaded like any policy."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tradebot.core.errors import UserInputError
from tradebot.features.bars import load_bars
from tradebot.features.regimes import REGIMES, RegimeDetector

from rl_helpers import SAMPLE_5M, tiny_config


@pytest.fixture(scope="module")
def bars():
    return load_bars(SAMPLE_5M).between("2021-01-01", "2021-03-01")


@pytest.fixture(scope="module")
def detector(bars):
    return RegimeDetector.fit(bars, start="2021-01-01", end="2021-02-01")


def test_regime_weighted_rewards_scale_each_decision_by_its_bars_weight(bars, detector):
    from tradebot.envs.trading_env import BatchedTradingEnv, TradingEnv

    base = {"episode": {"length": 200}}
    weighted = {**base, "regime_weight": {"regime": "trend", "detector": detector.to_dict(), "floor": 0.2}}
    plain, env = TradingEnv(bars, config=base), TradingEnv(bars, config=weighted)
    p = detector.transform(bars)["p_trend"].to_numpy()
    want_w = np.where(np.isfinite(p), 0.2 + 0.8 * p, 1.0)
    rng = np.random.default_rng(0)
    for e in (plain, env):
        e.reset(options={"start": 700})
    for _ in range(150):
        a = int(rng.integers(5))
        t = env.bar_index
        _, r0, *_ = plain.step(a)
        _, r1, *_ = env.step(a)
        assert r1 == pytest.approx(r0 * want_w[t], rel=1e-12, abs=1e-15)
    # the vector env pays the same weighted rewards
    vec = BatchedTradingEnv(bars, 3, config=weighted)
    single = TradingEnv(bars, config=weighted)
    vec.reset(options={"start": [700, 700, 700]})
    single.reset(options={"start": 700})
    for _ in range(120):
        a = int(rng.integers(5))
        _, rv, *_ = vec.step(np.full(3, a))
        _, rs, term, trunc, _ = single.step(a)
        assert rv == pytest.approx(np.full(3, rs), rel=1e-12, abs=1e-15)
        if term or trunc:
            break


def test_supervised_gate_weights_sum_to_one_and_learn_separable_regimes():
    from tradebot.rl.moe.gates import SupervisedGate

    rng = np.random.default_rng(1)
    y = rng.integers(3, size=3000)
    x = rng.normal(size=(3000, 4)) + np.eye(3, 4)[y] * 3.0
    gate = SupervisedGate.fit(x, y, ("trend", "mean_reversion", "high_vol"))
    assert gate.accuracy > 0.9
    w = gate.weights(x[:50])
    assert np.allclose(w.sum(axis=1), 1.0, atol=1e-12) and (w >= 0).all()
    again = SupervisedGate.from_dict(json.loads(json.dumps(gate.to_dict())))
    assert np.allclose(again.weights(x[:50]), w, atol=1e-15)
    with pytest.raises(UserInputError, match="two regimes"):
        SupervisedGate.fit(x, np.zeros(3000, dtype=int), ("a", "b"))


def test_hindsight_regimes_label_every_bar_after_the_warm_up(bars, detector):
    from tradebot.rl.moe.gates import hindsight_regimes

    close = bars.column("close")
    labels = hindsight_regimes(detector, close, 0, len(close))
    assert (labels[: detector.warmup_bars] == -1).all()
    assert set(np.unique(labels[detector.warmup_bars:])) <= set(range(len(REGIMES)))
    assert len(np.unique(labels[detector.warmup_bars:])) >= 2


@pytest.fixture(scope="module")
def mixture_run(tmp_path_factory, local_ray, mlflow_store):
    from tradebot.core.config import parse_config
    from tradebot.rl.moe.training import MoEConfig, train_mixture

    out = tmp_path_factory.mktemp("moe") / "out"
    raw = tiny_config(out, iterations=1, registered_model="test-moe")
    raw["moe"] = {"experts": ["trend", "mean_reversion", "high_vol"], "gate": "supervised",
                  "rl_gate": {"iterations": 1, "switching_cost": 0.001}}
    cfg = parse_config(MoEConfig, raw)
    events = []
    result = train_mixture(cfg, tracking_uri=mlflow_store, on_event=events.append)
    return cfg, result, events


def test_train_mixture_builds_registers_and_nests_every_part(mixture_run, mlflow_store):
    import mlflow

    from tradebot.rl.moe.mixture import MixturePolicy
    from tradebot.rl.moe.training import mixture_variants, train_mixture
    from tradebot.rl.policy import Policy
    from tradebot.rl.tracking import PARENT_RUN_TAG

    cfg, result, events = mixture_run
    assert [e.stage for e in events][0] == "detector" and events[-1].stage == "registered"
    assert set(mixture_variants(result.output_dir)) == {"equal", "supervised", "rl"}
    client = mlflow.MlflowClient(mlflow_store)
    parent = client.get_run(result.mlflow_run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.`{PARENT_RUN_TAG}` = '{parent.info.run_id}'")
    roles = sorted(r.data.tags["moe.role"] for r in children)
    assert roles == ["expert:high_vol", "expert:mean_reversion", "expert:trend", "gate:rl"]
    for regime in ("trend", "mean_reversion", "high_vol"):
        assert parent.data.tags[f"moe.expert_run.{regime}"] in {r.info.run_id for r in children}
    version = client.get_model_version("test-moe", str(result.model_version))
    assert version.run_id == parent.info.run_id
    loaded = Policy.load(result.model_uri)
    assert isinstance(loaded, MixturePolicy) and loaded.gate == "supervised"
    assert loaded.expert_names == ("trend", "mean_reversion", "high_vol")
    from tradebot.rl.drift.offline import saved_reference

    assert saved_reference(result.model_uri) is not None  # the live loop's drift monitors travel with it
    again = train_mixture(cfg, tracking_uri=mlflow_store)  # a re-run finds it built
    assert again.already_complete and again.model_uri == result.model_uri


def _run_policy(policy, bars, cfg_env, start, steps):
    from tradebot.envs.trading_env import TradingEnv

    env = TradingEnv(bars, config=cfg_env)
    obs, _ = env.reset(options={"start": start})
    policy.reset("s")
    actions, equity = [], []
    for _ in range(steps):
        a, probs = policy.act("s", obs)
        assert probs[obs[-5:] == 0].sum() == 0.0  # masked actions stay masked after mixing
        actions.append(a)
        obs, _, term, trunc, info = env.step(a)
        equity.append(info["equity"])
        if term or trunc:
            break
    return actions, equity


def test_mixture_gates_weigh_experts_and_keep_masks(mixture_run, bars):
    from tradebot.rl.moe.mixture import MixturePolicy
    from tradebot.rl.moe.training import mixture_variants

    cfg, result, _ = mixture_run
    for gate, folder in mixture_variants(result.output_dir).items():
        mixture = MixturePolicy.load(folder)
        _run_policy(mixture, bars, dict(cfg.env), 1700, 120)
        d = mixture.explain("s")
        assert d is not None and d.weights.sum() == pytest.approx(1.0, abs=1e-12)
        assert d.expert == d.expert_names[int(np.argmax(d.weights))]
        if gate == "equal":
            assert np.allclose(d.weights, 1 / 3)


def test_rl_mixture_trades_as_its_gate_env_trained_it(mixture_run, bars):
    """The rl gate deciding in its env (experts batched inside) and the mixture acting in a plain env
    take the same trades: same equity path."""
    from tradebot.rl.moe.gate_env import GateEnv
    from tradebot.rl.moe.mixture import MixturePolicy
    from tradebot.rl.moe.training import mixture_variants

    cfg, result, _ = mixture_run
    folder = mixture_variants(result.output_dir)["rl"]
    mixture = MixturePolicy.load(folder)
    _, equity = _run_policy(mixture, bars, dict(cfg.env), 1700, 150)
    experts = [str(folder / "experts" / n) for n in mixture.expert_names]
    env = GateEnv(bars, config={**dict(cfg.env), "gate": {"experts": experts, "switching_cost": 0.001}})
    obs, _ = env.reset(options={"start": 1700})
    gate = mixture.gate_policy
    gate.reset("g")
    got = []
    for _ in range(len(equity)):
        pick, _ = gate.act("g", obs)
        obs, _, term, trunc, info = env.step(pick)
        got.append(info["equity"])
        if term or trunc:
            break
    assert got == pytest.approx(equity, rel=1e-12)


def test_gate_env_refuses_a_bad_gate_section(bars):
    from tradebot.rl.moe.gate_env import GateEnv

    with pytest.raises(UserInputError, match="at least two"):
        GateEnv(bars, config={"gate": {"experts": ["x"]}})
    with pytest.raises(UserInputError, match="unknown key"):
        GateEnv(bars, config={"gate": {"experts": ["a", "b"], "cost": 1}})


def test_walkforward_of_a_mixture_tests_the_other_gates_beside_it(tmp_path, local_ray, mlflow_store):
    """``training.moe`` in a walk-forward: each fold builds the mixture; the agent is the registered gate's
    mixture and the rl-gated and always-on (equal) mixtures of the same experts get rows and verdicts."""
    import yaml

    from tradebot.core.config import parse_config
    from tradebot.rl.walkforward import WalkForwardConfig, run_walkforward

    from rl_helpers import ROOT

    raw = yaml.safe_load((ROOT / "experiments" / "walkforward_smoke.yaml").read_text())
    raw["data"]["path"] = str(SAMPLE_5M)
    raw["folds"]["max_folds"] = 1
    raw["evaluation"].update({"seeds": [0], "mlflow_experiment": "tests-moe-wf", "registered_model": "tests-moe-wf",
                              "baselines": ["buy_and_hold"]})
    raw["training"]["moe"] = {"gate": "supervised", "rl_gate": {"iterations": 1}}
    result = run_walkforward(parse_config(WalkForwardConfig, raw), output_dir=tmp_path / "wf")
    summary = pd.read_csv(tmp_path / "wf" / "summary.csv")
    assert {"agent", "buy_and_hold", "moe_equal", "moe_rl"} <= set(summary["strategy"])
    assert {v.baseline for v in result.verdicts} == {"buy_and_hold", "moe_equal", "moe_rl"}
    assert any(v.line.startswith("agent") and "moe_equal" in v.line for v in result.verdicts)
    seed_dir = tmp_path / "wf" / "fold_00" / "seed_0"
    assert (seed_dir / "mixtures" / "supervised" / "mixture.json").is_file()
    assert json.loads((seed_dir / "moe_state.json").read_text())["final_checkpoint"].endswith("supervised")


def test_batched_gate_env_restarts_its_experts_with_each_new_episode(mixture_run, bars):
    """Across autoresets: the step after an episode ends returns the new episode's first observation with
    no previous pick, and the experts start it from their initial state (as a fresh mixture would)."""
    from tradebot.rl.moe.gate_env import BatchedGateEnv
    from tradebot.rl.moe.training import mixture_variants

    cfg, result, _ = mixture_run
    folder = mixture_variants(result.output_dir)["rl"]
    experts = [str(folder / "experts" / n) for n in ("trend", "mean_reversion", "high_vol")]
    env = BatchedGateEnv(bars, 2, config={**dict(cfg.env), "episode": {"length": 30},
                                          "gate": {"experts": experts, "switching_cost": 0.5}})
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(0)
    restarts = 0
    done = np.zeros(2, dtype=bool)
    for _ in range(100):
        picks = rng.integers(3, size=2)
        obs, rewards, term, trunc, _ = env.step(picks)
        if done.any():  # these rows restarted: no previous pick, reward 0
            restarts += int(done.sum())
            assert (obs[done, :3] == np.array([1.0, 0.0, 0.0])).all() and (rewards[done] == 0).all()
            for e in env.experts:
                init = e.policy.initial_state()
                for k, v in e.state.items():
                    assert torch_equal(v[np.flatnonzero(done)], init[k].expand_as(v[np.flatnonzero(done)]))
        done = term | trunc
    assert restarts >= 4 and env.picks.sum() > 0


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_tradebot_train_builds_a_mixture_from_a_moe_config_and_refuses_a_bad_key(tmp_path, local_ray, mlflow_store):
    from click.testing import CliRunner

    from tradebot.cli import main as cli_main

    from rl_helpers import write_yaml

    raw = tiny_config(tmp_path / "out", iterations=1, registered_model="test-moe-cli")
    raw["moe"] = {"experts": ["trend", "high_vol"], "rl_gate": {"iterations": 0}}
    config = write_yaml(tmp_path / "moe.yaml", raw)
    result = CliRunner().invoke(cli_main, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "models:/test-moe-cli/1" in result.output and "nested" in result.output
    assert {p.name for p in (tmp_path / "out" / "mixtures").iterdir()} == {"equal", "supervised"}
    again = CliRunner().invoke(cli_main, ["train", "--config", str(config)])
    assert again.exit_code == 0 and "already built" in again.output

    raw["moe"] = {"experts": ["trend", "high_vol"], "gates": "rl"}
    bad = CliRunner().invoke(cli_main, ["train", "--config", str(write_yaml(tmp_path / "bad.yaml", raw))])
    assert bad.exit_code == 2 and "moe.gates" in bad.output and "Traceback" not in bad.output
