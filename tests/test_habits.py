"""The project's habits, checked by the test suite: the import contracts (import-linter: the
layering engine / fa_tui -> fa_contract, no torch in fa_tui, no cycles), ruff's lint rules,
mypy on the contract, and small modules (docs/dev: ~300 lines unless the docstring says why)."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PACKAGES = ("fa_contract", "engine", "fa_tui")
MAX_LINES = 330          # "~300": a module may run a little over before it must say why


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists() and shutil.which(name) is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return str(path if path.exists() else shutil.which(name))


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)


def test_import_contracts_hold():
    result = _run(_tool("lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_lint_passes():
    result = _run(_tool("ruff"), "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_passes_on_the_contract():
    result = _run(_tool("mypy"), "--no-incremental", "--cache-dir", "/dev/null")
    assert result.returncode == 0, result.stdout + result.stderr


def test_long_modules_say_why():
    long = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            lines = path.read_text(encoding="utf-8").count("\n")
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
            if lines > MAX_LINES and "Length:" not in doc:
                long.append(f"{path.relative_to(ROOT)} ({lines} lines)")
    assert not long, ("split these modules, or say why they are long in a 'Length:' sentence "
                      f"of their docstring: {', '.join(long)}")
