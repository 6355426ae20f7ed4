"""TrainConfig: YAML round trip, defaults, and one-line errors for unknown keys and bad dates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tradebot.rl.train_config import TrainConfig, load_train_config
from tradebot.core.config import parse_config
from tradebot.core.errors import UserInputError

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "experiments" / "demo.yaml"
INTRADAY = ROOT / "experiments" / "intraday_nifty5m.yaml"


def test_train_config_yaml_round_trip_is_identical(tmp_path):
    cfg = load_train_config(DEMO)
    again = tmp_path / "again.yaml"
    again.write_text(cfg.to_yaml())
    assert load_train_config(again) == cfg
    assert again.read_text() == load_train_config(again).to_yaml()


def test_train_config_without_file_gives_defaults():
    cfg = load_train_config(None)
    assert cfg == TrainConfig()
    assert cfg.run.env_id.endswith("tradebot/Trading-v0")


def test_intraday_config_trains_jan_apr_validates_may_holds_back_june():
    cfg = load_train_config(INTRADAY)
    assert (cfg.data.train.start, cfg.data.train.end) == (dt.date(2021, 1, 1), dt.date(2021, 5, 1))
    assert (cfg.data.validation.start, cfg.data.validation.end) == (dt.date(2021, 5, 1), dt.date(2021, 6, 1))
    assert (ROOT / cfg.data.path).is_file()


def test_the_default_is_the_walk_forwards_overlay_design_on_the_five_stocks():
    """experiments/demo.yaml trains exactly the design the walk-forward evaluated (experiments/designs/
    stocks1d__overlay.yaml: env, PPO, network, budget, checkpoint selection) on the bundled daily bars,
    its last six months held back."""
    cfg = load_train_config(DEMO)
    evaluated = yaml.safe_load((ROOT / "experiments" / "designs" / "stocks1d__overlay.yaml").read_text())["training"]
    demo = cfg.model_dump(mode="json")
    want = parse_config(TrainConfig, {**evaluated, "data": yaml.safe_load(DEMO.read_text())["data"]}, "designs")
    assert demo["env"] == want.model_dump(mode="json")["env"]
    assert (cfg.ppo, cfg.model) == (want.ppo, want.model)
    for key in ("iterations", "validate_every", "patience", "select_after", "num_envs_per_env_runner"):
        assert getattr(cfg.run, key) == getattr(want.run, key), key
    assert demo["env"]["engine"]["product"] == "equity_delivery" and not demo["env"]["engine"]["stop_loss"]
    assert demo["env"]["reward"]["benchmark"] == 1.0
    files = [cfg.data.path, *cfg.data.extra_paths]
    assert sorted(Path(f).name.split("_")[1] for f in files) == ["HDFCBANK-EQ", "INFY-EQ", "RELIANCE-EQ", "SBIN-EQ",
                                                                 "TCS-EQ"]
    assert all((ROOT / f).is_file() for f in files)
    assert (cfg.data.train.end, cfg.data.validation.start, cfg.data.validation.end) == (
        dt.date(2024, 10, 1), dt.date(2024, 10, 1), dt.date(2025, 4, 1))  # 2025-04 .. 2025-09 held back


@pytest.mark.parametrize("section, body, needle", [
    ("ppo", {"lrr": 0.1}, "unknown config key 'ppo.lrr' (did you mean 'lr'?)"),
    ("run", {"iteration": 3}, "unknown config key 'run.iteration' (did you mean 'iterations'?)"),
    ("model", {"use_lstm": False}, "unknown config key 'model.use_lstm'"),
    ("training", {}, "unknown config key 'training'"),
])
def test_train_config_unknown_key_is_one_line_error_naming_it(tmp_path, section, body, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({section: body}))
    with pytest.raises(UserInputError) as err:
        load_train_config(path)
    message = str(err.value)
    assert needle in message and str(path) in message
    assert "\n" not in message


def test_train_config_validation_overlapping_training_is_rejected(tmp_path):
    path = tmp_path / "overlap.yaml"
    path.write_text(yaml.safe_dump({"data": {"train": {"start": "2021-01-01", "end": "2021-05-01"},
                                             "validation": {"start": "2021-04-01", "end": "2021-06-01"}}}))
    with pytest.raises(UserInputError, match="validation must come after training"):
        load_train_config(path)


def test_train_config_minibatch_larger_than_batch_is_rejected(tmp_path):
    path = tmp_path / "mb.yaml"
    path.write_text(yaml.safe_dump({"ppo": {"train_batch_size": 100, "minibatch_size": 200}}))
    with pytest.raises(UserInputError, match="minibatch_size 200 exceeds train_batch_size 100"):
        load_train_config(path)


def test_train_cli_bad_config_exits_2_with_one_error_line(tmp_path):
    from tradebot.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text("ppo:\n  lrr: 0.1\n")
    result = CliRunner().invoke(main, ["train", "--config", str(path)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "ppo.lrr" in lines[-1]


def test_train_cli_bad_env_key_exits_2_before_starting_ray(tmp_path):
    from tradebot.cli import main

    path = tmp_path / "bad_env.yaml"
    path.write_text(yaml.safe_dump({"data": {"path": str(ROOT / "data/sample/NSE_NIFTY50-INDEX_5m.csv.gz")},
                                    "env": {"episode": {"lenght": 10}},
                                    "run": {"output_dir": str(tmp_path / "out")}}))
    result = CliRunner().invoke(main, ["train", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert "episode.lenght" in result.output and "did you mean 'length'" in result.output


def test_sub_envs_auto_fill_one_lstm_sequence_each_and_an_explicit_count_is_kept():
    cfg = load_train_config(None)  # 4,000 steps a batch, sequences of 20: 200 sub-envs
    assert cfg.run.num_envs_per_env_runner == "auto" and cfg.envs_per_runner == 200
    big = cfg.model_copy(update={"ppo": cfg.ppo.model_copy(update={"train_batch_size": 100_000})})
    assert big.envs_per_runner == 256  # auto's cap
    tiny = cfg.model_copy(update={"ppo": cfg.ppo.model_copy(update={"train_batch_size": 10, "minibatch_size": 10})})
    assert tiny.envs_per_runner == 1
    assert load_train_config(DEMO).envs_per_runner == load_train_config(DEMO).run.num_envs_per_env_runner


def test_sub_envs_too_many_for_the_batch_is_one_line_error_with_the_fix(tmp_path):
    path = tmp_path / "envs.yaml"
    path.write_text(yaml.safe_dump({"ppo": {"train_batch_size": 2000}, "model": {"max_seq_len": 20},
                                    "run": {"num_envs_per_env_runner": 512}}))
    with pytest.raises(UserInputError) as err:
        load_train_config(path)
    message = str(err.value)
    assert "run.num_envs_per_env_runner 512 leaves each sub-env 3 steps" in message
    assert "raise ppo.train_batch_size to 10240" in message and "\n" not in message
    path.write_text(yaml.safe_dump({"run": {"num_envs_per_env_runner": 5000}}))
    with pytest.raises(UserInputError, match=r"num_envs_per_env_runner must be in \[1, 4096\]"):
        load_train_config(path)


def test_walkforward_training_section_checks_the_sub_envs_too(tmp_path):
    from tradebot.rl.walkforward.evaluation_config import load_walkforward_config

    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump({"data": {"path": "x.csv"}, "training": {
        "ppo": {"train_batch_size": 2000}, "run": {"num_envs_per_env_runner": 512}}}))
    with pytest.raises(UserInputError, match="leaves each sub-env 3 steps"):
        load_walkforward_config(path)
    assert load_walkforward_config(ROOT / "experiments" / "walkforward.yaml").training.ppo.train_batch_size >= 20_000


def test_training_env_with_extra_instruments_is_a_vector_env_over_all_of_them():
    from tradebot.rl.train import make_env, train_env_config

    raw = yaml.safe_load(INTRADAY.read_text())
    raw["data"]["extra_paths"] = [str(ROOT / "data/sample/NSE_NIFTY50-INDEX_1m.csv.gz")]
    raw["data"]["path"] = str(ROOT / raw["data"]["path"])
    cfg = parse_config(TrainConfig, raw, "test")
    env = make_env({**train_env_config(cfg), "num_envs": 4})
    assert env.num_envs == 4 and [b.timeframe for b in env.bars] == ["5m", "1m"]
    assert env.instrument_index.tolist() == [0, 0, 1, 1]
    single = make_env(train_env_config(cfg))  # RLlib's single-env entry point: the first instrument only
    assert single.unwrapped.bars.timeframe == "5m"
    with pytest.raises(UserInputError, match="NSE_NIFTY50-INDEX_1m.csv.gz: no bars between"):
        make_env({**train_env_config(cfg), "num_envs": 2, "start": "2021-01-01", "end": "2021-02-01"})
