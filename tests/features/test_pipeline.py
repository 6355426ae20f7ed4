"""The feature pipeline: no lookahead for every feature, stream == batch, state round trips, config, CLI.

Data: the bundled sample (data/sample): NIFTY 50 5m/1m index bars (volume 0) and SBIN daily bars (real
volume). The intraday-volume path (session VWAP) is exercised on NIFTY 5m prices with a synthetic
volume proportional to the bar range, as no intraday stock sample is bundled.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tradebot.features.bars import Bars, load_bars
from tradebot.features.feature_config import CANDLE_PATTERNS, FeatureConfig, NormalisationConfig, load_feature_config
from tradebot.features.normaliser import CausalNormaliser
from tradebot.features.pipeline import ATR_COLUMN, FeaturePipeline, FeatureStream
from tradebot.core.nse_time import minute_of_day, session_day
from tradebot.core.config import parse_config
from tradebot.core.errors import UserInputError

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"
NIFTY_5M = SAMPLE / "NSE_NIFTY50-INDEX_5m.csv.gz"
NIFTY_1M = SAMPLE / "NSE_NIFTY50-INDEX_1m.csv.gz"
SBIN_1D = SAMPLE / "NSE_SBIN-EQ_1d.csv.gz"
TOL = dict(rtol=1e-9, atol=1e-9)

# Shorter windows so that the SBIN daily sample leave rows past warm-up.
COMPACT = {
    "trend": {"sma": [10, 50], "ema": [10, 20]},
    "regime": {"percentile_window": 100},
    "normalisation": {"window": 150, "min_periods": 40},
}


@pytest.fixture(scope="module")
def nifty() -> Bars:
    return load_bars(NIFTY_5M)


@pytest.fixture(scope="module")
def sbin() -> Bars:
    return load_bars(SBIN_1D)


@pytest.fixture(scope="module")
def nifty_volume(nifty) -> Bars:
    """NIFTY 5m prices with a synthetic, range-proportional volume: an intraday bar series with volume."""
    f = nifty.frame.iloc[:1400].copy()
    f["volume"] = np.round(1e7 * (f["high"] - f["low"]) / f["close"]) + 100.0
    return Bars.from_frame(f, symbol="NSE:NIFTY50-INDEX")


def _truncation_check(pipe: FeaturePipeline, bars: Bars, n_late: int, early: list[int], seed: int) -> None:
    """transform(bars[:t+1]) row t == transform(bars) row t, NaN pattern included, for many t."""
    full = pipe.transform(bars).to_numpy()
    rng = np.random.default_rng(seed)
    late = rng.choice(np.arange(pipe.warmup_bars, len(bars)), size=n_late, replace=False)
    for t in sorted({*early, *late.tolist()}):
        part = pipe.transform(bars.slice(0, t + 1)).to_numpy()
        assert part.shape == (t + 1, len(pipe.feature_names))
        for j, name in enumerate(pipe.feature_names):
            np.testing.assert_allclose(part[t, j], full[t, j], rtol=1e-12, atol=1e-12, equal_nan=True,
                                       err_msg=f"feature {name} at bar {t} changes with later bars")


def _stream_all(stream: FeatureStream, bars: Bars) -> np.ndarray:
    f = bars.frame
    rows = [stream.update(ts, o, h, lo, c, v) for ts, o, h, lo, c, v in
            zip(f.index, f["open"], f["high"], f["low"], f["close"], f["volume"])]
    return np.array(rows).reshape(len(rows), -1)


# ------------------------------------------------------------------------------- no lookahead
def test_truncation_every_feature_nifty_5m_default_config_has_no_lookahead(nifty):
    bars = nifty.slice(0, 1200)
    pipe = FeaturePipeline.for_bars(bars)
    _truncation_check(pipe, bars, n_late=30, early=[0, 1, 13, 17, 25, 120, 300, pipe.warmup_bars - 1], seed=1)


def test_truncation_every_feature_sbin_daily_with_volume_has_no_lookahead(sbin):
    pipe = FeaturePipeline.for_bars(sbin, parse_config(FeatureConfig, COMPACT))
    assert pipe.warmup_bars < len(sbin) - 100
    _truncation_check(pipe, sbin, n_late=30, early=[0, 2, 15, 40, pipe.warmup_bars - 1], seed=2)


def test_truncation_intraday_volume_vwap_has_no_lookahead(nifty_volume):
    pipe = FeaturePipeline.for_bars(nifty_volume, parse_config(FeatureConfig, COMPACT))
    assert "vwap_dist" in pipe.feature_names
    _truncation_check(pipe, nifty_volume, n_late=20, early=[0, 1, 74, 75, 76, pipe.warmup_bars - 1], seed=3)


ALL_CANDLES = {
    "returns": {"enabled": False}, "trend": {"enabled": False}, "momentum": {"enabled": False},
    "volatility": {"enabled": False}, "regime": {"enabled": False}, "calendar": {"enabled": False},
    "candles": {"patterns": list(CANDLE_PATTERNS)}}


def test_truncation_all_62_candle_patterns_have_no_lookahead():
    bars = load_bars(NIFTY_1M).slice(0, 800)
    pipe = FeaturePipeline.for_bars(bars, parse_config(FeatureConfig, ALL_CANDLES))
    assert len(pipe.feature_names) == 62
    full = pipe.transform(bars)
    assert np.abs(full.to_numpy()).max() <= 1.0
    _truncation_check(pipe, bars, n_late=40, early=[0, 1, 2, 5, 10], seed=4)


# ---------------------------------------------------------------------------- stream == batch
def test_stream_equals_batch_nifty_5m_and_restored_state_continues_identically(nifty):
    bars = nifty.slice(0, 1300)  # tail_bars is about 900: the last rows test the seeds' convergence
    pipe = FeaturePipeline.for_bars(bars)
    assert pipe.tail_bars < 1000
    batch = pipe.transform(bars).to_numpy()
    stream = pipe.stream()
    first = _stream_all(stream, bars.slice(0, 1000))
    saved = json.loads(json.dumps(stream.state_dict(), allow_nan=False))  # strict JSON
    rest = _stream_all(stream, bars.slice(1000, 1300))
    streamed = np.vstack([first, rest])
    np.testing.assert_array_equal(np.isnan(streamed), np.isnan(batch))
    np.testing.assert_allclose(streamed, batch, equal_nan=True, **TOL)
    assert not np.isnan(streamed[pipe.warmup_bars:]).any()
    assert np.isclose(stream.atr, pipe.atr(bars).iloc[-1], rtol=1e-12)

    restored = FeatureStream.from_state_dict(saved)
    again = _stream_all(restored, bars.slice(1000, 1100))
    np.testing.assert_array_equal(again, rest[:100])  # identical continuation, not just close


def test_stream_equals_batch_sbin_daily_volume_features(sbin):
    pipe = FeaturePipeline.for_bars(sbin, parse_config(FeatureConfig, COMPACT))
    streamed = _stream_all(pipe.stream(), sbin)
    np.testing.assert_allclose(streamed, pipe.transform(sbin).to_numpy(), equal_nan=True, **TOL)


def test_stream_equals_batch_intraday_volume_expanding_normaliser(nifty_volume):
    cfg = parse_config(FeatureConfig, {**COMPACT, "normalisation": {"method": "expanding", "min_periods": 40}})
    pipe = FeaturePipeline.for_bars(nifty_volume, cfg)
    bars = nifty_volume.slice(0, 900)
    streamed = _stream_all(pipe.stream(), bars)
    np.testing.assert_allclose(streamed, pipe.transform(bars).to_numpy(), equal_nan=True, **TOL)


def test_stream_equals_batch_all_62_candle_patterns():
    bars = load_bars(NIFTY_1M).slice(0, 700)
    pipe = FeaturePipeline.for_bars(bars, parse_config(FeatureConfig, ALL_CANDLES))
    assert pipe.tail_bars < 500  # rows past the tail use a truncated history
    streamed = _stream_all(pipe.stream(history=bars.slice(0, 450)), bars.slice(450, 700))
    np.testing.assert_array_equal(streamed, pipe.transform(bars).to_numpy()[450:])


def test_stream_primed_from_history_continues_like_batch(nifty):
    bars = nifty.slice(0, 1400)
    pipe = FeaturePipeline.for_bars(bars)
    stream = pipe.stream(history=bars.slice(0, 1250))
    assert stream.bars_seen == 1250 and stream.ready
    rest = _stream_all(stream, bars.slice(1250, 1400))
    np.testing.assert_allclose(rest, pipe.transform(bars).to_numpy()[1250:], **TOL)


def test_stream_rejects_out_of_order_and_naive_timestamps(nifty):
    pipe = FeaturePipeline.for_bars(nifty)
    stream = pipe.stream()
    stream.update("2021-01-01T09:15:00+05:30", 100, 101, 99, 100.5)
    with pytest.raises(ValueError, match="not after the previous bar"):
        stream.update("2021-01-01T09:15:00+05:30", 100, 101, 99, 100.5)
    with pytest.raises(ValueError, match="no time zone"):
        stream.update("2021-01-01 09:20:00", 100, 101, 99, 100.5)


def test_stream_state_from_other_config_is_refused(nifty):
    state = FeaturePipeline.for_bars(nifty).stream().state_dict()
    other = FeaturePipeline.for_bars(nifty, parse_config(FeatureConfig, {"trend": {"sma": [10]}})).stream()
    with pytest.raises(ValueError, match="different config"):
        other.load_state_dict(state)


# -------------------------------------------------------------------------------- normaliser
@pytest.mark.parametrize("method", ["rolling", "expanding", "none"])
def test_normaliser_state_round_trip_and_update_equals_transform(method):
    rng = np.random.default_rng(5)
    raw = rng.normal(2.0, 3.0, (400, 4))
    raw[:30, 1] = np.nan  # a feature still in its look-back
    raw[200, 2] = np.nan  # a value undefined at one bar
    cfg = NormalisationConfig(method=method, window=50, min_periods=10, clip=3.0)
    zmask = np.array([True, True, True, False])
    batch = CausalNormaliser(cfg, zmask).transform(raw)

    norm = CausalNormaliser(cfg, zmask)
    first = np.array([norm.update(r) for r in raw[:250]])
    state = json.loads(json.dumps(norm.state_dict(), allow_nan=False))
    restored = CausalNormaliser(cfg, zmask)
    restored.load_state_dict(state)
    rest = np.array([norm.update(r) for r in raw[250:]])
    np.testing.assert_array_equal(np.array([restored.update(r) for r in raw[250:]]), rest)
    np.testing.assert_allclose(np.vstack([first, rest]), batch, rtol=1e-10, atol=1e-10, equal_nan=True)

    primed = CausalNormaliser(cfg, zmask)
    primed.fit_state(raw[:250])
    np.testing.assert_allclose(np.array([primed.update(r) for r in raw[250:]]), batch[250:],
                               rtol=1e-10, atol=1e-10, equal_nan=True)
    np.testing.assert_array_equal(batch[:, 3], raw[:, 3])  # not z-scored: passed through
    if method != "none":
        assert np.nanmax(np.abs(batch[:, :3])) <= 3.0
        assert np.isnan(batch[:9, 0]).all() and not np.isnan(batch[9:, 0]).any()


def test_normaliser_state_from_other_settings_is_refused():
    state = CausalNormaliser(NormalisationConfig(window=50, min_periods=10), np.ones(2, bool)).state_dict()
    norm = CausalNormaliser(NormalisationConfig(window=60, min_periods=10), np.ones(2, bool))
    with pytest.raises(ValueError, match="window"):
        norm.load_state_dict(state)


# ------------------------------------------------------------------------- layout and config
def test_volume_features_absent_for_index_bars_present_for_stock(nifty, sbin):
    volume = {"obv_flow", "volume_ratio", "cmf", "mfi"}
    index_pipe = FeaturePipeline.for_bars(nifty)
    assert not nifty.has_volume and not volume & set(index_pipe.feature_names)
    assert "vwap_dist" not in index_pipe.feature_names
    assert index_pipe.skipped == ("volume (bars have no volume)",)
    stock_pipe = FeaturePipeline.for_bars(sbin)
    assert volume <= set(stock_pipe.feature_names)
    assert "vwap_dist" not in stock_pipe.feature_names and "tod_sin" not in stock_pipe.feature_names


def test_default_layout_warmup_and_output_frame(nifty):
    bars = nifty.slice(0, 1200)
    pipe = FeaturePipeline.for_bars(bars)
    assert len(pipe.feature_names) == 46 and len(set(pipe.feature_names)) == 46
    out = pipe.transform(bars)
    assert list(out.columns) == list(pipe.feature_names)
    assert out.index.equals(bars.index) and (out.dtypes == np.float64).all()
    has_nan = out.isna().any(axis=1).to_numpy()
    assert has_nan[: pipe.warmup_bars].all() and not has_nan[pipe.warmup_bars:].any()
    assert np.abs(out[list(pipe.zscored)].to_numpy()[pipe.warmup_bars:]).max() <= 5.0
    atr = pipe.atr(bars)
    assert atr.name == ATR_COLUMN and atr.index.equals(bars.index) and atr.iloc[20] > 0


def test_calendar_features_match_session_helpers(nifty):
    bars = nifty.slice(0, 300)
    cfg = parse_config(FeatureConfig, {"calendar": {"enabled": True}})
    out = FeaturePipeline.for_bars(bars, cfg).transform(bars)
    elapsed = minute_of_day(bars.index) - (9 * 60 + 15) + 5
    np.testing.assert_allclose(out["session_progress"], elapsed / 375.0, atol=1e-15)
    dow = bars.index.dayofweek.to_numpy()
    np.testing.assert_allclose(out["dow_sin"], np.sin(2 * np.pi * dow / 7), atol=1e-15)
    assert len(np.unique(session_day(bars.index))) == 4


def test_talib_fast_paths_equal_pandas_ta_calls(nifty):
    import pandas_ta as ta

    from tradebot.features import indicators as fp

    f = nifty.frame.iloc[:2000]
    o, h, lo, c = (f[k] for k in ("open", "high", "low", "close"))
    H, L, C = h.to_numpy(), lo.to_numpy(), c.to_numpy()
    macd = ta.macd(c, 12, 26, 9, talib=True)
    line, hist = fp._macd(C, 12, 26, 9)
    np.testing.assert_array_equal(line, macd["MACD_12_26_9"])
    np.testing.assert_array_equal(hist, macd["MACDh_12_26_9"])
    st = ta.stoch(h, lo, c, k=14, d=3, smooth_k=3, talib=True)
    k, d = fp._stoch(H, L, C, 14, 3)
    np.testing.assert_array_equal(k, st["STOCHk_14_3_3"])
    np.testing.assert_array_equal(d, st["STOCHd_14_3_3"])
    bb = ta.bbands(c, length=20, lower_std=2.0, upper_std=2.0, talib=True)
    pctb, width = fp._bbands(C, 20, 2.0)
    np.testing.assert_allclose(pctb, bb["BBP_20_2.0_2.0"], rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(width, bb["BBB_20_2.0_2.0"], rtol=1e-12, equal_nan=True)
    dc = ta.donchian(h, lo, lower_length=20, upper_length=20)
    np.testing.assert_array_equal(fp._donchian_range(H, L, 20), dc["DCU_20_20"] - dc["DCL_20_20"])
    adx = ta.adx(h, lo, c, length=14, talib=True)
    a, dmp, dmn = fp._adx(H, L, C, 14)
    for mine, col in ((a, "ADX_14"), (dmp, "DMP_14"), (dmn, "DMN_14")):
        np.testing.assert_array_equal(mine, adx[col])
    names = ["doji", "inside", "engulfing", "hikkake", "morningstar"]
    cdl = f.ta.cdl_pattern(name=names)
    for name, col in zip(names, cdl.columns):
        mine = fp._candle(name, o.to_numpy(), H, L, C)
        np.testing.assert_array_equal(mine, cdl[col] / (200 if name == "hikkake" else 100))


def test_unknown_config_key_is_rejected_naming_it(tmp_path):
    path = tmp_path / "features.yaml"
    path.write_text("features:\n  trend:\n    smaa: [10]\n")
    with pytest.raises(UserInputError, match=r"unknown config key 'trend\.smaa' \(did you mean 'sma'\?\)"):
        load_feature_config(path)
    with pytest.raises(UserInputError, match="unknown candlestick pattern 'hamer'.*'hammer'"):
        parse_config(FeatureConfig, {"candles": {"patterns": ["hamer"]}})
    path.write_text("trend:\n  sma: [10]\n")
    with pytest.raises(UserInputError, match="no 'features' section"):
        load_feature_config(path)


def test_example_config_is_the_defaults_written_out():
    assert load_feature_config(ROOT / "experiments" / "features.yaml") == FeatureConfig()  # defaults, written out


# --------------------------------------------------------------------------------------- CLI
def _cli(*args: object):
    from tradebot.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture
def small_csv(tmp_path, nifty) -> Path:
    path = tmp_path / "NSE_NIFTY50-INDEX_5m.csv"
    frame = nifty.frame.iloc[:700].reset_index()
    frame["timestamp"] = frame["timestamp"].map(lambda t: t.isoformat())
    frame.to_csv(path, index=False)
    return path


def test_cli_build_writes_parquet_with_expected_columns(tmp_path, small_csv):
    out = tmp_path / "feat.parquet"
    result = _cli("features", "build", small_csv, "--out", out)
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    pipe = FeaturePipeline.for_bars(load_bars(small_csv))
    assert list(frame.columns) == list(pipe.feature_names) and len(frame) == 700
    assert "700 rows" in result.stdout and "46 features" in result.stdout and "volume" in result.stdout
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_cli_build_bad_config_key_exits_2_with_one_line(tmp_path, small_csv):
    config = tmp_path / "bad.yaml"
    config.write_text("features:\n  normalisation:\n    windw: 100\n")
    out = tmp_path / "feat.parquet"
    result = _cli("features", "build", small_csv, "--out", out, "--config", config)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "unknown config key 'normalisation.windw'" in result.stderr
    assert not out.exists()


def test_cli_build_bad_data_exits_2_and_writes_nothing(tmp_path, small_csv):
    lines = small_csv.read_text().splitlines()
    lines[5], lines[6] = lines[6], lines[5]  # out of order
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "feat.parquet"
    result = _cli("features", "build", bad, "--out", out)
    assert result.exit_code == 2 and result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1 and "line 7" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([small_csv.name, bad.name])  # nothing written


def test_cli_build_help_is_clear():
    result = _cli("features", "build", "--help")
    assert result.exit_code == 0
    for text in ("--out", "--config", "--symbol", "Parquet", "warm-up"):
        assert text in result.output
