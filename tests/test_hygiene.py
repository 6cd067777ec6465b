"""The suite's own rules: every test asserts something; subprocess and soak tests are marked."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
CHECKS = {"raises", "warns", "fail", "deprecated_call"}  # pytest.raises(...) and friends


def _checks_something(fn: ast.AST) -> bool:
    for node in ast.walk(fn):
        if isinstance(node, ast.Assert):
            return True
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in CHECKS or name.startswith("assert"):  # assert_* helpers assert
                return True
    return False


def _tests(tree: ast.Module):
    """Module-level test functions and the test methods of Test* classes (what pytest runs)."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
            "test"
        ):
            yield node
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for item in node.body:
                if isinstance(
                    item, ast.FunctionDef | ast.AsyncFunctionDef
                ) and item.name.startswith("test"):
                    yield item


def _marks(fn: ast.AST) -> set[str]:
    names = set()
    for dec in fn.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(target, ast.Attribute):
            names.add(target.attr)
    return names


def test_every_test_asserts_something():
    silent = []
    for path in sorted(TESTS.glob("test_*.py")):
        for fn in _tests(ast.parse(path.read_text(encoding="utf-8"))):
            if not _checks_something(fn):
                silent.append(f"{path.name}:{fn.lineno} {fn.name}")

    assert silent == [], "tests that check nothing (add an assert): " + ", ".join(silent)


SPAWNERS = {"subprocess", "Popen", "run_cli", "hftagg_cmd", "check_output", "check_call"}


def _names(node: ast.AST) -> set[str]:
    out = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            out.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            out.add(sub.attr)
        elif isinstance(sub, ast.arg):
            out.add(sub.arg)  # fixtures are asked for by parameter name
    return out


def _spawning_names(tree: ast.Module) -> set[str]:
    """Module-level helpers, fixtures and classes that start a process, directly or through
    another of them."""
    defs = {
        node.name: _names(node)
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and not node.name.startswith("test")
    }
    spawning = set(SPAWNERS)
    while True:
        more = {name for name, used in defs.items() if used & spawning} - spawning
        if not more:
            return spawning
        spawning |= more


def _module_marked_slow(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", "") == "pytestmark" for t in node.targets
        ):
            return "slow" in _names(node.value)
    return False


def test_tests_that_start_processes_are_marked_slow():
    unmarked = []
    for path in sorted(TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if _module_marked_slow(tree):
            continue
        spawning = _spawning_names(tree)
        for fn in _tests(tree):
            if _names(fn) & spawning and "slow" not in _marks(fn):
                unmarked.append(f"{path.name}:{fn.lineno} {fn.name}")

    assert unmarked == [], "start a process, so mark @pytest.mark.slow: " + ", ".join(unmarked)


def test_ci_runs_the_slow_tests_too():
    root = TESTS.parent
    ci = [root / ".ci" / "run", root / "run_tests.sh", root / "pyproject.toml"]

    for path in ci:
        text = path.read_text(encoding="utf-8")
        assert "not slow" not in text, f"{path.name} deselects the slow tests"
    assert "./run_tests.sh" in (root / ".ci" / "run").read_text(encoding="utf-8")
    assert '"slow: ' in (root / "pyproject.toml").read_text(encoding="utf-8")  # registered
