"""The exception tree: every class in ``hftagg.errors``, all exported, none of them bare."""

from __future__ import annotations

import ast
import inspect

import pytest

import hftagg
from hftagg import errors

from .conftest import ROOT, free_port, run_cli

# Exception classes allowed outside hftagg/errors.py, with the reason.
NOT_ERRORS = {
    # a signal a FIX application handler raises to have the session send a Reject (35=3);
    # the session catches it, it never leaves the session
    "RejectMessage",
}

PUBLIC_API = {
    "StorageError",
    "CatalogUnusable",
    "InstrumentError",
    "read",
    "ApplyError",
    "BusError",
    "BusTimeout",
    "ConfigError",
    "DbnFormatError",
    "FixedPointError",
    "FrameError",
    "HftaggError",
    "Params",
    "PluginError",
    "Port",
    "Problem",
    "Schema",
    "SchemaError",
    "SinkStage",
    "SourcePosition",
    "SourceStage",
    "Stage",
    "StageContext",
    "StageFailed",
    "TransportError",
    "hookimpl",
    "live",
    "make_dtype",
    "restart",
}


def _error_classes(module) -> set[str]:
    return {
        name
        for name, obj in vars(module).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == module.__name__
    }


def _looks_like_exception(node: ast.ClassDef, known: set[str]) -> bool:
    for base in node.bases:
        name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
        if name in known or name.endswith(("Error", "Exception", "Failed", "Timeout")):
            return True
    return False


def test_public_all_is_exactly_the_public_api():
    assert set(hftagg.__all__) == PUBLIC_API
    assert len(hftagg.__all__) == len(PUBLIC_API)  # no duplicates
    for name in hftagg.__all__:
        assert hasattr(hftagg, name), name


def test_every_exception_in_errors_is_listed_and_exported():
    defined = _error_classes(errors)

    assert defined == set(errors.__all__) - {"Problem"}
    assert defined <= set(hftagg.__all__)
    for name in defined:
        assert issubclass(getattr(errors, name), errors.HftaggError), name
        assert name in errors.__doc__, f"{name} is missing from the tree in errors.py's docstring"


def test_no_exception_class_is_defined_outside_errors_py():
    known = _error_classes(errors) | {"Exception", "BaseException"}
    stray = []
    for path in sorted((ROOT / "hftagg").rglob("*.py")):
        if path.name == "errors.py" and path.parent.name == "hftagg":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and _looks_like_exception(node, known):
                if node.name not in NOT_ERRORS:
                    stray.append(f"{path.relative_to(ROOT)}: class {node.name}")

    assert stray == []


def test_errors_defined_elsewhere_before_are_the_same_classes():
    from hftagg.builtins.protocols.dbn import DbnFormatError
    from hftagg.runtime.apply import ApplyError
    from hftagg.runtime.pipeline import StageFailed

    assert (DbnFormatError, ApplyError, StageFailed) == (
        hftagg.DbnFormatError,
        hftagg.ApplyError,
        hftagg.StageFailed,
    )
    assert issubclass(DbnFormatError, ValueError)  # callers catching ValueError still do


@pytest.mark.slow
def test_missing_fix_password_prints_one_line_not_a_traceback(tmp_path):
    config = tmp_path / "fix.toml"
    config.write_text(
        "[data_sources.venue]\n"
        'type = "fix_md"\n'
        'host = "127.0.0.1"\n'
        "port = 9\n"
        'sender_comp_id = "HFTAGG"\n'
        'target_comp_id = "VENUE"\n'
        "symbols = { ESZ6 = 1 }\n"
        'password_env = "HFTAGG_TEST_UNSET_FIX_PASSWORD"\n'
        "[processing]\n"
        "use_mock_data = false\n"
        "[delivery]\n"
        f'target = "tcp://127.0.0.1:{free_port()}"\n'
        "[telemetry]\n"
        "prometheus = false\n"
    )

    result = run_cli("run", "-c", str(config), "--duration", "5", "--quiet", cwd=tmp_path)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    naming = [
        line for line in result.stderr.splitlines() if "HFTAGG_TEST_UNSET_FIX_PASSWORD" in line
    ]
    assert len(naming) == 1, result.stderr
    assert "venue" in naming[0] and "export HFTAGG_TEST_UNSET_FIX_PASSWORD=" in naming[0]
    assert len(result.stderr.strip().splitlines()) <= 2  # the problem, then "not started"
