"""Every bad input of the data issue, through the CLI: `data check` and `data import`.

`data check`: exit 2 when the file cannot be read as bars, exit 1 for quality problems.
`data import`: exit 2 with ONE `error:` line on stderr naming the file (and the line where there is
one) and the fix, no traceback; the store is not created, or stays byte-identical.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

HEADER = "timestamp,open,high,low,close,volume"
SYMBOL = "NSE:NIFTY50-INDEX"


def _edit(lines: list[str], line_no: int, **values: str) -> list[str]:
    """Replace fields of file line ``line_no`` (1-based; the header is line 1)."""
    out = list(lines)
    fields = out[line_no - 1].split(",")
    cols = HEADER.split(",")
    for key, val in values.items():
        fields[cols.index(key)] = val
    out[line_no - 1] = ",".join(fields)
    return out


def _text(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def _parquet_bytes(tmp: Path, frame: pd.DataFrame) -> bytes:
    path = tmp / "x.parquet"
    frame.to_parquet(path, index=False)
    return path.read_bytes()


# name -> (builder(clean_lines, tmp) -> bytes | None (= no file), suffix, check exit, import error must name,
#          problem code data check must report (exit 1 cases))
CASES = {
    "missing_column": (lambda c, t: _text([",".join(l.split(",")[:-1]) for l in c]), ".csv", 2,
                       "missing column(s) volume", None),
    "wrong_column_names": (lambda c, t: _text(["time,o,h,l,c,v"] + c[1:]), ".csv", 2, "Rename the header", None),
    "unparseable_timestamp": (lambda c, t: _text(_edit(c, 7, timestamp="04/01/2021 9:45 AM")), ".csv", 2,
                              "line 7", None),
    "nan_price": (lambda c, t: _text(_edit(c, 9, close="NaN")), ".csv", 1, "line 9", "nan"),
    "empty_price_cell": (lambda c, t: _text(_edit(c, 9, high="")), ".csv", 1, "line 9", "nan"),
    "negative_price": (lambda c, t: _text(_edit(c, 12, low="-14000.5")), ".csv", 1, "line 12", "nonpositive"),
    "duplicates": (lambda c, t: _text(c[:20] + [c[19]] + c[20:]), ".csv", 1, "line 21", "duplicates"),
    "unsorted": (lambda c, t: _text(c[:10] + [c[11], c[10]] + c[12:]), ".csv", 1, "line 12", "out_of_order"),
    "empty_file": (lambda c, t: b"", ".csv", 2, "file is empty", None),
    "header_only": (lambda c, t: _text([HEADER]), ".csv", 2, "no rows of bars", None),
    "random_bytes": (lambda c, t: np.random.default_rng(7).bytes(4096), ".csv", 2, "cannot be read as CSV", None),
    "gzip_of_garbage": (lambda c, t: gzip.compress(np.random.default_rng(8).bytes(4096)), ".csv.gz", 2,
                        "cannot be read as CSV", None),
    "not_gzip_despite_name": (lambda c, t: b"plain text, not gzip\n" * 20, ".csv.gz", 2, "cannot be read", None),
    "garbage_parquet": (lambda c, t: np.random.default_rng(9).bytes(2048), ".parquet", 2,
                        "cannot be read as Parquet", None),
    "naive_timestamps": (lambda c, t: _text([c[0]] + [l.replace("+05:30", "") for l in c[1:]]), ".csv", 2,
                         "line 2", None),
    "naive_timestamps_parquet": (
        lambda c, t: _parquet_bytes(t, pd.DataFrame({"timestamp": pd.date_range("2021-01-01 09:15", periods=3,
                                                                                  freq="5min"),
                                                     "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0,
                                                     "volume": 0.0})),
        ".parquet", 2, "no time zone", None),
    "nonexistent_path": (lambda c, t: None, ".csv", 2, "file not found", None),
}


@pytest.fixture
def bad_file(tmp_path: Path, clean_lines):
    def make(name: str) -> Path:
        build, suffix = CASES[name][0], CASES[name][1]
        path = tmp_path / "in" / f"{name}{suffix}"
        path.parent.mkdir(exist_ok=True)
        data = build(clean_lines, tmp_path)
        if data is not None:
            path.write_bytes(data)
        return path

    return make


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_data_check_bad_input_exits_with_documented_code(name, bad_file, cli):
    path = bad_file(name)
    expected_exit, code = CASES[name][2], CASES[name][4]
    result = cli("data", "check", "--json", path)
    assert result.exit_code == expected_exit, result.output
    doc = json.loads(result.stdout)
    assert doc["exit_code"] == expected_exit
    entry = doc["files"][0]
    if expected_exit == 2:
        assert entry["status"] == "unreadable"
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0]
    else:
        assert entry["status"] == "problems"
        assert code in {p["code"] for p in entry["problems"]}
        assert result.stderr == ""
    assert "Traceback" not in result.output


@pytest.mark.parametrize("name", sorted(CASES))
def test_data_check_bad_input_table_output_has_no_traceback(name, bad_file, cli):
    path = bad_file(name)
    result = cli("data", "check", path)
    assert result.exit_code == CASES[name][2]
    assert "Traceback" not in result.output
    if CASES[name][2] == 1:
        assert "PROBLEM" in result.stdout


@pytest.mark.parametrize("name", sorted(CASES))
def test_data_import_bad_input_one_line_and_store_untouched(name, bad_file, clean_csv, tmp_path, cli):
    store = tmp_path / "store"
    first = cli("data", "import", clean_csv, "--symbol", SYMBOL, "--store", store)
    assert first.exit_code == 0, first.output
    before = _snapshot(store)
    assert "NSE_NIFTY50-INDEX/5m.parquet" in before

    path = bad_file(name)
    result = cli("data", "import", path, "--symbol", SYMBOL, "--store", store)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: ") and str(path) in line
    assert CASES[name][3] in line, line
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert _snapshot(store) == before  # byte-identical, and no temp file left behind


@pytest.mark.parametrize("name", sorted(CASES))
def test_data_import_bad_input_does_not_create_store(name, bad_file, tmp_path, cli):
    store = tmp_path / "fresh-store"
    result = cli("data", "import", bad_file(name), "--symbol", SYMBOL, "--store", store)
    assert result.exit_code == 2
    assert not store.exists()


@pytest.mark.parametrize("name,fix", [("nan_price", "--repair"), ("negative_price", "--repair"),
                                      ("duplicates", "--repair"), ("unsorted", "--repair")])
def test_data_import_row_errors_name_the_fix(name, fix, bad_file, tmp_path, cli):
    result = cli("data", "import", bad_file(name), "--symbol", SYMBOL, "--store", tmp_path / "s")
    assert fix in result.stderr


def test_data_check_several_files_checks_all_and_exits_with_worst(bad_file, clean_csv, sample, cli):
    unreadable, problem = bad_file("random_bytes"), bad_file("duplicates")
    result = cli("data", "check", sample["1m"], unreadable, problem, clean_csv)
    assert result.exit_code == 2
    assert result.stderr.count("error: ") == 1 and str(unreadable) in result.stderr
    for path in (sample["1m"], problem, clean_csv):  # the others were still checked
        assert Path(path).name in result.stdout

    result = cli("data", "check", "--json", sample["1m"], problem)
    assert result.exit_code == 1
    assert [f["exit_code"] for f in json.loads(result.stdout)["files"]] == [0, 1]


def test_data_import_bad_input_through_console_script(bad_file, tmp_path):
    """The installed entry point: real process, real exit code, one line, no traceback."""
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("tradebot")
    if not exe.exists():
        pytest.skip("tradebot console script not installed in this environment")
    store = tmp_path / "store"
    path = bad_file("nan_price")
    proc = subprocess.run([str(exe), "data", "import", str(path), "--symbol", SYMBOL, "--store", str(store)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "line 9" in proc.stderr and "Traceback" not in proc.stderr
    assert not store.exists()
    proc = subprocess.run([str(exe), "data", "check", str(bad_file("gzip_of_garbage"))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
