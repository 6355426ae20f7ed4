"""tradebot.features.store and the `data import` / `data list` commands on good input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tradebot.features.bars import Bars, load_bars
from tradebot.features.resample import resample
from tradebot.features.store import Store
from tradebot.core.errors import UserInputError

IST = "Asia/Kolkata"
SYMBOL = "NSE:NIFTY50-INDEX"


def test_store_round_trip_keeps_tz_dtypes_values_and_metadata(tmp_path, sample):
    bars = load_bars(sample["5m"])
    store = Store(tmp_path)
    res = store.write(bars, source="sample-5m")
    assert res.path == tmp_path / "NSE_NIFTY50-INDEX" / "5m.parquet"
    assert (res.created, res.added, res.replaced, res.rows) == (True, len(bars), 0, len(bars))
    back = store.read(SYMBOL, "5m")
    assert str(back.index.tz) == IST and back.index.name == "timestamp"
    assert list(back.frame.dtypes) == [np.dtype("float64")] * 5
    pd.testing.assert_frame_equal(back.frame, bars.frame)
    assert back.symbol == SYMBOL and back.timeframe == "5m"
    meta = store.metadata(SYMBOL, "5m")
    assert (meta["symbol"], meta["timeframe"], meta["sources"]) == (SYMBOL, "5m", ["sample-5m"])
    raw_meta = json.loads(pq.read_schema(res.path).metadata[b"tradebot"])
    assert raw_meta["symbol"] == SYMBOL


def test_store_merge_adds_new_rows_and_new_file_wins_on_overlap(tmp_path, sample):
    bars = load_bars(sample["5m"]).slice(0, 300)
    store = Store(tmp_path)
    store.write(bars.slice(0, 200), source="a")
    changed = bars.frame.iloc[100:300].copy()
    changed[["open", "high", "low", "close"]] += 1.0
    res = store.write(Bars.from_frame(changed, symbol=SYMBOL), source="b")
    assert (res.created, res.written, res.added, res.replaced, res.rows) == (False, 200, 100, 100, 300)
    back = store.read(SYMBOL, "5m").frame
    pd.testing.assert_frame_equal(back.iloc[:100], bars.frame.iloc[:100])
    pd.testing.assert_frame_equal(back.iloc[100:], changed)
    assert back.index.is_monotonic_increasing and back.index.is_unique
    assert store.metadata(SYMBOL, "5m")["sources"] == ["a", "b"]


def test_store_failed_write_leaves_file_byte_identical(tmp_path, sample, monkeypatch):
    bars = load_bars(sample["5m"])
    store = Store(tmp_path)
    path = store.write(bars.slice(0, 100)).path
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(UserInputError, match="store is unchanged"):
        store.write(bars.slice(50, 200))
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [".lock", "5m.parquet"]  # no temp file left


def test_store_list_and_read_missing(tmp_path, sample):
    store = Store(tmp_path)
    assert store.list() == []
    m1 = load_bars(sample["1m"])
    store.write(resample(m1, "1h").bars)
    store.write(m1)
    store.write(load_bars(sample["1d"]))
    entries = store.list()
    assert [(e.symbol, e.timeframe, e.rows) for e in entries] == [
        (SYMBOL, "1m", 3375), (SYMBOL, "1h", 63), ("NSE:SBIN-EQ", "1d", 1241)]
    assert entries[0].first == pd.Timestamp("2021-03-01 09:15", tz=IST)
    assert entries[0].last == pd.Timestamp("2021-03-12 15:29", tz=IST)
    with pytest.raises(UserInputError, match="tradebot data import"):
        store.read(SYMBOL, "15m")


def test_store_root_defaults_to_env_then_dot_store(tmp_path, monkeypatch):
    monkeypatch.setenv("TRADEBOT_STORE", str(tmp_path / "envstore"))
    assert Store().root == tmp_path / "envstore"
    monkeypatch.delenv("TRADEBOT_STORE")
    assert Store().root == Path("store")


def test_store_refuses_a_file_renamed_by_hand(tmp_path, sample):
    store = Store(tmp_path)
    path = store.write(load_bars(sample["1d"])).path
    os.replace(path, path.with_name("1h.parquet"))
    with pytest.raises(UserInputError, match="renamed by hand"):
        store.read("NSE:SBIN-EQ", "1h")


# ---------------------------------------------------------------- CLI
def test_cli_import_resample_merge_and_list(tmp_path, sample, cli):
    store = tmp_path / "store"
    r = cli("data", "import", sample["1m"], "--symbol", SYMBOL, "--timeframe", "5m", "--store", store)
    assert r.exit_code == 0, r.output
    assert "resampled 1m -> 5m" in r.stdout and "675 new, 0 replaced" in r.stdout
    r = cli("data", "import", sample["5m"], "--symbol", SYMBOL, "--store", store)
    assert r.exit_code == 0 and "8,411 new, 675 replaced" in r.stdout
    # the resampled 1m bars equal the 5m file, so the merged store equals the 5m file
    pd.testing.assert_frame_equal(Store(store).read(SYMBOL, "5m").frame, load_bars(sample["5m"]).frame)
    r = cli("data", "list", "--store", store)
    assert r.exit_code == 0 and "NSE:NIFTY50-INDEX" in r.stdout and "9,086" in r.stdout
    r = cli("data", "list", "--json", env={"TRADEBOT_STORE": str(store)})
    assert json.loads(r.stdout)[0]["rows"] == 9086


def test_cli_import_symbol_from_file_name_and_env_store(tmp_path, clean_csv, cli):
    store = tmp_path / "envstore"
    r = cli("data", "import", clean_csv, env={"TRADEBOT_STORE": str(store)})
    assert r.exit_code == 0, r.output
    assert (store / "NSE_NIFTY50-INDEX" / "5m.parquet").is_file()


@pytest.mark.parametrize("args,needle", [
    (["--timeframe", "1m"], "finer"),
    (["--timeframe", "7m"], "not a multiple"),
    (["--timeframe", "banana"], "unknown timeframe"),
    (["--symbol", "NIFTY"], "Fyers form"),
])
def test_cli_import_refuses_bad_flags_with_one_line(args, needle, tmp_path, clean_csv, cli):
    store = tmp_path / "store"
    argv = ["data", "import", clean_csv, "--store", store] + (args if "--symbol" in args else ["--symbol", SYMBOL] + args)
    r = cli(*argv)
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]
    assert not store.exists()


def test_cli_import_repair_reports_counts_and_stores_clean_bars(tmp_path, clean_lines, cli):
    lines = list(clean_lines)
    f = lines[9].split(",")
    f[4] = "NaN"  # close
    lines[9] = ",".join(f)
    lines.insert(30, lines[29])          # duplicate
    lines[40], lines[41] = lines[41], lines[40]  # unsorted
    f = lines[50].split(",")
    f[2] = str(float(f[1]) - 10)         # high below open
    lines[50] = ",".join(f)
    path = tmp_path / "messy.csv"
    path.write_text("\n".join(lines) + "\n")
    store = tmp_path / "store"
    assert cli("data", "import", path, "--symbol", SYMBOL, "--store", store).exit_code == 2
    assert not store.exists()
    r = cli("data", "import", path, "--symbol", SYMBOL, "--store", store, "--repair")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "1 row(s) were out of order" in out and "dropped 1 duplicate" in out
    assert "dropped 1 row(s) with NaN" in out and "clamped high up to max(open, close) on 1 bar(s)" in out
    stored = Store(store).read(SYMBOL, "5m")
    assert len(stored) == 149


def test_cli_import_warns_about_bars_dropped_outside_session(tmp_path, make_1m, write_csv, cli):
    raw = make_1m(["2021-03-01"])
    extra = raw.iloc[[0]].copy()
    extra["timestamp"] = [pd.Timestamp("2021-03-01 15:40", tz=IST)]
    path = write_csv(pd.concat([raw, extra], ignore_index=True), tmp_path / "x.csv")
    r = cli("data", "import", path, "--symbol", "NSE:SBIN-EQ", "--timeframe", "15m", "--store", tmp_path / "s")
    assert r.exit_code == 0, r.output
    assert "warning:" in r.stderr and "dropped 1 bar(s) outside the session" in r.stderr
    assert len(Store(tmp_path / "s").read("NSE:SBIN-EQ", "15m")) == 25


def test_cli_list_empty_store(tmp_path, cli):
    r = cli("data", "list", "--store", tmp_path / "nothing")
    assert r.exit_code == 0 and "is empty" in r.stdout


@pytest.mark.parametrize("cmd", [[], ["check"], ["import"], ["list"]])
def test_cli_data_help(cmd, cli):
    r = cli("data", *cmd, "--help")
    assert r.exit_code == 0 and "Usage:" in r.stdout
    if cmd:
        assert "Example" in r.stdout


def test_cli_check_clean_sample_exits_0(sample, cli):
    for key in ("1m", "1d"):
        r = cli("data", "check", sample[key])
        assert r.exit_code == 0, r.output
        assert "clean" in r.stdout


def test_cli_check_5m_sample_reports_short_session_and_exits_1(sample, cli):
    r = cli("data", "check", sample["5m"])
    assert r.exit_code == 1
    assert "2021-02-24: 64 missing" in r.stdout
    r = cli("data", "check", "--target", "0.01", sample["5m"])
    assert r.exit_code == 0


def test_cli_import_into_corrupt_store_file_fails_cleanly_and_keeps_it(tmp_path, clean_csv, cli):
    store = tmp_path / "store"
    target = store / "NSE_NIFTY50-INDEX" / "5m.parquet"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not parquet at all")
    r = cli("data", "import", clean_csv, "--store", store)
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(target) in lines[0] and "move it away" in lines[0]
    assert target.read_bytes() == b"not parquet at all"
    r = cli("data", "list", "--store", store)
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1


def test_cli_check_reads_a_store_parquet_file(tmp_path, sample, cli):
    path = Store(tmp_path).write(load_bars(sample["1m"])).path
    r = cli("data", "check", "--json", path)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)["files"][0]
    assert doc["rows"] == 3375 and doc["timeframe"] == "1m" and doc["source"].endswith(".parquet")


def test_cli_import_file_name_symbol_mismatch_warns_after_success(tmp_path, clean_csv, cli):
    r = cli("data", "import", clean_csv, "--symbol", "NSE:NIFTYBANK-INDEX", "--store", tmp_path / "s")
    assert r.exit_code == 0
    assert r.stderr.strip() == (f"warning: {clean_csv}: file name suggests NSE:NIFTY50-INDEX, "
                                "imported as NSE:NIFTYBANK-INDEX")
