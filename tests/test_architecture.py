"""The structure issue 11 asks for, checked: import contracts (pyproject's
[tool.importlinter]: a pure engine, layers pointing one way, no cycles) and small modules
and functions."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cds_service"
MODULE_LINES = 320  # "no module over ~300 lines"
FUNCTION_LINES = 60


def test_import_contracts_hold():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _modules():
    """Every module of the package."""
    yield from sorted(PACKAGE.rglob("*.py"))


def test_modules_are_small():
    modules = list(_modules())
    assert len(modules) > 10
    long = {
        str(p.relative_to(ROOT)): n
        for p in modules
        if (n := len(p.read_text().splitlines())) > MODULE_LINES
    }
    assert not long, long


def test_functions_are_short():
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.name}"] = length
    assert not long, long
