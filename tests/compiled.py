"""Which numba kernels a module set exposes, and whether ``warm()`` compiled them."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from types import ModuleType

from numba.core.registry import CPUDispatcher


def _dispatchers(module: ModuleType) -> dict[str, CPUDispatcher]:
    return {
        f"{module.__name__}.{name}": obj
        for name, obj in vars(module).items()
        if isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == module.__name__
    }


def entry_points(modules: list[ModuleType]) -> dict[str, CPUDispatcher]:
    """The jitted functions Python calls: those no other jitted function calls (a callee loaded
    with its caller from numba's disk cache never compiles on its own, so only entry points can
    be checked), leaving out ``inline="always"`` helpers (inlined at IR level, never compiled)."""
    found: dict[str, CPUDispatcher] = {}
    called: set[int] = set()
    for module in modules:
        own = _dispatchers(module)
        found.update(own)
        for dispatcher in own.values():
            for name in dispatcher.py_func.__code__.co_names:
                target = vars(module).get(name)
                if isinstance(target, CPUDispatcher):
                    called.add(id(target))
    return {
        name: d
        for name, d in found.items()
        if id(d) not in called and d.targetoptions.get("inline") != "always"
    }


def hftagg_modules() -> list[ModuleType]:
    """Every module of the hftagg package, imported (kernels live in several packages)."""
    import hftagg

    for info in pkgutil.walk_packages(hftagg.__path__, "hftagg."):
        if not info.name.endswith(".__main__"):
            importlib.import_module(info.name)
    return [m for name, m in sorted(sys.modules.items()) if name.startswith("hftagg.") and m]


def uncompiled(modules: list[ModuleType]) -> list[str]:
    """Entry points without a compiled signature: they would compile on first use."""
    return [name for name, d in entry_points(modules).items() if not d.signatures]
