"""The shape of the code base: one import root, layer contracts that catch violations, no private
names across modules, files of a readable size, one concept per file name (docs/architecture.md)."""

from __future__ import annotations

import ast
import importlib.util
import tomllib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUP = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
SOURCE_DIRS = sorted(set(SETUP["package-dir"].values()))  # tradebot, features, envs, rl, serving, live
MAX_LINES = 800


def _lint_module():
    spec = importlib.util.spec_from_file_location("lint_imports", ROOT / "scripts" / "lint_imports.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sources() -> list[Path]:
    return sorted(f for d in SOURCE_DIRS for f in (ROOT / d).rglob("*.py") if "__pycache__" not in f.parts)


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] != "tradebot":
        parts.insert(0, "tradebot")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def test_packages_listed_in_pyproject_are_exactly_the_package_folders():
    found = {_module_name(init) for init in _sources() if init.name == "__init__.py"}
    assert found == set(SETUP["packages"]), "pyproject [tool.setuptools] packages must list every package folder"


def test_layer_contracts_hold(tmp_path):
    lint = _lint_module()
    lint.stage(tmp_path)
    done = lint.lint(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_layer_contracts_catch_an_upward_import_and_a_stray_sdk_import(tmp_path):
    lint = _lint_module()
    lint.stage(tmp_path)
    (tmp_path / "tradebot" / "envs" / "upward.py").write_text("from tradebot.live import journal\n")
    (tmp_path / "tradebot" / "rl" / "stray_sdk.py").write_text("import fyers_apiv3\n")
    (tmp_path / "tradebot" / "features" / "heavy.py").write_text("import torch\n")
    done = lint.lint(tmp_path)
    assert done.returncode == 1
    assert "3 broken" in done.stdout, done.stdout
    assert "tradebot.envs.upward -> tradebot.live.journal" in done.stdout
    assert "tradebot.rl.stray_sdk -> fyers_apiv3" in done.stdout
    assert "tradebot.features.heavy -> torch" in done.stdout


def test_every_source_file_is_under_800_lines():
    long = {str(f.relative_to(ROOT)): n for f in _sources() if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these by concern (at most {MAX_LINES} lines each): {long}"


def test_no_module_imports_another_modules_private_name():
    offenders = []
    for f in _sources():
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module != "__future__":
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        offenders.append(f"{f.relative_to(ROOT)}:{node.lineno} imports {node.module}.{alias.name}")
    assert not offenders, "make the name public (or move it) instead:\n" + "\n".join(offenders)


def test_all_imports_of_project_code_go_through_the_tradebot_root():
    roots = {d for d in SOURCE_DIRS if d != "tradebot"}
    offenders = []
    for f in [*_sources(), *sorted((ROOT / "tests").rglob("*.py")), *sorted((ROOT / "bench").glob("*.py"))]:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{f.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] in roots]
    assert not offenders, "import tradebot.<package>, not the bare folder name:\n" + "\n".join(offenders)


def test_no_two_source_modules_share_a_file_name():
    allowed = {"__init__.py"}
    by_name: dict[str, list[str]] = defaultdict(list)
    for f in _sources():
        by_name[f.name].append(str(f.relative_to(ROOT)))
    shared = {name: paths for name, paths in by_name.items() if len(paths) > 1 and name not in allowed}
    assert not shared, f"one concept per file name; rename one of each: {shared}"
