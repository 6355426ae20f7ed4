"""Run import-linter (`lint-imports`) on the package as it is installed: one root, `tradebot`.

The source folders stay at the repository root and are mapped onto `tradebot.<name>` by
pyproject's `[tool.setuptools] package-dir`; import-linter (grimp) walks one folder per root
package, so this stages the installed layout in a temporary folder (a copy of the .py files,
placed by that same mapping) and runs `lint-imports` on it with the contracts in pyproject.toml.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stage(dest: Path) -> None:
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping: dict[str, str] = setup["package-dir"]
    for package in setup["packages"]:
        # the longest mapped prefix decides where a package's folder is
        prefix = max((p for p in mapping if package == p or package.startswith(p + ".")), key=len)
        src = ROOT / mapping[prefix] / Path(*package[len(prefix):].lstrip(".").split(".") if package != prefix else ())
        out = dest / Path(*package.split("."))
        out.mkdir(parents=True, exist_ok=True)
        for f in src.glob("*.py"):
            shutil.copy2(f, out / f.name)


def lint(staged: Path) -> subprocess.CompletedProcess:
    """Run ``lint-imports`` with the contracts of pyproject.toml on a staged tree."""
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe), str(ROOT / "pyproject.toml"), "--no-cache"], cwd=staged,
                          env={**os.environ, "PYTHONPATH": str(staged)}, text=True, capture_output=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tradebot-lint-") as tmp:
        stage(Path(tmp))
        done = lint(Path(tmp))
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        return done.returncode


if __name__ == "__main__":
    sys.exit(main())
