"""The built wheel: `tradebot` is its only import root, and it works installed outside the repository.

The wheel is built from this checkout and installed (without dependencies) into a new virtual
environment in a temporary folder; the dependencies come from the project's venv through a path
entry, so nothing is downloaded and the repository's own folders are not on the path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "NSE_NIFTY50-INDEX_5m.csv.gz"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    shutil.copytree(ROOT, build / "src", ignore=shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "*.egg-info", "build", "store", "out", "runs", "mlruns", "mlflow.db", "tests"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(build / "src")], check=True, capture_output=True, text=True)
    (found,) = out.glob("tradebot-*.whl")
    return found


def test_the_wheel_installs_one_top_level_name_and_every_source_file(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"tradebot"}, tops
    for folder, package in (("features", "features"), ("envs", "envs"), ("rl", "rl"), ("serving", "serving"),
                            ("live", "live"), ("tradebot", None)):
        for f in (ROOT / folder).rglob("*.py"):
            if "__pycache__" in f.parts:
                continue
            rel = f.relative_to(ROOT / folder).as_posix()
            expected = f"tradebot/{package}/{rel}" if package else f"tradebot/{rel}"
            assert expected in names, f"{f.relative_to(ROOT)} is missing from the wheel ({expected})"
    for data in ("tradebot/envs/costs.yaml", "tradebot/serving/serve_config.yaml"):
        assert data in names


def test_the_installed_wheel_runs_a_backtest_outside_the_repository(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3.*/site-packages"))
    project_site = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (site / "deps.pth").write_text(project_site + "\n")  # a path line: that folder's .pth files are not run
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True, text=True)
    work = tmp_path / "work"
    work.mkdir()
    data = shutil.copy(SAMPLE, work / SAMPLE.name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", textwrap.dedent("""
        import importlib.util, tradebot, tradebot.envs, tradebot.live.loop, tradebot.serving.app
        print(tradebot.__file__)
        print([n for n in ("features", "envs", "rl", "serving", "live") if importlib.util.find_spec(n)])
        """)], cwd=work, env=env, capture_output=True, text=True, check=True)
    where, stray = probe.stdout.split("\n")[:2]
    assert where.startswith(str(site)), f"tradebot imported from {where}, not from the installed wheel"
    assert stray == "[]", f"the wheel installed other top-level packages: {stray}"
    run = subprocess.run([str(venv / "bin" / "tradebot"), "backtest", "--data", str(data), "--strategy",
                          "sma_crossover", "--out", "bt"], cwd=work, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    for name in ("metrics.json", "equity.csv", "trades.csv", "report.html"):
        assert (work / "bt" / name).is_file(), name
